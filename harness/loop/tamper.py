"""Tampering as the loop sees it: the gate that never accepts a tampering generation, the
scan of a proposal's diff, and the counts ``ratchet log``/``status``/``report`` show.

The grader marks a run ``tampered`` (a trip-wire test passed, or the run's records
disagree) and lists static-scan ``flags`` (`benchmark._scan`). A score earned by
tampering is no score: whatever the acceptance rule said, a generation whose agent
tampered on any task is rejected, with the reason in its Decision. Journals written before
these fields existed read as "no tampering, no flags".
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from benchmark import scan_patch
from harness.loop.acceptance import Decision

__all__ = ["flagged_tasks", "gate", "proposal_flags", "run_tampering", "tampered_tasks"]


def _task_id(key: Any) -> str:
    """Results are keyed by task id, or by (task id, attempt) where a task runs K times."""
    return key if isinstance(key, str) else key[0]


def tampered_tasks(results: Mapping[Any, Mapping[str, Any]]) -> list[str]:
    """Task ids any of whose runs was graded tampered (journal result dicts, old ones included)."""
    return sorted({_task_id(key) for key, result in results.items() if result.get("tampered")})


def flagged_tasks(results: Mapping[Any, Mapping[str, Any]]) -> list[str]:
    return sorted({_task_id(key) for key, result in results.items() if result.get("flags")})


def gate(decision: Decision, results: Mapping[str, Mapping[str, Any]]) -> Decision:
    """`decision`, or a rejection when the candidate tampered on any task it ran."""
    tampered = tampered_tasks(results)
    if not tampered:
        return decision
    shown = ", ".join(tampered[:5]) + (" ..." if len(tampered) > 5 else "")
    return replace(decision, accepted=False,
                   reason=f"tampered on {len(tampered)} task{'s' if len(tampered) != 1 else ''} "
                          f"({shown}): never accepted, whatever the score (the rule said: "
                          f"{decision.reason})")


def _git(worktree: Path, *args: str, env: dict | None = None) -> str:
    return subprocess.run(
        ["git", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", *args],
        cwd=worktree, capture_output=True, text=True, check=True, env=env).stdout


def proposal_flags(worktree: Path) -> list[dict]:
    """Flags on the proposal's diff: the worktree's uncommitted changes (new files included;
    a proposal edits only the agent directory), read through a throw-away index so the
    worktree's own index is untouched."""
    with tempfile.TemporaryDirectory(prefix="ratchet-scan-") as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        try:
            _git(worktree, "read-tree", "HEAD", env=env)
            _git(worktree, "add", "-A", env=env)
            diff = _git(worktree, "diff", "--cached", "--no-ext-diff", "--no-textconv", "HEAD",
                        env=env)
        except subprocess.CalledProcessError as exc:  # shown as a flag; the loop goes on
            return [{"path": "", "line": 0, "signature": "the proposal's diff could not be scanned",
                     "text": (exc.stderr or "").strip()[:200]}]
    return [flag.as_dict() for flag in scan_patch(diff)]


def run_tampering(events: Iterable[Mapping[str, Any]]) -> dict[int, list[str]]:
    """Per generation, the tasks its agent tampered on, from a journal's records."""
    by_gen: dict[int, set[str]] = {}
    for event in events:
        if event.get("event") == "task_evaluated" and (event.get("result") or {}).get("tampered"):
            by_gen.setdefault(int(event.get("generation", -1)), set()).add(str(event["task_id"]))
    return {gen: sorted(tasks) for gen, tasks in sorted(by_gen.items())}
