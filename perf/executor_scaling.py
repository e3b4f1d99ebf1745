"""Where the controller becomes the bottleneck when task runs go to a Ray cluster: the same
suite on the local pool and on a two-node Ray cluster, and the per-unit costs that grow
with the number of nodes.

    python perf/executor_scaling.py [--rounds 2] [--suite quickstart] [--json out.json]

Part 1, executors, same run. The suite with bench-run semantics (``BenchRun.run``: a fresh
output directory and gateway per run, every task run and graded, one result file each),
the oracle scripted model (three replies per task) and the seed agent, on

  local - ``LocalPool(2)``: two task runs at a time in this process's threads;
  ray   - ``LocalCluster``: a real Ray head (``docker`` slots 1) and a worker node (slots
          1) on this machine, joined with ``--executor ray:ADDRESS`` semantics
          (``parse_executor``); two task runs at a time, one per node.

Both runs are warmed up on two tasks first (Ray starts its workers, the page cache is
warm); then ``--rounds`` measured runs each, the order alternating. Read per executor:
tasks/minute (tasks over the runs' summed wall time) and the ratio ray/local; the
controller's CPU per task (``time.process_time`` of this process over the runs: gateway,
Ray driver, bookkeeping; the scripted model runs in a child process so its CPU is not
counted; the connected, idle controller's background CPU is sampled for 5 s and reported
apart); and the wall time the controller spends per task in its own steps, timed by
wrapping the methods it calls (the code path is unchanged):

  begin  - ``TaskRunner.begin`` (channel open), ``RayExecutor._inputs`` (image inputs:
           fetch, pack, ``ray.put``, once per tag), ``RayExecutor._agent`` (agent tar,
           once per tree), ``RemoteFunction._remote`` (submitting the Ray task)
  finish - ``ray.get`` of the result, ``TaskRunner.finish`` (channel close, outcome, agent
           log), ``bench_run._write_atomically`` (the result file, fsynced; the run's
           summary, written once at the end, is counted in too)

On Ray these run on the controller's main thread one task after another, so their sum
bounds how many tasks per second one controller can dispatch. Also: the CPU of the Ray
nodes' own processes (raylets, object stores, workers; read from /proc) per task, and the
bytes of the work description and result each task moves through Ray.

Part 2, per-unit costs, as micro-benchmarks after the cluster is stopped:

  journal - ``Journal.append`` of a ``task_evaluated`` event with a real result from part 1,
            fsync included (the share spent in ``os.fsync`` is timed by wrapping it)
  relay   - requests/second through ``Gateway.serve_relay`` with ``harness.models.relay.Relay``
            in front (one relay per simulated sandbox, as on a node), a trivial upstream,
            N client threads posting 8 KB chat requests over the relays' unix sockets;
            the direct unix channel (one machine) as baseline. Clients and relays run in
            a child process, so this process's CPU per request is the gateway's alone.
            One more row: the real ``OpenAIUpstream`` (openai SDK) to a scripted model in a
            child process instead of the trivial upstream.
  bytes   - what ships per task: the source tree tar, the wheelhouse tars and the agent
            tar, against the task image (``docker image inspect`` Size) and its own layer
            above the environment image.

All of it on one machine: the two "nodes" share its 2 CPUs and its Docker daemon, so the
tasks/minute ratio shows Ray's overhead, not a cluster's speed-up. The script exits non-zero
when a task run is not resolved, has an error, or a Ray run names no node, or when the
gateway's ledger does not count exactly the relayed calls that reached it. Refused or
failed relay calls are reported, not failures: they are what the measurement is for.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
from _common import LoadSampler  # noqa: E402  (perf/ is sys.path[0])
from _gateway_load import REQUEST_BYTES, model_process, relay_throughput  # noqa: E402

import harness.run.bench_run as bench_run_mod  # noqa: E402
from benchmark import (  # noqa: E402
    AGENT_RUNTIME,
    DockerEnvironment,
    Grader,
    ImageBuilder,
    env_image_tag,
    load_suite,
    pack_directory,
    task_image_tag,
    wheel_key,
)
from harness.run.agent_source import pack_agent, resolve_agent  # noqa: E402
from harness.run.bench_run import BenchRun  # noqa: E402
from harness.run.evaluate import TaskRunner  # noqa: E402
from harness.run.executors import parse_executor  # noqa: E402
from harness.models.gateway import Gateway, OpenAIUpstream, PriceTable  # noqa: E402
from harness.loop.journal import Journal  # noqa: E402
from harness.models.oracle import oracle_script  # noqa: E402
from harness.run.ray_cluster import LocalCluster, _session_members  # noqa: E402

SLOTS = 2
"""Task runs at a time on either executor: 2 local workers; 2 nodes x 1 slot on Ray."""
JOURNAL_APPENDS = 300
IDLE_S = 5.0
"""How long the connected, idle controller's background CPU is sampled."""
RELAY_CLIENTS = (1, 8, 32, 64)
_TICK = os.sysconf("SC_CLK_TCK")


