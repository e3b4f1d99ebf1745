"""What the self-improvement loop itself costs per generation, besides model calls, agent
sandboxes, grading and the proposer's sandboxed selfcheck.

    python perf/loop_overhead.py [--suite quickstart] [--generations 2] [--workers 2] [--json out.json]

A fresh workspace (``init_workspace`` from the installed ``agent_seed``) in a temporary
directory; a ``Controller`` run in this process on the suite with the scripted demo models
(``demo_agent_script`` / ``demo_meta_script`` behind two ``ScriptedModelServer``s, through
the real gateways), exactly as ``ratchet run --scripted demo`` drives it. Missing images are
built first (not timed).

Nothing in the loop is changed: timing wrappers are set on the controller's own instances
(``_seed``, ``_generation``, and its collaborators' ``propose``, ``evidence``, ``evaluate``,
``selfcheck``, ``record``, the lineage, the journal, ``runner.run_task``,
``builder.ensure_task``) and on a few module functions the loop calls (``Journal.read``,
``resolve_agent``, ``check_worktree``, ``MetaProposer._ask``, ``docker_host.run_script``...);
each wrapper calls the original. Per generation (gen 0 = the seed's evaluation):

  wall         - the main thread's time in ``_generation`` (``_seed`` for gen 0)
  busy span    - the union of the intervals during which at least one agent sandbox
                 (``DockerEnvironment.run_agent``) or grading (``Grader.grade``) was running,
                 in the pool threads. With 2 workers they overlap, so the union, not the sum,
                 is what the generation waits for
  selfcheck    - the proposer's sandboxed ``python -m agent_seed selfcheck``: the
                 ``docker_host.run_script`` call inside ``selfcheck`` (the agent copy and the
                 image lookup before it count as harness)
  meta model   - the gateway ledger's ``model_seconds`` for ``gen-NNNN.meta``
  harness      - wall - |busy span U selfcheck| - meta model: the wall time in which no
                 sandbox, grading or model call is running, only the loop's own work: journal
                 writes and replays, git worktrees/commits/notes/``best``, evidence building,
                 ``resolve_agent`` copies, the proposer's parse/apply/check, the meta call's
                 client and gateway round trip, the thread pool's start and drain, image
                 lookups, and ``run_task``'s own bookkeeping (gateway channel open/close, the
                 agent-log write) when no other task's sandbox or grading covers it.

  fraction     = harness / wall.

Harness work done *while another task's sandbox or grading runs* is hidden by it and not
counted in the fraction (it costs no wall time): the main thread's journal appends as tasks
finish ("hidden"), and the part of each ``run_task``'s own bookkeeping that overlaps another
task's sandbox or grading (the sum of ``TaskOutcome.seconds - agent_seconds - grade_seconds``
is reported as "in-task").
From the journal's ``task_evaluated`` results the script also sums, per generation,
``agent_seconds - model_seconds`` (the agent sandbox without the model), ``model_seconds``
and ``grade_seconds`` (these are sums over tasks, so with parallel workers they add up to
more than the task span).

The scripted models answer in milliseconds, so model time is ~0 here: the fraction measured
here is the worst case. With a real model, each task run and the proposal take longer while
the harness's own work stays the same, so the fraction only gets smaller.
"""

from __future__ import annotations

import argparse
import json
import socketserver
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

import agent_seed
from benchmark import docker_host as _docker_mod
import harness.loop.controller as controller_mod
import harness.loop.proposals as proposals_mod
import harness.propose.meta as proposer_mod
from benchmark import Grader, ImageBuilder, load_suite
from harness.cli.demo import demo_agent_script, demo_meta_script
from harness.models.gateway import OpenAIUpstream
from harness.loop.journal import Journal
from harness.loop.compose import build_controller
from harness.loop.controller import Controller
from harness.loop.settings import LoopSettings
from harness.models.scripted_model import ScriptedModelServer
from harness.loop.workspace import init_workspace

TARGET = 0.05

# --- main-thread profiler: exclusive-time segments per label ------------------------------


