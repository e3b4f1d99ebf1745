"""One task run, the unit of every evaluation: the agent in a sandbox, then the grader.

Used by ``ratchet bench run`` and by the loop. A run that failed for an infrastructure reason
carries an ``error`` and no verdict: callers never count it as the agent's failure and never
cache it. That includes an unresolved run whose model calls failed outside the agent's
doing (the endpoint down or overloaded, a cluster node cut off from the gateway). A run the
gateway refused a call in is graded as usual and flagged ``budget_exhausted``: past a task's
own budget that is the agent's limit, like its step limit; past the run's budget the caller
discards it and stops.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from benchmark import GradeResult, Grader, InfraError, TaskSpec
from benchmark import AgentRun, Environment
from harness.run.agent_source import AgentSource
from harness.models.gateway import Channel, Gateway

__all__ = ["STOPPED_AT_ONCE", "SandboxResult", "TaskOutcome", "TaskRunner", "Ticket", "run_in_sandbox"]

STOPPED_AT_ONCE = "stopped at once (a second Ctrl-C or SIGTERM killed its container): no verdict"


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
    """Of the priced calls only: see ``unpriced_calls``."""
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
    node: str = ""
    """The cluster node that ran it (empty: this machine)."""
    tampered: bool = False
    """The grader caught this run tampering (`GradeResult.tampered`): never a success."""
    tamper_reasons: list[str] = field(default_factory=list)
    flags: list[dict] = field(default_factory=list)
    """Tamper signatures in the patch (`benchmark._scan`)."""
    unpriced_calls: int = 0
    """Calls of a model with no known price (``--allow-unpriced``): the cost is unknown."""

    @property
    def overhead_seconds(self) -> float:
        """Sandbox start to patch collected, minus the time spent waiting on the model."""
        return max(0.0, self.agent_seconds - self.model_seconds)


@dataclass
class SandboxResult:
    """What one task run produced where it ran (here, or a cluster node that sends it back):
    the agent's run, or why there is none, and the grading of its patch."""

    run: AgentRun | None
    error: str | None
    grade: GradeResult | None = None
    grade_log: str | None = None
    """The grading's log text when it was graded elsewhere (`Grader.adopt` keeps it)."""
    node: str = ""


def run_in_sandbox(task: TaskSpec, agent_dir: Path, *, socket_path: Path, model: str,
                   environment: Environment, grader: Grader, label: str) -> SandboxResult:
    """The agent in a fresh sandbox, talking to `socket_path`, then its patch graded."""
    try:
        run = environment.run_agent(task, agent_dir, socket_path=socket_path, model=model)
    except InfraError as exc:
        return SandboxResult(None, str(exc))
    except Exception as exc:  # a bug of ours costs one task run, not the batch
        return SandboxResult(None, f"internal error running the agent: {exc!r}\n{traceback.format_exc()}")
    return SandboxResult(run, None, grader.grade(task, run.patch, label=label))


@dataclass
class Ticket:
    """A task run begun: its gateway channel is open until `TaskRunner.finish`."""

    task: TaskSpec
    agent: AgentSource
    generation: str
    key: str
    channel: Channel
    started: float

    @property
    def label(self) -> str:
        return f"agent-{self.generation}"


@dataclass
class TaskRunner:
    gateway: Gateway
    grader: Grader
    environment: Environment
    logs_dir: Path
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set by a second Ctrl-C/SIGTERM, which kills the containers in flight: whatever
    finishes after it is no verdict (a killed grading must not count as a failure)."""

    def begin(self, task: TaskSpec, agent: AgentSource, *, generation: str,
              relay: bool = False) -> Ticket:
        """Open the run's gateway channel (`relay`: for a sandbox on a cluster node)."""
        key = task.instance_id if generation == "bench" else f"{generation}.{task.instance_id}"
        channel = self.gateway.open_channel(key, generation, relay=relay)
        return Ticket(task, agent, generation, key, channel, time.monotonic())

    def run_task(self, task: TaskSpec, agent: AgentSource, *, generation: str) -> TaskOutcome:
        ticket = self.begin(task, agent, generation=generation)
        try:
            result = run_in_sandbox(task, agent.directory, socket_path=ticket.channel.socket_path,
                                    model=self.gateway.model, environment=self.environment,
                                    grader=self.grader, label=ticket.label)
        except BaseException:
            self.gateway.close_channel(ticket.channel)
            raise
        return self.finish(ticket, result)

    def abandon(self, ticket: Ticket) -> None:
        """The run was lost (its node died): close its channel; what it spent stays counted."""
        self.gateway.close_channel(ticket.channel)

    def finish(self, ticket: Ticket, result: SandboxResult) -> TaskOutcome:
        """Close the channel and make the outcome: usage from the gateway's ledger."""
        self.gateway.close_channel(ticket.channel)
        task, agent, run = ticket.task, ticket.agent, result.run
        usage = self.gateway.ledger.task(ticket.key)
        common = dict(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                      cost_usd=usage.cost_usd, unpriced_calls=usage.unpriced_calls,
                      model_seconds=usage.model_seconds,
                      trajectory=str(ticket.channel.trajectory), node=result.node,
                      budget_exhausted=self.gateway.ledger.was_refused(ticket.key))
        seconds = time.monotonic() - ticket.started
        if self.cancelled.is_set():
            result = SandboxResult(run, STOPPED_AT_ONCE)
        if run is None or result.error or result.grade is None:
            return TaskOutcome(task.instance_id, agent.tree_hash, False, False,
                               run.steps if run else 0, seconds=seconds,
                               agent_seconds=run.seconds if run else 0.0, grade_seconds=0.0,
                               patch=run.patch if run else "", error=result.error, **common)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        (self.logs_dir / f"{ticket.key}.log").write_text(run.log, encoding="utf-8")
        grade = result.grade
        if result.grade_log is not None:
            grade = self.grader.adopt(grade, run.patch, result.grade_log)
        error = grade.error
        failure = self.gateway.ledger.failure(ticket.key)
        if failure and not grade.resolved and not error:  # not the agent's failure: no verdict
            error = f"the model endpoint failed during this run: {failure}"
        return TaskOutcome(
            task.instance_id, agent.tree_hash, grade.resolved, run.exit_code == 0, run.steps,
            seconds=seconds, agent_seconds=run.seconds, grade_seconds=grade.seconds,
            patch=run.patch, error=error, grade_log=grade.log_path, tampered=grade.tampered,
            tamper_reasons=list(grade.tamper_reasons), flags=list(grade.flags), **common)
