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
