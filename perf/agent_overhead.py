"""What an agent run costs besides the model: ``ratchet bench run``'s per-task path with the
oracle scripted model, measured in-process on the same images.

    python perf/agent_overhead.py [--suite quickstart] [--repeat 3] [--json out.json]

Per task, ``--repeat`` times, one task at a time (no parallel workers, so no contention):
``BenchRun.run_task`` exactly as ``ratchet bench run`` calls it, with a ``Gateway`` over a
``ScriptedModelServer`` serving ``oracle_script`` (three replies per task: apply the gold
patch, run the test suite, submit) and the agent in a ``DockerEnvironment`` sandbox. Read:

  agent     - ``AgentRun.seconds``: container create to patch collected (what ``TaskOutcome``
              calls agent_seconds)
  model     - the ledger's ``model_seconds`` for the task: the gateway's time from a request's
              arrival to the upstream's answer (through ``OpenAIUpstream``)
  overhead  - agent - model: everything the harness and the sandbox cost around the model
  task      - ``TaskOutcome.seconds``: channel open, agent, channel close, grading, files

and split ``agent`` with absolute timestamps (host and container share one clock): the Docker
SDK calls the environment makes (timed by wrapping the SDK methods; the code path is
unchanged), the time from container start to the first model call (the agent's interpreter
start-up, imports and set-up), the gaps between one model answer and the next request (the
agent's commands plus its own loop: the only command times visible from outside, since the
agent's trajectory keeps no per-command timing), and the time from the last answer to the
agent's exit as the harness sees it (the last command, the final save), and the harness's
own execs: preparing its git dir, killing the agent's processes, ``git add``/``git diff``
and reading back the log and trajectory. The agent's own
``elapsed_s`` (its trajectory) is reported beside them.

Before measuring, every task runs once unmeasured, so no run pays a cold page cache. Medians
over the repeats per task, then over tasks. The script also checks that each task's tokens
in the ledger are exactly the oracle's scripted usage (3 calls x ``ORACLE_USAGE``), that the
summed tokens match, and that every task is resolved; it exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import docker.models.containers as _containers  # noqa: E402
import docker.models.images as _images  # noqa: E402

from _common import LoadSampler, time_calls  # noqa: E402  (perf/ is sys.path[0])
from benchmark import (  # noqa: E402
    AgentRun,
    DockerEnvironment,
    Grader,
    ImageBuilder,
    TaskSpec,
    load_suite,
    suite_path,
)
from benchmark import docker_host as _docker  # noqa: E402
from harness.run.agent_source import AgentSource, resolve_agent  # noqa: E402
from harness.run.bench_run import BenchRun, TaskOutcome  # noqa: E402
from harness.models.gateway import Gateway, OpenAIUpstream, PriceTable  # noqa: E402
from harness.models.oracle import ORACLE_USAGE, oracle_script  # noqa: E402
from harness.models.scripted_model import ScriptedModelServer  # noqa: E402

ORACLE_CALLS = 3
"""Replies per task in `oracle_script`: apply the patch, run the tests, submit."""

# --- timing of the Docker SDK calls (wrappers; the code path is unchanged) ----------------

_phase = threading.local()


def _timed(cls, name: str, label: str) -> None:
    time_calls(_phase, cls, name, label, stamp=True)


for _cls, _name, _label in (
    (_containers.ContainerCollection, "create", "create"),
    (_containers.Container, "put_archive", "put_archive"),
    (_containers.Container, "start", "start"),
    (_docker.Sandbox, "run", "agent exec"),
    (_docker.Sandbox, "capture", "capture (prepare, patch, log, trajectory)"),
    (_docker.Sandbox, "kill_user", "kill the agent's processes"),
    (_containers.Container, "remove", "remove"),
    (_images.ImageCollection, "get", "image lookup"),
):
    _timed(_cls, _name, _label)


class _RecordingEnvironment:
    """The Docker environment, unchanged, keeping each AgentRun and its SDK call times."""

    def __init__(self, inner: DockerEnvironment):
        self.inner = inner
        self.runs: dict[str, tuple[AgentRun, dict[str, float]]] = {}

    def run_agent(self, task: TaskSpec, agent_dir: Path, *, socket_path: Path,
                  model: str) -> AgentRun:
        _phase.sink = defaultdict(float)
        try:
            run = self.inner.run_agent(task, agent_dir, socket_path=socket_path, model=model)
        finally:
            phases, _phase.sink = dict(_phase.sink), None
        self.runs[task.instance_id] = (run, phases)
        return run


def _timed_close(gateway: Gateway, sink: dict[str, float]) -> None:
    """Time `Gateway.close_channel` (the instance's method, wrapped; same code path)."""
    original = gateway.close_channel

    def close(channel):
        started = time.perf_counter()
        try:
            return original(channel)
        finally:
            sink[channel.task] = time.perf_counter() - started

    gateway.close_channel = close  # type: ignore[method-assign]


# --- one measured task ------------------------------------------------------------------------

def _measure(task: TaskSpec, agent: AgentSource, builder: ImageBuilder,
             server: ScriptedModelServer, out: Path) -> dict[str, Any]:
    """One `BenchRun.run_task` in a fresh output dir and a fresh gateway (fresh ledger)."""
    gateway = Gateway(OpenAIUpstream(server.base_url, "scripted"), model="scripted",
                      log_dir=out / "trajectories", prices=PriceTable())
    closes: dict[str, float] = {}
    _timed_close(gateway, closes)
    environment = _RecordingEnvironment(DockerEnvironment(builder))
    bench = BenchRun(agent=agent, gateway=gateway, grader=Grader(builder, out / "grades"),
                     out_dir=out, environment=environment, model_label="scripted:oracle")
    outcome: TaskOutcome = bench.runner.run_task(task, agent, generation="bench")
    if outcome.error:
        raise RuntimeError(f"{task.instance_id}: {outcome.error}")
    run, api = environment.runs[task.instance_id]
    usage = gateway.ledger.tasks[task.instance_id]
    calls = [json.loads(line) for line in
             (out / "trajectories" / f"{task.instance_id}.jsonl").read_text().splitlines()]
    starts = [c["time"] for c in calls]
    ends = [c["time"] + c["usage"]["model_seconds"] for c in calls]
    docker_in = api.get("create", 0.0) + api.get("put_archive", 0.0) + api.get("start", 0.0)
    docker_out = (api.get("capture (prepare, patch, log, trajectory)", 0.0)
                  + api.get("kill the agent's processes", 0.0))
    row = {
        "agent": outcome.agent_seconds,
        "model": outcome.model_seconds,
        "overhead": outcome.agent_seconds - outcome.model_seconds,
        "  docker create + copy-in + start": docker_in,
        "  start to first model call": starts[0] - api["@start"],
        "  between calls (commands + agent loop)": sum(
            nxt - end for end, nxt in zip(ends, starts[1:])),
        "  last answer to agent exit (seen by the harness)": api["@agent exec"] - ends[-1],
        "  prepare + kill + take patch, log, trajectory": docker_out,
        "agent process elapsed_s (its trajectory)": float(
            (run.trajectory or {}).get("elapsed_s") or float("nan")),
        "grade": outcome.grade_seconds,
        "gateway close_channel": closes.get(task.instance_id, float("nan")),
        "task": outcome.seconds,
        "container remove (after agent)": api.get("remove", 0.0),
    }
    row["task - agent - grade"] = outcome.seconds - outcome.agent_seconds - outcome.grade_seconds
    checks = {
        "resolved": outcome.resolved, "submitted": outcome.submitted,
        "calls": usage.calls, "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens, "steps": outcome.steps,
    }
    return {"figures": row, "checks": checks}




# --- main -----------------------------------------------------------------------------------

def med(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="quickstart", help="suite name or task file")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally`: stop the server

    tasks = load_suite(args.suite).tasks
    print(f"suite: {suite_path(args.suite)} ({len(tasks)} tasks), repeat {args.repeat}, "
          f"{os.cpu_count()} CPUs, Docker {docker.from_env().version()['Version']}")
    load = LoadSampler()
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    builder = ImageBuilder(on_event=lambda m: print("  " + m))
    for task in tasks:
        builder.ensure_task(task)
    agent = resolve_agent(str(ROOT / "agent_seed"))
    work = Path(tempfile.mkdtemp(prefix="ratchet-agent-bench-"))
    server = ScriptedModelServer(oracle_script(tasks)).start()
    rows: dict[str, dict[str, list[float]]] = {t.instance_id: defaultdict(list) for t in tasks}
    failures: list[str] = []
    try:
        for task in tasks:  # warm-up, unmeasured
            _measure(task, agent, builder, server, work / "warmup" / task.instance_id)
        for n in range(args.repeat):
            for task in tasks:
                result = _measure(task, agent, builder, server, work / f"run-{n}" / task.instance_id)
                for key, value in result["figures"].items():
                    rows[task.instance_id][key].append(value)
                checks = result["checks"]
                for key in ("prompt_tokens", "completion_tokens", "calls"):
                    rows[task.instance_id]["@" + key].append(checks[key])
                expected = (ORACLE_CALLS, ORACLE_CALLS * ORACLE_USAGE.prompt_tokens,
                            ORACLE_CALLS * ORACLE_USAGE.completion_tokens)
                got = (checks["calls"], checks["prompt_tokens"], checks["completion_tokens"])
                if got != expected or not checks["resolved"] or not checks["submitted"]:
                    failures.append(f"{task.instance_id} run {n}: {checks}")
            print(f"  repeat {n + 1}/{args.repeat} done")
    finally:
        server.stop()

    # --- report ---
    per_task = {iid: {k: med(v) for k, v in r.items() if not k.startswith("@")}
                for iid, r in rows.items()}
    print()
    head = (f"{'task':58} {'agent s':>8} {'model s':>8} {'overh. s':>8} {'grade s':>8} "
            f"{'task s':>8}")
    print(head)
    print("-" * len(head))
    for iid, m in per_task.items():
        print(f"{iid[:58]:58} {m['agent']:8.3f} {m['model']:8.4f} {m['overhead']:8.3f} "
              f"{m['grade']:8.3f} {m['task']:8.3f}")
    print()
    print("median over tasks of the per-task medians, seconds:")
    keys = list(next(iter(per_task.values())))
    for key in keys:
        print(f"  {key:48} {med([m[key] for m in per_task.values()]):8.4f}")

    expected_total = len(tasks) * ORACLE_CALLS
    sums = {key: [sum(rows[t.instance_id]["@" + key][n] for t in tasks)
                  for n in range(args.repeat)] for key in ("calls", "prompt_tokens",
                                                            "completion_tokens")}
    want = {"calls": expected_total,
            "prompt_tokens": expected_total * ORACLE_USAGE.prompt_tokens,
            "completion_tokens": expected_total * ORACLE_USAGE.completion_tokens}
    tokens_ok = all(all(v == want[k] for v in sums[k]) for k in want) and not failures
    print()
    print(f"tokens per repeat, summed over {len(tasks)} tasks: " + ", ".join(
        f"{k} {sums[k]} (expected {want[k]})" for k in want))
    print(f"  equal to {ORACLE_CALLS} calls x ORACLE_USAGE "
          f"({ORACLE_USAGE.prompt_tokens}/{ORACLE_USAGE.completion_tokens}) per task, and "
          f"every task resolved: {'yes' if tokens_ok else 'NO'}")
    for failure in failures:
        print(f"  MISMATCH {failure}")
    if args.json:
        args.json.write_text(json.dumps({
            "suite": str(suite_path(args.suite)), "repeat": args.repeat,
            "per_task_median": per_task, "raw": {k: dict(v) for k, v in rows.items()},
            "token_sums": sums, "tokens_expected": want, "tokens_ok": tokens_ok,
        }, indent=2))
    print(load.report())
    return 0 if tokens_ok else 1


if __name__ == "__main__":
    sys.exit(main())
