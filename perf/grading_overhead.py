"""How much ratchet's grading costs on top of the tests themselves, and against the official
SWE-bench harness, measured in one run on the same images and gold patches.

    python perf/grading_overhead.py [--suite quickstart] [--repeat 3] [--json out.json]
                                    [--grading-only]

Per task, `--repeat` times, interleaved:
  (a) grade   - ``Grader.grade(task, task.patch)`` wall time (image already built): a fresh
                hardened container, the root grading wrapper (guard: apply + set aside as the
                sandbox user; test patch; trip-wires; tests as the sandbox user with junit),
                the copy-out of its output, grading, removal.
  (b) bare    - the task's test command plus its test files, run with ``docker exec`` (the
                SDK's exec_run) in an already-running container of the same image, as the
                same user as grading, in which the gold patch and the test patch were
                applied beforehand (untimed).
  (c) parts   - the wrapper's own timing of its steps in each grading of (a) (the
                ``ratchet steps:`` line of eval.log), plus the Docker API calls of (a) timed
                (create, put_archive, the job to the wrapper's stdin, start, wait,
                get_archive, logs, remove, image lookup).
Per suite, `--repeat` times, alternating which goes first:
  (d) ratchet  - ``run_jobs`` over every gold prediction, 2 workers, in this process.
  (e) official - ``python -m swebench.harness.run_evaluation`` on a local dataset built by
                 ``swebench_instance`` over the same images, same predictions, 2 workers,
                 in a fresh temp dir (HF_HUB_OFFLINE=1), timed as a subprocess.
Medians are reported. Before measuring, every task is graded once and run once bare, so
neither side pays a cold page cache. The verdicts of (d) and (e) must be identical.

Targets: (a)/(b) under 1.5x; (e)/(d) at least 5x.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import docker.models.containers as _containers  # noqa: E402
import docker.models.images as _images  # noqa: E402

from _common import LoadSampler, time_calls  # noqa: E402  (perf/ is sys.path[0])
from benchmark import (  # noqa: E402
    SANDBOX_USER,
    Grader,
    ImageBuilder,
    Job,
    TaskSpec,
    load_suite,
    load_tasks,
    run_jobs,
    suite_path,
    swebench_instance,
)
from benchmark import docker_host as _docker  # noqa: E402

HANDWRITTEN = ROOT / "tests" / "benchmark" / "data" / "handwritten.jsonl"

# --- timing of the Docker SDK calls ratchet makes (wrappers; the code path is unchanged) ---

_phase = threading.local()


def _timed(cls, name: str, label: str) -> None:
    time_calls(_phase, cls, name, label)


for _cls, _name, _label in (
    (_containers.ContainerCollection, "create", "create"),
    (_containers.Container, "put_archive", "put_archive"),
    (_containers.Container, "start", "start"),
    (_containers.Container, "wait", "wait (script)"),
    (_containers.Container, "logs", "logs"),
    (_containers.Container, "get_archive", "get_archive (wrapper output)"),
    (_containers.Container, "reload", "reload (container state)"),
    (_containers.Container, "remove", "remove"),
    (_images.ImageCollection, "get", "image lookup"),
):
    _timed(_cls, _name, _label)
_timed(_docker.WaitingGrading, "send", "job to the wrapper's stdin")
_timed(_docker.WaitingGrading, "collect", "wrapper's run + its result from its stdout")


def _grade_timed(grader: Grader, task: TaskSpec, label: str):
    _phase.sink = defaultdict(float)
    started = time.perf_counter()
    try:
        result = grader.grade(task, task.patch, label=label)
    finally:
        seconds = time.perf_counter() - started
        phases, _phase.sink = dict(_phase.sink), None
    phases["python (files, grading)"] = seconds - sum(phases.values())
    return result, seconds, phases


# --- in-container breakdown: the wrapper times its own steps ---------------------------------

def _script_steps(result) -> dict[str, float]:
    """The ``ratchet steps: {...}`` line the grader writes into eval.log from the wrapper."""
    text = Path(result.log_path).read_text(encoding="utf-8", errors="replace")
    m = re.search(r"^ratchet steps: (\{.*\})$", text, re.MULTILINE)
    steps = json.loads(m.group(1)) if m else {}
    steps["wrapper total"] = sum(steps.values()) if steps else float("nan")
    return steps


def _grading_user(task: TaskSpec) -> str:
    """The user the tests run as in grading: always the sandbox user (the wrapper drops
    to it, on ratchet's images and prebuilt ones alike)."""
    return SANDBOX_USER


# --- the bare test run: docker exec in a running container -----------------------------

class BareContainer:
    """A running container of the task image with the gold and test patches applied, as
    the user grading runs as (so it writes the same ``__pycache__`` the grading does)."""

    def __init__(self, task: TaskSpec, image: str, limits: _docker.SandboxLimits):
        self.task = task
        client = _docker.connect()
        self.container = client.containers.run(
            image, ["sleep", "infinity"], detach=True, user=_grading_user(task),
            **_docker.hardened_options(limits))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name, text in (("gold.diff", task.patch), ("test.diff", task.test_patch)):
                data = (text if text.endswith("\n") else text + "\n").encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(data))
        self.container.put_archive("/tmp", buffer.getvalue())
        setup = self.container.exec_run(
            ["bash", "-c", "cd /testbed && git apply /tmp/gold.diff && git apply /tmp/test.diff"])
        if setup.exit_code != 0:
            raise RuntimeError(f"{task.instance_id}: bare setup failed: {setup.output[-500:]!r}")
        test_cmd = task.environment.test_cmd if task.environment else \
            "python -m pytest -rA -p no:cacheprovider"
        self.command = f"{test_cmd} {' '.join(task.test_files)}"

    def run(self) -> tuple[float, float, int]:
        """(wall seconds of the exec, seconds the test command took inside, its exit code)."""
        script = (f"cd /testbed; s=$(date +%s.%N); {self.command}; rc=$?; e=$(date +%s.%N); "
                  'echo "@@BARE $s $e $rc"')
        started = time.perf_counter()
        result = self.container.exec_run(["bash", "-c", script])
        wall = time.perf_counter() - started
        m = re.search(rb"@@BARE (\S+) (\S+) (\d+)", result.output)
        inside = float(m.group(2)) - float(m.group(1)) if m else float("nan")
        return wall, inside, int(m.group(3)) if m else -1

    def close(self) -> None:
        self.container.remove(force=True)


