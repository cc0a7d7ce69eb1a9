"""The pure parts of the scaling and backlog benchmarks (benchmarks/component_memory.py,
benchmarks/scaling.py) and the /proc readers every benchmark shares (benchmarks/sampling.py): which processes are a node's Ray workers, peaks per component, result
files keyed by size, re-chunking a stream, and the order-free table digest. No Ray, no services."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from component_memory import merge_size, rechunk, summarize  # noqa: E402
from sampling import job_of, process_tree, ray_workers, read_processes, read_status  # noqa: E402

MB = 1024**2


@pytest.fixture(autouse=True)
def no_lakehouse_env(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)


PROCS = {
    1: (0, "init"),
    10: (1, "/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --node_id=aaaa --port 1"),
    11: (10, "/root/.local/bin/uv run --frozen python /venv/ray/_private/workers/default_worker.py --node-id=aaaa"),
    12: (11, "ray::DaftHost.call"),  # the worker under uv run
    13: (10, "ray::IDLE"),  # started directly by the raylet
    14: (10, "/venv/bin/python -u /venv/ray/dashboard/agent.py --node-id=aaaa"),  # an agent, not a worker
    15: (10, "/venv/bin/python -m ray._private.runtime_env.agent.main"),
    16: (11, "python not-a-worker"),  # under the uv wrapper, but not a worker
    17: (10, "ray::DashboardAgent"),
    20: (1, "/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --node_id=bbbb"),
    21: (20, "ray::RaySwordfishActor.run"),
    30: (1, "ray::Orphan"),  # titled like a worker, but under no raylet
    40: (1, "python benchmarks/scaling.py _run"),
    41: (40, "python -c prefect child"),
    42: (41, "sleep 1"),
}


def test_workers_are_titled_processes_under_a_raylet_even_through_uv():
    assert ray_workers(PROCS) == {12: "aaaa", 13: "aaaa", 21: "bbbb"}


def test_process_tree_is_the_root_and_all_its_descendants():
    assert sorted(process_tree(40, PROCS)) == [40, 41, 42]
    assert process_tree(99, PROCS) == []


def test_the_proc_readers_see_a_real_child_its_memory_and_its_ray_job():
    child = subprocess.Popen(["sleep", "30"], env={**os.environ, "RAY_JOB_ID": "0a000000"})
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and read_processes().get(child.pid, (0, ""))[1] != "sleep 30":
            time.sleep(0.05)  # between fork and exec the child is still a copy of this process
        procs = read_processes()
        assert procs[child.pid] == (os.getpid(), "sleep 30")
        assert child.pid in process_tree(os.getpid(), procs)
        assert job_of(child.pid) == "0a000000" and job_of(os.getpid()) is None
        status = read_status(child.pid)
        for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                assert status["VmHWM"] == int(line.split()[1]) * 1024  # the high-water mark does not move
        assert 0 < status["VmRSS"] <= status["VmHWM"]
        assert set(status) == {"VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"}
    finally:
        child.kill()
        child.wait()
    assert read_status(child.pid) is None and child.pid not in read_processes()


def sample(driver_rss, driver_anon, workers, store):
    return {"t": 0.0, "driver_rss": driver_rss * MB, "driver_anon": driver_anon * MB,
            "workers": {node: {job: [total * MB, largest * MB, count] for job, (total, largest, count) in jobs.items()}
                        for node, jobs in workers.items()},
            "store": {node: used * MB for node, used in store.items()}}


def test_peaks_count_only_the_run_job_and_add_up_at_the_same_instant():
    samples = [
        sample(500, 400, {"aaaa": {"01": (100, 80, 2), "ff": (2000, 2000, 1)}}, {"aaaa": 10}),
        sample(900, 700, {"aaaa": {"01": (300, 200, 2)}, "bbbb": {"01": (50, 50, 1)}}, {"aaaa": 200, "bbbb": 40}),
        sample(600, 450, {"aaaa": {"01": (700, 600, 3)}}, {"aaaa": 100, "bbbb": 0}),
    ]
    out = summarize(samples, "01", {"aaaa": "head"})
    assert out["driver_peak_rss_mb"] == 900.0 and out["driver_peak_anon_mb"] == 700.0
    head, second = out["nodes"]["head"], out["nodes"]["bbbb"]
    assert head["ray_workers_anon_peak_mb"] == 700.0 and head["ray_workers_at_peak"] == 3
    assert head["largest_ray_worker_anon_peak_mb"] == 600.0
    assert head["object_store_used_peak_mb"] == 200.0 and head["object_store_used_before_mb"] == 10.0
    assert second["ray_workers_anon_peak_mb"] == 50.0 and second["object_store_used_peak_mb"] == 40.0
    # per sample: 400+100+10 = 510; 700+300+50+200+40 = 1290; 450+700+100+0 = 1250 (job ff never counted)
    together = next(v for k, v in out.items() if k.startswith("all_components"))
    assert together == 1290.0
    assert out["largest_single_process_peak_mb"] == 900.0  # the driver's RSS beats any one worker
    assert summarize([], "01", {}) == {}


def test_results_of_a_new_size_keep_the_old_top_level_run():
    old = {"records": 1_000_000, "runs": {"bounded": {"s": 56}, "unbounded": {"s": 73}}, "same_silver_counts": True}
    doc = merge_size(old, 10_000_000, {"records": 10_000_000, "runs": {"bounded": {"s": 900}}}, "records")
    assert list(doc) == ["sizes"]
    assert list(doc["sizes"]) == ["1000000", "10000000"]
    assert doc["sizes"]["1000000"] == old
    assert doc["sizes"]["10000000"]["runs"] == {"bounded": {"s": 900}}


def test_running_some_configurations_again_keeps_the_others():
    doc = {"sizes": {"4000000": {"events": 4_000_000, "runs": {"1-node/2": {"s": 1}, "2-node/2": {"s": 2}},
                                 "machine": "old"}}}
    doc = merge_size(doc, 4_000_000, {"events": 4_000_000, "runs": {"2-node/2": {"s": 3}, "1-node/1": {"s": 4}},
                                      "machine": "new"}, "events")
    runs = doc["sizes"]["4000000"]["runs"]
    assert runs == {"1-node/2": {"s": 1}, "2-node/2": {"s": 3}, "1-node/1": {"s": 4}}
    assert doc["sizes"]["4000000"]["machine"] == "new"


def test_rechunk_gives_exact_sizes_whatever_the_batches():
    batches = [pa.record_batch({"seq": list(range(a, b))}) for a, b in ((0, 3), (3, 4), (4, 11), (11, 12))]
    tables = list(rechunk(batches, 5))
    assert [t.num_rows for t in tables] == [5, 5, 2]
    assert [v for t in tables for v in t.column("seq").to_pylist()] == list(range(12))
    assert list(rechunk([], 5)) == []


def test_table_digest_ignores_row_order_and_snapshot_ids_but_not_values():
    from scaling import table_digest

    rows = {"event_id": ["a", "b", "c"], "amount": [0.1 + 0.2, 1.5, None], "n": [1, 2, 3],
            "bronze_snapshot_id": [7, 8, 9]}
    base = table_digest(pa.table(rows).to_reader())
    shuffled = pa.table(rows).take([2, 0, 1]).set_column(3, "bronze_snapshot_id", pa.array([1, 2, 3]))
    rounded = pa.table({**rows, "amount": [0.3, 1.5, None]})  # 0.1 + 0.2 = 0.30000000000000004
    changed = pa.table({**rows, "n": [1, 2, 4]})
    assert base["rows"] == 3
    assert table_digest(shuffled.to_reader()) == base
    assert table_digest(rounded.to_reader()) == base
    assert table_digest(changed.to_reader()) != base
    assert table_digest(pa.table(rows).slice(0, 2).to_reader())["rows"] == 2


def test_a_killed_run_is_the_one_job_whose_workers_appeared_during_it():
    from silver_backlog import run_job

    first = sample(1, 1, {"aaaa": {"ffffffff": (60, 60, 1), "03": (200, 200, 1)}}, {})
    later = sample(1, 1, {"aaaa": {"ffffffff": (60, 60, 1), "07": (500, 300, 2)}}, {})
    assert run_job([first, later]) == "07"
    other = sample(1, 1, {"aaaa": {"08": (10, 10, 1)}}, {})
    assert run_job([first, later, other]) is None  # two new jobs: not known which
    assert run_job([]) is None
