"""One writer per run: an OS file lock on ``runs/RUN/lock``, held for the run's whole life.

Two processes driving one run evaluate, propose and pay twice, so ``ratchet run`` and
``ratchet resume`` take ``fcntl.flock`` on the run's lock file before anything else and keep
it until they exit. The kernel drops the lock when its holder dies, however it dies (kill -9
included), so a lock is never stale; the file's text (the holder's pid, host, start time and
command) is only there to say who holds it. A file with a holder's text whose lock is free
was left by a process that died: the next one takes it over and says so, then removes the
git lock files a killed git of that run left (``index.lock`` of its worktrees, its branches'
``*.lock``, ``refs/notes/ratchet.lock``), which would otherwise fail every resume.

``flocked`` is the same lock for short critical sections (the workspace-wide notes lock of
`harness.loop.lineage`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from harness.errors import RunLocked

__all__ = ["Holder", "RunLock", "RunLocked", "clear_stale_git_locks", "flocked", "git_common_dir"]

LOCK_NAME = "lock"


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    started: str
    command: str

    @classmethod
    def me(cls) -> "Holder":
        return cls(os.getpid(), socket.gethostname(),
                   datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                   " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300])

    @classmethod
    def read(cls, path: Path) -> "Holder | None":
        try:
            data = json.loads(path.read_text() or "null")
            return cls(int(data["pid"]), str(data["host"]), str(data["started"]), str(data["command"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, since {self.started} (`{self.command}`)"


@contextmanager
def flocked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on `path` (made if missing) for the block; blocks until free."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class RunLock:
    """The lock of one run, held from `acquire` to `release` (or the process's end)."""

    def __init__(self, path: Path, fd: int, took_over: Holder | None):
        self.path, self._fd, self.took_over = path, fd, took_over

    @staticmethod
    def path_of(run_dir: Path) -> Path:
        return run_dir / LOCK_NAME

    @classmethod
    def holder(cls, run_dir: Path) -> Holder | None:
        """Who holds the run's lock now; None when nobody does (a probe: takes nothing)."""
        path = cls.path_of(run_dir)
        if not path.exists():
            return None
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return Holder.read(path) or Holder(0, "?", "?", "?")
        finally:
            os.close(fd)
        return None

    @classmethod
    def refuse_if_live(cls, run_dir: Path, run: str) -> None:
        """Raise RunLocked naming the holder when the run is live; nothing otherwise."""
        holder = cls.holder(run_dir)
        if holder is not None:
            raise _live(run, holder)

    @classmethod
    def acquire(cls, run_dir: Path, run: str) -> "RunLock":
        """Take the run's lock, or raise RunLocked naming the live holder. `took_over` is
        the dead holder whose lock was taken over (None after a clean end or a first start)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        path = cls.path_of(run_dir)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _live(run, Holder.read(path)) from None
        previous = Holder.read(path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(asdict(Holder.me())) + "\n").encode(), 0)
        os.fsync(fd)
        return cls(path, fd, previous)

    def release(self) -> None:
        """A clean end: the file is emptied, so the next holder knows nobody died holding it."""
        if self._fd < 0:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)
            self._fd = -1


def _live(run: str, holder: Holder | None) -> RunLocked:
    return RunLocked(f"run {run} is live: it is held by {holder or 'another process'}. Wait for "
                     "it to end, or stop it first (Ctrl-C in its terminal, or `kill -TERM "
                     f"{holder.pid if holder else 'PID'}`), then resume")


def git_common_dir(workspace: Path) -> Path:
    """The git directory shared by the workspace and all its worktrees."""
    dot_git = workspace / ".git"
    if dot_git.is_file():  # the workspace is itself a linked worktree
        gitdir = Path(dot_git.read_text().split("gitdir:", 1)[1].strip())
        common = gitdir / "commondir"
        return (gitdir / common.read_text().strip()).resolve() if common.exists() else gitdir
    return dot_git


def clear_stale_git_locks(workspace: Path, run: str, notes_lock: Path,
                          say: Callable[[str], None] = lambda message: None) -> list[Path]:
    """Remove the git lock files a dead process of `run` left: only call it holding the run's
    lock (so no live process of the run can own them). ``refs/notes/ratchet.lock`` is shared
    by the workspace's runs: it is removed holding `notes_lock`, which every ratchet notes
    writer holds while git writes the notes."""
    common = git_common_dir(workspace)
    found: list[Path] = []
    refs = common / "refs" / "heads" / "ratchet" / run
    if refs.is_dir():
        found += sorted(refs.rglob("*.lock"))
    worktrees = workspace / "runs" / run / "worktrees"
    for tree in sorted(worktrees.glob("gen-*")) if worktrees.is_dir() else []:
        link = tree / ".git"
        if not link.is_file():
            continue
        gitdir = Path(link.read_text().split("gitdir:", 1)[-1].strip())
        found += [gitdir / name for name in ("index.lock", "HEAD.lock") if (gitdir / name).exists()]
    removed = []
    for path in found:
        path.unlink(missing_ok=True)
        removed.append(path)
    notes = common / "refs" / "notes" / "ratchet.lock"
    if notes.exists():
        with flocked(notes_lock):
            if notes.exists() and time.time() - notes.stat().st_mtime > 2:
                notes.unlink(missing_ok=True)
                removed.append(notes)
    for path in removed:
        say(f"removed a stale git lock file left by a killed process: {path}")
    return removed
