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
