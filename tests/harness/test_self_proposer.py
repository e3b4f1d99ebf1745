"""The self proposer: the real seed agent, in a real sandbox, through the real gateway, on
its own source, driven by a scripted model. No mocks.

The host-side pieces (the evidence file, the diagnosis, applying a patch with its path
rules) are also tested without Docker, with patches made by git from real edits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmark import ImageBuilder, load_suite
from benchmark import DockerEnvironment
from harness.propose.edits import Snapshot
from harness.propose.evidence import Evidence, TaskEvidence, build_evidence
from harness.models.gateway import Gateway, OpenAIUpstream
from harness.models.scripted_model import ScriptedModelServer
from harness.propose.self import (
    DEFAULT_DIAGNOSIS,
    SelfProposer,
    AttemptFailed,
    diagnosis_of,
    render_evidence,
)

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = "```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"
LESSON = "- Before submitting, run the test file closest to the changed code."
_GIT = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t"}


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **_GIT}, check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    """A git worktree holding a copy of the real seed agent."""
    root = tmp_path / "wt"
    shutil.copytree(ROOT / "agent_seed", root / "agent_seed",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "seed")
    return root


@pytest.fixture
def evidence() -> Evidence:
    trajectory = [{"role": "system", "content": "SYSTEM"},
                  {"role": "user", "content": "fix add()"},
                  {"role": "assistant", "content": "Looking.\n```bash\ncat calc.py\n```"},
                  {"role": "user", "content": "<output>def add(a, b): return a - b</output>"},
                  {"role": "assistant", "content": "Done.\n```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"}]
    return build_evidence([
        TaskEvidence("calc-1", False, "add() subtracts instead of adding", trajectory,
                     "FAILED tests/test_calc.py::test_add - assert -1 == 3\n1 failed"),
        TaskEvidence("calc-2", True, "ok", [], "1 passed")], max_tokens=4000)


# -- host-side pieces -------------------------------------------------------------------

def test_evidence_markdown_holds_summary_problem_conversation_and_test_output(evidence):
    text = render_evidence(evidence)
    assert "1 of 2 tasks resolved" in text and "Failed tasks: calc-1" in text
    assert "## Failure 1: calc-1" in text and "add() subtracts instead of adding" in text
    assert "#### assistant" in text and "cat calc.py" in text
    assert "assert -1 == 3" in text
    # a fence inside the content cannot close the block around it
    assert "````\nLooking.\n```bash" in text


def test_diagnosis_is_the_prose_of_the_last_reply_that_has_some():
    messages = [{"role": "assistant", "content": "Add a lesson about tests\nBecause...\n```bash\nls\n```"},
                {"role": "user", "content": "<output></output>"},
                {"role": "assistant", "content": SUBMIT}]
    assert diagnosis_of(messages) == "Add a lesson about tests\nBecause..."
    assert diagnosis_of([{"role": "assistant", "content": SUBMIT}]) == DEFAULT_DIAGNOSIS
    assert diagnosis_of([]) == DEFAULT_DIAGNOSIS


def _patch_of(repo: Path, edit) -> str:
    """The agent's patch for ``edit`` made in a copy of the proposer's repo, as the sandbox
    takes it (``git add -A; git diff --cached --binary HEAD``)."""
    copy = repo.parent / "copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(repo, copy, symlinks=True)
    _git(copy, "reset", "-q", "--hard", "HEAD")  # the proposer's last attempt left its mark
    _git(copy, "clean", "-q", "-fdx")
    edit(copy)
    _git(copy, "add", "-A")
    return _git(copy, "diff", "--cached", "--binary", "HEAD")


@pytest.fixture
def host_proposer(tmp_path, worktree, evidence) -> tuple[SelfProposer, Path]:
    proposer = SelfProposer(None, None, None)  # type: ignore[arg-type]  # no run here
    repo = proposer.build_repo(worktree, evidence, tmp_path / "scratch" / "repo")
    return proposer, repo


def test_the_repo_holds_the_agent_the_evidence_and_the_task_in_one_commit(host_proposer):
    _, repo = host_proposer
    assert _git(repo, "rev-list", "--count", "HEAD").strip() == "1"
    files = set(_git(repo, "ls-files").split())
    assert {"agent_seed/agent.py", "agent_seed/lessons.md", ".ratchet/evidence.md",
            ".ratchet/TASK.md"} <= files
    assert not any("__pycache__" in f for f in files)
    assert "Improve this coding agent" in (repo / ".ratchet/TASK.md").read_text()


def test_patch_outside_the_agent_dir_is_rejected_and_ratchet_changes_dropped(
        host_proposer, worktree):
    proposer, repo = host_proposer
    before = Snapshot.take(worktree / "agent_seed")

    def outside(root: Path) -> None:
        (root / "agent_seed/lessons.md").write_text("- new\n")
        (root / "setup.py").write_text("x = 1\n")

    with pytest.raises(AttemptFailed, match=r"outside agent_seed/.*setup\.py") as failed:
        proposer._attempt(worktree, repo, _patch_of(repo, outside))
    assert failed.value.stage == "apply"
    assert Snapshot.take(worktree / "agent_seed") == before  # nothing was written

    with pytest.raises(AttemptFailed, match=r"no change.*\.ratchet/x"):
        proposer._attempt(worktree, repo, _patch_of(repo, lambda r: (r / ".ratchet/x").write_text("x")))

    def link(root: Path) -> None:
        (root / "agent_seed/secret").symlink_to("/etc/passwd")

    with pytest.raises(AttemptFailed, match="mode 120000"):
        proposer._attempt(worktree, repo, _patch_of(repo, link))
    assert Snapshot.take(worktree / "agent_seed") == before


def test_kept_changes_reach_the_worktree_new_deleted_and_modified(host_proposer, worktree):
    proposer, repo = host_proposer

    def edit(root: Path) -> None:
        (root / "agent_seed/lessons.md").write_text("- one lesson\n")
        (root / "agent_seed/notes").mkdir()
        (root / "agent_seed/notes/n.md").write_text("n\n")
        (root / "agent_seed/README.md").unlink()
        (root / ".ratchet/evidence.md").write_text("scribbled")

    changed, edits = proposer._attempt(worktree, repo, _patch_of(repo, edit))
    assert sorted(changed) == ["agent_seed/README.md", "agent_seed/lessons.md",
                               "agent_seed/notes/n.md"]
    assert (worktree / "agent_seed/lessons.md").read_text() == "- one lesson\n"
    assert (worktree / "agent_seed/notes/n.md").read_text() == "n\n"
    assert not (worktree / "agent_seed/README.md").exists()
    assert not (worktree / ".ratchet").exists()
    assert {e.path for e in edits} == {"agent_seed/lessons.md", "agent_seed/notes/n.md"}


# -- the agent itself, in a sandbox -------------------------------------------------------

@pytest.fixture(scope="module")
def image_task():
    task = load_suite("quickstart").tasks[0]
    ImageBuilder().ensure_task(task)
    return task


@pytest.fixture
def run_self(tmp_path, image_task) -> Iterator[Any]:
    servers: list[ScriptedModelServer] = []

    def run(replies: list[str], worktree: Path, evidence: Evidence, **kw: Any):
        server = ScriptedModelServer({"rules": [{"replies": replies}]}).start()
        servers.append(server)
        gateway = Gateway(OpenAIUpstream(server.base_url, "scripted"), model="scripted",
                          log_dir=tmp_path / "gateway")
        environment = DockerEnvironment(ImageBuilder(), timeout_s=300)
        proposer = SelfProposer(environment, gateway, image_task, channel_key="gen-0001.self",
                                generation="gen-0001", **kw)
        return proposer.propose(worktree, evidence, {}), gateway, server

    yield run
    for server in servers:
        server.stop()


@pytest.mark.docker
def test_the_agent_improves_itself_and_the_change_lands_in_the_worktree(
        run_self, worktree, evidence):
    seen: list[str] = []

    def extra_check(root: Path) -> list[str]:
        seen.append((root / "agent_seed/lessons.md").read_text())
        return []

    replies = [
        ("The evidence shows the agent submits without running tests. I add a lesson.\n"
         f"```bash\ncat <<'EOF' >> agent_seed/lessons.md\n{LESSON}\nEOF\n```"),
        ("The lesson is in place; the self-check must still pass, as TASK.md says.\n"
         "```bash\ncd /work/agent-repo && /opt/ratchet/venv/bin/python -m agent_seed selfcheck\n```"),
        ("Let me look at the evidence file and the repo.\n"
         "```bash\ngrep -q calc-1 .ratchet/evidence.md && git status --short\n```"),
        ("Add a lesson: run the closest tests before submitting\n\n"
         "calc-1 failed a test the agent never ran.\n" + SUBMIT),
    ]
    result, gateway, server = run_self(replies, worktree, evidence, extra_check=extra_check)
    assert result.valid, result.error
    assert result.changed == ["agent_seed/lessons.md"]
    lessons = (worktree / "agent_seed/lessons.md").read_text()
    assert lessons.endswith(LESSON + "\n") and seen == [lessons]
    assert result.proposal.headline == "Add a lesson: run the closest tests before submitting"
    assert "never ran" in result.proposal.diagnosis
    assert [e.path for e in result.proposal.edits] == ["agent_seed/lessons.md"]
    # the agent ran in its repo: the evidence was there, and git saw only its lesson
    selfcheck = server.requests[2]["messages"][-1]["content"]
    assert "<returncode>0</returncode>" in selfcheck, selfcheck
    observation = server.requests[3]["messages"][-1]["content"]
    assert "<returncode>0</returncode>" in observation
    assert observation.split("<output>")[1].split() == ["M", "agent_seed/lessons.md", "</output>"]
    # the task it was given, and the usage, from the gateway's ledger
    assert "Improve this coding agent" in server.requests[0]["messages"][1]["content"]
    ledger = gateway.ledger.task("gen-0001.self")
    assert result.usage.calls == ledger.calls == 4
    assert result.usage.prompt_tokens == ledger.prompt_tokens > 0
    assert [a.error for a in result.attempts] == [None]
    assert any(m["role"] == "assistant" and LESSON in m["content"] for m in result.messages)


@pytest.mark.docker
def test_a_change_only_in_ratchet_dir_is_no_change(run_self, worktree, evidence):
    before = Snapshot.take(worktree / "agent_seed")
    replies = ["I note it down.\n```bash\necho note > .ratchet/x\n```", "Noted.\n" + SUBMIT]
    result, _, _ = run_self(replies, worktree, evidence)
    assert not result.valid and result.proposal is None
    assert "no change" in result.error and ".ratchet/x" in result.error
    assert Snapshot.take(worktree / "agent_seed") == before


@pytest.mark.docker
def test_a_change_that_breaks_the_agent_is_rejected_and_undone_byte_for_byte(
        run_self, worktree, evidence):
    before = Snapshot.take(worktree / "agent_seed")
    replies = ["Simplify the agent.\n```bash\nprintf 'def broken(:\\n' >> agent_seed/agent.py\n```",
               "Simplified the agent\n" + SUBMIT]
    result, _, _ = run_self(replies, worktree, evidence)
    assert not result.valid
    assert result.attempts[0].stage == "check"
    assert "agent_seed/agent.py" in result.error and "SyntaxError" in result.error
    assert result.attempts[0].changed == ("agent_seed/agent.py",)
    assert Snapshot.take(worktree / "agent_seed") == before
    assert _git(worktree, "status", "--porcelain") == ""
