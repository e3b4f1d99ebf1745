"""Running an agent on tasks for the loop: each run journaled as it finishes, none run twice.

A run is keyed by (agent tree hash, task id, attempt) (`harness.loop.attempts`); one already
in the journal is never run again, so a resumed run repeats no finished work. An
infrastructure error is no verdict: the task gets another pass, and if it still has none
the run stops (resumable) rather than decide a generation on part of its tasks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from benchmark import TaskSpec
from benchmark import docker_host
from harness.errors import StopRequested
from harness.loop.runlog import RunLog
from harness.loop.spend import RunSpend
from harness.protocols import Executor
from harness.run.agent_source import AgentSource
from harness.run.evaluate import TaskRunner

__all__ = ["Evaluation", "Results"]

Results = dict[tuple[str, int], dict]
"""Journaled runs of one agent, by (task id, attempt)."""


@dataclass
class Evaluation:
    runner: TaskRunner
    executor: Executor
    log: RunLog
    spend: RunSpend
    say: Callable[[str], None]
    infra_passes: int = 2
    """Passes over the tasks an infrastructure error left without a verdict, before the
    run stops (resumable) rather than decide a generation on part of its tasks."""
    stage: str = "seed"
    """What the progress line says is running (e.g. "attempt 1/3")."""
    versus: str = ""
    """What the best resolves, for the progress line."""

    def results(self, tree: str, tasks: Iterable[TaskSpec], attempts: Iterable[int]) -> Results:
        """The journaled runs of `tree` on `tasks` at `attempts`, by (task id, attempt)."""
        done = self.log.state.evaluations
        return {(t.instance_id, a): done[(tree, t.instance_id, a)]
                for t in tasks for a in attempts if (tree, t.instance_id, a) in done}

    def evaluate(self, gen: int, agent: AgentSource, tasks: list[TaskSpec],
                 attempts: Iterable[int] = (0,)) -> Results:
        """Run each task at each attempt not yet evaluated for this tree; journal each as it
        finishes. Returns a verdict for every (task, attempt), or raises StopRequested."""
        attempts = list(attempts)
        errors: dict[str, str] = {}
        done = self.log.state.evaluations
        for attempt in attempts:
            for tries in range(self.infra_passes):
                todo = [t for t in tasks if (agent.tree_hash, t.instance_id, attempt) not in done]
                if not todo:
                    break
                if tries:
                    self.say(f"gen {gen}: {len(todo)} task(s) had infrastructure errors; running "
                             "them once more")
                else:
                    which = f" (attempt {attempt})" if attempt % 10_000 else ""
                    self.say(f"gen {gen}: evaluating {len(todo)} task(s){which}"
                             f"{f' ({len(tasks) - len(todo)} cached)' if len(todo) < len(tasks) else ''}")
                errors = self._one_pass(gen, agent, tasks, todo, attempt)
                self.spend.check_stop()
            missing = [t.instance_id for t in tasks if (agent.tree_hash, t.instance_id, attempt) not in done]
            if missing:
                first = missing[0]
                raise StopRequested(
                    f"infrastructure errors: {len(missing)} task(s) of gen {gen} have no verdict "
                    f"after {self.infra_passes} tries (first: {first}: {errors.get(first, 'not run')}); "
                    "nothing was decided on part of the tasks. Fix the cause, then resume the run")
        return self.results(agent.tree_hash, tasks, attempts)

    def _one_pass(self, gen: int, agent: AgentSource, tasks: list[TaskSpec],
                  todo: list[TaskSpec], attempt: int) -> dict[str, str]:
        """One pass over `todo` at one attempt; the infrastructure errors, by task."""
        errors: dict[str, str] = {}
        # attempt 0 of generation N keeps the plain label (grades/TASK/agent-gen-NNNN: export)
        label = f"gen-{gen:04d}" + (f".a{attempt}" if attempt % 10_000 else "")
        for task, outcome in self.executor.run_tasks(self.runner, agent, todo, generation=label,
                                                     should_start=self.spend.should_start):
            if outcome is None:
                continue
            if outcome.budget_exhausted and self.spend.refusal():
                continue  # cut off by the run's budget: not a verdict; the loop stops below
            if outcome.error:  # infrastructure: not a verdict, not cached
                errors[task.instance_id] = outcome.error.splitlines()[0]
                self.say(f"gen {gen}: {task.instance_id}: error: {outcome.error}")
                continue
            result = {k: v for k, v in asdict(outcome).items() if k != "patch"}
            self.log.append("task_evaluated", generation=gen, tree_hash=agent.tree_hash,
                            task_id=task.instance_id, attempt=attempt, result=result,
                            **self.spend.claim(f"{label}.{task.instance_id}"))
            done = self.results(agent.tree_hash, tasks, [attempt])
            resolved = sum(1 for r in done.values() if r["resolved"])
            versus = f"; best resolves {self.versus}" if gen else ""
            self.say(f"gen {gen} {self.stage}: {len(done)}/{len(tasks)} done, {resolved} "
                     f"resolved{versus} | {task.instance_id}: "
                     f"{'resolved' if outcome.resolved else 'unresolved'}")
        return errors

    def cancel(self) -> None:
        """Start nothing more and remove this process's containers (tasks in flight, a
        selfcheck), so their runs end at once with no verdict."""
        self.spend.stop_flag.set()
        self.runner.cancelled.set()
        threading.Thread(target=docker_host.remove_process_containers, daemon=True,
                         name="stop-now").start()

    def close(self) -> None:
        """Release the executor (a Ray connection) and the gateway's relay endpoint."""
        self.executor.close()
        self.runner.gateway.stop_relay()
