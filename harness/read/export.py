"""Export a recorded run as data: SWE-bench predictions, trajectories, preference pairs, lessons.

Everything is read back from what a run leaves behind (the journal, the grader's directories,
the gateway's logs, the git lineage); nothing is re-run. Each export is a list of JSON
objects, written one a line (JSONL). The schemas:

``predictions`` (``--gen N``; the official SWE-bench harness's input)::

    {"instance_id": str, "model_name_or_path": "ratchet/RUN/gen-NNNN", "model_patch": str}

  One per task generation N was scored on (``gens/NNNN/metrics.json``; a task its agent's
  tree was evaluated on in an earlier generation comes from that cache). The journal drops patches to stay
  small, so the patch is the one the grader kept beside its verdict,
  ``runs/RUN/grades/<instance_id>/agent-gen-NNNN/patch.diff``; a patch whose ``report.json``
  disagrees with the journal's verdict (graded again since) is refused, not exported.

``trajectories`` (one per task run; TRL's conversational format, e.g. ``SFTTrainer`` on
the resolved ones, or a reward-weighted / GRPO-style trainer on all)::

    {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...],
     "reward": 1.0 | 0.0,          # the grader's verdict: resolved or not
     "instance_id": str, "run": str, "generation": int,
     "agent_tree": str,            # the agent's tree hash: equal agents, equal hash
     "gateway_note": str | null,   # why the conversation ended without an answer, if it did
     "flags": [FLAG, ...]}

  ``messages`` is the gateway's record of the conversation (the trajectory of record), each
  message cut to ``role`` and ``content`` (plus ``tool_calls``, ``tool_call_id``, ``name``
  where the model used them). The gateway's own note on a refused or failed last call is
  not a chat message: it goes to ``gateway_note``.

``preferences`` (TRL's ``DPOTrainer`` conversational format with an explicit prompt)::

    {"prompt": [messages both share], "chosen": [rest of the resolved one],
     "rejected": [rest of the failed one], "instance_id": str,
     "chosen_generation": int, "rejected_generation": int,
     "divergence_step": int,       # index of the first message where they differ
     "flags": [FLAG, ...]}

  Every (resolved, failed) pair of runs of one task by two different generations. A pair
  whose one side is a prefix of the other carries no preference and is left out.

``lessons`` (the agent's Reflexion-style notes, ``agent_seed/lessons.md``, across the
accepted generations, oldest first)::

    {"run": str, "generation": int, "sha": str, "lessons_file": "agent_seed/lessons.md",
     "lessons": str, "previous_generation": int | null,
     "diff": str,                  # unified diff from the previous accepted generation's
     "flags": [FLAG, ...]}

A FLAG is ``{"pattern": NAME, "where": "messages[2] (assistant) line 4", "excerpt": str}``:
text that reads as an instruction to the grader or the harness rather than to the task
(see :data:`INJECTION_PATTERNS`). Flagged records are exported as they are, flags and all:
silently passing them on would train a model to game its grader; silently dropping them
would hide that the loop produced them and bias the data set. A reader filters on
``flags`` knowingly.

Problems that cost a record (a missing trajectory log or patch) are collected in
:attr:`Export.problems`, one line each, never skipped quietly.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import git
import yaml

from harness.propose.evidence import load_gateway_trajectory
from harness.loop.journal import Journal, replay
from harness.loop.workspace import AGENT_DIR
from harness.errors import ExportError

__all__ = ["EXPORTS", "INJECTION_PATTERNS", "Export", "ExportError", "export_run", "find_injections",
           "lessons", "pair_preferences", "predictions", "preferences", "trajectories",
           "write_jsonl"]

EXPORTS = ("predictions", "trajectories", "preferences", "lessons")

# Phrases aimed at whoever checks the work (the grader, the test harness), not at the task.
# An agent that rewrites its own prompt and notes is rewarded by the grader alone, so the
# cheapest "improvement" it can find is one that games the grader: telling the model to
# ignore its instructions, skip checks, declare success, or plant files the test run
# imports by itself (``conftest.py`` is loaded by pytest, ``sitecustomize.py`` by every
# Python start). The phrases are matched case-insensitively, line by line. They err toward
# flagging: a flag asks a person to look, it decides nothing. "never delete tests", the
# seed's own advice, is deliberately not matched; "disable the tests" is.
INJECTION_PATTERNS: tuple[tuple[str, str], ...] = (
    ("ignore-previous-instructions",
     (r"\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+)?(?:the\s+|your\s+)?"
      r"(?:previous|prior|above|earlier|system)\s+(?:instructions|prompts?|rules)")),
    ("skip-validation", r"\bskip(?:ping)?\s+(?:the\s+|all\s+)?(?:validation|verification|checks?)\b"),
    ("the-grader", r"\bgrader\b|\bgrading\s+(?:script|harness|code)\b"),
    ("the-harness", r"\b(?:test|evaluation|eval)\s+harness\b"),
    ("mark-as-passed",
     r"\bmark(?:s|ed|ing)?\s+(?:\w+\s+){0,3}?as\s+(?:passed|passing|resolved|success(?:ful)?)\b"),
    ("disable-the-tests", r"\bdisabl(?:e|es|ed|ing)\s+(?:the\s+|all\s+|any\s+)?(?:\w+\s+)?tests?\b"),
    ("conftest", r"\bconftest(?:\.py)?\b"),
    ("sitecustomize", r"\b(?:site|user)customize(?:\.py)?\b"),
)
_COMPILED = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in INJECTION_PATTERNS)
_MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")
_EXCERPT = 160


@dataclass
class Export:
    what: str
    records: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)
    """Records that could not be made, one line each (the CLI prints them)."""

    @property
    def flagged(self) -> int:
        """Records carrying at least one flag."""
        return sum(1 for r in self.records if r.get("flags"))


def find_injections(text: str, where: str) -> list[dict[str, str]]:
    """Flags for every line of ``text`` matching one of :data:`INJECTION_PATTERNS`."""
    flags = []
    for number, line in enumerate(text.splitlines(), start=1):
        for name, pattern in _COMPILED:
            if pattern.search(line):
                flags.append({"pattern": name, "where": f"{where} line {number}",
                              "excerpt": line.strip()[:_EXCERPT]})
    return flags


def _message_flags(messages: Sequence[Mapping[str, Any]], field_name: str) -> list[dict[str, str]]:
    flags = []
    for index, message in enumerate(messages):
        text = message.get("content") or ""
        if message.get("tool_calls"):
            text += "\n" + json.dumps(message["tool_calls"])
        flags += find_injections(text, f"{field_name}[{index}] ({message.get('role')})")
    return flags


# -- reading the run -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Evaluation:
    generation: int
    tree_hash: str
    instance_id: str
    attempt: int
    result: dict[str, Any]


def _run_dir(workspace: Path, run: str) -> Path:
    path = Path(workspace) / "runs" / run
    if not (path / "journal.jsonl").is_file():
        raise ExportError(f"no run {run} in {Path(workspace) / 'runs'} (no journal.jsonl)")
    return path


def _evaluations(run_dir: Path) -> list[_Evaluation]:
    """Journaled task evaluations, the last record of each (tree, task, attempt), in order."""
    latest: dict[tuple[str, str, int], _Evaluation] = {}
    for record in Journal.read(run_dir / "journal.jsonl"):
        if record.get("event") != "task_evaluated":
            continue
        found = _Evaluation(int(record["generation"]), str(record["tree_hash"]),
                            str(record["task_id"]), int(record["attempt"]), dict(record["result"]))
        latest[(found.tree_hash, found.instance_id, found.attempt)] = found
    return sorted(latest.values(), key=lambda e: (e.generation, e.instance_id, e.attempt))


def _locate(recorded: str, run_dir: Path) -> Path:
    """A path the run recorded (absolute, where the workspace was then), read from the run
    being exported: a file under ``runs/RUN/`` is taken from ``run_dir``, so a workspace
    moved or copied since exports its own files."""
    path = Path(recorded)
    parts = path.parts
    for at in range(len(parts) - 1, 0, -1):
        if parts[at - 1] == "runs" and parts[at] == run_dir.name:
            here = run_dir.joinpath(*parts[at + 1:])
            if here.exists():
                return here
            break
    return path


# -- predictions ---------------------------------------------------------------------------

def predictions(workspace: Path, run: str, gen: int) -> Export:
    """SWE-bench predictions of generation ``gen``: the patches its agent was graded on."""
    run_dir = _run_dir(workspace, run)
    state = replay(Journal.read(run_dir / "journal.jsonl"))
    if gen not in state.generations:
        raise ExportError(f"run {run} has no generation {gen} (it has "
                          f"{', '.join(map(str, sorted(state.generations))) or 'none'})")
    evaluations = _evaluations(run_dir)
    path = run_dir / "gens" / f"{gen:04d}" / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    # The agent's tree, and the tasks it was scored on: a task its tree was evaluated on in
    # an earlier generation came from the cache, journaled under that generation.
    trees = ({metrics["tree"]} if metrics.get("tree")
             else {e.tree_hash for e in evaluations if e.generation == gen})
    scored = set(metrics["tasks"]) if isinstance(metrics.get("tasks"), dict) else None
    chosen: dict[str, _Evaluation] = {}
    for e in evaluations:
        if e.tree_hash not in trees or (scored is not None and e.instance_id not in scored):
            continue
        if e.instance_id not in chosen or e.attempt < chosen[e.instance_id].attempt:
            chosen[e.instance_id] = e
    if not chosen:
        return Export("predictions", [], [f"generation {gen} of run {run} evaluated no task"])
    model = f"ratchet/{run}/gen-{gen:04d}"
    records, problems = [], []
    for instance_id, e in sorted(chosen.items()):
        patch, problem = _graded_patch(e, run_dir)
        if problem:
            problems.append(f"{instance_id}: {problem}")
            continue
        records.append({"instance_id": instance_id, "model_name_or_path": model, "model_patch": patch})
    return Export("predictions", records, problems)


def _graded_patch(e: _Evaluation, run_dir: Path) -> tuple[str, str]:
    """(patch, "") from the grader's directory of this evaluation, or ("", why not)."""
    label = f"agent-gen-{e.generation:04d}"
    where = (_locate(e.result["grade_log"], run_dir).parent if e.result.get("grade_log")
             else run_dir / "grades" / e.instance_id / label)
    if where.name != label:
        return "", f"the grade log {e.result.get('grade_log')} is not under a {label} directory"
    patch_path = where / "patch.diff"
    if not patch_path.is_file():
        return "", f"no patch at {patch_path}: the grader's directory is gone"
    report_path = where / "report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text(encoding="utf-8")).get(e.instance_id, {})
        if bool(report.get("resolved")) != bool(e.result["resolved"]):
            return "", (f"{report_path} says resolved={report.get('resolved')} but the journal says "
                        f"{e.result['resolved']}: graded again since, the patch may not be the one judged")
    return patch_path.read_text(encoding="utf-8"), ""