# --- wall time of the controller's own steps (wrappers; the code path is unchanged) --------

class Steps:
    """Wall time of every call to the wrapped functions, per label, from any thread;
    `keep` also holds on to something per call (sizes are measured after the run)."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.kept: dict[str, list[Any]] = defaultdict(list)
        self._lock = threading.Lock()

    def wrap(self, owner: Any, name: str, label: str,
             keep: Callable[[tuple, dict, Any], Any] | None = None) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            value = original(*args, **kwargs)
            with self._lock:
                self.seconds[label].append(time.perf_counter() - started)
                if keep is not None:
                    self.kept[label].append(keep(args, kwargs, value))
            return value

        setattr(owner, name, wrapper)

    def take(self) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
        with self._lock:
            taken = dict(self.seconds), dict(self.kept)
            self.seconds.clear()
            self.kept.clear()
        return taken


BEGIN = ("channel open (TaskRunner.begin)", "image inputs: fetch + pack + ray.put",
         "agent tar + ray.put", "submit (RemoteFunction._remote)")
FINISH = ("result (ray.get)", "channel close + outcome (TaskRunner.finish)",
          "result file (_write_atomically)")


def instrument(steps: Steps) -> None:
    import ray
    from ray.remote_function import RemoteFunction

    from harness.run.ray_executor import RayExecutor

    steps.wrap(TaskRunner, "begin", BEGIN[0])
    steps.wrap(RayExecutor, "_inputs", BEGIN[1], keep=lambda a, k, v: task_image_tag(a[2]))
    steps.wrap(RayExecutor, "_agent", BEGIN[2])
    steps.wrap(RemoteFunction, "_remote", BEGIN[3], keep=lambda a, k, v: k["args"][0])
    steps.wrap(ray, "get", FINISH[0], keep=lambda a, k, v: v)
    steps.wrap(TaskRunner, "finish", FINISH[1])
    steps.wrap(bench_run_mod, "_write_atomically", FINISH[2])


# --- part 1: the suite on each executor -------------------------------------------------------

def _cluster_cpu(cluster: LocalCluster) -> float:
    """CPU seconds of the live processes of every node (exited workers are missed)."""
    total = 0
    for process in cluster.nodes.values():
        for pid in _session_members(process.pid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def run_suite(tasks, executor, agent, builder, model_url: str, out: Path) -> tuple[float, float, list]:
    """One `BenchRun.run` in a fresh directory with a fresh gateway: (wall s, CPU s, outcomes)."""
    gateway = Gateway(OpenAIUpstream(model_url, "scripted"), model="scripted",
                      log_dir=out / "trajectories", prices=PriceTable())
    bench = BenchRun(agent=agent, gateway=gateway, grader=Grader(builder, out / "grades"),
                     out_dir=out, environment=DockerEnvironment(builder),
                     model_label="scripted:oracle")
    cpu, wall = time.process_time(), time.perf_counter()
    outcomes = bench.run(tasks, executor=executor)
    return time.perf_counter() - wall, time.process_time() - cpu, outcomes


def executors(rounds: int, tasks, agent, builder, work: Path) -> tuple[dict, list[str]]:
    """Start the cluster, join it, run the rounds; the cluster is stopped whatever happens."""
    steps = Steps()
    pools: dict[str, Any] = {"local": parse_executor("local", workers=SLOTS)}
    started = time.perf_counter()
    cluster = LocalCluster.start(work / "cluster", slots=1)
    try:
        cluster.add_node("worker", slots=1)
        os.environ.update(cluster.client_env)  # before Ray is imported: it reads them then
        instrument(steps)
        pools["ray"] = parse_executor(f"ray:{cluster.address}", workers=SLOTS,
                                      on_event=lambda m: print("  " + m))
        print(f"  Ray cluster up in {time.perf_counter() - started:.1f} s (head + 1 worker node)")
        with model_process(oracle_script(tasks)) as model_url:
            return measure(rounds, tasks, pools, cluster, steps,
                           lambda some, pool, out: run_suite(some, pool, agent, builder,
                                                             model_url, work / out))
    finally:
        for pool in pools.values():
            pool.close()
        cluster.stop()


def measure(rounds: int, tasks, pools: dict[str, Any], cluster: LocalCluster, steps: Steps,
            run: Callable) -> tuple[dict, list[str]]:
    """A warm-up on each executor, the idle controller's CPU, then the rounds."""
    figures: dict[str, dict[str, Any]] = {name: defaultdict(list) for name in pools}
    failures: list[str] = []
    for name, pool in pools.items():  # warm-up, unmeasured
        run(tasks[:SLOTS], pool, f"warmup-{name}")
    seen = set(steps.take()[1].get(BEGIN[1], []))  # task images whose inputs are put already
    cpu = time.process_time()
    time.sleep(IDLE_S)
    figures["ray"]["idle_cpu_per_s"] = (time.process_time() - cpu) / IDLE_S
    for round_ in range(rounds):
        for name in (("local", "ray") if round_ % 2 == 0 else ("ray", "local")):
            row = figures[name]
            nodes_cpu = _cluster_cpu(cluster)
            wall, cpu, outcomes = run(tasks, pools[name], f"{name}-{round_}")
            row["wall"].append(wall)
            row["cpu"].append(cpu)
            seconds, kept = steps.take()
            for label, values in seconds.items():
                row[label].append(sum(values))
            if name == "ray":
                row["nodes_cpu"].append(_cluster_cpu(cluster) - nodes_cpu)
                for call, tag in zip(seconds.get(BEGIN[1], []), kept.get(BEGIN[1], [])):
                    row["inputs_warm" if tag in seen else "inputs_cold"].append(call)
                    seen.add(tag)
                row["work_bytes"] += [len(pickle.dumps(w)) for w in kept.get(BEGIN[3], [])]
                row["result_bytes"] += [len(pickle.dumps(v)) for v in kept.get(FINISH[0], [])]
            row["outcomes"] += outcomes
            for o in outcomes:
                if o.error or not o.resolved or (name == "ray") != bool(o.node):
                    failures.append(f"{name} round {round_}: {o.instance_id}: resolved "
                                    f"{o.resolved}, node {o.node!r}, error {o.error}")
            print(f"  round {round_ + 1}/{rounds} {name:5}: {len(outcomes)} tasks in {wall:.1f} s, "
                  f"controller CPU {cpu:.2f} s")
    return figures, failures


