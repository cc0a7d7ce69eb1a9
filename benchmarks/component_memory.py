"""Peak memory per component of one run on Ray, and result files that keep every size measured.

The issue's memory target counts every process involved: the flow's process (the driver), the Ray
workers doing its work and the object store of each node. ``ComponentSampler`` samples /proc
every ``interval`` seconds while a child process runs:

* the driver: RSS and anonymous memory of the child's process tree;
* the Ray workers of each node: anonymous memory (RSS also counts the object store pages a
  worker maps, which the store figure already has), summed per node and Ray job, and the
  largest single worker. A worker is any process under a raylet titled ``ray::...`` or running
  ``default_worker.py`` (under ``uv run`` the raylet's child is uv and the worker its child);
  agents and uv wrappers are not workers. Only the run's own Ray job is counted in the summary
  (its Daft host is a detached actor it created, and Daft's actors are the host's: same job),
  so the stack's warm actors and an earlier run's idle host stay out;
* the object store of each node: bytes used, from each raylet once a second (all jobs: the store
  is shared; the value before the run is reported beside the peak).

``merge_size`` keeps results keyed by record count, so a 10M run does not overwrite the 1M one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from sampling import PeriodicSampler, job_of, mb, process_tree, ray_workers, read_processes, read_status


# ---- pure: peaks per component ----------------------------------------------------------------------

def summarize(samples: list[dict], job: str | None, names: dict[str, str]) -> dict:
    """Peaks per component over ``samples`` (see ``ComponentSampler.sample``), counting the Ray
    workers of ``job`` only; nodes are named by ``names`` (node id -> name; others by id prefix)."""
    if not samples:
        return {}

    def name(node: str) -> str:
        return names.get(node, node[:8])

    def workers(s: dict, node: str) -> tuple[int, int, int]:
        total, largest, count = s["workers"].get(node, {}).get(job, (0, 0, 0)) if job else (0, 0, 0)
        return total, largest, count

    nodes = sorted({n for s in samples for n in (*s["workers"], *s["store"])})
    per_node = {}
    for node in nodes:
        top = max(samples, key=lambda s: workers(s, node)[0])
        store = [s["store"][node] for s in samples if node in s["store"]]
        per_node[name(node)] = {
            "ray_workers_anon_peak_mb": mb(workers(top, node)[0]),
            "ray_workers_at_peak": workers(top, node)[2],
            "largest_ray_worker_anon_peak_mb": mb(max(workers(s, node)[1] for s in samples)),
            "object_store_used_peak_mb": mb(max(store)) if store else None,
            "object_store_used_before_mb": mb(store[0]) if store else None,
        }

    def total(s: dict) -> int:
        return (s["driver_anon"] + sum(workers(s, n)[0] for n in s["workers"])
                + sum(s["store"].values()))

    top_total = max(samples, key=total)
    largest_process = max([s["driver_rss"] for s in samples]
                          + [workers(s, n)[1] for s in samples for n in s["workers"]])
    return {
        "driver_peak_rss_mb": mb(max(s["driver_rss"] for s in samples)),
        "driver_peak_anon_mb": mb(max(s["driver_anon"] for s in samples)),
        "nodes": per_node,
        "largest_single_process_peak_mb": mb(largest_process),
        "all_components_peak_mb (driver anon + job's workers anon + object stores, same instant)": mb(total(top_total)),
        "ray_job": job,
        "samples": len(samples),
    }


# ---- pure: result files keyed by size ---------------------------------------------------------------

def merge_size(document: dict, size: int, result: dict, size_key: str, keyed: str = "runs") -> dict:
    """``document`` with ``result`` filed under ``sizes[str(size)]``: a document of the old shape
    (one size at the top, its count under ``size_key``) moves into ``sizes`` first, and the
    ``keyed`` map (runs by mode or configuration) of a size already there is updated, not replaced,
    so running some configurations again keeps the others."""
    document = dict(document)
    sizes = dict(document.pop("sizes", {}))
    if size_key in document:
        sizes.setdefault(str(document[size_key]), document)
        document = {}
    old = sizes.get(str(size), {})
    merged = {**old, **result}
    if isinstance(old.get(keyed), dict) and isinstance(result.get(keyed), dict):
        merged[keyed] = {**old[keyed], **result[keyed]}
    sizes[str(size)] = merged
    document["sizes"] = dict(sorted(sizes.items(), key=lambda kv: int(kv[0])))
    return document


def rechunk(batches: Iterable, size: int) -> Iterator:
    """Arrow record batches regrouped into tables of exactly ``size`` rows (the last may be
    smaller), whatever the batches' own sizes: a stream file is landed a snapshot at a time."""
    import pyarrow as pa

    pending, rows = [], 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - rows, batch.num_rows)
            pending.append(batch.slice(0, take))
            rows += take
            batch = batch.slice(take)
            if rows == size:
                yield pa.Table.from_batches(pending)
                pending, rows = [], 0
    if rows:
        yield pa.Table.from_batches(pending)