class MainThreadProfile:
    """Wrapped calls made by the main thread leave (label, start, end) segments of their
    *exclusive* time (a nested wrapped call closes its parent's segment and reopens it on
    return), so the segments of a generation tile its wall time exactly. Calls from other
    threads pass straight through."""

    def __init__(self) -> None:
        self.stack: list[list[Any]] = []
        self.segments: list[tuple[str, float, float]] = []
        self.intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)  # pool threads
        self._lock = threading.Lock()
        self._undo: list[tuple[Any, str, Any, bool]] = []
        self.windows: list[tuple[float, float]] = []

    def wrap(self, owner: Any, name: str, label: str, *, static: bool = False) -> None:
        had = name in vars(owner) if hasattr(owner, "__dict__") else False
        original = getattr(owner, name)
        self._undo.append((owner, name, vars(owner).get(name) if had else None, had))

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return original(*args, **kwargs)
            now = time.perf_counter()
            if self.stack:
                parent = self.stack[-1]
                self.segments.append((parent[0], parent[1], now))
            self.stack.append([label, now])
            try:
                return original(*args, **kwargs)
            finally:
                end = time.perf_counter()
                own = self.stack.pop()
                self.segments.append((own[0], own[1], end))
                if self.stack:
                    self.stack[-1][1] = end

        setattr(owner, name, staticmethod(wrapper) if static else wrapper)

    def wrap_interval(self, owner: Any, name: str, kind: str) -> None:
        """Any thread: keep the (start, end) of every call under `kind`."""
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.intervals[kind].append((started, time.perf_counter()))

        setattr(owner, name, wrapper)

    def restore(self) -> None:
        for owner, name, value, had in reversed(self._undo):
            if had:
                setattr(owner, name, value)
            else:
                try:
                    delattr(owner, name)
                except AttributeError:
                    pass
        self._undo.clear()


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in intervals)


def _overlap(start: float, end: float, union: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in union)


def _clip(intervals, lo: float, hi: float) -> list[tuple[float, float]]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi]


def _minus(intervals, union) -> list[tuple[float, float]]:
    """The parts of the (disjoint) `intervals` outside the (disjoint) `union`."""
    out = []
    for a, b in intervals:
        cursor = a
        for c, d in union:
            if d <= cursor or c >= b:
                continue
            if c > cursor:
                out.append((cursor, c))
            cursor = max(cursor, d)
        if cursor < b:
            out.append((cursor, b))
    return out


# --- the run ------------------------------------------------------------------------------

WRAPPED_CONTROLLER = [("_seed", "generation (own code)"), ("_generation", "generation (own code)")]
WRAPPED_LINEAGE = [
    ("start", "git: start"), ("worktree", "git: worktree"), ("reset", "git: reset"),
    ("commit", "git: commit"), ("set_note", "git: note"), ("move_best", "git: move best"),
    ("head", "git: rev-parse"),
]


def instrument(controller: Controller, profile: MainThreadProfile) -> None:
    for name, label in WRAPPED_CONTROLLER:
        profile.wrap(controller, name, label)
    for name, label in WRAPPED_LINEAGE:
        profile.wrap(controller.lineage, name, label)
    runner, meta_gateway = controller.evaluation.runner, controller.propose.proposals.meta_gateway
    profile.wrap(controller.propose, "propose", "propose: client, channel, proposal.json")
    profile.wrap(controller.propose, "evidence", "evidence building")
    profile.wrap(controller.evaluation, "evaluate", "evaluate: pool start/drain, scheduling")
    profile.wrap(controller.workload, "agent", "resolve_agent (copy)")
    profile.wrap(controller.propose.proposals, "selfcheck", "selfcheck: agent copy")
    profile.wrap(controller.recorder, "record", "record: note, metrics.json")
    profile.wrap(controller.spend, "check_stop", "generation (own code)")
    profile.wrap(controller.log.journal, "append", "journal: append (fsync)")
    profile.wrap(runner.grader.builder, "ensure_task", "image lookup")
    profile.wrap(meta_gateway, "open_channel", "gateway: open/close channel")
    profile.wrap(meta_gateway, "close_channel", "gateway: open/close channel")
    profile.wrap_interval(runner, "run_task", "task run")
    profile.wrap_interval(runner.environment, "run_agent", "agent sandbox")
    profile.wrap_interval(runner.grader, "grade", "grading")
    profile.wrap(Journal, "read", "journal: read + replay", static=True)
    profile.wrap(controller_mod, "resolve_agent", "resolve_agent (copy)")
    profile.wrap(proposals_mod, "read_agent_files", "propose: read agent files")
    profile.wrap(proposer_mod, "parse_answer", "propose: parse/apply/check edit")
    profile.wrap(proposer_mod, "apply_edits", "propose: parse/apply/check edit")
    profile.wrap(proposer_mod, "check_worktree", "propose: parse/apply/check edit")
    profile.wrap(proposer_mod, "render_prompt", "propose: render prompts")
    profile.wrap(proposer_mod.Snapshot, "take", "propose: snapshot agent dir", static=True)
    profile.wrap(proposer_mod.MetaProposer, "_ask", "meta call (client + gateway + model)")
    profile.wrap(_docker_mod, "run_script", "selfcheck sandbox")
    # the gateway's channel servers: serve_forever polls for shutdown every poll_interval
    profile.wrap(socketserver.BaseServer, "shutdown", "gateway: server shutdown (poll wait)")


