"""A figure sampled on a background thread while a benchmark step runs: the memory samplers of
the benchmarks share this loop and differ only in what ``sample`` reads."""

from __future__ import annotations

import threading
import time


class PeriodicSampler:
    """``with sampler: ...`` calls ``sample()`` every ``interval`` seconds until the block ends."""

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.sample()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def sample(self) -> None:
        raise NotImplementedError
