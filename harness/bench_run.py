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
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from benchmark import Grader, InfraError, TaskSpec
from benchmark._agent_env import DockerEnvironment, Environment
from harness.agent_source import AgentSource
from harness.gateway import Gateway

__all__ = ["TaskOutcome", "BenchRun"]


@dataclass
class TaskOutcome:
    instance_id: str
    agent_tree: str
    resolved: bool
    submitted: bool
    steps: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    seconds: float
    model_seconds: float
    agent_seconds: float
    grade_seconds: float
    patch: str
    error: str | None = None

    @property
    def overhead_seconds(self) -> float:
        """Sandbox start to patch collected, minus the time spent waiting on the model."""
        return max(0.0, self.agent_seconds - self.model_seconds)


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
        self.gateway = gateway
        self.grader = grader
        self.environment = environment or DockerEnvironment(grader.builder)
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

    def run_task(self, task: TaskSpec) -> TaskOutcome:
        started = time.monotonic()
        channel = self.gateway.open_channel(task.instance_id)
        try:
            run = self.environment.run_agent(task, self.agent.directory,
                                             socket_path=channel.socket_path,
                                             model=self.gateway.model)
        except InfraError as exc:
            run = None
            error = str(exc)
        finally:
            self.gateway.close_channel(channel)
        usage = self.gateway.ledger.tasks.get(task.instance_id)
        usage_fields = dict(prompt_tokens=usage.prompt_tokens if usage else 0,
                            completion_tokens=usage.completion_tokens if usage else 0,
                            cost_usd=usage.cost_usd if usage else 0.0,
                            model_seconds=usage.model_seconds if usage else 0.0)
        if run is None:
            outcome = TaskOutcome(task.instance_id, self.agent.tree_hash, False, False, 0,
                                  seconds=time.monotonic() - started, agent_seconds=0.0,
                                  grade_seconds=0.0, patch="", error=error, **usage_fields)
        else:
            grade = self.grader.grade(task, run.patch, label="agent")
            outcome = TaskOutcome(
                task.instance_id, self.agent.tree_hash, grade.resolved, run.exit_code == 0,
                run.steps, seconds=time.monotonic() - started, agent_seconds=run.seconds,
                grade_seconds=grade.seconds, patch=run.patch, error=grade.error, **usage_fields)
            (self.out_dir / "agent-logs").mkdir(exist_ok=True)
            (self.out_dir / "agent-logs" / f"{task.instance_id}.log").write_text(run.log)
        _write_atomically(self._result_path(task), json.dumps(asdict(outcome), indent=2))
        return outcome

    def run(self, tasks: list[TaskSpec], *, workers: int = 2,
            on_done: Callable[[TaskOutcome, bool], None] = lambda o, cached: None) -> list[TaskOutcome]:
        outcomes: dict[str, TaskOutcome] = {}
        todo = []
        for task in tasks:
            hit = self.cached(task)
            if hit is not None:
                outcomes[task.instance_id] = hit
                on_done(hit, True)
            else:
                todo.append(task)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(self.run_task, task) for task in todo]
            for future in as_completed(futures):
                outcome = future.result()
                outcomes[outcome.instance_id] = outcome
                on_done(outcome, False)
        ordered = [outcomes[t.instance_id] for t in tasks]
        self._write_outputs(ordered)
        return ordered

    def _write_outputs(self, outcomes: list[TaskOutcome]) -> None:
        with (self.out_dir / "predictions.jsonl").open("w", encoding="utf-8") as handle:
            for o in outcomes:
                handle.write(json.dumps({"instance_id": o.instance_id,
                                         "model_name_or_path": self.model_label,
                                         "model_patch": o.patch}) + "\n")
        summary = {
            "agent": self.agent.spec, "agent_tree": self.agent.tree_hash, "model": self.model_label,
            "tasks": len(outcomes), "resolved": sum(o.resolved for o in outcomes),
            "errors": sum(bool(o.error) for o in outcomes),
            "prompt_tokens": sum(o.prompt_tokens for o in outcomes),
            "completion_tokens": sum(o.completion_tokens for o in outcomes),
            "cost_usd": sum(o.cost_usd for o in outcomes),
            "per_task": {o.instance_id: {k: v for k, v in asdict(o).items() if k != "patch"}
                         for o in outcomes},
        }
        _write_atomically(self.out_dir / "summary.json", json.dumps(summary, indent=2))
