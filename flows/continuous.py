"""Continuous mode: bronze commits every few seconds, silver and gold follow in the same warm process.

One long-running flow run (``continuous-pipeline``, with heartbeats) loops over ingest
micro-batches, each an ``ingest-bronze`` subflow bounded by ``continuous_commit_seconds`` and
``continuous_max_records``. A promoter thread in the same process runs ``promote-silver`` and
then ``build-gold`` as flow runs of their own whenever bronze committed: no interpreter, import or
Ray connection to start per run. Commits during a promotion only mark the lakehouse dirty
(``tasks.coalesce``): a burst becomes one more promotion, never a queue. The offsets and
watermarks stay where they always are, in the Iceberg snapshot summaries, so this mode and the
scheduled one can take over from each other at any commit.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

from prefect import flow, get_run_logger

from flows.gold import gold_flow
from flows.ingest import ingest_flow
from flows.silver import silver_flow
from tasks import warm_actors
from tasks.bronze_writers import NAME_PREFIX as WRITER_PREFIX
from tasks.coalesce import Coalescer
from tasks.compute import use_ray
from tasks.offsets import OffsetsOutOfRangeError
from tasks.settings import Settings, load_settings
from tasks.tables import SILVER_DIM_USERS

INGEST_FAILURES_TOLERATED = 5  # in a row; then the run fails and a person looks
_STOP = threading.Event()  # one continuous run per process; set by request_stop (SIGUSR1, tests)


def request_stop() -> None:
    """Ask the running ``continuous_flow`` to finish its batch, promote once more and return."""
    _STOP.set()


@flow(name="continuous-pipeline", log_prints=False)
def continuous_flow(run_seconds: Optional[float] = None, settings: Optional[Settings] = None) -> dict:
    """Ingest and promote until ``run_seconds`` pass (None: forever) or ``request_stop``; then
    promote what is left once more. Returns the counts of commits and promotions."""
    logger = get_run_logger()
    settings = settings or load_settings()
    stop = _STOP
    stop.clear()
    use_ray(settings)  # once, before the threads: Daft's runner can be chosen only once per process
    coalescer = Coalescer()
    promoter = threading.Thread(target=_promote_forever, args=(settings, coalescer, stop, logger),
                                name="lakehouse-promoter", daemon=True)
    promoter.start()
    totals = {"batches": 0, "records": 0}
    try:
        _ingest_forever(settings, coalescer, stop, run_seconds, totals, logger)
    finally:
        stop.set()
        coalescer.wake()  # the promoter promotes what is left, then returns
        promoter.join()
    result = {**totals, **coalescer.stats.as_dict()}
    logger.info("continuous mode stopped: %s", result)
    return result


def _ingest_forever(settings: Settings, coalescer: Coalescer, stop: threading.Event, run_seconds: float | None,
                    totals: dict, logger) -> None:
    """A bronze commit whenever records wait and ``continuous_commit_seconds`` passed since the
    last batch began (the time bound), or at once while a batch stopped at its size bound."""
    interval = settings.continuous_commit_seconds
    deadline = None if run_seconds is None else time.monotonic() + run_seconds
    failures = 0
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        began = time.monotonic()
        try:
            report = ingest_flow(max_records=settings.continuous_max_records, max_seconds=interval, max_batches=1,
                                 settings=settings)
            failures = 0
        except OffsetsOutOfRangeError:
            raise  # only an audited reset moves on
        except Exception:  # noqa: BLE001 - the subflow's run is Failed in the UI; keep going a while
            failures += 1
            logger.exception("ingest batch failed (%d in a row); the next one starts new writer actors", failures)
            if failures >= INGEST_FAILURES_TOLERATED:
                raise
            # A long-lived process outlives what its warm actors rely on (Ray may evict the working
            # dir they run from when the code changes): start the next batch on fresh ones.
            warm_actors.retire_stale(WRITER_PREFIX, keep=None, wait_seconds=10)
            stop.wait(interval)
            continue
        if report["records"]:
            totals["batches"] += 1
            totals["records"] += report["records"]
            coalescer.mark()
        if report["lag_left"] == 0:
            stop.wait(max(0.0, interval - (time.monotonic() - began)))


def _promote_forever(settings: Settings, coalescer: Coalescer, stop: threading.Event, logger) -> None:
    """Silver then gold, once per wake-up however many commits woke it. Every
    ``continuous_safety_seconds`` a promotion runs anyway (commits by other processes)."""
    safety = settings.continuous_safety_seconds
    gold_behind = False
    while True:
        commits = coalescer.take(0 if stop.is_set() else safety)
        if stop.is_set() and not commits:
            return
        coalescer.started(commits)
        try:
            silver = silver_flow(settings=settings)
            gold_behind = gold_behind or SILVER_DIM_USERS.identifier in silver.get("committed", {})
            if gold_behind or not commits:  # no commits: the safety tick, which also catches gold up
                gold_flow(settings=settings)
                gold_behind = False
        except Exception:  # noqa: BLE001 - the flow run is Failed in the UI; the next wake-up retries
            coalescer.failed()
            logger.exception("promotion failed; retrying after the next commit or in %.0f s", safety)
            if stop.is_set():
                return
            stop.wait(min(safety, 10.0))
            coalescer.wake()  # and try again at once, as a safety tick
