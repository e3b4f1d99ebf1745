"""Grade patches in fresh sandboxes, many at a time, and write SWE-bench-shaped reports.

A patch is first admitted on its own headers (`_guard.header_problems`: nothing under
``.git``, no escaping path, symlink or packaging metadata): a refused patch is the agent's
failure and never reaches a container. One grading is then one container from the task
image, run by a root-owned wrapper (`_wrapper`): as the sandbox user it applies the patch
(the official harness's chain of ``git apply`` then ``patch --fuzz``), sets aside what the
patch may not change (`_guard`), applies the hidden tests, plants trip-wires (`_tripwire`)
and runs the tests; it records their exit code and output itself. The host grades what the
wrapper wrote (`_grading.grade_output`). One task's failure never stops a batch: an
infrastructure problem is recorded as an error (with its cause) and never as the patch's
failure.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
import weakref
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

from benchmark import _docker, _env_plugin, _guard, _tripwire, _wrapper
from benchmark._errors import InfraError
from benchmark._grading import (
    _PYTEST_PARSERS,
    END_TEST_OUTPUT,
    START_TEST_OUTPUT,
    TEST_EXIT_CODE,
    grade_output,
    parser_name,
    test_steps,
)
from benchmark._images import SANDBOX_UID, ImageBuilder
from benchmark._scan import scan_patch
from benchmark._task import TaskSpec

__all__ = ["Defences", "GradeResult", "Grader", "GradingExecutor", "Job", "grade_locally",
           "map_unordered", "run_jobs", "run_report"]

_GUARD_SOURCE = Path(_guard.__file__).read_text(encoding="utf-8")
_WRAPPER_SOURCE = Path(_wrapper.__file__).read_text(encoding="utf-8")
_TRIPWIRE_SOURCE = Path(_tripwire.__file__).read_text(encoding="utf-8")
_ENV_PLUGIN_SOURCE = Path(_env_plugin.__file__).read_text(encoding="utf-8")
TRIPWIRES_PER_GRADING = 2
# The wrapper's code and the directories of a grading (root-only ones 0700): the same for
# every grading, so a container can be started with it ahead of its job.
_CODE_TAR = _docker.tree_tar([
    ("ratchet", None, 0o755),
    ("ratchet/bin", None, 0o755),
    ("ratchet/bin/wrapper.py", _WRAPPER_SOURCE, 0o644),
    ("ratchet/bin/guard.py", _GUARD_SOURCE, 0o644),
    ("ratchet/bin/_tripwire.py", _TRIPWIRE_SOURCE, 0o644),
    ("ratchet/plugins", None, 0o755),
    (f"ratchet/plugins/{_wrapper.ENV_PLUGIN}.py", _ENV_PLUGIN_SOURCE, 0o644),
    ("ratchet/in", None, 0o755),
    ("ratchet/out", None, 0o700),
])
_APPLY_CMDS = (  # the official harness's chain (swebench.harness.run_evaluation.GIT_APPLY_CMDS)
    ["git", "apply", "--verbose"],
    ["git", "apply", "--verbose", "--3way"],
    ["git", "apply", "--verbose", "--reject"],
    ["patch", "--batch", "--forward", "--fuzz=5", "-p1", "-i"],
)


_NO_LIMIT_S = 7 * 24 * 3600.0  # a grading without its wall-clock kill (the defence's own test)


@dataclass(frozen=True)
class Defences:
    """The grader's defences, each on by default. Only the tests that show each defence's
    attack succeeding without it switch one off; nothing else may."""

    refuse_git_paths: bool = True
    refuse_packaging_metadata: bool = True
    refuse_shadowing: bool = True
    refuse_unlisted_paths: bool = True
    refuse_other_formats: bool = True
    """A patch with context-diff, normal-diff or ed-script lines (which only GNU patch reads,
    unseen by the static scan) is refused before any tool reads it."""
    config_files: tuple[str, ...] = _guard.CONFIG_FILES
    hooks_off: bool = True
    safe_path: bool = True
    plugin_autoload_off: bool = True
    tripwires: bool = True
    twins: bool = True
    """Trip-wires are twins of FAIL_TO_PASS tests where one lends itself; off, every one is
    a ``finally`` copy (whose shape code under test can recognise)."""
    junit: bool = True
    output_cap: bool = True
    restore_env: bool = True
    """Not a defence: the tests' own children get the task's environment back (no safe path,
    plugin autoload as usual, no junit pipe), as under the official harness."""
    wall_clock_kill: bool = True
    """The wrapper kills the tests at the task's limit and the host kills the container a grace
    later; off, a grading waits for the tests however long they take."""


def shadow_names(task: TaskSpec) -> list[str]:
    """Top-level module names a patch may not add: the standard library's, the test
    runner's, and the plugins the task loads."""
    plugins = {name.split(".", 1)[0] for name in _pytest_plugins(task)}
    return sorted(set(sys.stdlib_module_names) | set(_guard.TEST_RUNNER_MODULES) | plugins)