# -- trajectories and preferences ----------------------------------------------------------

def _chat_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message cut to what a chat template reads; list content becomes its text."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    out: dict[str, Any] = {"role": str(message.get("role")),
                           "content": content if isinstance(content, str) else ""}
    for key in _MESSAGE_KEYS[2:]:
        if message.get(key):
            out[key] = message[key]
    return out


def trajectories(workspace: Path, run: str, gen: int | None = None) -> Export:
    """One record per journaled task run (of generation ``gen`` only, if given)."""
    run_dir = _run_dir(workspace, run)
    records, problems = [], []
    for e in _evaluations(run_dir):
        if gen is not None and e.generation != gen:
            continue
        path = _locate(e.result.get("trajectory") or "", run_dir)
        if not path.is_file():
            problems.append(f"gen {e.generation} {e.instance_id}: no trajectory log at {path}")
            continue
        raw = load_gateway_trajectory(path)
        note = next((str(m.get("content")) for m in raw if m.get("role") == "gateway"), None)
        messages = [_chat_message(m) for m in raw if m.get("role") != "gateway"]
        if not messages:
            problems.append(f"gen {e.generation} {e.instance_id}: the trajectory log {path} holds no call")
            continue
        records.append({"messages": messages, "reward": 1.0 if e.result["resolved"] else 0.0,
                        "instance_id": e.instance_id, "run": run, "generation": e.generation,
                        "agent_tree": e.tree_hash, "gateway_note": note,
                        "flags": _message_flags(messages, "messages")})
    return Export("trajectories", records, problems)


