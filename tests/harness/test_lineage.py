"""The lineage in real git repositories: refs, worktrees, trailers, notes, plain-git views."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.loop.lineage import (
    ChangesOutsideAgent,
    Generation,
    Lineage,
    LineageError,
    NothingToCommit,
    branched_run_id,
)
from harness.loop.workspace import init_workspace


pytestmark = pytest.mark.usefixtures("no_git_identity")


@pytest.fixture
def workspace(tmp_path) -> Path:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "__init__.py").write_text('"""a tiny agent"""\n')
    (seed / "__main__.py").write_text("print('agent')\n")
    (seed / "lessons.md").write_text("- be careful\n")
    return init_workspace(tmp_path / "ws", seed=seed)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _evolve(lineage: Lineage, gen: int, parent: str, lesson: str, **trailers: str) -> str:
    worktree = lineage.worktree(gen, parent)
    with (worktree / "agent_seed" / "lessons.md").open("a") as handle:
        handle.write(f"- {lesson}\n")
    return lineage.commit(gen, message=f"gen {gen}: {lesson}", trailers=trailers)


def _user_checkout_state(workspace: Path) -> dict[str, str]:
    refs = [r for r in _git(workspace, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
            if not r.startswith(("refs/heads/ratchet/", "refs/notes/ratchet "))]
    return {
        "HEAD": _git(workspace, "symbolic-ref", "HEAD") + _git(workspace, "rev-parse", "HEAD"),
        "index": hashlib.sha256((workspace / ".git" / "index").read_bytes()).hexdigest(),
        "status": _git(workspace, "status", "--porcelain", "--untracked-files=all", "--ignored=no"),
        "files": _git(workspace, "diff", "HEAD") + (workspace / "scratch.txt").read_text(),
        "other refs": "\n".join(refs),
    }


def test_a_run_never_touches_the_users_checkout(workspace):
    """HEAD, index, working tree and every ref but ratchet's are as the user left them,
    dirty state included; ratchet writes only under ratchet/RUN/ and refs/notes/ratchet."""
    (workspace / "agent_seed" / "lessons.md").write_text("- the user's own edit, unstaged\n")
    (workspace / "agent_seed" / "__init__.py").write_text('"""staged by the user"""\n')
    _git(workspace, "add", "agent_seed/__init__.py")
    (workspace / "scratch.txt").write_text("untracked\n")
    before = _user_checkout_state(workspace)

    lineage = Lineage(workspace, "r1")
    lineage.start()
    one = _evolve(lineage, 1, lineage.best_branch, "one", **{"Ratchet-Verdict": "accepted"})
    lineage.set_note(one, {"score": "1/2"})
    lineage.move_best(one)
    _evolve(lineage, 2, lineage.best_branch, "two")
    lineage.remove_worktree(2)
    child = lineage.branch_from(1)
    _evolve(child, 1, child.best_branch, "child")

    assert _user_checkout_state(workspace) == before
    ours = set(_git(workspace, "for-each-ref", "--format=%(refname)").split()) - {
        r.split()[0] for r in before["other refs"].splitlines()}
    assert ours == {
        "refs/heads/ratchet/r1/gen-0000", "refs/heads/ratchet/r1/gen-0001",
        "refs/heads/ratchet/r1/gen-0002", "refs/heads/ratchet/r1/best",
        "refs/heads/ratchet/r1.from-0001/gen-0000", "refs/heads/ratchet/r1.from-0001/gen-0001",
        "refs/heads/ratchet/r1.from-0001/best", "refs/notes/ratchet"}


def test_generations_are_branches_that_plain_git_can_read(workspace):
    """`git log --graph ratchet/RUN/best` and `git diff gen-a gen-b -- agent_seed/` work with
    plain git, and the trailers say run, generation, parent and what the caller added."""
    lineage = Lineage(workspace, "r1")
    zero = lineage.start()
    one = _evolve(lineage, 1, lineage.best_branch, "one", **{"Ratchet-Score": "5/9"})
    lineage.move_best(one)
    _evolve(lineage, 2, lineage.best_branch, "two rejected", **{"Ratchet-Verdict": "rejected"})
    three = _evolve(lineage, 3, lineage.best_branch, "three", **{"Ratchet-Verdict": "accepted"})
    lineage.move_best(three)

    assert lineage.generations() == [
        Generation(0, zero.sha, None), Generation(1, one, 0),
        Generation(2, lineage.head(2), 1), Generation(3, three, 1)]
    assert lineage.best() == three
    graph = _git(workspace, "log", "--graph", "--format=%s", "ratchet/r1/best")
    assert [line.strip("* ") for line in graph.splitlines()] == ["gen 3: three", "gen 1: one", "ratchet: seed agent"]
    plain = _git(workspace, "diff", "ratchet/r1/gen-0001", "ratchet/r1/gen-0003", "--", "agent_seed/")
    assert plain == lineage.diff(1, 3) and "+- three" in plain and "two" not in plain
    trailers = _git(workspace, "log", "-1", "--format=%(trailers:only,unfold)", "ratchet/r1/gen-0003")
    assert trailers.splitlines()[:4] == ["Ratchet-Run: r1", "Ratchet-Generation: 3",
                                         "Ratchet-Parent: 1", "Ratchet-Verdict: accepted"]
    assert _git(workspace, "log", "-1", "--format=%an", "ratchet/r1/gen-0003").strip() == "ratchet"
    assert "accept gen-0003" in _git(workspace, "reflog", "ratchet/r1/best")


def test_start_is_idempotent_and_a_resumed_run_keeps_its_generation_zero(workspace):
    lineage = Lineage(workspace, "r1")
    first = lineage.start()
    (workspace / "README.md").write_text("moved on\n")
    _git(workspace, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "user work")
    assert Lineage(workspace, "r1").start() == first
    assert lineage.best() == first.sha
    with pytest.raises(LineageError, match="already started"):
        lineage.start("HEAD~0")


def test_commit_refuses_changes_outside_the_agent_and_commits_nothing(workspace):
    """The loop may edit only agent_seed/: a change elsewhere stops the commit whole."""
    lineage = Lineage(workspace, "r1")
    lineage.start()
    worktree = lineage.worktree(1, lineage.best_branch)
    (worktree / "agent_seed" / "lessons.md").write_text("- fine\n")
    (worktree / "README.md").write_text("not allowed\n")
    (worktree / "harness.py").write_text("not allowed either\n")
    with pytest.raises(ChangesOutsideAgent, match="README.md, harness.py"):
        lineage.commit(1, message="sneaky", trailers={})
    assert lineage.head(1) == lineage.best()
    assert _git(worktree, "diff", "--cached") == ""
    (worktree / "harness.py").unlink()
    _git(worktree, "checkout", "README.md")
    sha = lineage.commit(1, message="honest", trailers={})
    assert _git(workspace, "diff", "--name-only", f"{sha}^", sha).split() == ["agent_seed/lessons.md"]


def test_an_empty_change_is_committed_only_when_asked_and_keeps_the_tree_hash(workspace):
    lineage = Lineage(workspace, "r1")
    zero = lineage.start()
    lineage.worktree(1, lineage.best_branch)
    with pytest.raises(NothingToCommit):
        lineage.commit(1, message="nothing", trailers={})
    sha = lineage.commit(1, message="nothing, on purpose", trailers={}, allow_empty=True)
    assert sha != zero.sha
    assert lineage.tree_hash(sha) == lineage.tree_hash(zero.sha) == _git(
        workspace, "rev-parse", f"{zero.sha}:agent_seed").strip()
    two = _evolve(lineage, 2, lineage.branch(1), "changed")
    assert lineage.tree_hash(two) != lineage.tree_hash(sha)


def test_committing_again_after_a_crash_returns_the_same_commit(workspace):
    """Commits are immutable: a replay of the same commit is a no-op, anything else an error."""
    lineage = Lineage(workspace, "r1")
    lineage.start()
    sha = _evolve(lineage, 1, lineage.best_branch, "one", **{"Ratchet-Score": "1/2"})
    again = Lineage(workspace, "r1")
    assert again.commit(1, message="gen 1: one", trailers={"Ratchet-Score": "1/2"}) == sha
    with pytest.raises(LineageError, match="immutable"):
        again.commit(1, message="gen 1: one", trailers={"Ratchet-Score": "2/2"})
    assert again.head(1) == sha


def test_worktrees_are_reused_on_resume_and_rebuilt_after_a_crash(workspace):
    lineage = Lineage(workspace, "r1")
    lineage.start()
    worktree = lineage.worktree(1, lineage.best_branch)
    assert worktree == workspace / "runs" / "r1" / "worktrees" / "gen-0001"
    assert _git(worktree, "symbolic-ref", "HEAD").strip() == "refs/heads/ratchet/r1/gen-0001"
    (worktree / "agent_seed" / "lessons.md").write_text("- half a proposal\n")
    assert Lineage(workspace, "r1").worktree(1, lineage.best_branch) == worktree
    assert (worktree / "agent_seed" / "lessons.md").read_text() == "- half a proposal\n"
    lineage.reset(1)
    assert _git(worktree, "status", "--porcelain") == ""

    sha = _evolve(lineage, 1, lineage.best_branch, "one")
    lineage.remove_worktree(1)
    assert not worktree.exists() and str(worktree) not in _git(workspace, "worktree", "list")
    assert lineage.worktree(1, lineage.best_branch) == worktree and lineage.head(1) == sha

    # a crash left the directory registered but gone, or present but unregistered
    lineage.remove_worktree(1)
    lineage.worktree(2, lineage.best_branch)
    shutil.rmtree(lineage.worktree_path(2))
    assert (lineage.worktree(2, lineage.best_branch) / "agent_seed" / "__main__.py").exists()
    lineage.remove_worktree(2)
    lineage.worktree_path(2).mkdir(parents=True)
    (lineage.worktree_path(2) / "junk").write_text("x")
    assert (lineage.worktree(2, lineage.best_branch) / "agent_seed" / "__main__.py").exists()


def test_an_uncommitted_generation_is_not_listed_and_restarts_on_a_new_parent(workspace):
    lineage = Lineage(workspace, "r1")
    zero = lineage.start()
    one = _evolve(lineage, 1, lineage.best_branch, "one")
    lineage.worktree(2, lineage.branch(0))
    assert [g.number for g in lineage.generations()] == [0, 1]
    lineage.remove_worktree(2)
    lineage.worktree(2, lineage.branch(1))  # on resume, the parent is now gen 1
    assert lineage.head(2) == one
    two = lineage.commit(2, message="two", trailers={}, allow_empty=True)
    assert lineage.generations()[-1] == Generation(2, two, 1)
    assert zero.sha != one
    with pytest.raises(LineageError, match="already committed on"):
        lineage.remove_worktree(2)
        lineage.worktree(2, lineage.branch(0))


def test_notes_hold_metrics_per_run_without_rewriting_commits(workspace):
    """Metrics found after a commit go to refs/notes/ratchet; a commit shared by two runs
    (both started at the same HEAD) keeps each run's entry."""
    r1, r2 = Lineage(workspace, "r1"), Lineage(workspace, "r2")
    zero = r1.start()
    assert r2.start() == zero
    assert r1.get_note(zero.sha) is None
    r1.set_note(zero.sha, {"score": "3/9"})
    r2.set_note(zero.sha, {"score": "4/9"})
    r1.set_note(zero.sha, {"score": "3/9", "verdict": "baseline"})
    assert r1.get_note(zero.sha) == {"score": "3/9", "verdict": "baseline"}
    assert r2.get_note(zero.sha) == {"score": "4/9"}
    assert '"verdict": "baseline"' in _git(workspace, "notes", "--ref=ratchet", "show", zero.sha)
    assert _git(workspace, "rev-parse", "HEAD").strip() == zero.sha
    big = {"tasks": {f"task-{i}": {"resolved": i % 2 == 0, "log": "x" * 100} for i in range(2000)}}
    r1.set_note(zero.sha, big)  # larger than one command-line argument may be
    assert r1.get_note(zero.sha) == big


