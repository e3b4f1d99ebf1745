"""Everything a process that drives a run holds, taken at start and given back at the end.

`take` (``ratchet run``/``resume``, before anything of the run is written): the run's lock
(`harness.loop.runlock`; a live run is refused, a dead holder's lock taken over with a message and
the git lock files it left removed), a temp dir of its own (`harness.loop.scratch`), the run's
labels on every container made from now on (`benchmark._docker.label_run`), and a sweep of
what dead processes left (`harness.loop.leftovers.sweep`). `close` (a normal end, a stop, an
error) sweeps again, removes the temp dir and releases the lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchmark import docker_host as _docker
from harness.loop import leftovers
from harness.loop.lineage import Lineage
from harness.loop.runlock import RunLock, clear_stale_git_locks
from harness.loop.scratch import Scratch

__all__ = ["RunOwnership"]


@dataclass
class RunOwnership:
    workspace: Path
    run: str
    lock: RunLock
    scratch: Scratch
    say: Callable[[str], None]

    @classmethod
    def take(cls, workspace: Path, run: str, say: Callable[[str], None]) -> "RunOwnership":
        lock = RunLock.acquire(workspace / "runs" / run, run)
        if lock.took_over is not None:
            say(f"run {run}: took over the lock of {lock.took_over}, which is no longer running")
            clear_stale_git_locks(workspace, run, Lineage(workspace, run).notes_lock, say)
        try:
            leftovers.sweep(workspace, run, say)  # before the temp dir is ours: it looks in $TMPDIR
        except BaseException:
            lock.release()
            raise
        scratch = Scratch.enter(f"run.{run}")
        _docker.label_run(run, str(workspace))
        return cls(workspace, run, lock, scratch, say)

    def close(self) -> None:
        try:
            _docker.remove_process_containers()  # anything of ours still there (an abandon)
            self.scratch.leave()
            _docker.label_run(None)
            leftovers.sweep(self.workspace, self.run, self.say)
        finally:
            self.lock.release()