def _shared_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


def pair_preferences(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Preference pairs from trajectory records (see the module docstring)."""
    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for record in runs:
        by_task.setdefault(record["instance_id"], []).append(record)
    pairs = []
    for instance_id, records in sorted(by_task.items()):
        for good in (r for r in records if r["reward"] == 1.0):
            for bad in (r for r in records if r["reward"] == 0.0):
                if good["generation"] == bad["generation"]:
                    continue
                step = _shared_prefix(good["messages"], bad["messages"])
                prompt = good["messages"][:step]
                chosen, rejected = good["messages"][step:], bad["messages"][step:]
                if not chosen or not rejected:
                    continue
                pairs.append({
                    "prompt": prompt, "chosen": chosen, "rejected": rejected, "instance_id": instance_id,
                    "chosen_generation": good["generation"], "rejected_generation": bad["generation"],
                    "divergence_step": step,
                    "flags": (_message_flags(prompt, "prompt") + _message_flags(chosen, "chosen")
                              + _message_flags(rejected, "rejected"))})
    return sorted(pairs, key=lambda p: (p["instance_id"], p["chosen_generation"], p["rejected_generation"]))


def preferences(workspace: Path, run: str) -> Export:
    """(resolved, failed) pairs of runs of one task by different generations."""
    runs = trajectories(workspace, run)
    return Export("preferences", pair_preferences(runs.records), runs.problems)


# -- lessons -------------------------------------------------------------------------------

def _lessons_file(repo: git.Repo, sha: str) -> str:
    """The lessons file the agent at ``sha`` reads (its config may have renamed it)."""
    try:
        config = yaml.safe_load(repo.git.show(f"{sha}:{AGENT_DIR}/config.yaml"))
    except (git.GitCommandError, yaml.YAMLError):
        config = None
    name = config.get("lessons_file") if isinstance(config, dict) else None
    return f"{AGENT_DIR}/{name if isinstance(name, str) and name else 'lessons.md'}"


def lessons(workspace: Path, run: str) -> Export:
    """The lessons file at every accepted, recorded generation, with the diff between them."""
    run_dir = _run_dir(workspace, run)
    state = replay(Journal.read(run_dir / "journal.jsonl"))
    repo = git.Repo(workspace)
    records, problems = [], []
    previous: dict[str, Any] | None = None
    for number, g in sorted(state.generations.items()):
        if g.verdict != "accepted" or not g.sha:
            continue
        name = _lessons_file(repo, g.sha)
        try:
            text = repo.git.show(f"{g.sha}:{name}", strip_newline_in_stdout=False)
        except git.GitCommandError:
            problems.append(f"generation {number} ({g.sha[:12]}) has no {name}; exported as empty")
            text = ""
        diff = "" if previous is None else "".join(difflib.unified_diff(
            previous["lessons"].splitlines(keepends=True), text.splitlines(keepends=True),
            f"a/{previous['lessons_file']} (gen {previous['generation']})", f"b/{name} (gen {number})"))
        record = {"run": run, "generation": number, "sha": g.sha, "lessons_file": name, "lessons": text,
                  "previous_generation": None if previous is None else previous["generation"],
                  "diff": diff, "flags": find_injections(text, name)}
        records.append(record)
        previous = record
    return Export("lessons", records, problems)


# -- one entry point -----------------------------------------------------------------------

def export_run(workspace: Path, run: str, what: str, gen: int | None = None) -> Export:
    """The export ``what`` (one of :data:`EXPORTS`) of ``run``; predictions default to the
    run's best generation."""
    if what == "predictions":
        if gen is None:
            run_dir = _run_dir(workspace, run)
            gen = replay(Journal.read(run_dir / "journal.jsonl")).best or 0
        return predictions(workspace, run, gen)
    if what == "trajectories":
        return trajectories(workspace, run, gen)
    if what in ("preferences", "lessons"):
        if gen is not None:
            raise ExportError(f"--gen does not apply to {what}: they span the run's generations")
        return preferences(workspace, run) if what == "preferences" else lessons(workspace, run)
    raise ExportError(f"unknown export {what!r}; known: {', '.join(EXPORTS)}")


def write_jsonl(records: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    """Write one JSON object a line; returns how many."""
    count = 0
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        count += 1
    return count
