"""Every seam of the harness, declared in one place.

A seam is a Protocol: implementations do not inherit from it, they only match it (the
mini-swe-agent style). Each seam has a registry that names its known implementations by
dotted path, imported only when asked for, so naming one costs nothing and an optional
one (Ray) is imported only where it is used; an unknown name fails with the list of the
known ones (`UnknownImplementation`).

==================  ===========================================  =========================
seam                what it does                                 registry (names)
==================  ===========================================  =========================
Environment         runs the agent on one task in a sandbox      ENVIRONMENTS (docker)
Proposer            turns a parent's evidence into one edit      PROPOSERS (meta, self)
AcceptanceRule      candidate vs best on paired tasks -> verdict ACCEPTANCE_RULES (strict,
                                                                 margin, sign, mcnemar)
ParentSelector      which generation the next one starts from   PARENT_SELECTORS (best,
                                                                 archive, clade)
Executor            where task runs and gradings execute         EXECUTORS (local, ray)
ModelClient         one chat request body in, the answer out    MODEL_CLIENTS (openai)
==================  ===========================================  =========================

Two seams are declared in `benchmark`, which never imports the harness: `Environment`
(its Docker sandbox implements it) and `GradingExecutor` (where gradings run). The harness's
`Executor` extends the latter with task runs, so there is one executor Protocol, not two.
The agent keeps its own model client (`agent_seed.model.ModelClient`): it runs where the
harness does not exist.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterator, Mapping, Protocol, Sequence

from benchmark import Environment, GradingExecutor
from harness.errors import UnknownImplementation

if TYPE_CHECKING:
    import random

    from benchmark import ImageBuilder, TaskSpec
    from harness.loop.acceptance import Decision
    from harness.run.agent_source import AgentSource
    from harness.run.evaluate import TaskOutcome, TaskRunner
    from harness.propose.evidence import Evidence
    from harness.propose.meta import ProposalResult
    from harness.loop.selection import GenerationRecord

__all__ = [
    "ACCEPTANCE_RULES", "AcceptanceRule", "ENVIRONMENTS", "EXECUTORS", "Environment", "Executor",
    "MODEL_CLIENTS", "ModelClient", "PARENT_SELECTORS", "PROPOSERS", "ParentSelector", "Proposer",
    "Registry",
]


class ModelClient(Protocol):
    """A chat model on the host side: a chat request body (OpenAI protocol) in, the
    chat.completion body out. The gateway sends the agent's calls through one, the meta
    proposer its own (through the gateway's channel).

    A client may also have ``async def acomplete(body)``, the same call awaitable: the
    gateway then serves its calls on the event loop with no thread per call in flight
    (`harness.models.gateway.Gateway._ahandle`); without it, ``complete`` runs in a pool."""

    def complete(self, body: dict[str, Any]) -> dict[str, Any]: ...


class Proposer(Protocol):
    """Proposes one change of the agent in `worktree` from the parent's evidence; the
    worktree's agent dir holds the valid proposal's edits afterwards, or is as before."""

    def propose(self, worktree: Path, evidence: Evidence,
                agent_files: Mapping[str, str]) -> ProposalResult: ...


class AcceptanceRule(Protocol):
    """Candidate against best, task by task on the same tasks. ``generation`` (1, 2, ...)
    and ``generations`` (the run's planned length, None if open-ended) let a rule spend a
    run-wide error budget; count rules ignore them."""

    spec: str

    def decide(self, candidate: Mapping[Hashable, bool], best: Mapping[Hashable, bool], *,
               generation: int = 1, generations: int | None = None) -> Decision: ...


class ParentSelector(Protocol):
    """Which recorded generation the next candidate is made from."""

    def select(self, archive: Sequence[GenerationRecord], rng: random.Random) -> GenerationRecord: ...


class Executor(GradingExecutor, Protocol):
    """Runs task runs and gradings (``grade``, from `benchmark.GradingExecutor`); results
    come back in completion order.

    `should_start` is asked before each task run starts: False (Ctrl-C, a spent budget)
    skips the run, yielded with outcome None. Runs already started finish and are yielded.
    """

    def run_tasks(self, runner: TaskRunner, agent: AgentSource, tasks: Sequence[TaskSpec], *,
                  generation: str, should_start: Callable[[], bool] = lambda: True,
                  ) -> Iterator[tuple[TaskSpec, TaskOutcome | None]]: ...

    def prepare(self, builder: ImageBuilder, tasks: Sequence[TaskSpec]) -> list[dict]:
        """Build the tasks' images wherever task runs may go (every node of a cluster);
        per place: ``{"node", "tasks", "built": [tags], "errors": {task: why}}``."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Registry:
    """The known implementations of one seam: name -> ``"module:attribute"``."""

    seam: str
    known: Mapping[str, str]

    def __iter__(self) -> Iterator[str]:
        return iter(self.known)

    def __contains__(self, name: object) -> bool:
        return name in self.known

    def __getitem__(self, name: str) -> Any:
        return self.load(name)

    def get(self, name: str) -> Any | None:
        """The implementation named `name` (imported now), or None."""
        path = self.known.get(name)
        if path is None:
            return None
        module, _, attribute = path.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def load(self, name: str) -> Any:
        """The implementation named `name`; `UnknownImplementation` naming the known ones."""
        found = self.get(name)
        if found is None:
            raise UnknownImplementation(f"unknown {self.seam} {name!r}; known: {', '.join(self.known)}")
        return found


ENVIRONMENTS = Registry("environment", {"docker": "benchmark:DockerEnvironment"})
PROPOSERS = Registry("proposer", {"meta": "harness.propose.meta:MetaProposer",
                                  "self": "harness.propose.self:SelfProposer"})
ACCEPTANCE_RULES = Registry("acceptance rule", {
    "strict": "harness.loop.acceptance:StrictRule",
    "margin": "harness.loop.acceptance:MarginRule",
    "sign": "harness.loop.acceptance:PairedExactTest",
    "mcnemar": "harness.loop.acceptance:PairedExactTest",
})
"""``sign`` and ``mcnemar`` share one implementation (one- and two-sided)."""
PARENT_SELECTORS = Registry("parent selector", {"best": "harness.loop.selection:BestSelector",
                                                "archive": "harness.loop.selection:ArchiveSelector",
                                                "clade": "harness.loop.selection:CladeSelector"})
EXECUTORS = Registry("executor", {"local": "harness.run.executors:LocalPool",
                                  "ray": "harness.run.ray_executor:RayExecutor"})
MODEL_CLIENTS = Registry("model client", {"openai": "harness.models.gateway:OpenAIUpstream"})