def analyse(profile: MainThreadProfile, controller: Controller,
            journal: list[dict]) -> list[dict[str, Any]]:
    windows = profile.windows  # (start, end) of _seed, then of each _generation, in order
    results_by_gen: dict[int, list[dict]] = defaultdict(list)
    for event in journal:
        if event["event"] == "task_evaluated":
            results_by_gen[event["generation"]].append(event["result"])
    rows = []
    for gen, (lo, hi) in enumerate(windows):
        wall = hi - lo
        runs = _union(_clip(profile.intervals["task run"], lo, hi))
        sandboxes = _clip(profile.intervals["agent sandbox"], lo, hi)
        grading = _clip(profile.intervals["grading"], lo, hi)
        selfcheck = _clip([(a, b) for label, a, b in profile.segments if label == "selfcheck sandbox"], lo, hi)
        blocked = _union(sandboxes + grading + selfcheck)
        # run_task's own bookkeeping (gateway channel open/close, agent log) when no sandbox,
        # grading or selfcheck of any task is running at the same time
        bookkeeping = _minus(runs, blocked)
        meta_model = controller.spend.ledger.task(f"gen-{gen:04d}.meta").model_seconds if gen else 0.0
        outside: dict[str, float] = defaultdict(float)
        hidden: dict[str, float] = defaultdict(float)
        for label, a, b in profile.segments:
            a, b = max(a, lo), min(b, hi)
            if b <= a:
                continue
            over = _overlap(a, b, blocked)
            if label == "evaluate: pool start/drain, scheduling":
                in_runs = _overlap(a, b, bookkeeping)
                outside["task runs' bookkeeping (pool threads)"] += in_runs
                outside[label] += (b - a) - over - in_runs
            else:
                outside[label] += (b - a) - over
                if label != "selfcheck sandbox":
                    hidden[label] += over
        outside["meta call (client + gateway + model)"] -= meta_model
        outside["meta call: client + gateway round trip"] = outside.pop("meta call (client + gateway + model)")
        harness = wall - _length(blocked) - meta_model
        results = results_by_gen.get(gen, [])
        rows.append({
            "generation": gen, "wall_s": wall, "tasks": len(results),
            "sandbox_or_grading_span_s": _length(_union(sandboxes + grading)),
            "agent_minus_model_s": sum(r["agent_seconds"] - r["model_seconds"] for r in results),
            "agent_model_s": sum(r["model_seconds"] for r in results),
            "grade_s": sum(r["grade_seconds"] for r in results),
            "in_task_harness_s": sum(r["seconds"] - r["agent_seconds"] - r["grade_seconds"]
                                     for r in results),
            "selfcheck_s": _length(_union(selfcheck)), "meta_model_s": meta_model, "harness_s": harness,
            "fraction": harness / wall if wall else 0.0,
            "hidden_main_thread_s": sum(hidden.values()),
            "breakdown_s": dict(sorted(((k, v) for k, v in outside.items() if abs(v) > 1e-9),
                                       key=lambda kv: -kv[1])),
            "hidden_breakdown_s": dict(sorted(((k, v) for k, v in hidden.items() if v > 1e-9),
                                              key=lambda kv: -kv[1])),
        })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="quickstart")
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    tasks = load_suite(args.suite).tasks
    out = Path(tempfile.mkdtemp(prefix="ratchet-loop-bench-"))
    workspace = init_workspace(out / "ws", seed=Path(agent_seed.__file__).parent)
    grader = Grader(ImageBuilder(), out / "grades")
    print(f"suite {args.suite}: {len(tasks)} tasks; {args.generations} generations, "
          f"{args.workers} workers; workspace {workspace}", flush=True)
    for task in tasks:  # build what is missing first: not timed
        grader.builder.ensure_task(task)

    profile = MainThreadProfile()
    started = time.perf_counter()
    with ScriptedModelServer(demo_agent_script(tasks)) as agent_model, \
            ScriptedModelServer(demo_meta_script()) as meta_model:
        settings = LoopSettings(run="bench", suite=args.suite, generations=args.generations,
                                agent_model="scripted", meta_model="scripted", scripted="demo",
                                workers=args.workers)
        controller = build_controller(workspace, settings, tasks, grader,
                                      OpenAIUpstream(agent_model.base_url, "scripted"),
                                      OpenAIUpstream(meta_model.base_url, "scripted"),
                                      on_event=lambda m: print(f"  {time.perf_counter() - started:7.1f}s {m}",
                                                         flush=True))
        instrument(controller, profile)
        # generation windows: the outermost calls of _seed and _generation
        for name in ("_seed", "_generation"):
            inner = getattr(controller, name)

            def window(*a, _inner=inner, **k):
                t0 = time.perf_counter()
                try:
                    return _inner(*a, **k)
                finally:
                    profile.windows.append((t0, time.perf_counter()))

            setattr(controller, name, window)
        try:
            state = controller.run()
        finally:
            profile.restore()
    journal = Journal.read(controller.log.path)
    rows = analyse(profile, controller, journal)
    verdicts = {n: g.verdict for n, g in sorted(state.generations.items())}

    print(f"\nverdicts: {verdicts}; run ended: {state.end_reason}\n")
    head = (f"{'gen':>3} {'wall s':>7} {'tasks':>5} {'busy span':>9} {'sandbox-model':>13} "
            f"{'model':>6} {'grading':>7} {'selfcheck':>9} {'meta model':>10} {'harness s':>9} "
            f"{'fraction':>8} {'hidden':>7} {'in-task':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['generation']:>3} {r['wall_s']:7.2f} {r['tasks']:>5} {r['sandbox_or_grading_span_s']:9.2f} "
              f"{r['agent_minus_model_s']:13.2f} {r['agent_model_s']:6.3f} {r['grade_s']:7.2f} "
              f"{r['selfcheck_s']:9.2f} {r['meta_model_s']:10.3f} {r['harness_s']:9.3f} "
              f"{r['fraction']:8.2%} {r['hidden_main_thread_s']:7.3f} {r['in_task_harness_s']:7.3f}")
    print("busy span: time during which at least one agent sandbox or grading ran. "
          "sandbox-model, model, grading, in-task (run_task's own bookkeeping): sums over the "
          "generation's tasks (parallel, so they add up to more than the span). hidden: the main "
          "thread's harness work while a sandbox or grading ran (not in the fraction). tasks 0: "
          "every task of the candidate was cached (its tree was evaluated before).")
    for r in rows:
        print(f"\ngen {r['generation']}: harness {r['harness_s']:.3f} s outside task runs, by part")
        for label, seconds in r["breakdown_s"].items():
            print(f"  {label:<45} {seconds * 1000:8.1f} ms")
    loop_rows = [r for r in rows if r["generation"] > 0] or rows
    median = statistics.median(r["fraction"] for r in loop_rows)
    total = sum(r["harness_s"] for r in loop_rows) / sum(r["wall_s"] for r in loop_rows)
    print(f"\nmedian fraction over generations 1..{len(loop_rows)}: {median:.2%} "
          f"(pooled {total:.2%}); target < {TARGET:.0%}: {'met' if median < TARGET else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps({"suite": args.suite, "workers": args.workers,
                                         "verdicts": verdicts, "rows": rows, "median": median,
                                         "pooled": total, "workspace": str(workspace)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
