"""The evidence pack: what the meta model is shown of a parent generation's evaluation.

Input is one :class:`TaskEvidence` per evaluated task, and it can carry only what the meta
model may see: the problem statement, the agent's own conversation (from the gateway's
log, the trajectory of record) and the grader's log. There is no field for the gold patch
or the hidden test patch, and :func:`redact_diffs` removes any diff that reached the
grader's log anyway (the eval script applies the test patch with ``git apply``).

:func:`build_evidence` keeps the failed tasks (sorted by instance id, at most
``max_failures``), each cut to its share of a token budget: the head of the problem
statement, the *tail* of the trajectory (where the run went wrong or ran out) and the tail
of the test output (where the failures are summarised). Tokens are estimated as
``ceil(chars / 4)``, the scripted model's estimate too.

:func:`collect_evidence` reads a generation's results from disk. Where the tasks studied
also decide acceptance (a run with no held-out split) it never reads the grader's log:
pytest's failure sections quote the hidden tests' source lines and assertion messages, which
would let the proposer fit the very tests that judge it. The evidence then says only which
hidden tests passed and failed (:func:`test_verdicts`, from the grading's ``report.json``),
next to the agent's own conversation. Where it does read the log, :func:`redact_tripwires`
takes out the grading's trip-wires (their names, their failure sections, their count in the
summary): a proposer that saw them could learn to spare exactly the tests that catch tampering.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Evidence",
    "FailureEvidence",
    "TaskEvidence",
    "build_evidence",
    "collect_evidence",
    "estimate_tokens",
    "load_gateway_trajectory",
    "message_text",
    "redact_diffs",
    "redact_tripwires",
    "test_verdicts",
]

_CUT = "[... {n} characters cut ...]"
_REDACTED = "[redacted: a diff of {n} lines; patches are never shown]"
_DIFF_LINE = re.compile(
    r"^(?:diff --git |index |--- |\+\+\+ |@@ |[ +\-\\]|new file mode |deleted file mode |"
    r"old mode |new mode |similarity index |dissimilarity index |rename from |rename to |"
    r"copy from |copy to |Binary files |GIT binary patch|literal |delta |$)")
# Shares of one failure's budget: problem statement, test output; the trajectory gets the rest.
_PROBLEM_SHARE, _TEST_SHARE = 0.2, 0.25


def estimate_tokens(text: str) -> int:
    """``ceil(len(text) / 4)``: the budget's unit."""
    return math.ceil(len(text) / 4)


@dataclass(frozen=True)
class TaskEvidence:
    """One evaluated task, as far as the meta model may see it (no gold or test patch)."""

    instance_id: str
    resolved: bool
    problem_statement: str
    trajectory: list[dict[str, Any]]
    """Chat messages of the agent's run, e.g. from :func:`load_gateway_trajectory`."""
    test_output: str
    """The grader's log."""


@dataclass(frozen=True)
class FailureEvidence:
    """One failed task, cut to its budget: what the prompt shows."""

    instance_id: str
    problem_statement: str
    messages: list[dict[str, str]]
    """The tail of the conversation: ``{"role", "content"}``, oldest first."""
    omitted_messages: int
    """Messages before the tail (system prompt included) that were left out."""
    test_output: str

    def tokens(self) -> int:
        return (estimate_tokens(self.problem_statement) + estimate_tokens(self.test_output)
                + sum(estimate_tokens(m["content"]) for m in self.messages))