def test_best_moves_only_to_a_generation_of_the_run(workspace):
    lineage = Lineage(workspace, "r1")
    lineage.start()
    with pytest.raises(LineageError, match="not a committed generation"):
        lineage.move_best(_git(workspace, "-c", "user.name=u", "-c", "user.email=u@x",
                               "commit-tree", "-m", "stray", "HEAD^{tree}").strip())
    with pytest.raises(LineageError, match="not a commit"):
        lineage.move_best("no-such-ref")


def test_branch_from_starts_a_new_run_at_a_generation(workspace):
    """`ratchet resume r1 --from 1`: run r1.from-0001, whose generation 0 is r1's gen 1."""
    lineage = Lineage(workspace, "r1")
    lineage.start()
    one = _evolve(lineage, 1, lineage.best_branch, "one")
    _evolve(lineage, 2, lineage.branch(1), "two")
    child = lineage.branch_from(1)
    assert child.run == branched_run_id("r1", 1) == "r1.from-0001"
    assert child.generations() == [Generation(0, one, None)] and child.best() == one
    assert lineage.branch_from(1).generations() == child.generations()  # idempotent
    grand = _evolve(child, 1, child.best_branch, "child")
    assert child.generations()[-1] == Generation(1, grand, 0)
    assert [g.number for g in lineage.generations()] == [0, 1, 2]  # the old run is untouched
    assert sorted(Lineage.list_runs(workspace)) == ["r1", "r1.from-0001"]
    lineage.worktree(3, lineage.branch(2))
    with pytest.raises(LineageError, match="no commit yet"):
        lineage.branch_from(3)


def test_the_users_hooks_and_signing_settings_do_not_stop_a_run(workspace):
    hooks = workspace / ".git" / "hooks"
    for hook in ("pre-commit", "commit-msg", "post-checkout"):
        (hooks / hook).write_text("#!/bin/sh\nexit 1\n")
        (hooks / hook).chmod(0o755)
    _git(workspace, "config", "commit.gpgSign", "true")
    lineage = Lineage(workspace, "r1")
    lineage.start()
    assert _evolve(lineage, 1, lineage.best_branch, "one")


def test_a_run_id_must_be_a_safe_branch_component(workspace):
    for bad in ("", "a/b", "..", "x..y", "-r", "r.lock", "r 1"):
        with pytest.raises(ValueError):
            Lineage(workspace, bad)
