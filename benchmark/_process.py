"""Who made a thing, and whether its maker still runs.

Containers carry their maker's identity in a label and per-process temp dirs in their name
(``host:pid:start``; the start time, in clock ticks since boot from ``/proc/PID/stat``, tells
a live process from a later one that was given the same pid). What a killed process left
behind is then told apart from what a live one is using, without any registry of our own.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["alive", "identity", "start_ticks"]


def start_ticks(pid: int) -> str | None:
    """The start time of process `pid` (field 22 of ``/proc/PID/stat``); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may hold spaces and ')'
    return fields[19] if len(fields) > 19 else None


def identity(pid: int | None = None) -> str:
    """``host:pid:start`` of process `pid` (default: this one)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{start_ticks(pid) or '0'}"


def alive(ident: str) -> bool | None:
    """Whether the process `ident` names still runs; None when it ran on another host (or
    the identity cannot be read), so that nobody else's things are taken for dead."""
    host, pid, start = (ident.rsplit(":", 2) + ["", ""])[:3]
    if not pid.isdigit() or host != socket.gethostname():
        return None
    return start_ticks(int(pid)) == start