@dataclass(frozen=True)
class Evidence:
    """The evidence pack of one parent generation."""

    n_tasks: int
    n_resolved: int
    failures: list[FailureEvidence]
    failed_ids: list[str] = field(default_factory=list)
    """Every failed task, sorted; ``failures`` holds the first ``max_failures`` of them."""

    @property
    def summary(self) -> str:
        shown = f"; {len(self.failures)} of the {len(self.failed_ids)} failures are shown"
        return (f"{self.n_resolved} of {self.n_tasks} tasks resolved"
                + (shown if self.failed_ids else ""))

    def tokens(self) -> int:
        """Estimated tokens of all text the pack holds (within ``max_tokens``)."""
        return sum(f.tokens() for f in self.failures)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message: string content, text parts, and any tool calls."""
    content = message.get("content")
    if isinstance(content, list):
        text = "".join(p["text"] for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    else:
        text = content if isinstance(content, str) else ""
    for call in message.get("tool_calls") or []:
        if isinstance(call, dict):
            text += f"\n[tool call] {json.dumps(call.get('function', call), sort_keys=True)}"
    return text


def load_gateway_trajectory(path: str | Path) -> list[dict[str, Any]]:
    """The agent's whole conversation from a gateway JSONL log.

    The last record's request holds every message so far; its response's message is the
    last one. A last call the gateway refused or that failed upstream ends the list with a
    ``{"role": "gateway", ...}`` note saying so. Unreadable lines (a write cut by a crash)
    are skipped; an empty log gives ``[]``.
    """
    last: dict[str, Any] | None = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("request"), dict):
            last = record
    if last is None:
        return []
    messages = [dict(m) for m in last["request"].get("messages") or [] if isinstance(m, dict)]
    choices = (last.get("response") or {}).get("choices") or []
    if choices and isinstance(choices[0].get("message"), dict):
        messages.append(dict(choices[0]["message"]))
    elif last.get("refused") or last.get("error"):
        kind = "refused" if last.get("refused") else "failed"
        detail = last.get("refused") or last.get("error")
        messages.append({"role": "gateway", "content": f"the model call {kind}: {detail}"})
    return messages


def redact_diffs(text: str) -> str:
    """``text`` with every diff block replaced by a one-line note.

    A block starts at a ``diff --git`` line, or at a ``--- `` line followed by a ``+++ ``
    line, and runs while lines look like diff lines (headers, hunks, context, blank). It
    errs on the side of cutting: a log line right after a diff that starts with a space,
    ``+`` or ``-`` goes with it.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        starts = lines[i].startswith("diff --git ") or (
            lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "))
        if not starts:
            out.append(lines[i])
            i += 1
            continue
        end = i + 1
        while end < len(lines) and _DIFF_LINE.match(lines[end].rstrip("\r\n")):
            end += 1
        out.append(_REDACTED.format(n=end - i) + "\n")
        i = end
    return "".join(out)


_SECTION = re.compile(r"^_{3,} (.+?) _{3,}\s*$")
_RULE = re.compile(r"^={3,} .* ={3,}\s*$")
_FAILED = re.compile(r"\b(\d+) failed(, )?")
_COLLECTED = re.compile(r"^(collected )(\d+)( items?)")


def redact_tripwires(text: str, nodeids: Sequence[str]) -> str:
    """``text`` (a grading log) with no trace of the trip-wires ``nodeids``: every line that
    names one, each failure section headed by one, and their number taken off the summary's
    failed count and the collected count. Names are matched as whole identifiers."""
    names = {nodeid.rsplit("::", 1)[-1].split("[", 1)[0] for nodeid in nodeids}
    names.discard("")
    if not names:
        return text
    named = re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(map(re.escape, sorted(names)))
                       + r")(?![A-Za-z0-9_])")
    out: list[str] = []
    skipping = False
    seen: set[str] = set()
    failed: set[str] = set()
    for line in text.splitlines(keepends=True):
        section = _SECTION.match(line.rstrip("\r\n"))
        if section or _RULE.match(line):
            skipping = bool(section and named.search(section.group(1)))
        if skipping:
            continue
        if named.search(line):
            ids = {word for word in line.split() if named.search(word)}
            seen |= ids
            if re.search(r"\b(FAILED|ERROR)\b", line):
                failed |= ids
            continue
        out.append(line)
    if not seen:
        return "".join(out)
    for i, line in enumerate(out):
        collected = _COLLECTED.match(line)
        if collected:
            out[i] = _COLLECTED.sub(lambda m: f"{m[1]}{max(0, int(m[2]) - len(seen))}{m[3]}",
                                    line, 1)
        elif failed and _RULE.match(line) and _FAILED.search(line):
            left = lambda m: (f"{int(m[1]) - len(failed)} failed{m[2] or ''}"  # noqa: E731
                              if int(m[1]) > len(failed) else "")
            out[i] = _FAILED.sub(left, line, 1)
    return "".join(out)


