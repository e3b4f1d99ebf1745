"""Grade patches in fresh sandboxes, many at a time, and write SWE-bench-shaped reports.

One grading is one container from the task image: the candidate patch is applied (the
official harness's chain of ``git apply`` then ``patch --fuzz``), files a patch may not
change are set aside (see `_guard`), then the eval script runs the hidden tests. The log is
graded by `_grading.grade_log`. One task's failure never stops a batch: an infrastructure
problem is recorded as an error (with its cause) and never as the patch's failure.
"""

from __future__ import annotations

import json
import secrets
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

from benchmark import _docker, _guard
from benchmark._errors import InfraError
from benchmark._grading import (
    END_TEST_OUTPUT,
    TEST_EXIT_CODE,
    eval_script_lines,
    grade_log,
)
from benchmark._images import SANDBOX_USER, ImageBuilder
from benchmark._scan import scan_patch
from benchmark._task import TaskSpec

__all__ = ["GradeResult", "Grader", "GradingExecutor", "Job", "grade_locally", "map_unordered",
           "run_jobs", "run_report"]

_GUARD_SOURCE = Path(_guard.__file__).read_text(encoding="utf-8")
_APPLY_CMDS = (  # the official harness's chain (swebench.harness.run_evaluation.GIT_APPLY_CMDS)
    ["git", "apply", "--verbose"],
    ["git", "apply", "--verbose", "--3way"],
    ["git", "apply", "--verbose", "--reject"],
    ["patch", "--batch", "--forward", "--fuzz=5", "-p1", "-i"],
)


@dataclass
class GradeResult:
    """One graded patch. `error` is set only for infrastructure failures."""

    instance_id: str
    label: str
    resolved: bool
    patch_exists: bool
    patch_applied: bool
    tests_ran: bool
    tests_status: dict = field(default_factory=dict)
    set_aside: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    tampered: bool = False
    """A trip-wire test passed, or the run's records disagree: never resolved, never accepted."""
    tamper_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    log_path: str = ""
    flags: list[dict] = field(default_factory=list)
    """Tamper signatures in the patch's added non-test lines (`_scan`): shown, not a verdict."""

    def swebench_report(self) -> dict:
        """This result in the shape of the official harness's per-instance report.json."""
        return {
            self.instance_id: {
                "patch_is_None": not self.patch_exists,
                "patch_exists": self.patch_exists,
                "patch_successfully_applied": self.patch_applied,
                "resolved": self.resolved,
                "tests_status": self.tests_status,
                "ratchet": {
                    "tests_ran": self.tests_ran,
                    "set_aside": self.set_aside,
                    "problems": self.problems,
                    "error": self.error,
                    "tampered": self.tampered,
                    "tamper_reasons": self.tamper_reasons,
                    "flags": self.flags,
                    "seconds": round(self.seconds, 3),
                    "log": self.log_path,
                },
            }
        }


def _container_script(task: TaskSpec, marker_tag: str) -> str:
    """Apply the patch and set aside what it may not touch (`_guard`), then run the eval
    script. The official script's markers are `: '...'` lines that only show under
    `set -x`; here they are echoed, and the test command's exit status is recorded after
    the end marker."""
    eval_lines = [f"echo {line[2:]}" if line.startswith(": '>>>>>") else line
                  for line in eval_script_lines(task, marker_tag=marker_tag)]
    end = f"echo '{END_TEST_OUTPUT}{marker_tag}'"
    at = eval_lines.index(end)
    eval_lines[at:at + 1] = ["RATCHET_TEST_EXIT=$?", end,
                             f'echo "{TEST_EXIT_CODE}: $RATCHET_TEST_EXIT"']
    return "\n".join([
        "set -uo pipefail",
        "cd /testbed",
        'PY=/usr/bin/python3; [ -x "$PY" ] || PY=$(command -v python3)',
        '"$PY" -I /ratchet/guard.py /testbed /ratchet/guard.json || exit 0',
        *eval_lines,
    ]) + "\n"


def _set_aside(log: str) -> list[dict]:
    for line in log.splitlines():
        if line.startswith(_guard.SET_ASIDE_MARKER):
            return json.loads(line[len(_guard.SET_ASIDE_MARKER):])
    return []


