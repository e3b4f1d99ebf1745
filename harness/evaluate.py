"""One task run, the unit of every evaluation: the agent in a sandbox, then the grader.

Used by ``ratchet bench run`` and by the loop. A run that failed for an infrastructure reason
carries an ``error`` and no verdict: callers never count it as the agent's failure and never
cache it. A run the gateway refused a call in is graded as usual and flagged
``budget_exhausted``: past a task's own budget that is the agent's limit, like its step
limit; past the run's budget the caller discards it and stops.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from benchmark import Grader, InfraError, TaskSpec
from benchmark._agent_env import Environment
from harness.agent_source import AgentSource
from harness.gateway import Gateway

__all__ = ["TaskOutcome", "TaskRunner"]


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
    budget_exhausted: bool = False
    trajectory: str = ""
    """The gateway's log of this run (the trajectory of record)."""
    grade_log: str = ""

    @property
    def overhead_seconds(self) -> float:
        """Sandbox start to patch collected, minus the time spent waiting on the model."""
        return max(0.0, self.agent_seconds - self.model_seconds)




@dataclass
class TaskRunner:
    gateway: Gateway
    grader: Grader
    environment: Environment
    logs_dir: Path

    def run_task(self, task: TaskSpec, agent: AgentSource, *, generation: str) -> TaskOutcome:
        started = time.monotonic()
        key = task.instance_id if generation == "bench" else f"{generation}.{task.instance_id}"
        channel = self.gateway.open_channel(key, generation)
        run, error = None, None
        try:
            run = self.environment.run_agent(task, agent.directory, socket_path=channel.socket_path,
                                             model=self.gateway.model)
        except InfraError as exc:
            error = str(exc)
        except Exception as exc:  # a bug of ours costs one task run, not the batch
            error = f"internal error running the agent: {exc!r}\n{traceback.format_exc()}"
        finally:
            self.gateway.close_channel(channel)
        usage = self.gateway.ledger.task(key)
        common = dict(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                      cost_usd=usage.cost_usd, model_seconds=usage.model_seconds,
                      trajectory=str(channel.trajectory))
        refused = self.gateway.ledger.was_refused(key)
        if run is None or error:
            return TaskOutcome(task.instance_id, agent.tree_hash, False, False,
                               run.steps if run else 0, seconds=time.monotonic() - started,
                               agent_seconds=run.seconds if run else 0.0, grade_seconds=0.0,
                               patch=run.patch if run else "", error=error,
                               budget_exhausted=refused, **common)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        (self.logs_dir / f"{key}.log").write_text(run.log, encoding="utf-8")
        grade = self.grader.grade(task, run.patch, label=f"agent-{generation}")
        return TaskOutcome(
            task.instance_id, agent.tree_hash, grade.resolved, run.exit_code == 0, run.steps,
            seconds=time.monotonic() - started, agent_seconds=run.seconds,
            grade_seconds=grade.seconds, patch=run.patch, error=grade.error,
            budget_exhausted=refused, grade_log=grade.log_path, **common)