def _pytest_plugins(task: TaskSpec) -> tuple[str, ...]:
    return task.environment.pytest_plugins if task.environment else ()


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
    """The run tampered with the test process (a trip-wire did not fail, pytest's junit
    report contradicts the log, a test file changed while the tests ran): never resolved,
    never accepted."""
    tamper_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    log_path: str = ""
    flags: list[dict] = field(default_factory=list)
    """Tamper signatures in the patch's added non-test lines (`_scan`): shown, not a verdict."""
    tripwires: list[str] = field(default_factory=list)
    """Node ids of the trip-wires planted in this grading (redacted from what a proposer sees)."""

    def failure_class(self) -> tuple[str, str] | None:
        """swebench 5.x's advisory classification of a failure from its log (#586):
        (reason, tier ``environment`` | ``ambiguous``), or None. Never changes a verdict."""
        if self.resolved or not self.log_path:
            return None
        from swebench.harness.infra_failure import classify_logs

        return classify_logs(self.log_path)

    def swebench_report(self) -> dict:
        """This result in the shape of the official harness's per-instance report.json."""
        failure = self.failure_class()
        extra = {"infra_failure_reason": failure[0]} if failure else {}
        return {
            self.instance_id: {
                "patch_is_None": not self.patch_exists,
                "patch_exists": self.patch_exists,
                "patch_successfully_applied": self.patch_applied,
                "resolved": self.resolved,
                "infra_failure": bool(failure and failure[1] == "environment"),
                **extra,
                "tests_status": self.tests_status,
                "ratchet": {
                    "tests_ran": self.tests_ran,
                    "set_aside": self.set_aside,
                    "problems": self.problems,
                    "tampered": self.tampered,
                    "tamper_reasons": self.tamper_reasons,
                    "error": self.error,
                    "flags": self.flags,
                    "tripwires": self.tripwires,
                    "seconds": round(self.seconds, 3),
                    "log": self.log_path,
                },
            }
        }