# --- the suite: ratchet's run_jobs against the official run_evaluation -------------------

def _ratchet_suite(builder: ImageBuilder, tasks: list[TaskSpec], out: Path) -> tuple[float, dict]:
    grader = Grader(builder, out)
    started = time.perf_counter()
    results = run_jobs(grader, [Job(t, t.patch, "gold") for t in tasks], workers=2)
    seconds = time.perf_counter() - started
    return seconds, {r.instance_id: r.resolved for r in results}


def _official_suite(dataset: Path, preds: Path, workdir: Path, run_id: str) -> tuple[float, dict, list]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "swebench.harness.run_evaluation", "-d", str(dataset),
         "-p", str(preds), "-id", run_id, "--max_workers", "2", "--report_dir", str(workdir)],
        cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"run_evaluation failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    verdicts, stops = {}, []
    for report in (workdir / "logs" / "run_evaluation" / run_id).glob("*/*/report.json"):
        for iid, body in json.loads(report.read_text()).items():
            verdicts[iid] = bool(body["resolved"])
        stops.append(_stop_seconds(report.parent / "run_instance.log"))
    return seconds, verdicts, stops


def _stop_seconds(log: Path) -> float:
    """From the harness's own log: how long `docker stop` of the container took."""
    stamp = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - INFO - "
    text = log.read_text(errors="replace")
    a = re.search(stamp + r"Attempting to stop", text, re.MULTILINE)
    b = re.search(stamp + r"Container .* removed successfully", text, re.MULTILINE)
    if not (a and b):
        return float("nan")
    parse = lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f")  # noqa: E731
    return (parse(b.group(1)) - parse(a.group(1))).total_seconds()