def stream_chunks(path: Path, size: int) -> Iterator:
    """The stream file in tables of ``size`` rows, read a batch at a time (never all of it)."""
    import pyarrow.parquet as pq

    yield from rechunk(pq.ParquetFile(path).iter_batches(batch_size=min(size, 65_536)), size)


# ---- sampling ---------------------------------------------------------------------------------------

def store_used_by_node() -> dict[str, int]:
    """Object store bytes used on each alive node (this process must be connected to Ray)."""
    import ray
    from ray._private.internal_api import node_stats

    out = {}
    for node in ray.nodes():
        if node["Alive"]:
            reply = node_stats(node["NodeManagerAddress"], node["NodeManagerPort"], include_memory_info=False)
            out[node["NodeID"]] = int(reply.store_stats.object_store_bytes_used)
    return out


class ComponentSampler(PeriodicSampler):
    """``with ComponentSampler(pid, interval): ...``: the driver tree of ``pid``, the Ray workers
    by node and job, and (when ``poll_store``) each node's object store, sampled until the block ends."""

    def __init__(self, root: int, interval: float, poll_store: bool = True):
        super().__init__(interval)
        self.root = root
        self.samples: list[dict] = []
        self.jobs: dict[int, str | None] = {}
        self.store: dict[str, int] = {}
        self.store_error: str | None = None
        self._poll_store = poll_store
        self._store_stop = threading.Event()
        self._store_thread = threading.Thread(target=self._store_loop, daemon=True)

    def __enter__(self):
        if self._poll_store:
            self._poll_store_once()
            self._store_thread.start()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self._store_stop.set()
        if self._store_thread.is_alive():
            self._store_thread.join()

    def _poll_store_once(self) -> None:
        try:
            self.store = store_used_by_node()
        except Exception as exc:  # noqa: BLE001 - a figure missing, not a failed benchmark
            self.store_error = repr(exc)[:300]

    def _store_loop(self) -> None:
        while not self._store_stop.wait(1.0):
            self._poll_store_once()

    def sample(self) -> None:
        procs = read_processes()
        driver_rss = driver_anon = 0
        for pid in process_tree(self.root, procs):
            st = read_status(pid) or {}
            driver_rss += st.get("VmRSS", 0)
            driver_anon += st.get("RssAnon", 0)
        workers: dict[str, dict[str | None, list[int]]] = {}
        for pid, node in ray_workers(procs).items():
            if pid not in self.jobs or self.jobs[pid] is None:
                self.jobs[pid] = job_of(pid)
            anon = (read_status(pid) or {}).get("RssAnon", 0)
            acc = workers.setdefault(node, {}).setdefault(self.jobs[pid], [0, 0, 0])
            acc[0] += anon
            acc[1] = max(acc[1], anon)
            acc[2] += 1
        self.samples.append({"t": time.time(), "driver_rss": driver_rss, "driver_anon": driver_anon,
                             "workers": workers, "store": dict(self.store)})

    def summary(self, job: str | None, names: dict[str, str]) -> dict:
        out = summarize(self.samples, job, names)
        if self.store_error:
            out["object_store_poll_error"] = self.store_error
        return out