class Grader:
    """Grades patches for tasks; logs and a report.json per grading go under `out_dir`."""

    def __init__(self, builder: ImageBuilder, out_dir: Path,
                 limits: _docker.SandboxLimits = _docker.SandboxLimits(),
                 defences: Defences = Defences()):
        self.builder = builder
        self.out_dir = out_dir
        self.limits = limits
        self.defences = defences
        self._ready: dict[str, list] = {}
        self._starting: dict[str, int] = {}
        self._ready_lock = threading.Condition()
        weakref.finalize(self, _remove_all, self._ready, self._ready_lock)

    def prestart(self, task: TaskSpec) -> None:
        """Start a fresh grading container of `task`'s image now, ahead of its patch: the
        next grading of that image takes it instead of waiting for a start (one that begins
        while it is starting waits for it). Each container grades once; one never taken is
        removed by `close` (or when the grader goes)."""
        image = self.builder.ensure_task(task)
        with self._ready_lock:
            self._starting[image] = self._starting.get(image, 0) + 1
        container = None
        try:
            container = _docker.start_grading_container(image, self.limits, _CODE_TAR)
        finally:
            with self._ready_lock:
                self._starting[image] -= 1
                if container is not None:
                    self._ready.setdefault(image, []).append(container)
                self._ready_lock.notify_all()

    def admits(self, patch: str | None) -> bool:
        """Whether grading `patch` will use a container: a missing patch, or one refused by
        its headers (`_guard.header_problems`), never reaches one, so none is started
        ahead for it (it would wait unused until `close`)."""
        return patch is not None and not self._refusals(patch)

    def _refusals(self, patch: str) -> list[str]:
        """Why the patch's own headers refuse it, by this grader's defences ([] if not)."""
        d = self.defences
        return _guard.header_problems(patch, git=d.refuse_git_paths,
                                      metadata=d.refuse_packaging_metadata,
                                      unified=d.refuse_other_formats)

    def _take(self, image: str):
        """A container started ahead for `image`: a ready one, else one still starting
        (waited for: it is nearer than a new one, and would otherwise wait unused)."""
        with self._ready_lock:
            self._ready_lock.wait_for(lambda: self._ready.get(image)
                                      or not self._starting.get(image), timeout=120)
            waiting = self._ready.get(image)
            return waiting.pop(0) if waiting else None

    def close(self) -> None:
        """Remove the containers started ahead that no grading took (those still starting
        too), and wait until the finished ones are removed."""
        with self._ready_lock:
            self._ready_lock.wait_for(lambda: not any(self._starting.values()), timeout=120)
        _remove_all(self._ready, self._ready_lock)
        _docker.finish_removals()

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
        refused = self._refusals(patch)
        if refused:  # nothing of it reaches a container
            result.problems.append("the patch was refused: " + "; ".join(refused))
            log_path.write_text(f"{_guard.REFUSED_MARKER}\n" + "\n".join(refused) + "\n",
                                encoding="utf-8")
            return
        image = self.builder.ensure_task(task)
        timeout = task.environment.timeout_s if task.environment else 900
        if not self.defences.wall_clock_kill:
            timeout = _NO_LIMIT_S
        job = self._job(task, patch, timeout)
        run = None
        for attempt in range(2):  # one retry: a transient daemon hiccup is not a verdict
            try:
                run = _docker.run_grading(
                    image, _CODE_TAR, job, timeout_s=timeout, limits=self.limits,
                    out_dir=log_path.parent / "out",
                    fetch_cap=None if self.defences.output_cap else 1 << 40,
                    started=self._take(image) if attempt == 0 else None)
                break
            except InfraError:
                if attempt:
                    raise
        assert run is not None
        self._read(task, run, result, log_path, timeout)

    def _job(self, task: TaskSpec, patch: str, timeout: float) -> bytes:
        """The job of one grading, for the wrapper's stdin: the guard's spec and the patch,
        which the wrapper writes for the sandbox user; the spec (hidden tests, test
        command), which it keeps in its own memory and never writes to a file."""
        d = self.defences
        steps = test_steps(task)
        pytest_log = parser_name(task) in _PYTEST_PARSERS
        guard_spec = {
            "patch_file": "/ratchet/in/model.patch",
            "apply_commands": _APPLY_CMDS,
            "hidden_test_files": task.test_files,
            "patch_paths": _guard.paths_named_in_patch(patch),
            "config_files": list(d.config_files),
            "shadow_names": shadow_names(task),
            "rules": {"git": d.refuse_git_paths, "metadata": d.refuse_packaging_metadata,
                      "unified": d.refuse_other_formats,
                      "shadow": d.refuse_shadowing, "unlisted": d.refuse_unlisted_paths},
        }
        targets: dict[str, list[str]] = {}
        twins: dict[str, list[str]] = {}  # FAIL_TO_PASS tests: the ones a twin can copy
        if d.tripwires and pytest_log:
            for test in (*task.FAIL_TO_PASS, *task.PASS_TO_PASS):
                file, sep, rest = test.partition("::")
                if sep and file in task.test_files:
                    targets.setdefault(file, []).append(rest)
                    if d.twins and test in task.FAIL_TO_PASS:
                        twins.setdefault(file, []).append(rest)
        spec = {
            "timeout_s": timeout, "uid": SANDBOX_UID, "gid": SANDBOX_UID, "repo": "/testbed",
            "base": steps.base, "restore": steps.restore, "remove": steps.remove,
            "test_patch": steps.test_patch, "test_command": steps.test_command,
            "test_files": task.test_files, "tripwire_targets": targets, "tripwire_twins": twins,
            "tripwire_fresh": _tripwire.added_test_names(task.test_patch) if twins else {},
            "tripwire_count": TRIPWIRES_PER_GRADING,
            # a test command that names its own junit file keeps it (ours would be ignored)
            "junit": d.junit and pytest_log and "junit" not in steps.test_command,
            "pytest_plugins": list(_pytest_plugins(task)),
            "output_cap": self.limits.output_bytes if d.output_cap else None,
            "restore_env": d.restore_env,
            "defences": asdict(d),
        }
        return json.dumps({
            "guard": guard_spec, "spec": spec,
            "patch": patch if not patch or patch.endswith("\n") else patch + "\n",
        }).encode()

    def _read(self, task: TaskSpec, run: _docker.GradingRun, result: GradeResult,
              log_path: Path, timeout: float) -> None:
        """The verdict from what the wrapper wrote; eval.log for people and the proposer."""
        report_path = run.files.get("result.json")
        if report_path is None:
            if run.killed or run.oom_killed:
                why = "timed out" if run.killed else "ran out of memory"
                result.problems.append(f"grading {why} before the tests finished (limit {timeout}s)")
                log_path.write_text(f"grading {why}\n{run.log_tail}", encoding="utf-8")
                return
            raise InfraError(f"the grading wrapper wrote no result; its last output: "
                             f"{run.log_tail[-500:]!r}")
        report = json.loads(report_path.read_text(encoding="utf-8"))
        if report.get("crashed"):
            raise InfraError(f"the grading wrapper failed: {report['crashed'][-800:]}")
        guard = report.get("guard", {})
        tests_log = run.files.get("tests.log")
        output = tests_log.read_text(encoding="utf-8", errors="replace") if tests_log else None
        exit_code = report.get("exit_code")
        with log_path.open("w", encoding="utf-8") as log:
            log.write(report.get("guard_output", ""))
            log.write(report.get("test_patch_output", ""))
            if output is not None:
                log.write(f"{START_TEST_OUTPUT}\n{output}\n{END_TEST_OUTPUT}\n"
                          f"{TEST_EXIT_CODE}: {exit_code}\n")
            log.write(f"ratchet steps: {json.dumps(report.get('steps', {}))}\n")
        if tests_log:
            tests_log.unlink()
        if report.get("timed_out") and "exit_code" not in report:
            result.problems.append(f"grading timed out after {timeout}s before the tests ran")
            return
        if guard.get("refused"):
            result.problems.append("the patch was refused: " + "; ".join(guard["refused"]))
            return
        if not guard.get("applied"):
            result.problems.append("the patch does not apply to the base commit")
            return
        result.patch_applied = True
        result.set_aside = guard.get("set_aside", [])
        if report.get("test_patch_failed"):
            result.problems.append("the hidden test patch did not apply after the patch")
            return
        tripwires = [_tripwire.Planted(t["file"], t["test"], t.get("kind", "copy"),
                                       t.get("original", ""))
                     for t in report.get("tripwires", [])]
        result.tripwires = [planted.nodeid for planted in tripwires]
        outcome = grade_output(task, output, exit_code, tripwires=tripwires,
                               junit=report.get("junit"))
        result.resolved = outcome.resolved
        result.tests_ran = outcome.tests_ran
        result.tests_status = outcome.tests_status
        result.problems += outcome.problems
        result.tampered = outcome.tampered
        result.tamper_reasons = list(outcome.tamper_reasons)
        if report.get("test_files_changed"):
            result.tampered = True
            result.tamper_reasons.append("the test files changed while the tests ran: "
                                         + ", ".join(report["test_files_changed"]))
        if report.get("output_capped"):
            result.problems.append(
                f"the tests printed more than {self.limits.output_bytes} bytes: the rest was "
                "dropped and the tests stopped")
        if report.get("timed_out") or run.killed:
            result.problems.append(f"grading timed out after {timeout}s")
        if result.tampered or report.get("output_capped") or report.get("timed_out") or run.killed:
            result.resolved = False


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


