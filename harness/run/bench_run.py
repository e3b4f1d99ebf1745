"""``ratchet bench run``: an agent on every task of a suite, each in a fresh sandbox, graded.

One task run: open a gateway channel, run the agent in a sandbox, close the channel, grade
the patch in another fresh sandbox, write the result. Results are cached per task under the
agent's tree hash, written atomically, so a killed run started again redoes only the tasks
that had not finished. Outputs: SWE-bench predictions JSONL, the gateway's trajectory per
task, one result JSON per task, and a summary.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from benchmark import Grader, TaskSpec
from benchmark import DockerEnvironment, Environment
from harness.run.agent_source import AgentSource
from harness.run.evaluate import TaskOutcome, TaskRunner
from harness.run.executors import Executor, LocalPool
from harness.models.gateway import Gateway

__all__ = ["BenchRun"]


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)


class BenchRun:
    def __init__(self, *, agent: AgentSource, gateway: Gateway, grader: Grader, out_dir: Path,
                 environment: Environment | None = None, model_label: str):
        self.agent = agent
        self.runner = TaskRunner(gateway=gateway, grader=grader,
                                 environment=environment or DockerEnvironment(grader.builder),
                                 logs_dir=out_dir / "agent-logs")
        self.out_dir = out_dir
        self.model_label = model_label
        (out_dir / "results").mkdir(parents=True, exist_ok=True)

    def _result_path(self, task: TaskSpec) -> Path:
        return self.out_dir / "results" / f"{task.instance_id}.json"

    def cached(self, task: TaskSpec) -> TaskOutcome | None:
        """A finished result for this task and this agent tree, if any."""
        path = self._result_path(task)
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("agent_tree") != self.agent.tree_hash or data.get("error"):
            return None
        return TaskOutcome(**data)

    def run(self, tasks: list[TaskSpec], *, workers: int = 2, executor: Executor | None = None,
            on_done: Callable[[TaskOutcome, bool], None] = lambda o, cached: None) -> list[TaskOutcome]:
        """Every task not finished earlier, on `executor` (default: a local pool of
        `workers`); each result is written as it arrives."""
        outcomes: dict[str, TaskOutcome] = {}
        todo = []
        for task in tasks:
            hit = self.cached(task)
            if hit is not None:
                outcomes[task.instance_id] = hit
                on_done(hit, True)
            else:
                todo.append(task)
        executor = executor or LocalPool(workers)
        try:
            for task, outcome in executor.run_tasks(self.runner, self.agent, todo, generation="bench"):
                _write_atomically(self._result_path(task), json.dumps(asdict(outcome), indent=2))
                outcomes[outcome.instance_id] = outcome
                on_done(outcome, False)
        finally:
            self.runner.gateway.stop_relay()
        ordered = [outcomes[t.instance_id] for t in tasks]
        self._write_outputs(ordered)
        return ordered

    def _write_outputs(self, outcomes: list[TaskOutcome]) -> None:
        """predictions.jsonl holds the tasks that have a verdict: a task whose run failed for
        an infrastructure reason (an endpoint down) has no patch of the agent's, and the
        official harness would grade its empty one as the agent's failure."""
        with (self.out_dir / "predictions.jsonl").open("w", encoding="utf-8") as handle:
            for o in (o for o in outcomes if not o.error):
                handle.write(json.dumps({"instance_id": o.instance_id,
                                         "model_name_or_path": self.model_label,
                                         "model_patch": o.patch}) + "\n")
        summary = {
            "agent": self.agent.spec, "agent_tree": self.agent.tree_hash, "model": self.model_label,
            "tasks": len(outcomes), "resolved": sum(o.resolved for o in outcomes),
            "errors": sum(bool(o.error) for o in outcomes),
            "tampered": sorted(o.instance_id for o in outcomes if o.tampered),
            "resolved_flagged": sorted(o.instance_id for o in outcomes if o.resolved and o.flags),
            "prompt_tokens": sum(o.prompt_tokens for o in outcomes),
            "completion_tokens": sum(o.completion_tokens for o in outcomes),
            "cost_usd": None if any(o.unpriced_calls for o in outcomes)  # unknown, never $0
            else sum(o.cost_usd for o in outcomes),
            "unpriced_calls": sum(o.unpriced_calls for o in outcomes),
            "per_task": {o.instance_id: {k: v for k, v in asdict(o).items() if k != "patch"}
                         for o in outcomes},
        }
        _write_atomically(self.out_dir / "summary.json", json.dumps(summary, indent=2))
