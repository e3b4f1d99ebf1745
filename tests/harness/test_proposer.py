"""The evidence pack and the meta proposer, end to end.

The meta model is a real :class:`ScriptedModelServer` reached through the real openai SDK;
the worktree is a real copy of the seed agent in a tmp dir; the gateway log comes from a
real :class:`Gateway`. No mocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from harness.propose.edits import Snapshot
from harness.propose.evidence import (
    Evidence,
    TaskEvidence,
    build_evidence,
    estimate_tokens,
    load_gateway_trajectory,
    redact_diffs,
)
from harness.models.gateway import Gateway, OpenAIUpstream
from harness.propose.meta import MetaProposer, ModelCallFailed, read_agent_files
from harness.models.scripted_model import ScriptedModelServer


GOLD_PATCH = """\
diff --git a/src/calc.py b/src/calc.py
index 1111111..2222222 100644
--- a/src/calc.py
+++ b/src/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b  # GOLD-FIX-7731
"""
TEST_PATCH = """\
diff --git a/tests/test_calc.py b/tests/test_calc.py
new file mode 100644
--- /dev/null
+++ b/tests/test_calc.py
@@ -0,0 +1,3 @@
+from calc import add
+
+def test_add_hidden_4417(): assert add(2, 2) == 4
"""


def _conversation(n_steps: int, tag: str = "") -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "SYSTEM PROMPT " * 50},
                                      {"role": "user", "content": "fix the issue"}]
    for i in range(n_steps):
        messages.append({"role": "assistant", "content": f"step {i}{tag}\n```bash\nls\n```"})
        messages.append({"role": "user", "content": f"<output>result {i}</output>" + "x" * 300})
    return messages


def _task(instance_id: str, resolved: bool, **kw: Any) -> TaskEvidence:
    defaults: dict[str, Any] = {"problem_statement": f"Problem of {instance_id}",
                                "trajectory": _conversation(3), "test_output": "1 failed"}
    return TaskEvidence(instance_id, resolved, **{**defaults, **kw})


# -- evidence -----------------------------------------------------------------------------

def test_evidence_keeps_failed_tasks_in_id_order_up_to_max_and_counts_successes():
    records = [_task("z-9", False), _task("a-1", True), _task("m-5", False),
               _task("b-2", False), _task("c-3", True)]
    evidence = build_evidence(records, max_tokens=4000, max_failures=2)
    assert [f.instance_id for f in evidence.failures] == ["b-2", "m-5"]
    assert evidence.failed_ids == ["b-2", "m-5", "z-9"]
    assert (evidence.n_resolved, evidence.n_tasks) == (2, 5)
    assert evidence.summary == "2 of 5 tasks resolved; 2 of the 3 failures are shown"


@pytest.mark.parametrize("max_tokens", [0, 3, 50, 400, 3000, 100_000])
def test_evidence_never_exceeds_its_token_budget(max_tokens: int):
    """Whatever the sizes, the estimated tokens of the pack stay within max_tokens."""
    records = [_task(f"t-{i}", False, problem_statement="P" * 9000,
                     trajectory=_conversation(40), test_output="log line\n" * 2000)
               for i in range(3)]
    evidence = build_evidence(records, max_tokens=max_tokens)
    assert evidence.tokens() <= max_tokens
    for failure in evidence.failures:
        assert failure.tokens() == (
            estimate_tokens(failure.problem_statement) + estimate_tokens(failure.test_output)
            + sum(estimate_tokens(m["content"]) for m in failure.messages))


def test_evidence_keeps_the_tail_of_trajectory_and_test_output_and_head_of_problem():
    trajectory = _conversation(60, tag=" marker")
    output = "START OF LOG\n" + "noise\n" * 3000 + "FAILED tests/test_calc.py::test_add\nEND\n"
    (failure,) = build_evidence([_task("t", False, trajectory=trajectory, test_output=output,
                                       problem_statement="HEAD " + "p" * 20000)],
                                max_tokens=3000).failures
    assert failure.problem_statement.startswith("HEAD ")
    assert "characters cut" in failure.problem_statement
    assert failure.test_output.endswith("FAILED tests/test_calc.py::test_add\nEND\n")
    assert "START OF LOG" not in failure.test_output
    assert failure.messages[-1]["content"] == trajectory[-1]["content"]
    assert failure.messages[-2]["content"].startswith("step 59 marker")
    assert all(m["role"] != "system" for m in failure.messages)
    assert failure.omitted_messages == len(trajectory) - len(failure.messages)
    assert failure.omitted_messages > 0


def test_gold_or_test_patch_in_test_output_is_redacted():
    """A gold patch or test patch that reaches the grader log (by mistake or by the eval
    script's `git apply` heredoc) never reaches the meta model; test names stay."""
    log = ("+ git apply --verbose - <<'EOF_TEST_PATCH'\n" + TEST_PATCH + "EOF_TEST_PATCH\n"
           "Checking patch tests/test_calc.py...\nApplied patch tests/test_calc.py cleanly.\n"
           + GOLD_PATCH + "FAILED tests/test_calc.py::test_add_hidden_4417\n")
    (failure,) = build_evidence([_task("t", False, test_output=log)],
                                max_tokens=10_000).failures
    assert "GOLD-FIX-7731" not in failure.test_output
    assert "assert add(2, 2) == 4" not in failure.test_output
    assert "diff --git" not in failure.test_output
    assert failure.test_output.count("[redacted: a diff of") == 2
    assert "Applied patch tests/test_calc.py cleanly." in failure.test_output
    assert "FAILED tests/test_calc.py::test_add_hidden_4417" in failure.test_output


def test_redact_diffs_also_catches_a_plain_unified_diff_and_keeps_other_text():
    plain = "before\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-old\n+SECRET\nafter\n"
    assert redact_diffs(plain) == ("before\n[redacted: a diff of 5 lines; patches are never "
                                   "shown]\nafter\n")
    assert redact_diffs("no diff here\n--- just a rule\n") == "no diff here\n--- just a rule\n"


def test_evidence_task_record_has_no_field_for_patches():
    """The record accepts only what the meta model may see."""
    with pytest.raises(TypeError):
        TaskEvidence("t", False, "p", [], "", patch=GOLD_PATCH)  # type: ignore[call-arg]


@pytest.fixture
def upstream() -> Iterator[ScriptedModelServer]:
    script = {"rules": [{"turn": 0, "reply": "first reply"},
                        {"turn": 1, "reply": "second reply"}]}
    with ScriptedModelServer(script) as server:
        yield server


def test_gateway_trajectory_loads_the_whole_conversation(upstream, tmp_path: Path):
    """From a log the real gateway wrote: the last request's messages plus its response."""
    gateway = Gateway(OpenAIUpstream(upstream.base_url, "k"), model="scripted",
                      log_dir=tmp_path / "logs")
    channel = gateway.open_channel("task-1", tcp=True)
    try:
        client = openai.OpenAI(base_url=channel.base_url, api_key="sandbox", max_retries=0)
        messages: list[dict[str, Any]] = [{"role": "system", "content": "sys"},
                                          {"role": "user", "content": "issue"}]
        for follow_up in ("output 1", None):
            reply = client.chat.completions.create(model="any", messages=messages)
            messages.append({"role": "assistant", "content": reply.choices[0].message.content})
            if follow_up:
                messages.append({"role": "user", "content": follow_up})
    finally:
        gateway.close_channel(channel)
    loaded = load_gateway_trajectory(channel.trajectory)
    assert [(m["role"], m["content"]) for m in loaded] == [
        ("system", "sys"), ("user", "issue"), ("assistant", "first reply"),
        ("user", "output 1"), ("assistant", "second reply")]


def test_gateway_trajectory_notes_a_refused_last_call_and_skips_a_cut_line(tmp_path: Path):
    log = tmp_path / "t.jsonl"
    log.write_text(
        '{"request": {"messages": [{"role": "user", "content": "a"}]}, "response": '
        '{"choices": [{"message": {"role": "assistant", "content": "b"}}]}}\n'
        '{"request": {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", '
        '"content": "b"}, {"role": "user", "content": "c"}]}, "refused": "budget spent"}\n'
        '{"request": {"messages": [')
    assert load_gateway_trajectory(log)[-1] == {
        "role": "gateway", "content": "the model call refused: budget spent"}
    (tmp_path / "empty.jsonl").write_text("")
    assert load_gateway_trajectory(tmp_path / "empty.jsonl") == []


# -- proposer -----------------------------------------------------------------------------

VALID = """\
<diagnosis>
Raise the step limit to 40
The failed runs were still exploring when they hit 30 steps.
</diagnosis>

agent_seed/config.yaml
<<<<<<< SEARCH
step_limit: 30
=======
step_limit: 40
>>>>>>> REPLACE
"""
BROKEN = """\
<diagnosis>
Add a helper
</diagnosis>

<file path="agent_seed/helpers.py">
def helper(:
    return 1
</file>

agent_seed/lessons.md
<<<<<<< SEARCH
- Reproduce the bug
=======
- ALWAYS reproduce the bug
>>>>>>> REPLACE
"""


@pytest.fixture
def evidence() -> Evidence:
    return build_evidence([
        _task("calc-1", False, problem_statement="add() subtracts", test_output="1 failed"),
        _task("calc-2", True)], max_tokens=4000)


def _proposer(server: ScriptedModelServer, **kw: Any) -> MetaProposer:
    client = OpenAIUpstream(server.base_url, "x", timeout=10, retry_seconds=0)
    return MetaProposer(client, "meta-model", **kw)


def _last_user(request: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")


def test_valid_first_answer_is_applied_checked_and_counted(worktree, evidence):
    script = {"rules": [{"turn": 0, "reply": VALID,
                         "usage": {"prompt_tokens": 1000, "completion_tokens": 50}}]}
    with ScriptedModelServer(script) as server:
        result = _proposer(server).propose(worktree, evidence, read_agent_files(worktree))
    assert result.valid and result.error is None
    assert result.proposal is not None
    assert result.proposal.headline == "Raise the step limit to 40"
    assert result.changed == ["agent_seed/config.yaml"]
    assert "step_limit: 40 " in (worktree / "agent_seed/config.yaml").read_text()
    assert [(a.number, a.error) for a in result.attempts] == [(1, None)]
    assert (result.usage.calls, result.usage.prompt_tokens, result.usage.completion_tokens) == (
        1, 1000, 50)
    prompt = server.requests[0]["messages"][0]["content"]
    assert server.requests[0]["model"] == "meta-model"
    assert '<source path="agent_seed/agent.py">' in prompt  # the agent's own source
    assert "add() subtracts" in prompt and "calc-1" in prompt  # the evidence
    assert "1 of 2 tasks resolved" in prompt
    assert "<<<<<<< SEARCH" in prompt and '<file path="agent_seed/lessons.md">' in prompt


def test_broken_first_answer_is_undone_and_the_error_sent_back(worktree, evidence):
    """A syntax error in attempt 1 is reported with file:line; the worktree is put back
    (the half-good lessons edit and the new file too) before the fixed attempt 2 applies."""
    lessons_before = (worktree / "agent_seed/lessons.md").read_text()
    script = {"rules": [{"replies": [BROKEN, VALID],
                         "usage": {"prompt_tokens": 100, "completion_tokens": 10}}]}
    with ScriptedModelServer(script) as server:
        result = _proposer(server).propose(worktree, evidence, read_agent_files(worktree))
    assert result.valid
    assert [a.stage for a in result.attempts] == ["check", None]
    first = result.attempts[0]
    assert first.error is not None and first.error.startswith("agent_seed/helpers.py:1: SyntaxError")
    assert set(first.changed) == {"agent_seed/helpers.py", "agent_seed/lessons.md"}
    retry = _last_user(server.requests[1])
    assert "agent_seed/helpers.py:1: SyntaxError" in retry and "attempt 1 of 3" in retry
    assert [m["role"] for m in server.requests[1]["messages"]] == ["user", "assistant", "user"]
    assert not (worktree / "agent_seed/helpers.py").exists()
    assert (worktree / "agent_seed/lessons.md").read_text() == lessons_before
    assert result.changed == ["agent_seed/config.yaml"]
    assert result.usage.calls == 2 and result.usage.total_tokens == 220
    assert len(result.messages) == 4


def test_never_valid_ends_invalid_after_max_attempts_with_worktree_byte_for_byte(
        worktree, evidence):
    before = Snapshot.take(worktree)
    garbage = "I would change the prompt, but I am not sure how."
    script = {"rules": [{"replies": [BROKEN, garbage, VALID.replace("step_limit: 30\n=",
                                                                    "step_limit: 99\n=")]}]}
    with ScriptedModelServer(script) as server:
        result = _proposer(server, max_attempts=3).propose(
            worktree, evidence, read_agent_files(worktree))
    assert not result.valid and result.proposal is None
    assert [a.stage for a in result.attempts] == ["check", "parse", "apply"]
    assert "holds no edit" in (result.attempts[1].error or "")
    assert "not found" in (result.attempts[2].error or "")
    assert result.error is not None and "3 attempts" in result.error
    assert len(server.requests) == 3
    assert Snapshot.take(worktree) == before


def test_extra_check_problems_are_retried_like_any_other(worktree, evidence):
    """The controller's sandboxed selfcheck plugs in as extra_check; its problems go back
    to the model, and it runs only on edits that passed the host checks."""
    seen: list[str] = []

    def selfcheck(root: Path) -> list[str]:
        text = (root / "agent_seed/config.yaml").read_text()
        seen.append(text)
        return ["selfcheck: check_step_limit_stops failed"] if "step_limit: 40" in text else []

    lesson = ('<diagnosis>Add a lesson</diagnosis>\n<file path="agent_seed/lessons.md">\n'
              "- Run the failing test before submitting.\n</file>\n")
    with ScriptedModelServer({"rules": [{"replies": [BROKEN, VALID, lesson]}]}) as server:
        result = _proposer(server, extra_check=selfcheck).propose(
            worktree, evidence, read_agent_files(worktree))
        retry = _last_user(server.requests[2])
    assert result.valid and result.changed == ["agent_seed/lessons.md"]
    assert [a.stage for a in result.attempts] == ["check", "extra_check", None]
    assert len(seen) == 2  # not called for the attempt with a syntax error
    assert "check_step_limit_stops failed" in retry and "extra_check" in retry
    assert "step_limit: 30 " in (worktree / "agent_seed/config.yaml").read_text()


def test_failed_model_call_raises_and_leaves_worktree_unchanged(worktree, evidence):
    """An endpoint error is not an invalid proposal: it is raised, not recorded."""
    before = Snapshot.take(worktree)
    with (ScriptedModelServer({"rules": [{"turn": 5, "reply": "never"}]}) as server,
          pytest.raises(ModelCallFailed, match="no scripted rule matched")):
        _proposer(server).propose(worktree, evidence, read_agent_files(worktree))
    assert Snapshot.take(worktree) == before


def test_oversized_source_file_is_named_not_shown(worktree, evidence):
    files = read_agent_files(worktree)
    files["agent_seed/big.txt"] = "B" * 500
    with ScriptedModelServer({"default": VALID}) as server:
        _proposer(server, max_file_chars=400).propose(worktree, evidence, files)
        prompt = server.requests[0]["messages"][0]["content"]
    assert '<source path="agent_seed/big.txt" omitted="500 characters' in prompt
    assert "B" * 500 not in prompt