def _startup(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(
        os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"), capture_output=True)
    return time.perf_counter() - started




# --- main -----------------------------------------------------------------------------------

def _tasks(name: str | None) -> tuple[str, list[TaskSpec]]:
    if name:
        loaded = load_suite(name)
        return str(suite_path(name)), loaded.tasks
    try:
        loaded = load_suite("quickstart")
        if loaded.tasks:
            return str(suite_path("quickstart")), loaded.tasks
    except Exception:
        pass
    return str(HANDWRITTEN), load_tasks(HANDWRITTEN).tasks


def med(values) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default=None,
                        help="suite name or task file (default: quickstart, else the handwritten file)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    parser.add_argument("--grading-only", action="store_true",
                        help="per-task figures only: skip the suite runs against the official "
                             "harness (about 5 of the 6 minutes)")
    args = parser.parse_args()
    # a kill runs the `finally` below, so no bare container is left running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    source, tasks = _tasks(args.suite)
    print(f"suite: {source} ({len(tasks)} tasks), repeat {args.repeat}, "
          f"{os.cpu_count()} CPUs, Docker {docker.from_env().version()['Version']}")
    load = LoadSampler()
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    builder = ImageBuilder(on_event=lambda m: print("  " + m))
    images = {t.instance_id: builder.ensure_task(t) for t in tasks}
    work = Path(tempfile.mkdtemp(prefix="ratchet-bench-"))
    grader = Grader(builder, work / "ratchet")

    # warm-up: one grading and one bare run per task, not measured
    bare = {t.instance_id: BareContainer(t, images[t.instance_id], grader.limits) for t in tasks}
    try:
        for t in tasks:
            grader.grade(t, t.patch, label="warmup")
            bare[t.instance_id].run()

        per_task: dict[str, dict] = {}
        for t in tasks:
            rows = defaultdict(list)
            grader.prestart(t)  # as run_jobs does: the container is started ahead of its job
            for n in range(args.repeat):
                result, seconds, phases = _grade_timed(grader, t, f"gold-{n}")
                if n + 1 < args.repeat:
                    grader.prestart(t)  # starts while the bare run below runs
                if not result.resolved:
                    print(f"  WARNING {t.instance_id}: ratchet did not resolve the gold patch: "
                          f"{result.problems} {result.error}")
                wall, inside, rc = bare[t.instance_id].run()
                if rc != 0:
                    print(f"  WARNING {t.instance_id}: the bare test run exited {rc}")
                rows["grade"].append(seconds)
                rows["bare"].append(wall)
                rows["bare inside"].append(inside)
                for k, v in phases.items():
                    rows["api: " + k].append(v)
                for k, v in _script_steps(result).items():
                    rows["wrapper: " + k].append(v)
            per_task[t.instance_id] = {k: med(v) for k, v in rows.items()}
            per_task[t.instance_id]["raw"] = dict(rows)
            print(f"  measured {t.instance_id}")
    finally:
        grader.close()
        for b in bare.values():
            b.close()

    # suite-level: ratchet run_jobs vs official run_evaluation
    dataset = work / "dataset.jsonl"
    dataset.write_text("".join(json.dumps(swebench_instance(t, images[t.instance_id])) + "\n"
                               for t in tasks))
    preds = work / "preds.jsonl"
    preds.write_text("".join(json.dumps({"instance_id": t.instance_id, "model_name_or_path": "gold",
                                         "model_patch": t.patch}) + "\n" for t in tasks))
    suite = defaultdict(list)
    verdict_sets = []
    for n in range(0 if args.grading_only else args.repeat):
        order = ("ratchet", "official") if n % 2 == 0 else ("official", "ratchet")
        for which in order:
            if which == "ratchet":
                seconds, verdicts = _ratchet_suite(builder, tasks, work / f"suite-{n}")
                suite["ratchet"].append(seconds)
                verdict_sets.append(("ratchet", verdicts))
            else:
                seconds, verdicts, stops = _official_suite(dataset, preds, work, f"bench-{n}")
                suite["official"].append(seconds)
                suite["official docker stop per instance"].extend(stops)
                verdict_sets.append(("official", verdicts))
            print(f"  suite run {n + 1}/{args.repeat}: {which} {seconds:.1f}s")
    for _ in range(0 if args.grading_only else args.repeat):
        suite["startup official (python -m ... import)"].append(
            _startup("import swebench.harness.run_evaluation"))
        suite["startup ratchet (import runner + swebench grading)"].append(_startup(
            "import benchmark._grader, swebench.harness.grading, swebench.harness.log_parsers"))

    # --- report ---
    print()
    head = f"{'task':58} {'grade s':>8} {'bare s':>8} {'ratio':>6} {'tests in':>8}"
    print(head)
    print("-" * len(head))
    ratios = []
    for iid, m in per_task.items():
        ratio = m["grade"] / m["bare"]
        ratios.append(ratio)
        print(f"{iid[:58]:58} {m['grade']:8.3f} {m['bare']:8.3f} {ratio:6.2f} {m['bare inside']:8.3f}")
    print()
    print("median over tasks of the per-task medians, seconds:")
    keys = [k for k in next(iter(per_task.values())) if k != "raw"]
    for k in keys:
        print(f"  {k:48} {med([m[k] for m in per_task.values()]):7.3f}")
    grade_ratio = med(ratios)
    print()
    if args.grading_only:
        print(f"grading / bare test run (median over tasks): {grade_ratio:.2f}x")
        print(load.report())
        return 0
    r, o = med(suite["ratchet"]), med(suite["official"])
    so = med(suite["startup official (python -m ... import)"])
    sr = med(suite["startup ratchet (import runner + swebench grading)"])
    print(f"suite, {len(tasks)} gold predictions, 2 workers: ratchet {r:.2f}s, official {o:.2f}s "
          f"(runs: ratchet {[round(x, 2) for x in suite['ratchet']]}, "
          f"official {[round(x, 2) for x in suite['official']]})")
    print(f"  official docker stop per instance (its own log): median "
          f"{med(suite['official docker stop per instance']):.2f}s")
    print(f"  interpreter start-up + imports: official {so:.2f}s, ratchet {sr:.2f}s")
    ids = sorted(images)
    table = {name: [] for name in ("ratchet", "official")}
    for name, verdicts in verdict_sets:
        table[name].append(tuple(verdicts.get(i, False) for i in ids))
    same = len(set(table["ratchet"] + table["official"])) == 1
    print()
    print("verdicts (gold): " + ", ".join(
        f"{i}={'resolved' if v else 'UNRESOLVED'}" for i, v in zip(ids, table["ratchet"][0])))
    print(f"  ratchet and official identical on every run: {'yes' if same else 'NO'}")
    print()
    print(f"grading / bare test run (median over tasks): {grade_ratio:.2f}x  (target < 1.5x: "
          f"{'met' if grade_ratio < 1.5 else 'MISSED'})")
    print(f"official / ratchet (suite, median of runs):   {o / r:.2f}x  (target >= 5x: "
          f"{'met' if o / r >= 5 else 'MISSED'}); counting ratchet's own start-up too: "
          f"{o / (r + sr):.2f}x")
    if args.json:
        args.json.write_text(json.dumps({
            "suite": source, "tasks": len(tasks), "repeat": args.repeat,
            "per_task": per_task, "suite_runs": suite, "grade_ratio": grade_ratio,
            "official_over_ratchet": o / r, "verdicts_identical": same,
            "verdicts": dict(zip(ids, table["ratchet"][0])),
        }, indent=2))
    print(load.report())
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
