"""The pure parts of benchmarks/peers.py: event → commit latency from snapshots, Connect log parsing,
the sink's configuration and the ratios. No Spark, Connect or service is started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

_config_before = os.environ.get("LAKEHOUSE_CONFIG")
from peers import (  # noqa: E402
    TreeMemory,
    commit_latencies,
    compare_outputs,
    connect_commits,
    connector_properties,
    memory_peaks,
    percentiles,
    ratio,
    silver_rules,
    snapshot_marks,
)

if _config_before is None:  # peers.py points itself at the stack on import; unit tests never do
    os.environ.pop("LAKEHOUSE_CONFIG", None)


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


MB = 1024**2


def test_memory_peak_of_tree_plus_workers_is_taken_at_one_instant():
    samples = [
        {"tree": 100 * MB, "workers": {"02000000": 10 * MB, "other": 500 * MB}},
        {"tree": 40 * MB, "workers": {"02000000": 50 * MB, "bronze-writer actors": 30 * MB, "other": 1 * MB}},
    ]
    p = memory_peaks(samples, {"02000000", "bronze-writer actors"})
    assert p["process_tree_peak_rss_mb"] == 100.0
    assert p["ray_workers_peak_rss_mb"] == 80.0  # 50 + 30 in the second sample; "other" not counted
    assert p["peak_tree_plus_workers_mb (same instant)"] == 120.0  # 40 + 80, not 100 + 80
    assert p["samples"] == 2
    assert memory_peaks(samples, set())["peak_tree_plus_workers_mb (same instant)"] == 100.0
    assert memory_peaks([], set())["process_tree_peak_rss_mb"] is None


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def test_tree_memory_counts_the_children_of_the_root():
    # a shell that starts two sleeps: the tree is the shell and both children
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = Path(f"/proc/{shell.pid}/task/{shell.pid}/children").read_text().split()
            # both forks have become `sleep` (before the exec a child is a copy of the shell, and
            # its memory changes under the test on a busy machine)
            if len(kids) == 2 and all(_command(int(kid)) == "sleep" for kid in kids):
                break
            time.sleep(0.05)
        pids = [shell.pid, *map(int, kids)]

        def rss(pid):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
            return 0

        expected = sum(rss(pid) for pid in pids)
        memory = TreeMemory(1.0, root=shell.pid)
        memory.sample()
        assert abs(memory.samples[0]["tree"] - expected) <= 256 * 1024  # pages may move a little
        assert memory.samples[0]["tree"] > max(rss(pid) for pid in pids)
    finally:
        shell.kill()
        shell.wait()


def test_output_comparison_names_each_difference():
    ours = {"facts": 3, "rejected": 2, "reasons": {"BAD_TYPE": 1, "MALFORMED_JSON": 1}}
    spark = {"facts_inserted": 3, "rejected": 2, "reasons": {"BAD_TYPE": 2}}
    c = compare_outputs(ours, spark, {"a", "b", "c"}, {"a", "b", "d"})
    assert c["facts"] == {"ours": 3, "spark": 3} and c["rejected"] == {"ours": 2, "spark": 2}
    assert (c["event_ids_only_ours"], c["event_ids_only_spark"]) == (1, 1)
    assert c["sample_only_ours"] == ["c"] and c["sample_only_spark"] == ["d"]
    assert c["reasons_differing"] == {"BAD_TYPE": {"ours": 1, "spark": 2}, "MALFORMED_JSON": {"ours": 1, "spark": 0}}
    assert c["same"] is False
    same = compare_outputs(ours, {**spark, "reasons": ours["reasons"]}, {"a"}, {"a"})
    assert same["same"] is True


def test_silver_rules_carry_the_numerals_in_order_and_refuse_a_short_list():
    numerals = [f"N{n}" for n in range(1, 4000)]
    rules = silver_rules(1024, numerals, ("event_id",), ("region",), ("free",), ("OUT_OF_RANGE",))
    assert rules["numerals"][0] == "N1" and rules["numerals"][3998] == "N3999"
    assert rules["required_v1"] == ["event_id"] and rules["max_bytes"] == 1024
    with pytest.raises(ValueError, match="numerals"):
        silver_rules(1024, numerals[:-1], (), (), (), ())

