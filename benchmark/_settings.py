"""Where ratchet keeps things on the host. Environment variables override the defaults."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "runs_dir"]


def cache_dir() -> Path:
    """Downloads and image-build logs: ``$RATCHET_CACHE`` or ``~/.cache/ratchet``."""
    path = Path(os.environ.get("RATCHET_CACHE") or Path.home() / ".cache" / "ratchet")
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Run artifacts (logs, reports): ``$RATCHET_RUNS`` or ``./runs``."""
    path = Path(os.environ.get("RATCHET_RUNS") or "runs")
    path.mkdir(parents=True, exist_ok=True)
    return path