class Grader:
    """Grades patches for tasks; logs and a report.json per grading go under `out_dir`."""

    def __init__(self, builder: ImageBuilder, out_dir: Path,
                 limits: _docker.SandboxLimits = _docker.SandboxLimits()):
        self.builder = builder
        self.out_dir = out_dir
        self.limits = limits

    def grade(self, task: TaskSpec, patch: str | None, *, label: str = "model") -> GradeResult:
        started = time.monotonic()
        where = self.out_dir / task.instance_id / label
        where.mkdir(parents=True, exist_ok=True)
        (where / "patch.diff").write_text(patch or "", encoding="utf-8")
        log_path = where / "eval.log"
        result = GradeResult(task.instance_id, label, False, patch is not None, False, False,
                             log_path=str(log_path))
        if patch is None:  # the official harness's "patch_is_None": nothing to grade
            result.problems.append("no patch was submitted")
        else:
            result.flags = [flag.as_dict() for flag in scan_patch(patch)]
            try:
                self._run(task, patch, result, log_path)
            except InfraError as exc:
                result.error = str(exc)
                log_path.write_text(f"infrastructure error: {exc}\n", encoding="utf-8")
            except Exception as exc:  # a bug of ours must cost one task, not the batch
                result.error = f"internal error in the grader: {exc!r} (traceback: {log_path})"
                log_path.write_text(traceback.format_exc(), encoding="utf-8")
        result.seconds = time.monotonic() - started
        (where / "report.json").write_text(json.dumps(result.swebench_report(), indent=2))
        return result

    def adopt(self, result: GradeResult, patch: str | None, log: str) -> GradeResult:
        """Keep a grading done elsewhere (a cluster node) as if done here: its patch, log
        and report.json under this grader's `out_dir`."""
        where = self.out_dir / result.instance_id / result.label
        where.mkdir(parents=True, exist_ok=True)
        (where / "patch.diff").write_text(patch or "", encoding="utf-8")
        (where / "eval.log").write_text(log, encoding="utf-8")
        result.log_path = str(where / "eval.log")
        (where / "report.json").write_text(json.dumps(result.swebench_report(), indent=2))
        return result

    def _run(self, task: TaskSpec, patch: str, result: GradeResult, log_path: Path) -> None:
        image = self.builder.ensure_task(task)
        marker_tag = f" [{secrets.token_hex(8)}]"
        guard_spec = {
            "patch_file": "/ratchet/model.patch",
            "apply_commands": _APPLY_CMDS,
            "hidden_test_files": task.test_files,
            "patch_paths": _guard.paths_named_in_patch(patch),
        }
        files = {
            "ratchet/model.patch": patch if not patch or patch.endswith("\n") else patch + "\n",
            "ratchet/guard.py": _GUARD_SOURCE,
            "ratchet/guard.json": json.dumps(guard_spec),
        }
        timeout = task.environment.timeout_s if task.environment else 900
        run = None
        for attempt in range(2):  # one retry: a transient daemon hiccup is not a verdict
            try:
                run = _docker.run_script(
                    image, _container_script(task, marker_tag),
                    archives=[("/", _docker.make_tar(files))],
                    timeout_s=timeout, limits=self.limits,
                    # images ratchet built give /testbed to the sandbox user; a prebuilt
                    # (official) image expects root, as its own harness runs it
                    user="root" if task.image else SANDBOX_USER,
                )
                break
            except InfraError:
                if attempt:
                    raise
        assert run is not None
        log_path.write_text(run.log, encoding="utf-8")
        if _guard.APPLIED_MARKER not in run.log:
            result.problems.append("the patch does not apply to the base commit")
            return
        result.patch_applied = True
        result.set_aside = _set_aside(run.log)
        outcome = grade_log(task, run.log, marker_tag=marker_tag)
        result.resolved = outcome.resolved
        result.tests_ran = outcome.tests_ran
        result.tests_status = outcome.tests_status
        result.problems += outcome.problems
        if run.timed_out:
            result.resolved = False
            result.problems.append(f"grading timed out after {timeout}s")


@dataclass(frozen=True)
class Job:
    task: TaskSpec
    patch: str | None
    label: str


class GradingExecutor(Protocol):
    """Where gradings run: a local thread pool by default, a cluster in `harness.executors`."""

    def grade(self, grader: Grader, jobs: Sequence[Job]) -> Iterator[GradeResult]: ...


T = TypeVar("T")
R = TypeVar("R")


def map_unordered(fn: Callable[[T], R], items: Iterable[T], *, workers: int = 2) -> Iterator[R]:
    """`fn` over `items` on a pool of `workers` threads; results in completion order. Items
    not started when the consumer stops (or raises) are never started."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def grade_locally(grader: Grader, jobs: Sequence[Job], *, workers: int = 2) -> Iterator[GradeResult]:
    """Grade every job on a pool of `workers` threads; results in completion order."""
    return map_unordered(lambda job: grader.grade(job.task, job.patch, label=job.label), jobs,
                         workers=workers)


def run_jobs(grader: Grader, jobs: Iterable[Job], *, workers: int = 2,
             on_done: Callable[[GradeResult], None] = lambda result: None,
             executor: GradingExecutor | None = None) -> list[GradeResult]:
    """Grade every job (on `executor`, or a local pool of `workers`); completion order."""
    jobs = list(jobs)
    stream = executor.grade(grader, jobs) if executor else grade_locally(grader, jobs, workers=workers)
    results = []
    for result in stream:
        results.append(result)
        on_done(result)
    return results


def run_report(tasks: list[TaskSpec], predictions: dict[str, str | None],
               results: list[GradeResult], *, model: str) -> dict:
    """The run-level summary in the official harness's shape (schema_version 2)."""
    by_id = {r.instance_id: r for r in results}
    resolved = sorted(i for i, r in by_id.items() if r.resolved)
    errors = sorted(i for i, r in by_id.items() if r.error)
    tampered = sorted(i for i, r in by_id.items() if r.tampered)
    flagged = sorted(i for i, r in by_id.items() if r.flags)
    empty = sorted(i for i, p in predictions.items() if not p)
    # as the official harness: an empty patch is not graded, so it is not "completed"
    completed = sorted(i for i, r in by_id.items() if not r.error and predictions.get(i))
    return {
        "model_name_or_path": model,
        "total_instances": len(tasks),
        "submitted_instances": len(predictions),
        "completed_instances": len(completed),
        "resolved_instances": len(resolved),
        "unresolved_instances": len(completed) - len(resolved),
        "empty_patch_instances": len(empty),
        "error_instances": len(errors),
        "completed_ids": completed,
        "incomplete_ids": sorted({t.instance_id for t in tasks} - set(completed)),
        "empty_patch_ids": empty,
        "submitted_ids": sorted(predictions),
        "resolved_ids": resolved,
        "unresolved_ids": sorted(set(completed) - set(resolved)),
        "error_ids": errors,
        "schema_version": 2,
        "tampered_instances": len(tampered),
        "tampered_ids": tampered,
        "flagged_ids": flagged,
        "resolved_flagged_ids": sorted(set(flagged) & set(resolved)),
        "ratchet": {r.instance_id: r.swebench_report()[r.instance_id]["ratchet"] for r in results},
    }