# --- part 2: per-unit costs --------------------------------------------------------------------

def journal_appends(result: dict[str, Any], work: Path) -> dict[str, float]:
    """`JOURNAL_APPENDS` task_evaluated appends, as the loop writes them (no patch)."""
    result = {k: v for k, v in result.items() if k != "patch"}
    fsyncs: list[float] = []
    original = os.fsync

    def fsync(fd):
        started = time.perf_counter()
        original(fd)
        fsyncs.append(time.perf_counter() - started)

    os.fsync = fsync
    try:
        with Journal(work / "journal.jsonl") as journal:
            fsyncs.clear()  # the new file's directory entry
            started = time.perf_counter()
            for n in range(JOURNAL_APPENDS):
                journal.append("task_evaluated", generation=1, tree_hash="agent-0123456789abcdef",
                               task_id=f"{result['instance_id']}-{n}", attempt=0, result=result,
                               cost_usd=result["cost_usd"])
            seconds = time.perf_counter() - started
    finally:
        os.fsync = original
    line = (work / "journal.jsonl").read_bytes().splitlines()[0]
    return {"ms_per_append": 1000 * seconds / JOURNAL_APPENDS,
            "fsync_share": sum(fsyncs) / seconds, "appends_per_s": JOURNAL_APPENDS / seconds,
            "bytes_per_event": len(line)}


def shipped_bytes(tasks, builder: ImageBuilder, agent) -> dict[str, Any]:
    """Per task, what `RayExecutor._inputs` and `_agent` put in the object store, against
    the image a node would otherwise have to receive."""
    images = docker.from_env().images
    wheels: dict[str, int] = {}
    rows = []
    for task in tasks:
        tree, requires = builder.inputs.source(task)
        needed = 0
        for requirements in (list(task.environment.python_deps), list(AGENT_RUNTIME), requires):
            key = wheel_key(requirements)
            if key not in wheels:
                wheels[key] = len(pack_directory(builder.wheelhouse(requirements)))
            needed += wheels[key]
        image = images.get(task_image_tag(task)).attrs["Size"]
        env = images.get(env_image_tag(task.environment)).attrs["Size"]
        rows.append({"task": task.instance_id, "tree": len(tree), "wheels": needed,
                     "image": image, "task_layer": image - env, "env_tag": env_image_tag(task.environment),
                     "env": env})
    envs = {r["env_tag"]: r["env"] for r in rows}
    return {"rows": rows, "agent": len(pack_agent(agent)),
            "suite_inputs": sum(r["tree"] for r in rows) + sum(wheels.values()),
            "suite_images_dedup": sum(envs.values()) + sum(r["task_layer"] for r in rows)}


