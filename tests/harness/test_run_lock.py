"""One writer per run, shown with real processes: the run lock, the workspace-wide notes lock,
a dead holder's lock and git lock files taken over. No Docker needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import git
import pytest

from harness.loop.lineage import Lineage
from harness.loop.runlock import RunLock, RunLocked, clear_stale_git_locks
from harness.loop.scratch import Scratch, owner_alive
from harness.loop.workspace import init_workspace
from tests.conftest import ROOT

RATCHET = str(Path(sys.executable).with_name("ratchet"))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return init_workspace(tmp_path / "ws", seed=ROOT / "agent_seed")


def _holder(run_dir: Path, then: str = "time.sleep(600)") -> subprocess.Popen:
    """A real process that takes the run's lock, says so on stdout, then does `then`."""
    code = textwrap.dedent(f"""
        import sys, time, os, signal
        from pathlib import Path
        from harness.loop.runlock import RunLock
        lock = RunLock.acquire(Path({str(run_dir)!r}), "r1")
        print("locked", flush=True)
    """) + textwrap.dedent(then)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_resume_of_a_live_run_is_refused_naming_its_holder(workspace):
    """While another process holds RUN's lock, `ratchet resume RUN` and `ratchet run --run-id
    RUN` are refused (exit 2) with the holder's pid and host, and write nothing."""
    run_dir = workspace / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "settings.json").write_text(json.dumps({"run": "r1", "suite": "quickstart",
                                                       "generations": 1, "agent_model": "m",
                                                       "meta_model": "m"}))
    holder = _holder(run_dir)
    try:
        before = sorted(p.name for p in run_dir.iterdir())
        for args in (["resume", "r1"], ["run", "--suite", "quickstart", "--run-id", "r1"]):
            out = subprocess.run([RATCHET, *args], cwd=workspace, capture_output=True, text=True,
                                 env={**os.environ, "COLUMNS": "300"})
            assert out.returncode == 2, out.stdout + out.stderr
            assert "run r1 is live" in out.stderr and f"pid {holder.pid}" in out.stderr
            assert f"kill -TERM {holder.pid}" in out.stderr
        assert sorted(p.name for p in run_dir.iterdir()) == before
        with pytest.raises(RunLocked, match=f"pid {holder.pid}"):
            RunLock.acquire(run_dir, "r1")
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holders_lock_is_taken_over_and_its_git_locks_removed(workspace):
    """A holder killed with SIGKILL leaves its holder text and git lock files (a worktree's
    index.lock, a branch's .lock, refs/notes/ratchet.lock); the next one takes the lock over
    knowing whom from, and after the cleanup the git steps that failed work again."""
    lineage = Lineage(workspace, "r1")
    lineage.start()
    tree = lineage.worktree(1, lineage.branch(0))
    (tree / "agent_seed" / "lessons.md").write_text("a lesson\n")
    gitdir = Path((tree / ".git").read_text().split("gitdir:", 1)[1].strip())
    common = workspace / ".git"
    run_dir = workspace / "runs" / "r1"
    holder = _holder(run_dir, then=(f"""
        for path in ({str(gitdir / "index.lock")!r}, {str(common / "refs/notes/ratchet.lock")!r},
                     {str(common / "refs/heads/ratchet/r1/gen-0001.lock")!r}):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text("")
            os.utime(path, (time.time() - 60, time.time() - 60))
        os.kill(os.getpid(), signal.SIGKILL)
    """))
    holder.wait()
    assert holder.returncode == -signal.SIGKILL
    # the failure as it was: every git step of the run fails on the dead git's lock files
    with pytest.raises(git.GitCommandError, match="index.lock"):
        lineage.commit(1, message="x", trailers={})
    with pytest.raises(git.GitCommandError, match="ratchet.lock"):
        lineage.set_note(lineage.head(0), {"x": 1})

    lock = RunLock.acquire(run_dir, "r1")
    try:
        assert lock.took_over is not None and lock.took_over.pid == holder.pid
        said: list[str] = []
        removed = clear_stale_git_locks(workspace, "r1", lineage.notes_lock, said.append)
        assert len(removed) == 3 and len(said) == 3 and "stale git lock" in said[0]
        sha = lineage.commit(1, message="x", trailers={})
        lineage.set_note(sha, {"x": 1})
        assert lineage.get_note(sha) == {"x": 1}
    finally:
        lock.release()
    again = RunLock.acquire(run_dir, "r1")  # a clean release leaves nobody to take over from
    assert again.took_over is None
    again.release()


_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import git
    from harness.loop import lineage as module
    from harness.loop.lineage import Lineage
    workspace, run, locked, go = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", Path(sys.argv[4])
    module.LOCK_NOTES = locked
    shas = sys.argv[5:]
    line = Lineage(workspace, run)
    while not go.exists():
        time.sleep(0.001)
    for index, sha in enumerate(shas):
        for attempt in range(200):  # git's own ref lock refuses a concurrent writer: retry it
            try:
                line.set_note(sha, {"index": index})
                break
            except git.GitCommandError as exc:
                if "lock" not in str(exc):
                    raise
                time.sleep(0.002)
        else:
            raise SystemExit(f"could not write the note of {sha}")
""")


def _write_notes_concurrently(workspace: Path, shas: tuple[list[str], list[str]], locked: bool,
                              tmp: Path) -> int:
    """Two processes, one run each, write a note entry on each of their `shas` at the same
    time; the entries found afterwards."""
    go = tmp / f"go-{locked}-{time.monotonic_ns()}"
    runs = [f"w{locked:d}a", f"w{locked:d}b"]
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(workspace), run, str(int(locked)),
                               str(go), *mine], cwd=ROOT) for run, mine in zip(runs, shas)]
    time.sleep(1.0)  # both started and waiting
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    found = 0
    for run, mine in zip(runs, shas):
        found += sum(1 for sha in mine if run in Lineage(workspace, run)._all_notes(sha))
    return found


@pytest.mark.parametrize("same", [True, False], ids=["same-commits", "different-commits"])
def test_concurrent_notes_writers_lose_nothing(workspace, tmp_path, same):
    """Two processes writing 100 notes each (on the same 100 commits, or on 100 each of
    their own): with the workspace-wide notes lock all 200 entries survive; with it off
    (`git notes add` rewrites the whole ref from what it read) entries are lost."""
    repo = git.Repo(workspace)
    tree = repo.head.commit.tree.hexsha
    made = [repo.git.commit_tree(tree, "-p", "HEAD", "-m", f"c{i}-{same}") for i in range(200)]
    shas = (made[:100], made[:100]) if same else (made[:100], made[100:])
    assert _write_notes_concurrently(workspace, shas, True, tmp_path) == 200
    unlocked = [_write_notes_concurrently(workspace, shas, False, tmp_path) for _ in range(3)]
    print(f"entries found with the lock off: {unlocked} of 200")
    assert min(unlocked) < 200
    # the ref stays one plain notes ref that git reads
    assert "w1a" in repo.git.notes("--ref=ratchet", "show", shas[0][0])


def test_a_dead_processes_temp_dir_is_told_from_a_live_ones(tmp_path):
    """The per-process temp dir's name says whose it is: a dead pid (or a reused one, with
    another start time) is dead."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    mine = Scratch.enter("run.x")
    try:
        assert owner_alive(mine.path.name) is True
        assert owner_alive(f"ratchet-run.x-{child.pid}-1") is False
        assert owner_alive(f"ratchet-run.x-{os.getpid()}-1") is False  # pid reused: other start
        assert owner_alive("ratchet-agent-abc") is None
    finally:
        mine.leave()
    assert not mine.path.exists()