def _head(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    marker = "\n" + _CUT.format(n=len(text) - max_chars)
    keep = max(0, max_chars - len(marker))
    marker = "\n" + _CUT.format(n=len(text) - keep)
    return (text[:keep] + marker)[:max_chars]


def _tail(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    marker = _CUT.format(n=len(text) - max_chars) + "\n"
    keep = max(0, max_chars - len(marker))
    marker = _CUT.format(n=len(text) - keep) + "\n"
    return (marker + text[len(text) - keep:])[-max_chars:] if keep else marker[:max_chars]


def _tail_messages(trajectory: Sequence[Mapping[str, Any]],
                   max_chars: int) -> tuple[list[dict[str, str]], int]:
    """The newest messages that fit in ``max_chars``; the oldest kept one may be cut."""
    kept: list[dict[str, str]] = []
    budget = max_chars
    for message in reversed([m for m in trajectory if m.get("role") != "system"]):
        if budget <= 0:
            break
        text = message_text(message)
        if len(text) > budget:
            if budget < 200 and kept:  # a sliver of a message tells nothing
                break
            text = _tail(text, budget)
        kept.append({"role": str(message.get("role", "?")), "content": text})
        budget -= len(text)
    kept.reverse()
    return kept, len(trajectory) - len(kept)


def _cut_failure(task: TaskEvidence, max_tokens: int) -> FailureEvidence:
    problem = _head(task.problem_statement, 4 * int(max_tokens * _PROBLEM_SHARE))
    test_output = _tail(redact_diffs(task.test_output), 4 * int(max_tokens * _TEST_SHARE))
    rest = max_tokens - estimate_tokens(problem) - estimate_tokens(test_output)
    messages, omitted = _tail_messages(task.trajectory, 4 * rest)
    failure = FailureEvidence(task.instance_id, problem, messages, omitted, test_output)
    while failure.tokens() > max_tokens and messages:  # ceil() rounds up once per message
        messages = messages[1:]
        omitted += 1
        failure = FailureEvidence(task.instance_id, problem, messages, omitted, test_output)
    return failure


def build_evidence(records: Iterable[TaskEvidence], *, max_tokens: int,
                   max_failures: int = 4) -> Evidence:
    """The evidence pack: failed tasks by instance id, each cut to an equal share of
    ``max_tokens`` (the returned pack's :meth:`Evidence.tokens` never exceeds it)."""
    if max_tokens < 0 or max_failures < 0:
        raise ValueError("max_tokens and max_failures must not be negative")
    tasks = list(records)
    failed = sorted((t for t in tasks if not t.resolved), key=lambda t: t.instance_id)
    shown = failed[:max_failures]
    share = max_tokens // len(shown) if shown else 0
    return Evidence(n_tasks=len(tasks), n_resolved=sum(t.resolved for t in tasks),
                    failures=[_cut_failure(t, share) for t in shown],
                    failed_ids=[t.instance_id for t in failed])


def test_verdicts(report: Mapping[str, Any]) -> str:
    """The hidden tests' pass counts and the ids of those that failed, from a grading's
    ``report.json``: nothing of their source or output. Failures come last, so a cut to
    the budget (which keeps the tail) keeps them."""
    lines = ["[the grader's log is not shown: these tasks also decide acceptance; only which "
             "hidden tests passed or failed]"]
    entry = next(iter(report.values()), {}) if report else {}
    status = (entry.get("tests_status") or {}) if isinstance(entry, Mapping) else {}
    if not status:
        lines.append("the tests did not run (the patch did not apply, or the run was cut off)")
        return "\n".join(lines) + "\n"
    failed: list[str] = []
    counts = []
    for group in ("FAIL_TO_PASS", "PASS_TO_PASS"):
        outcome = status.get(group) or {}
        passes = [t for t in outcome.get("success") or [] if isinstance(t, str)]
        fails = [t for t in outcome.get("failure") or [] if isinstance(t, str)]
        counts.append(f"{group} {len(passes)} of {len(passes) + len(fails)} passed")
        failed += fails
    lines.append("hidden tests: " + ", ".join(counts))
    lines += [f"FAILED {test_id}" for test_id in failed]
    return "\n".join(lines) + "\n"


def _grading_report(log_path: Path) -> dict[str, Any]:
    """The grading's ``report.json`` beside its log, or ``{}``."""
    report_path = log_path.parent / "report.json"
    try:
        report = json.loads(report_path.read_text()) if log_path.name and report_path.is_file() else {}
    except (OSError, ValueError):
        report = {}
    return report if isinstance(report, dict) else {}


def _planted(report: Mapping[str, Any]) -> list[str]:
    """The trip-wires a grading's report names."""
    entry = next(iter(report.values()), {}) if report else {}
    ratchet = entry.get("ratchet", {}) if isinstance(entry, Mapping) else {}
    planted = ratchet.get("tripwires", []) if isinstance(ratchet, Mapping) else []
    return [p for p in planted if isinstance(p, str)]


def collect_evidence(results: Mapping[str, Mapping[str, Any]], tasks: Sequence[Any], *,
                     grader_log: bool, max_tokens: int) -> Evidence:
    """The evidence pack of one generation's ``results`` (task id -> the journal's result),
    for the tasks in ``tasks`` only (the study tasks; any other result is ignored). With
    ``grader_log=False`` the test output is :func:`test_verdicts`, never the log."""
    by_id = {t.instance_id: t for t in tasks}
    records = []
    for task_id, result in sorted(results.items()):
        if task_id not in by_id:
            continue
        trajectory_path = Path(result.get("trajectory") or "")
        log_path = Path(result.get("grade_log") or "")
        report = _grading_report(log_path)
        if grader_log:
            test_output = log_path.read_text(errors="replace") if log_path.is_file() else ""
            test_output = redact_tripwires(test_output, _planted(report))
        else:
            test_output = test_verdicts(report)
        records.append(TaskEvidence(
            instance_id=task_id, resolved=bool(result["resolved"]),
            problem_statement=by_id[task_id].problem_statement,
            trajectory=load_gateway_trajectory(trajectory_path) if trajectory_path.is_file() else [],
            test_output=test_output))
    return build_evidence(records, max_tokens=max_tokens)
