"""Coalescing commit signals into promotions (tasks/coalesce.py), and the continuous-mode settings."""

from __future__ import annotations

import threading
import time

from tasks.coalesce import Coalescer
from tasks.settings import load_settings


def test_a_burst_of_commits_during_a_promotion_becomes_one_more_promotion():
    coalescer = Coalescer()
    promoted: list[int] = []
    stop = threading.Event()

    def promoter():
        while not stop.is_set():
            taken = coalescer.take(0.05)
            if taken:
                coalescer.started(taken)
                promoted.append(taken)
                time.sleep(0.2)  # a promotion slower than the commits

    thread = threading.Thread(target=promoter)
    thread.start()
    for _ in range(20):
        coalescer.mark()
        time.sleep(0.02)
    time.sleep(0.5)
    stop.set()
    thread.join()
    assert sum(promoted) == 20 == coalescer.stats.signals  # every commit promoted...
    assert coalescer.stats.promotions == len(promoted) <= 4  # ...by a few promotions, not a queue of 20
    assert coalescer.stats.served == 20 and coalescer.stats.ticks == 0


def test_a_wake_is_not_a_commit():
    coalescer = Coalescer()
    coalescer.wake()
    assert coalescer.take(1.0) == 0
    coalescer.started(0)
    assert (coalescer.stats.promotions, coalescer.stats.served, coalescer.stats.ticks) == (1, 0, 1)
    assert coalescer.take(0.01) == 0 and coalescer.stats.signals == 0


def test_scheduled_mode_is_the_default_and_continuous_is_chosen_by_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for key in ("LAKEHOUSE_PIPELINE_MODE", "LAKEHOUSE_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    assert load_settings().pipeline_mode == "scheduled"
    monkeypatch.setenv("LAKEHOUSE_PIPELINE_MODE", "continuous")
    monkeypatch.setenv("LAKEHOUSE_CONTINUOUS_COMMIT_SECONDS", "2.5")
    settings = load_settings()
    assert (settings.pipeline_mode, settings.continuous_commit_seconds) == ("continuous", 2.5)


def test_the_continuous_service_runs_only_in_continuous_mode(monkeypatch, tmp_path):
    from infra.services import all_services

    monkeypatch.chdir(tmp_path)
    for key in ("LAKEHOUSE_PIPELINE_MODE", "LAKEHOUSE_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    settings = load_settings()
    assert "continuous" not in [s.name for s in all_services(settings)]
    continuous = settings.model_copy(update={"pipeline_mode": "continuous"})
    assert [s.name for s in all_services(continuous)][-1] == "continuous"


def test_gold_builds_beside_the_next_promotion_and_the_last_promotion_is_built_before_both_stop(monkeypatch, tmp_path):
    """flows/continuous.py's two threads, with the flows stood in by slow stubs (what they run is
    tested elsewhere; this is the wiring): each promotion that committed dim_users wakes one gold
    build, builds overlap the next promotion, and stopping promotes and builds what is left."""
    import logging

    import flows.continuous as continuous
    from tasks.tables import SILVER_DIM_USERS

    events: list[tuple[str, str, float]] = []

    def silver_flow(settings):
        events.append(("silver", "begin", time.monotonic()))
        time.sleep(0.3)
        events.append(("silver", "end", time.monotonic()))
        return {"committed": {SILVER_DIM_USERS.identifier: 1}}

    def gold_flow(settings):
        events.append(("gold", "begin", time.monotonic()))
        time.sleep(0.3)
        events.append(("gold", "end", time.monotonic()))
        return {}

    monkeypatch.setattr(continuous, "silver_flow", silver_flow)
    monkeypatch.setattr(continuous, "gold_flow", gold_flow)
    for key in [k for k in __import__("os").environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(key)
    settings = load_settings(state_dir=str(tmp_path), continuous_safety_seconds=60.0)
    to_silver, to_gold, stop, silver_done = Coalescer(), Coalescer(), threading.Event(), threading.Event()
    log = logging.getLogger("test")
    promoter = threading.Thread(target=continuous._promote_forever, args=(settings, to_silver, to_gold, stop, silver_done, log))
    builder = threading.Thread(target=continuous._build_gold_forever, args=(settings, to_gold, silver_done, log))
    promoter.start()
    builder.start()
    for _ in range(3):  # three commits, each landing after the promotion before it finished
        to_silver.mark()
        time.sleep(0.4)
    stop.set()
    to_silver.wake()
    promoter.join(10)
    builder.join(10)
    assert not promoter.is_alive() and not builder.is_alive()
    def spans(who: str) -> list[tuple[float, float]]:
        times = [t for w, _, t in events if w == who]
        return list(zip(times[::2], times[1::2]))  # each stub's begin and end, in order (one thread each)

    silvers, golds = spans("silver"), spans("gold")
    assert len(silvers) == 3 and to_gold.stats.signals == 3
    assert golds and golds[-1][0] >= silvers[-1][1]  # the last promotion was built
    assert any(gb < se and sb < ge for gb, ge in golds for sb, se in silvers), events  # a build beside a promotion
