"""A task is valid when its gold patch resolves it and the empty patch does not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from benchmark._grader import GradeResult, Grader, GradingExecutor, Job, run_jobs
from benchmark._task import TaskSpec

__all__ = ["Validity", "validate_tasks"]


@dataclass
class Validity:
    instance_id: str
    valid: bool
    reasons: list[str]
    gold: GradeResult
    empty: GradeResult


def _judge(task: TaskSpec, gold: GradeResult, empty: GradeResult) -> Validity:
    reasons = []
    for result in (gold, empty):
        if result.error:
            reasons.append(f"{result.label}: infrastructure error: {result.error}")
    if not gold.error and not gold.resolved:
        failing = (gold.tests_status.get("FAIL_TO_PASS", {}).get("failure", [])
                   + gold.tests_status.get("PASS_TO_PASS", {}).get("failure", []))
        detail = "; ".join(gold.problems) or f"failing: {', '.join(failing[:5])}"
        reasons.append(f"the gold patch does not resolve it ({detail})")
    if gold.set_aside:
        reasons.append("the gold patch touches protected files: "
                       + ", ".join(item["path"] for item in gold.set_aside))
    if not empty.error and empty.resolved:
        reasons.append("the empty patch resolves it: the hidden tests pass without a fix")
    return Validity(task.instance_id, not reasons, reasons, gold, empty)


def validate_tasks(grader: Grader, tasks: list[TaskSpec], *, workers: int = 2,
                   on_done: Callable[[GradeResult], None] = lambda r: None,
                   executor: GradingExecutor | None = None) -> list[Validity]:
    """Grade gold and empty patches for every task, in parallel; one Validity per task."""
    jobs = [Job(t, t.patch, "gold") for t in tasks] + [Job(t, "", "empty") for t in tasks]
    results = run_jobs(grader, jobs, workers=workers, on_done=on_done, executor=executor)
    by_key = {(r.instance_id, r.label): r for r in results}
    return [_judge(t, by_key[(t.instance_id, "gold")], by_key[(t.instance_id, "empty")])
            for t in tasks]
