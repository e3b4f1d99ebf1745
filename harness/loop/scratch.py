"""One temp dir per process and purpose (a command, a run it drives), named for both.

Agent copies (`harness.run.agent_source`), gateway socket dirs (`harness.models.gateway`), the self
proposer's scratch repos: everything a command makes with `tempfile` lands in
``$TMPDIR/ratchet-LABEL-PID-START/`` while it runs (``tempfile.tempdir`` points there, in this
process only): every ``ratchet`` command enters one (``cmd.bench``), and a run it drives
another (``run.RUN``). A normal end removes the whole directory; after a kill the name says
whose it was, and `harness.loop.leftovers` removes it once that process is gone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Scratch", "SCRATCH_NAME", "leave_all", "owner_alive", "scratch_name", "system_temp"]

SCRATCH_NAME = re.compile(r"ratchet-(?P<label>[A-Za-z0-9._]*)-(?P<pid>\d+)-(?P<start>\d+)")
_MAX_LABEL = 32
_MAX_PATH = 64
"""Unix socket paths are limited to 108 bytes, and a gateway's socket dir goes in here."""


def owner_alive(name: str) -> bool | None:
    """Whether the process a scratch dir's `name` names still runs (None: not a scratch dir)."""
    match = SCRATCH_NAME.fullmatch(name)
    if match is None:
        return None
    from benchmark import start_ticks

    return start_ticks(int(match["pid"])) == match["start"]


def _own_start_ticks() -> str:
    """This process's start time, as `benchmark.start_ticks` reads it for any process
    (field 22 of ``/proc/PID/stat``), without importing `benchmark`: every command enters a
    scratch dir, and the Docker SDK and swebench would double a light command's start."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return "0"
    return fields[19] if len(fields) > 19 else "0"


def scratch_name(label: str) -> str:
    """The name of this process's scratch dir for `label`, ``ratchet-LABEL-PID-START``: what
    `owner_alive` reads, so the sweep removes the dir once this process is gone."""
    clean = re.sub(r"[^A-Za-z0-9._]", "_", label)[:_MAX_LABEL]
    return f"ratchet-{clean}-{os.getpid()}-{_own_start_ticks()}"


_entered: list["Scratch"] = []
"""This process's scratch dirs still entered, the first entered first."""


def system_temp() -> Path:
    """The temp dir outside every scratch dir of this process: where scratch dirs (and loose
    ratchet temp dirs) are made, and where `harness.loop.leftovers` looks for them."""
    return _entered[0].base if _entered else Path(tempfile.gettempdir())


@dataclass
class Scratch:
    """This process's temp dir for `label` (e.g. ``run.r1``), made and made current by `enter`."""

    path: Path
    base: Path
    """The temp dir it was made in (never another scratch dir: they do not nest)."""
    _previous: str | None = None

    @classmethod
    def enter(cls, label: str) -> "Scratch":
        base = system_temp()
        path = base / scratch_name(label)
        if len(str(path)) > _MAX_PATH:  # a long TMPDIR: the name says whose it is, and a
            # digest tells a command's dir from its run's
            path = base / scratch_name(hashlib.sha256(label.encode()).hexdigest()[:6])
        path.mkdir(mode=0o755, exist_ok=True)
        path.chmod(0o755)  # a sandbox's user reads agent copies bind-mounted from here
        scratch = cls(path, base, tempfile.tempdir)
        tempfile.tempdir = str(path)
        _entered.append(scratch)
        return scratch

    def leave(self) -> None:
        """Restore the temp dir and remove this one, with all it holds."""
        if tempfile.tempdir == str(self.path):
            tempfile.tempdir = self._previous
        if self in _entered:
            _entered.remove(self)
        shutil.rmtree(self.path, ignore_errors=True)


def leave_all() -> None:
    """Leave every scratch dir this process entered, the last first (for an exit that runs
    no ``finally``)."""
    for scratch in reversed(list(_entered)):
        scratch.leave()
