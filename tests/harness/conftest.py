"""Fixtures shared by the harness tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    """A worktree holding a copy of the real seed agent at tmp/wt/agent_seed."""
    root = tmp_path / "wt"
    shutil.copytree(ROOT / "agent_seed", root / "agent_seed",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture
def no_git_identity(tmp_path, monkeypatch):
    """A machine with no git identity or user config: ratchet's commits must not need one."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(name, raising=False)


def quickstart_slice(directory: Path, ids: tuple[str, ...]) -> Path:
    """A task file holding these quickstart tasks only: a loop test's suite, kept quick."""
    from benchmark import load_suite

    tasks = {t.instance_id: t for t in load_suite("quickstart").tasks}
    path = directory / "slice.jsonl"
    path.write_text("".join(tasks[i].model_dump_json(exclude_none=True) + "\n" for i in ids))
    return path


def new_workspace(path: Path) -> Path:
    """`ratchet init PATH` through the real CLI."""
    import subprocess
    import sys

    out = subprocess.run([str(Path(sys.executable).with_name("ratchet")), "init", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return path