# --- report ---------------------------------------------------------------------------------

def mb(n: float) -> str:
    return f"{n / 2**20:.2f} MB"


def report(tasks, figures, journal, relay, sizes) -> None:
    n = len(tasks)
    ray_ = figures["ray"]
    runs = {name: len(row["wall"]) for name, row in figures.items()}
    print("\n=== results ===")
    print("executors, same run (the two Ray nodes share this machine's 2 CPUs and Docker daemon):")
    rate = {}
    for name, row in figures.items():
        rate[name] = 60 * n * runs[name] / sum(row["wall"])
        print(f"  {name:5} {runs[name]} runs x {n} tasks: {rate[name]:5.1f} tasks/min (median run "
              f"{statistics.median(row['wall']):.1f} s); controller CPU "
              f"{1000 * sum(row['cpu']) / (n * runs[name]):.0f} ms/task")
    print(f"  ray/local tasks/min: {rate['ray'] / rate['local']:.2f}")
    around = {name: statistics.median(o.seconds - o.agent_seconds - o.grade_seconds
                                      for o in row["outcomes"]) for name, row in figures.items()}
    print(f"  per task, TaskOutcome.seconds - agent - grade (channel, scheduling, transfers; "
          f"median): local {around['local']:.2f} s, ray {around['ray']:.2f} s")
    idle = ray_["idle_cpu_per_s"]
    marginal = (sum(ray_["cpu"]) - idle * sum(ray_["wall"])) / (n * runs["ray"])
    print(f"  Ray controller CPU split: background while connected and idle {1000 * idle:.0f} ms/s; "
          f"the rest {1000 * marginal:.0f} ms/task")
    print(f"  Ray nodes' own processes (raylets, object stores, workers): "
          f"{1000 * sum(ray_['nodes_cpu']) / (n * runs['ray']):.0f} ms CPU/task; runs per node: "
          f"{dict(Counter(o.node for o in ray_['outcomes']))}")
    print("controller wall time in its own steps, ms per task:")
    print(f"  {'':50} {'local':>7} {'ray':>7}")
    totals = {"local": 0.0, "ray": 0.0}
    for group, labels in (("begin", BEGIN), ("finish", FINISH)):
        for label in labels:
            cells = []
            for name, row in figures.items():
                value = 1000 * sum(row.get(label, [])) / (n * runs[name])
                totals[name] += value
                cells.append(f"{value:7.2f}" if row.get(label) else f"{'-':>7}")
            print(f"  {group + ': ' + label:50} {' '.join(cells)}")
    print(f"  {'begin + finish':50} {totals['local']:7.2f} {totals['ray']:7.2f}")
    cold, warm = ray_["inputs_cold"], ray_["inputs_warm"]
    steady = totals["ray"] - 1000 * (sum(cold) + sum(warm)) / (n * runs["ray"]) + (
        1000 * statistics.median(warm) if warm else 0.0)
    print(f"  image inputs per call: first for a task image (fetch, pack, ray.put) "
          f"{1000 * statistics.median(cold) if cold else float('nan'):.1f} ms median over "
          f"{len(cold)}; later (refs cached) {1000 * statistics.median(warm) if warm else float('nan'):.2f} ms "
          f"over {len(warm)}")
    print(f"  Ray, steady state (inputs cached): {steady:.1f} ms/task on the main thread => at most "
          f"~{1000 / steady:.0f} dispatches/s")
    print(f"  bytes per task through Ray: work description "
          f"{statistics.median(ray_['work_bytes']) / 1024:.1f} KB, result "
          f"{statistics.median(ray_['result_bytes']) / 1024:.1f} KB (medians, pickled)")
    print(f"journal: {journal['ms_per_append']:.2f} ms per task_evaluated append "
          f"({journal['bytes_per_event']} B; fsync {journal['fsync_share']:.0%} of it) => "
          f"{journal['appends_per_s']:.0f} appends/s")
    print(f"gateway, {REQUEST_BYTES // 1024} KB chat requests, trivial upstream, clients and relays in "
          f"a child process (CPU/req: this process, i.e. the gateway alone):")
    print(f"  {'clients':>7} {'path':36} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>8} {'CPU ms/req':>10}  errors")
    for r in relay:
        path = ("relayed" if r["relayed"] else "direct unix channel") + (
            ", openai SDK upstream" if r["sdk"] else "")
        print(f"  {r['clients']:>7} {path:36} {r['per_s']:6.0f} {r['p50_ms']:7.2f} {r['p99_ms']:8.2f} "
              f"{r['gateway_cpu_ms']:10.2f}  {r['errors'] or '-'}")
    shipped = [r for r in relay if not r["sdk"]]
    for clients in RELAY_CLIENTS:
        pair = {r["relayed"]: r for r in shipped if r["clients"] == clients}
        print(f"  relayed/direct at {clients:>2} clients: req/s "
              f"{pair[True]['per_s'] / pair[False]['per_s']:.2f}, gateway CPU/req "
              f"{pair[True]['gateway_cpu_ms'] / pair[False]['gateway_cpu_ms']:.2f}")
    cpu_ms = max(r["gateway_cpu_ms"] for r in shipped if r["relayed"])
    sdk_ms = next(r["gateway_cpu_ms"] for r in relay if r["sdk"])
    print(f"  one core's ceiling for relayed calls, 1 / gateway CPU per request (estimate): "
          f"~{1000 / cpu_ms:.0f} req/s with a trivial upstream (worst level), ~{1000 / sdk_ms:.0f} "
          f"req/s through the openai SDK upstream client")
    rows = sizes["rows"]
    inputs = statistics.median(r["tree"] + r["wheels"] for r in rows)
    image = statistics.median(r["image"] for r in rows)
    print("bytes per task (medians over the suite):")
    print(f"  source tree tar {mb(statistics.median(r['tree'] for r in rows))}, the wheelhouse tars "
          f"it needs {mb(statistics.median(r['wheels'] for r in rows))}, agent tar {mb(sizes['agent'])} "
          f"(once per agent tree)")
    print(f"  task image {mb(image)}, its own layer {mb(statistics.median(r['task_layer'] for r in rows))}; "
          f"image / inputs = {image / inputs:.0f}x")
    print(f"  a new suite on a node: inputs {mb(sizes['suite_inputs'])} (trees + distinct wheelhouses) "
          f"vs images {mb(sizes['suite_images_dedup'])} (distinct env images + task layers) = "
          f"{sizes['suite_images_dedup'] / sizes['suite_inputs']:.0f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="quickstart")
    parser.add_argument("--rounds", type=int, default=2, help="measured runs per executor")
    parser.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally`: stop the cluster

    tasks = load_suite(args.suite).tasks
    load = LoadSampler()
    print(f"suite {args.suite} ({len(tasks)} tasks), {args.rounds} rounds, {os.cpu_count()} CPUs, "
          f"Docker {docker.from_env().version()['Version']}")
    builder = ImageBuilder(on_event=lambda m: print("  " + m))
    for task in tasks:  # build what is missing: not timed
        builder.ensure_task(task)
    agent = resolve_agent(str(ROOT / "agent_seed"))
    work = Path(tempfile.mkdtemp(prefix="ratchet-scaling-"))
    started = time.perf_counter()
    figures, failures = executors(args.rounds, tasks, agent, builder, work)
    print(f"  executors done in {time.perf_counter() - started:.0f} s; micro-benchmarks")
    journal = journal_appends(asdict(figures["local"]["outcomes"][0]), work)
    relay = [relay_throughput(n, relayed, work) for n in RELAY_CLIENTS for relayed in (False, True)]
    with model_process({"default": "ok"}) as model_url:
        relay.append(relay_throughput(8, True, work, model_url=model_url))
    sizes = shipped_bytes(tasks, builder, agent)
    report(tasks, figures, journal, relay, sizes)
    # a refused call (an error above) never reaches the gateway: the ledger counts the rest
    bad_relay = [r for r in relay if r["ledger_calls"] != r["requests"] - sum(r["errors"].values())]
    for r in bad_relay:
        print(f"LEDGER MISMATCH: {r}")
    for failure in failures:
        print(f"FAILED {failure}")
    print(load.report())
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({
            "figures": {name: {k: v for k, v in row.items() if k != "outcomes"}
                        for name, row in figures.items()},
            "journal": journal, "relay": relay, "bytes": sizes, "failures": failures,
        }, indent=2, default=str))
    return 1 if failures or bad_relay else 0


if __name__ == "__main__":
    sys.exit(main())
