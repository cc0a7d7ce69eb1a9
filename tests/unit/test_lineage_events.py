"""OpenLineage events: their contents, built from hand-made run facts; the transports, with a
real HTTP receiver on loopback started and stopped by the test (the only network edge); the
spool that keeps events while the backend is down and re-sends them, in order, once it is back;
and the flow decorator's START, COMPLETE and FAIL."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks.lineage.emit import Delivery, deliver, spool_path
from tasks.lineage.events import RunFacts, TableState, audit_row, build_event
from tasks.lineage.run import committed_snapshots, emits_lineage
from tasks.lineage.walk import OffsetRange
from tasks.settings import load_settings

RUN = "0193a3c4-0000-7000-8000-000000000001"
FLOW_RUN = "0193a3c4-0000-7000-8000-000000000002"
FACTS = TableState("silver.fact_conversions", "s3://lakehouse-silver/fact_conversions", 11)
DAILY = TableState("gold.daily_conversion_metrics", "s3://lakehouse-gold/daily_conversion_metrics", 22,
                   (("event_date", "date"), ("requests", "long")), rows=3, bytes=1234, files=1)


@pytest.fixture(autouse=True)
def embedded_settings(monkeypatch):
    """Embedded defaults, whatever the caller exported (`make test` exports LAKEHOUSE_CONFIG)."""
    import os

    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)


def _settings(tmp_path, **overrides):
    return load_settings(state_dir=str(tmp_path / "state"), lineage_audit=False, **overrides)


def test_a_gold_commit_event_names_datasets_by_storage_and_carries_every_facet():
    facts = RunFacts("build-gold.gold.daily_conversion_metrics", RUN, (FACTS,), (DAILY,),
                     parent=("build-gold", FLOW_RUN))
    event = build_event("COMPLETE", facts, "lakehouse", "iceberg+http://127.0.0.1:8181")
    assert event["eventType"] == "COMPLETE" and event["run"]["runId"] == RUN
    assert event["job"] == {"namespace": "lakehouse", "name": "build-gold.gold.daily_conversion_metrics", "facets": {}}
    [source] = event["inputs"]
    assert (source["namespace"], source["name"]) == ("s3://lakehouse-silver", "fact_conversions")
    assert source["facets"]["version"]["datasetVersion"] == "11"
    assert source["facets"]["symlinks"]["identifiers"] == [
        {"namespace": "iceberg+http://127.0.0.1:8181", "name": "silver.fact_conversions", "type": "TABLE"}]
    [out] = event["outputs"]
    assert (out["namespace"], out["name"]) == ("s3://lakehouse-gold", "daily_conversion_metrics")
    assert out["facets"]["version"]["datasetVersion"] == "22"
    assert [(f["name"], f["type"]) for f in out["facets"]["schema"]["fields"]] == [("event_date", "date"), ("requests", "long")]
    stats = out["outputFacets"]["outputStatistics"]
    assert (stats["rowCount"], stats["size"], stats["fileCount"]) == (3, 1234, 1)
    requests = out["facets"]["columnLineage"]["fields"]["requests"]["inputFields"]
    assert [(f["namespace"], f["name"], f["field"]) for f in requests] == [
        ("s3://lakehouse-silver", "fact_conversions", "event_id")]
    latency = out["facets"]["columnLineage"]["fields"]["p95_latency_ms"]["inputFields"]
    assert [f["field"] for f in latency] == ["latency_ms"]
    parent = event["run"]["facets"]["parent"]
    assert parent["run"]["runId"] == FLOW_RUN and parent["job"]["name"] == "build-gold"
    custom = event["run"]["facets"]["lakehouse"]
    assert custom["inputSnapshots"] == {"silver.fact_conversions": 11}
    assert custom["outputSnapshots"] == {"gold.daily_conversion_metrics": 22}


def test_an_ingest_event_names_the_topic_by_broker_and_keeps_the_offset_ranges():
    bronze = TableState("bronze.conversion_events_raw", "file:///w/lakehouse-bronze/conversion_events_raw", 5)
    facts = RunFacts("ingest-bronze", RUN, (), (bronze,), "127.0.0.1:9092,127.0.0.1:9094",
                     (OffsetRange("events", 0, 10, 19), OffsetRange("events", 2, 0, 4)))
    event = build_event("COMPLETE", facts, "lakehouse", "iceberg+sqlite://lakehouse")
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [("kafka://127.0.0.1:9092", "events")]
    assert [(d["namespace"], d["name"]) for d in event["outputs"]] == [("file", "/w/lakehouse-bronze/conversion_events_raw")]
    assert event["run"]["facets"]["lakehouse"]["kafkaOffsetRanges"] == [
        {"topic": "events", "partition": 0, "first": 10, "last": 19},
        {"topic": "events", "partition": 2, "first": 0, "last": 4}]


def test_a_fail_event_carries_the_error_and_the_audit_row_keeps_the_event():
    try:
        raise RuntimeError("the catalog said no")
    except RuntimeError as exc:
        event = build_event("FAIL", RunFacts("promote-silver", RUN), "lakehouse", "c", error=exc)
    error = event["run"]["facets"]["errorMessage"]
    assert error["message"] == "RuntimeError: the catalog said no" and error["programmingLanguage"] == "PYTHON"
    assert "raise RuntimeError" in error["stackTrace"]
    row = audit_row(event)
    assert (row["event_type"], row["run_id"], row["job_name"]) == ("FAIL", RUN, "promote-silver")
    assert json.loads(row["event"]) == event


def test_committed_snapshots_from_each_flows_report():
    assert committed_snapshots({"committed": {"silver.fact_conversions": 7}, "bronze_to": 3}) == {"silver.fact_conversions": 7}
    assert committed_snapshots({"topic": "t", "snapshot_id": 9}) == {"bronze.conversion_events_raw": 9}
    assert committed_snapshots({"topic": "t", "snapshot_id": None}) == {}
    assert committed_snapshots({"dry_run": False, "tables": {"gold.dim_date": {}}}) == {"gold.dim_date": None}
    assert committed_snapshots({"dry_run": True, "tables": {"gold.dim_date": {}}}) == {}


class _Receiver:
    """A real OpenLineage HTTP backend on loopback: records each POSTed event and its headers;
    ``status`` answers each event (201: taken; any other code: refused, with a JSON error body)."""

    def __init__(self, port: int, status=lambda event: 201):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event = json.loads(body)
                code = status(event)
                if code == 201:
                    received.append((self.path, self.headers.get("Authorization"), event))
                answer = b"" if code == 201 else json.dumps({"code": code, "message": "no"}).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _event(n: int) -> dict:
    return build_event("START", RunFacts(f"job-{n}", RUN), "lakehouse", "c")


def test_a_backend_that_is_down_spools_and_everything_arrives_in_order_once_it_is_back(tmp_path):
    port = _free_port()
    settings = _settings(tmp_path, lineage_transport="http", lineage_url=f"http://127.0.0.1:{port}",
                         lineage_api_key="k-123")
    assert deliver(settings, [_event(1), _event(2)]) == Delivery(0, 2)  # nobody listens
    assert deliver(settings, [_event(3)]) == Delivery(0, 3)
    spool = spool_path(settings)
    assert [json.loads(line)["job"]["name"] for line in spool.read_text().splitlines()] == ["job-1", "job-2", "job-3"]
    receiver = _Receiver(port)
    try:
        assert deliver(settings, [_event(4)]) == Delivery(4, 0)
        assert [e["job"]["name"] for _, _, e in receiver.received] == ["job-1", "job-2", "job-3", "job-4"]
        assert {path for path, _, _ in receiver.received} == {"/api/v1/lineage"}
        assert {auth for _, auth, _ in receiver.received} == {"Bearer k-123"}
        assert not spool.exists()
        assert deliver(settings, [_event(5)]) == Delivery(1, 0)  # nothing re-sent twice
        assert len(receiver.received) == 5
    finally:
        receiver.stop()


def test_a_backend_failing_midway_keeps_only_what_it_did_not_take(tmp_path):
    taken = []

    class Flaky:
        def emit(self, event):
            if len(taken) == 2:
                raise ConnectionError("backend went away")
            taken.append(event["job"]["name"])

    settings = _settings(tmp_path, lineage_transport="http", lineage_url="http://127.0.0.1:1")
    assert deliver(settings, [_event(n) for n in range(4)], transport=Flaky()) == Delivery(2, 2)
    assert taken == ["job-0", "job-1"]
    spool = spool_path(settings)
    assert [json.loads(line)["job"]["name"] for line in spool.read_text().splitlines()] == ["job-2", "job-3"]


def test_the_file_transport_appends_json_lines_to_the_state_folder(tmp_path):
    settings = _settings(tmp_path)  # the default transport
    assert settings.lineage_transport == "file"
    deliver(settings, [_event(1)])
    deliver(settings, [_event(2)])
    lines = (settings.state_dir / "lineage" / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["job"]["name"] for line in lines] == ["job-1", "job-2"]


def test_off_sends_nothing(tmp_path):
    settings = _settings(tmp_path, lineage_transport="off")
    assert deliver(settings, [_event(1)]) == Delivery(0, 0)
    assert not (settings.state_dir / "lineage").exists()


def test_the_decorator_emits_start_and_complete_or_fail_and_never_hides_the_error(tmp_path):
    settings = _settings(tmp_path)

    @emits_lineage("a-flow", "silver")
    def works(settings=None):
        return {"committed": {}}

    @emits_lineage("a-flow", "silver")
    def breaks(settings=None):
        raise ValueError("bad input")

    assert works(settings=settings) == {"committed": {}}
    with pytest.raises(ValueError, match="bad input"):
        breaks(settings=settings)
    lines = (settings.state_dir / "lineage" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE", "START", "FAIL"]
    assert events[0]["run"]["runId"] == events[1]["run"]["runId"] != events[2]["run"]["runId"]
    assert events[3]["run"]["facets"]["errorMessage"]["message"] == "ValueError: bad input"


def test_a_backend_that_is_down_never_fails_the_flow(tmp_path):
    settings = _settings(tmp_path, lineage_transport="http", lineage_url=f"http://127.0.0.1:{_free_port()}")

    @emits_lineage("a-flow", "silver")
    def works(settings=None):
        return {"committed": {}}

    assert works(settings=settings) == {"committed": {}}
    spool = spool_path(settings)
    assert [json.loads(line)["eventType"] for line in spool.read_text().splitlines()] == ["START", "COMPLETE"]


def test_in_the_background_complete_follows_the_flow_in_order_and_leaving_sends_every_event(tmp_path, monkeypatch):
    """Continuous mode's ``completed_in_background``: the flow returns before its COMPLETE is sent
    (here: held back until the test releases it), events stay in run order, and leaving the block
    waits for them all."""
    from tasks.lineage import run

    settings = _settings(tmp_path)
    release = threading.Event()
    complete = run.FlowLineage.complete

    def held_complete(self, report):
        release.wait(10)
        complete(self, report)

    monkeypatch.setattr(run.FlowLineage, "complete", held_complete)

    @emits_lineage("a-flow", "silver")
    def works(settings=None):
        return {"committed": {}}

    path = settings.state_dir / "lineage" / "events.jsonl"
    with run.completed_in_background():
        assert works(settings=settings) == {"committed": {}}
        assert works(settings=settings) == {"committed": {}}
        assert [json.loads(line)["eventType"] for line in path.read_text().splitlines()] == ["START", "START"]
        threading.Timer(0.2, release.set).start()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "START", "COMPLETE", "COMPLETE"]
    assert [e["run"]["runId"] for e in events[2:]] == [e["run"]["runId"] for e in events[:2]]
    assert run._deferred is None  # outside the block, COMPLETE is sent in the flow again
