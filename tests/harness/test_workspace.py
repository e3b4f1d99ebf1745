"""Workspaces: made from the seed agent in a fresh repo, found from anywhere inside one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.loop.lineage import Lineage
from harness.loop.workspace import (
    WorkspaceError,
    find_workspace,
    init_workspace,
    is_workspace,
)
from tests.conftest import ROOT


pytestmark = pytest.mark.usefixtures("no_git_identity")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_init_copies_the_seed_without_bytecode_and_commits_it_as_ratchet(tmp_path):
    seed = tmp_path / "seed"
    shutil.copytree(ROOT / "agent_seed", seed)
    (seed / "__pycache__").mkdir(exist_ok=True)  # a seed that has been run
    (seed / "__pycache__" / "agent.cpython-311.pyc").write_bytes(b"\0")
    (seed / "stray.pyc").write_bytes(b"\0")
    workspace = init_workspace(tmp_path / "ws", seed=seed)
    assert workspace == (tmp_path / "ws").resolve()
    tracked = _git(workspace, "ls-files").split()
    assert "agent_seed/__main__.py" in tracked and ".gitignore" in tracked and "README.md" in tracked
    assert not [p for p in tracked if "__pycache__" in p or p.endswith(".pyc")]
    assert _git(workspace, "log", "--format=%an <%ae>|%cn").strip() == "ratchet <ratchet@localhost>|ratchet"
    assert _git(workspace, "status", "--porcelain") == ""
    (workspace / "runs" / "r1").mkdir(parents=True)
    (workspace / "runs" / "r1" / "journal.jsonl").write_text("{}\n")
    (workspace / "agent_seed" / "__pycache__").mkdir(exist_ok=True)
    (workspace / "agent_seed" / "__pycache__" / "agent.cpython-311.pyc").write_bytes(b"\0")
    assert _git(workspace, "status", "--porcelain") == "", "run artifacts and bytecode are ignored"


def test_init_of_a_workspace_is_a_no_op(tmp_path):
    workspace = init_workspace(tmp_path / "ws", seed=ROOT / "agent_seed")
    (workspace / "agent_seed" / "lessons.md").write_text("evolved\n")
    _git(workspace, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "evolve")
    head = _git(workspace, "rev-parse", "HEAD")
    assert is_workspace(workspace)
    assert init_workspace(workspace, seed=ROOT / "agent_seed") == workspace
    assert _git(workspace, "rev-parse", "HEAD") == head
    assert (workspace / "agent_seed" / "lessons.md").read_text() == "evolved\n"


def test_init_refuses_a_repository_that_holds_something_else(tmp_path):
    other = tmp_path / "project"
    other.mkdir()
    _git(other, "init", "-q")
    (other / "main.c").write_text("int main(){}\n")
    _git(other, "add", "main.c")
    _git(other, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "c")
    with pytest.raises(ValueError, match="no agent_seed/"):
        init_workspace(other, seed=ROOT / "agent_seed")
    assert not (other / "agent_seed").exists()


def test_init_refuses_a_non_empty_directory_and_a_non_agent_seed(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(WorkspaceError, match="not empty"):
        init_workspace(tmp_path / "full", seed=ROOT / "agent_seed")
    with pytest.raises(WorkspaceError, match="not an agent package"):
        init_workspace(tmp_path / "ws", seed=ROOT / "docs")


def test_init_fills_an_empty_repository(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    assert init_workspace(empty, seed=ROOT / "agent_seed") == empty.resolve()
    assert is_workspace(empty)


def test_find_workspace_from_inside_a_subdirectory_a_nested_repo_and_a_run_worktree(tmp_path):
    workspace = init_workspace(tmp_path / "ws", seed=ROOT / "agent_seed")
    assert find_workspace(workspace / "agent_seed") == workspace
    nested = workspace / "runs" / "bench" / "task-repo"
    nested.mkdir(parents=True)
    _git(nested, "init", "-q")
    assert find_workspace(nested) == workspace
    lineage = Lineage(workspace, "r1")
    lineage.start()
    worktree = lineage.worktree(1, lineage.best_branch)
    assert find_workspace(worktree / "agent_seed") == workspace


def test_find_workspace_outside_one_says_how_to_make_one(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(WorkspaceError, match="ratchet init"):
        find_workspace(tmp_path / "plain")


def test_this_repository_is_a_workspace():
    assert is_workspace(ROOT)
    assert find_workspace(ROOT / "harness") == ROOT
