"""The agent dir a run starts from (issue 16): a run evolves the committed agent (HEAD), so
uncommitted edits would be ignored without a word. They are refused, naming the files, or
committed explicitly (``--commit-agent``), and only the agent dir is committed. Real git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.cli.loop import closing_hint, stop_failure
from harness.loop.journal import GenerationState, RunState
from harness.loop.settings import LoopSettings
from harness.loop.workspace import (
    WorkspaceError,
    agent_changes,
    check_agent_committed,
    check_run_id,
    commit_agent,
    init_workspace,
)
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("no_git_identity")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=u", "-c", "user.email=u@x", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return init_workspace(tmp_path / "ws", seed=ROOT / "agent_seed")


def test_a_clean_agent_passes_and_bytecode_does_not_count(ws):
    (ws / "agent_seed" / "__pycache__").mkdir(exist_ok=True)
    (ws / "agent_seed" / "__pycache__" / "agent.cpython-311.pyc").write_bytes(b"\0")
    check_agent_committed(ws)
    assert agent_changes(ws) == []


def test_edits_new_files_and_deletions_are_named(ws):
    (ws / "agent_seed" / "lessons.md").write_text("changed\n")
    (ws / "agent_seed" / "new.py").write_text("X = 1\n")
    (ws / "agent_seed" / "errors.py").unlink()
    assert sorted(agent_changes(ws)) == ["agent_seed/errors.py", "agent_seed/lessons.md",
                                         "agent_seed/new.py"]
    with pytest.raises(WorkspaceError, match="uncommitted changes .*--commit-agent"):
        check_agent_committed(ws)


def test_commit_agent_commits_the_agent_dir_only(ws):
    (ws / "agent_seed" / "lessons.md").write_text("changed\n")
    (ws / "notes.txt").write_text("the user's own work\n")
    _git(ws, "add", "notes.txt")  # staged by the user: not ratchet's to commit
    head = _git(ws, "rev-parse", "HEAD").strip()
    sha = commit_agent(ws, "r1")
    assert sha and sha != head
    assert _git(ws, "show", "--name-only", "--format=%an", sha).split() == ["ratchet", "agent_seed/lessons.md"]
    assert agent_changes(ws) == []
    assert _git(ws, "status", "--porcelain").strip() == "A  notes.txt"
    assert commit_agent(ws, "r1") is None  # nothing left: no empty commit


def test_an_agent_never_committed_is_refused_then_committed_on_request(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    shutil.copytree(ROOT / "agent_seed", repo / "agent_seed",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with pytest.raises(WorkspaceError, match="not committed .*--commit-agent"):
        check_agent_committed(repo)
    assert commit_agent(repo, "r1")
    check_agent_committed(repo)


@pytest.mark.parametrize("run", ["r1", "nightly-2026-12-04", "r1.from-0012", "A_b.c-d"])
def test_good_run_ids(run):
    assert check_run_id(run) == run


@pytest.mark.parametrize("run", ["../x", "../../x", "/tmp/x", "a b", "a..b", "x.lock", "x.", ".x",
                                 "-x", "", "a/b", "a\\b", "x" * 101])
def test_bad_run_ids(run):
    with pytest.raises(WorkspaceError, match="run id"):
        check_run_id(run)


def _state(*recorded: int, best: int = 0, end: str | None = None) -> RunState:
    state = RunState()
    for number in recorded:
        state.generations[number] = GenerationState(number=number, parent=None)
        state.generations[number].recorded = True
    state.best, state.end_reason = best, end
    return state


def test_the_closing_hint_names_only_generations_that_exist():
    assert "ratchet diff" not in closing_hint("r1", _state(0))
    assert "`ratchet diff r1 0 3`" in closing_hint("r1", _state(0, 1, 2, 3, best=3))
    assert "`ratchet diff r1 0 2`" in closing_hint("r1", _state(0, 1, 2, best=0))


def test_a_stop_on_an_endpoint_failure_is_a_failure_naming_the_url(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://llm.example:8000/v1")
    real = LoopSettings(run="r1", suite="s", generations=1, agent_model="m", meta_model="m")
    why = stop_failure(_state(0, end="run_stopped: infrastructure errors: 1 task(s) of gen 0 have "
                              "no verdict (first: t: the model endpoint failed during this run)"), real)
    assert why and "http://llm.example:8000/v1" in why and "OPENAI_BASE_URL" in why
    assert stop_failure(_state(0, end="run_finished: 1 generations"), real) is None
    assert stop_failure(_state(0, end="budget_exhausted: run budget spent"), real) is None
    assert stop_failure(_state(0, end="run_stopped: interrupted"), real) is None
