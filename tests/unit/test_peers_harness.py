"""The pure parts of benchmarks/peers.py: event → commit latency from snapshots, Connect log parsing,
the sink's configuration and the ratios. No Spark, Connect or service is started."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from peers import (  # noqa: E402
    commit_latencies,
    connect_commits,
    connector_properties,
    percentiles,
    ratio,
    snapshot_marks,
)


def test_each_row_is_committed_by_the_first_snapshot_that_holds_its_offset():
    # snapshot at t=10 holds p0 offsets 0..1, p1 offset 0; at t=20 also p0:2 and p1:1..2
    snaps = [(20.0, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]), (10.0, [(0, 0), (0, 1), (1, 0)])]
    marks = snapshot_marks(snaps)
    assert marks == [(10.0, {0: 1, 1: 0}), (20.0, {0: 2, 1: 2})]
    rows = [(0, 0, 9.0), (0, 2, 15.0), (1, 0, 4.0), (1, 2, 19.5), (2, 0, 1.0)]  # p2 never committed
    assert commit_latencies(marks, rows) == [1.0, 5.0, 6.0, 0.5]


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 21)]  # 1..20
    p = percentiles(values)
    assert (p["p50"], p["p95"], p["max"], p["n"]) == (10.0, 19.0, 20.0, 20)
    assert p["mean"] == 10.5
    assert percentiles([])["p50"] is None


def test_connect_commit_latency_from_the_coordinator_lines():
    log = "\n".join([
        "[2026-11-30T21:06:58,100] INFO Commit 7a initiated (org.apache.iceberg.connect.channel.Coordinator)",
        "[2026-11-30T21:06:58,200] INFO unrelated line",
        "[2026-11-30T21:07:00,600] INFO Commit 7a complete, committed to 1 table(s), valid-through x (c)",
        "[2026-11-30T21:07:08,000] INFO Commit 7b initiated (c)",  # never completed: left out
        "\tat org.apache.iceberg.Commit 7b complete",  # a stack-trace line without a timestamp
    ])
    commits = connect_commits(log)
    assert len(commits) == 1
    c = commits[0]
    assert c["commit"] == "7a" and c["seconds"] == 2.5
    # 2026-11-30T21:06:58.1 UTC as epoch seconds, computed independently
    from datetime import datetime, timezone

    assert c["initiated"] == pytest.approx(datetime(2026, 11, 30, 21, 6, 58, 100000, tzinfo=timezone.utc).timestamp())


def test_connect_commit_lines_of_the_later_wording_count_too():
    log = ("[2026-11-30T21:00:00,000] INFO Coordinator s-0 initiated commit 9c (c)\n"
           "[2026-11-30T21:00:01,250] INFO Coordinator s-0 completed commit 9c complete, committed to 1 table(s) (c)\n")
    assert [(c["commit"], c["seconds"]) for c in connect_commits(log)] == [("9c", 1.25)]


def test_connector_properties_keep_secrets_out_and_the_topic_private():
    props = connector_properties("bench-peers-x", "bench-t", "ns.tbl", "bench-peers-x-control", 10_000,
                                 "http://127.0.0.1:8181", "http://127.0.0.1:8333", "us-east-1")
    assert props["iceberg.control.commit.interval-ms"] == "10000"
    assert props["iceberg.control.topic"] == "bench-peers-x-control"
    assert props["iceberg.connect.group-id"] == props["consumer.override.group.id"]
    for key in ("iceberg.catalog.token", "iceberg.catalog.s3.access-key-id", "iceberg.catalog.s3.secret-access-key"):
        assert props[key].startswith("${env:")


def test_ratio_is_above_one_when_we_are_better():
    assert ratio(200.0, 100.0) == 2.0  # rate: higher is better
    assert ratio(5.0, 20.0, higher_is_better=False) == 4.0  # latency: lower is better
    assert ratio(None, 3.0) is None
