"""Proposal size caps (issue 16): a meta model once wrote a 14 MB lessons.md that every later
prompt, sandbox and log carried. Past a cap the edit is refused, nothing is written, and the
refusal goes back to the model as a failed check; with the caps switched off the same answer
is accepted (the attack works without the defence).

The meta model is a real ScriptedModelServer reached through the openai SDK (`OpenAIUpstream`); the worktree a
real copy of the seed agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.propose import edits
from harness.propose.edits import EditRejected, Snapshot, WholeFile, apply_edits, check_worktree
from harness.propose.evidence import build_evidence
from harness.models.gateway import OpenAIUpstream
from harness.propose.meta import MetaProposer, read_agent_files
from harness.models.scripted_model import ScriptedModelServer

HUGE_LESSONS = "- reproduce the bug first\n" * (14 * 1024 * 1024 // 26)
"""14 MB of lessons, as the issue saw."""
FLOOD = f'<diagnosis>\nRemember everything\n</diagnosis>\n\n<file path="agent_seed/lessons.md">\n{HUGE_LESSONS}</file>\n'
SMALL = """<diagnosis>
Keep one lesson
</diagnosis>

<file path="agent_seed/lessons.md">
- reproduce the bug first
</file>
"""


@pytest.fixture
def caps_off(monkeypatch):
    monkeypatch.setattr(edits, "MAX_FILE_BYTES", 10**12)
    monkeypatch.setattr(edits, "MAX_AGENT_BYTES", 10**12)


def _propose(worktree: Path, replies: list[str]):
    evidence = build_evidence([], max_tokens=2000)
    with ScriptedModelServer({"rules": [{"replies": replies}]}) as server:
        client = OpenAIUpstream(server.base_url, "x", timeout=60, retry_seconds=0)
        result = MetaProposer(client, "meta").propose(worktree, evidence, read_agent_files(worktree))
        return result, list(server.requests)


def test_a_14mb_lessons_file_is_refused_and_sent_back_to_the_model(worktree):
    """Attempt 1 (14 MB) is refused naming the file and the cap, nothing of it is written;
    the refusal is the retry prompt; attempt 2 (short) is the proposal."""
    result, requests = _propose(worktree, [FLOOD, SMALL])
    assert result.valid, result.error
    first = result.attempts[0]
    assert first.stage == "apply" and "agent_seed/lessons.md" in first.error
    assert f"{edits.MAX_FILE_BYTES:,}" in first.error
    retry = next(m["content"] for m in reversed(requests[1]["messages"]) if m["role"] == "user")
    assert "agent_seed/lessons.md" in retry and "more than a file of the agent may hold" in retry
    assert (worktree / "agent_seed/lessons.md").read_text() == "- reproduce the bug first\n"


def test_without_the_caps_the_14mb_lessons_file_is_accepted(worktree, caps_off):
    """The attack, defence off: the flood becomes the agent's lessons."""
    result, _ = _propose(worktree, [FLOOD])
    assert result.valid
    assert (worktree / "agent_seed/lessons.md").stat().st_size > 14_000_000


def test_a_file_past_the_cap_writes_nothing(worktree):
    before = Snapshot.take(worktree)
    with pytest.raises(EditRejected, match="agent_seed/notes.md"):
        apply_edits(worktree, [WholeFile("agent_seed/config.yaml", "step_limit: 3\n"),
                               WholeFile("agent_seed/notes.md", "x" * (edits.MAX_FILE_BYTES + 1))])
    assert Snapshot.take(worktree) == before


def test_many_files_each_under_the_cap_but_past_the_total_are_refused(worktree):
    size = edits.MAX_FILE_BYTES - 10
    many = [WholeFile(f"agent_seed/part{i}.md", "y" * size)
            for i in range(edits.MAX_AGENT_BYTES // size + 1)]
    with pytest.raises(EditRejected, match="agent_seed/ would hold"):
        apply_edits(worktree, many)
    assert not (worktree / "agent_seed/part0.md").exists()


def test_a_file_written_another_way_is_caught_by_the_host_check(worktree):
    """The self proposer copies files in without apply_edits: check_worktree catches it."""
    (worktree / "agent_seed/lessons.md").write_text("z" * (edits.MAX_FILE_BYTES + 1))
    problems = check_worktree(worktree)
    assert any("agent_seed/lessons.md" in p and "more than a file" in p for p in problems)


def test_the_seed_agent_is_well_under_the_caps(worktree):
    assert check_worktree(worktree) == []
