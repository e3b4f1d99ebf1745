"""Shared by the perf scripts (run as `python perf/NAME.py`, so this imports as `_common`)."""

from __future__ import annotations

import os
import statistics
import threading
import time

__all__ = ["LoadSampler", "time_calls"]


class LoadSampler:
    """The 1-minute load average every 5 s while the script runs: a busy machine (other
    work than this script's) inflates every absolute time, so the report says so."""

    def __init__(self) -> None:
        self.samples = [os.getloadavg()[0]]
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            time.sleep(5)
            self.samples.append(os.getloadavg()[0])

    def report(self) -> str:
        cpus = os.cpu_count() or 1
        busy = statistics.median(self.samples) > cpus  # more than this script's own work
        return (f"load average (1 min) during the run: median {statistics.median(self.samples):.2f}, "
                f"max {max(self.samples):.2f} on {cpus} CPUs"
                + ("  -- WARNING: other work shared the machine; absolute times are inflated"
                   if busy else ""))


def time_calls(phase: threading.local, cls: type, name: str, label: str, *, stamp: bool = False) -> None:
    """Wrap ``cls.name`` so each call adds its duration to ``phase.sink[label]`` (when a sink
    is set on this thread); the code path is unchanged. ``stamp`` also records when the
    last call returned, as ``sink["@" + label]`` (absolute time)."""
    original = getattr(cls, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink = getattr(phase, "sink", None)
            if sink is not None:
                sink[label] += time.perf_counter() - started
                if stamp:
                    sink["@" + label] = time.time()

    setattr(cls, name, wrapper)
