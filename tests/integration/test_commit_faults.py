"""Faults at the catalog during a commit, on the real broker, REST catalog and S3.

The worst case for exactly-once is a commit that **landed** but whose response never came back:
the writer cannot tell it from a commit that failed. A loopback proxy in front of the REST
catalog forwards the commit, lets the catalog apply it, then drops the connection before the
response. The run fails; the rerun must find the landed snapshot (its offsets) and append
nothing twice. The same proxy refusing the commit outright (catalog down) leaves nothing behind.
"""

from __future__ import annotations

import http.client
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tasks.simulator import TrafficProfile, produce
from tests.integration.test_ingest_exactly_once import assert_exactly_once
from tests.integration.test_service_faults import _verified

pytestmark = pytest.mark.stack
RECENT = datetime.now(timezone.utc)
COMMIT = re.compile(r"^/v1/(?:[^/]+/)?namespaces/[^/]+/tables/[^/]+$")


class CatalogProxy:
    """Forwards HTTP to the catalog; ``fault`` decides the fate of the next table commit:
    ``"lose-response"`` (applied, then the connection is dropped) or ``"refuse"`` (never sent)."""

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.fault: str | None = None
        self.commits_faulted = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy.fault if self.command == "POST" and COMMIT.match(self.path.split("?")[0]) else None
                if fault == "refuse":
                    proxy.fault, proxy.commits_faulted = None, proxy.commits_faulted + 1
                    self.close_connection = True
                    self.connection.close()
                    return
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                upstream.close()
                if fault == "lose-response":
                    proxy.fault, proxy.commits_faulted = None, proxy.commits_faulted + 1
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxied(private_stack):
    """A lakehouse of its own with its own REST catalog (``private_stack``), reached directly and
    through the proxy."""
    proxy = CatalogProxy(private_stack.catalog_uri)
    yield private_stack, private_stack.model_copy(update={"catalog_uri": proxy.uri}), proxy
    proxy.close()


@pytest.mark.parametrize("fault", ["lose-response", "refuse"])
def test_ingest_commit_whose_response_is_lost_or_refused_lands_once(proxied, fault):
    from flows.ingest import ingest_flow

    direct, through_proxy, proxy = proxied
    sent = produce(direct, TrafficProfile(events=1500, seed=21, end=RECENT))
    proxy.fault = fault
    with pytest.raises(Exception) as failed:
        ingest_flow(settings=through_proxy, max_records=600)
    assert proxy.commits_faulted == 1, f"the commit never reached the proxy: {failed.value!r}"
    report = ingest_flow(settings=direct, max_batches=100)
    if fault == "lose-response":  # the landed batch is not read again
        assert 0 < sent.events - report["total_records"] <= 600
    else:
        assert report["total_records"] == sent.events
    assert_exactly_once(direct, sent.events)
    _verified(direct)
