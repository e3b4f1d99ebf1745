"""One temp dir per process that drives a run, named for the run and the process.

Agent copies (`harness.run.agent_source`), gateway socket dirs (`harness.models.gateway`), the self
proposer's scratch repos: everything a run makes with `tempfile` lands in
``$TMPDIR/ratchet-run.RUN-PID-START/`` while the run is driven (``tempfile.tempdir`` points
there, in this process only). A normal end removes the whole directory; after a kill the
name says whose it was, and `harness.loop.leftovers` removes it once that process is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmark import start_ticks

__all__ = ["Scratch", "SCRATCH_NAME", "owner_alive"]

SCRATCH_NAME = re.compile(r"ratchet-(?P<label>[A-Za-z0-9._]*)-(?P<pid>\d+)-(?P<start>\d+)")
_MAX_LABEL = 32
_MAX_PATH = 64
"""Unix socket paths are limited to 108 bytes, and a gateway's socket dir goes in here."""


def owner_alive(name: str) -> bool | None:
    """Whether the process a scratch dir's `name` names still runs (None: not a scratch dir)."""
    match = SCRATCH_NAME.fullmatch(name)
    if match is None:
        return None
    return start_ticks(int(match["pid"])) == match["start"]


@dataclass
class Scratch:
    """This process's temp dir for `label` (e.g. ``run.r1``), made and made current by `enter`."""

    path: Path
    _previous: str | None = None

    @classmethod
    def enter(cls, label: str) -> "Scratch":
        clean = re.sub(r"[^A-Za-z0-9._]", "_", label)[:_MAX_LABEL]
        pid = os.getpid()
        base, tail = Path(tempfile.gettempdir()), f"{pid}-{start_ticks(pid) or 0}"
        path = base / f"ratchet-{clean}-{tail}"
        if len(str(path)) > _MAX_PATH:  # a long TMPDIR: the name only says whose it is
            path = base / f"ratchet--{tail}"
        path.mkdir(mode=0o755, exist_ok=True)
        path.chmod(0o755)  # a sandbox's user reads agent copies bind-mounted from here
        scratch = cls(path, tempfile.tempdir)
        tempfile.tempdir = str(path)
        return scratch

    def leave(self) -> None:
        """Restore the temp dir and remove this one, with all it holds."""
        if tempfile.tempdir == str(self.path):
            tempfile.tempdir = self._previous
        shutil.rmtree(self.path, ignore_errors=True)
