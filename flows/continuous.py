"""Continuous mode: bronze commits every few seconds, silver and gold follow in the same warm process.

One long-running flow run (``continuous-pipeline``, with heartbeats) loops over ingest
micro-batches, each an ``ingest-bronze`` subflow bounded by ``continuous_commit_seconds`` and
``continuous_max_records``. Two threads in the same process run the promotions as flow runs of
their own: the promoter runs ``promote-silver`` whenever bronze committed, and the builder runs
``build-gold`` whenever a promotion finished, beside the next promotion rather than after it. No
interpreter, import or Ray connection to start per run. Commits during a promotion or a build
only mark the next stage dirty (``tasks.coalesce``): a burst becomes one more run, never a queue.
The offsets and watermarks stay where they always are, in the Iceberg snapshot summaries, so this
mode and the scheduled one can take over from each other at any commit.
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
from tasks.lineage.run import completed_in_background
from tasks.compute import use_ray
from tasks.offsets import OffsetsOutOfRangeError
from tasks.quality.steps import prewarm as prewarm_quality
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
    promote what is left once more. Returns the counts of commits and promotions (silver's at the
    top, gold's under ``gold``)."""
    logger = get_run_logger()
    settings = settings or load_settings()
    stop = _STOP
    stop.clear()
    use_ray(settings)  # once, before the threads: Daft's runner can be chosen only once per process
    prewarm_quality(settings)  # GX's import (seconds) now, not in the first promotion after traffic
    to_silver, to_gold = Coalescer(), Coalescer()
    silver_done = threading.Event()
    promoter = threading.Thread(target=_promote_forever, args=(settings, to_silver, to_gold, stop, silver_done, logger),
                                name="lakehouse-promoter", daemon=True)
    builder = threading.Thread(target=_build_gold_forever, args=(settings, to_gold, silver_done, logger),
                               name="lakehouse-gold", daemon=True)
    totals = {"batches": 0, "records": 0}
    with completed_in_background():
        promoter.start()
        builder.start()
        try:
            _ingest_forever(settings, to_silver, stop, run_seconds, totals, logger)
        finally:
            stop.set()
            to_silver.wake()  # the promoter promotes what is left, then the builder builds it, and both return
            promoter.join()
            builder.join()
    gold = to_gold.stats.as_dict()
    result = {**totals, **to_silver.stats.as_dict(), "gold": gold}
    result["failures"] += gold["failures"]
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


def _promote_forever(settings: Settings, to_silver: Coalescer, to_gold: Coalescer, stop: threading.Event,
                     silver_done: threading.Event, logger) -> None:
    """Silver once per wake-up however many bronze commits woke it; each promotion that committed
    dim_users (the last commit of a promotion) wakes the gold builder, which runs beside the next
    promotion rather than after it."""
    def promote() -> None:
        silver = silver_flow(settings=settings)
        if SILVER_DIM_USERS.identifier in silver.get("committed", {}):
            to_gold.mark()

    try:
        _run_when_woken(settings, to_silver, promote, stop, "silver promotion", logger)
    finally:
        silver_done.set()
        to_gold.wake()


def _build_gold_forever(settings: Settings, to_gold: Coalescer, silver_done: threading.Event, logger) -> None:
    """Gold once per wake-up however many silver promotions woke it (a burst of them is one
    build from the newest). Returns after the promoter's last promotion is built."""
    _run_when_woken(settings, to_gold, lambda: gold_flow(settings=settings), silver_done, "gold build", logger)


def _run_when_woken(settings: Settings, signals: Coalescer, run, until: threading.Event, what: str, logger) -> None:
    """``run()`` once per wake-up of ``signals`` however many marks woke it, and every
    ``continuous_safety_seconds`` anyway (commits by other processes; it also catches up after a
    failure). Once ``until`` is set, runs for what is still marked, then returns. A failed run is
    Failed in the UI; it is retried after the next mark or within 10 s."""
    safety = settings.continuous_safety_seconds
    while True:
        commits = signals.take(0 if until.is_set() else safety)
        if until.is_set() and not commits:
            return
        signals.started(commits)
        try:
            run()
        except Exception:  # noqa: BLE001 - the flow run is Failed in the UI; the next wake-up retries
            signals.failed()
            logger.exception("%s failed; retrying after the next signal or in %.0f s", what, min(safety, 10.0))
            if until.is_set():
                return
            until.wait(min(safety, 10.0))
            signals.wake()  # and try again at once, as a safety tick