def _remove_all(ready: dict[str, list], lock: threading.Condition) -> None:
    with lock:
        containers = [c for waiting in ready.values() for c in waiting]
        ready.clear()
    for container in containers:
        container.remove()


def grade_locally(grader: Grader, jobs: Sequence[Job], *, workers: int = 2) -> Iterator[GradeResult]:
    """Grade every job on a pool of `workers` threads; results in completion order. When a
    job starts, the container of the job `workers` places behind it is started, so it
    need not wait for one."""
    jobs = list(jobs)
    workers = max(1, workers)

    def one(index: int) -> GradeResult:
        ahead = index + workers
        if ahead < len(jobs) and grader.admits(jobs[ahead].patch):
            try:
                grader.prestart(jobs[ahead].task)
            except Exception:  # noqa: BLE001 - its own grading starts one, or reports why
                pass
        job = jobs[index]
        return grader.grade(job.task, job.patch, label=job.label)

    def stream() -> Iterator[GradeResult]:
        try:
            yield from map_unordered(one, range(len(jobs)), workers=workers)
        finally:
            grader.close()

    return stream()


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
    # swebench 5.x's advisory failure classes: ids stay where they are, only labelled
    classes = {i: c for i, r in by_id.items() if predictions.get(i) and (c := r.failure_class())}
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
        "infra_failure_instances": sum(1 for c in classes.values() if c[1] == "environment"),
        "ambiguous_failure_instances": sum(1 for c in classes.values() if c[1] != "environment"),
        "infra_failure_ids": sorted(i for i, c in classes.items() if c[1] == "environment"),
        "ambiguous_failure_ids": sorted(i for i, c in classes.items() if c[1] != "environment"),
        "failure_reasons": {i: classes[i][0] for i in sorted(classes)},
        "error_ids": errors,
        "schema_version": 2,
        "tampered_instances": len(tampered),
        "tampered_ids": tampered,
        "flagged_ids": flagged,
        "resolved_flagged_ids": sorted(set(flagged) & set(resolved)),
        "ratchet": {r.instance_id: r.swebench_report()[r.instance_id]["ratchet"] for r in results},
    }

