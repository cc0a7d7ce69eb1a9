"""Commit signals → promotions, coalesced: at most one promotion running and one pending.

Continuous mode commits bronze every few seconds; a promotion can take longer than that. A queue
of one promotion per commit would fall further behind with every burst, so a commit during a
promotion only marks the lakehouse dirty, and one more promotion (which reads every bronze
snapshot after silver's watermark anyway) follows the running one.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass


@dataclass
class CoalesceStats:
    signals: int = 0  # commits announced
    promotions: int = 0  # promotions started
    served: int = 0  # commits taken by a promotion (coalesced ones share it)
    ticks: int = 0  # promotions started without a commit (safety ticks, retries)
    failures: int = 0  # promotions that raised

    def as_dict(self) -> dict:
        return asdict(self)


class Coalescer:
    """A dirty flag with counts. ``mark`` never blocks; ``take`` waits for the flag and clears it."""

    def __init__(self) -> None:
        self._dirty = threading.Event()
        self._lock = threading.Lock()
        self._pending = 0
        self.stats = CoalesceStats()

    def mark(self) -> None:
        """A commit happened."""
        with self._lock:
            self.stats.signals += 1
            self._pending += 1
        self._dirty.set()

    def wake(self) -> None:
        """Wake the waiter without a commit (shutting down)."""
        self._dirty.set()

    def take(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for a mark or a wake; returns the commits taken (0: none)."""
        self._dirty.wait(timeout)
        with self._lock:
            self._dirty.clear()
            taken, self._pending = self._pending, 0
        return taken

    def started(self, commits: int = 0) -> None:
        """A promotion began for ``commits`` commits taken (0: a safety tick or a retry)."""
        with self._lock:
            self.stats.promotions += 1
            self.stats.served += commits
            self.stats.ticks += commits == 0

    def failed(self) -> None:
        with self._lock:
            self.stats.failures += 1
