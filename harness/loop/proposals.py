"""One proposal for the loop: the configured proposer, its model access, and its record.

The meta proposer (default) asks the meta model through a gateway channel of its own; the
self proposer (``proposer="self"``) runs the parent agent itself in a sandbox on "improve
this agent" (the Darwin Gödel Machine's self-referential mode), its calls through the agent's
gateway. Either way each edited agent is checked in sandboxes before it counts
(`harness.propose.smoke`), the attempts are written to ``gens/NNNN/proposal*.json``, and the
channel's key names the spend to journal with the proposal.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmark import DockerEnvironment, ImageBuilder, TaskSpec
from harness.errors import StopRequested
from harness.loop.spend import RunSpend
from harness.models.gateway import Gateway, OpenAIUpstream
from harness.propose.evidence import Evidence
from harness.propose.meta import MetaProposer, ModelCallFailed, ProposalResult, read_agent_files
from harness.propose.self import SelfProposer
from harness.propose.smoke import check_candidate
from harness.protocols import PROPOSERS, Proposer

__all__ = ["Proposals"]


@dataclass
class Proposals:
    proposer: str
    """A name from `harness.protocols.PROPOSERS`: ``meta`` or ``self``."""
    meta_model: str
    meta_gateway: Gateway
    agent_gateway: Gateway
    builder: ImageBuilder
    image_task: TaskSpec
    """The task whose image the sandboxed checks (and the self proposer) run in."""
    out_dir: Path
    """``runs/RUN/gens``: where each generation's proposal record goes."""
    spend: RunSpend
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when a stop removed the sandboxes: a proposer failing then is a stop, not a bug."""
    max_attempts: int = 3
    agent_timeout_s: float = 600.0
    smoke_test: bool = True
    """Run the harness's smoke test on each candidate before its evaluation
    (`harness.propose.smoke`); off only in the test that shows what it catches."""

    def __post_init__(self) -> None:
        PROPOSERS.load(self.proposer)  # an unknown name fails here, listing the known ones

    def selfcheck(self, worktree: Path) -> list[str]:
        """The harness's smoke test of the edited agent, then the agent's own self-check, in
        sandboxes (it is model-written code); a problem goes back to the model."""
        return check_candidate(worktree, self.image_task, self.builder, smoke=self.smoke_test)

    def propose(self, gen: int, worktree: Path, evidence: Evidence,
                tag: str = "") -> tuple[ProposalResult, str]:
        """One proposal in `worktree`; the result and the ledger key of what it spent."""
        key = f"gen-{gen:04d}.{self.proposer}{tag}"
        made = {"meta": self._meta_proposer, "self": self._self_proposer}[self.proposer]
        with made(gen, key) as proposer:
            result = self._guarded(proposer, worktree, evidence)
        out = self.out_dir / f"{gen:04d}"
        out.mkdir(parents=True, exist_ok=True)
        attempts = [{**asdict(a), "usage": a.usage.counts()} for a in result.attempts]
        (out / f"proposal{tag.replace('.', '-')}.json").write_text(json.dumps(
            {"proposer": self.proposer, "valid": result.valid, "error": result.error,
             "messages": result.messages, "attempts": attempts}, indent=2, default=str))
        return result, key

    @contextmanager
    def _meta_proposer(self, gen: int, key: str) -> Iterator[Proposer]:
        """The meta model through a gateway channel of its own, open for this proposal."""
        channel = self.meta_gateway.open_channel(key, f"gen-{gen:04d}", tcp=True)
        try:
            client = OpenAIUpstream(channel.base_url, "ratchet", retry_seconds=0)
            yield MetaProposer(client, self.meta_model, max_attempts=self.max_attempts,
                               extra_check=self.selfcheck)
        finally:
            self.meta_gateway.close_channel(channel)

    @contextmanager
    def _self_proposer(self, gen: int, key: str) -> Iterator[Proposer]:
        """The parent agent in a sandbox, its calls through the agent's gateway."""
        yield SelfProposer(DockerEnvironment(self.builder, timeout_s=self.agent_timeout_s),
                           self.agent_gateway, self.image_task, max_attempts=self.max_attempts,
                           extra_check=self.selfcheck, channel_key=key, generation=f"gen-{gen:04d}")

    def _guarded(self, proposer: Proposer, worktree: Path, evidence: Evidence) -> ProposalResult:
        try:
            return proposer.propose(worktree, evidence, read_agent_files(worktree))
        except ModelCallFailed as exc:  # not the proposal's fault: stop, resumable
            self.spend.check_stop()
            raise StopRequested(f"the proposer's model call failed: {exc}") from exc
        except Exception as exc:  # its sandbox removed under it by a stop: a stop too
            if self.cancelled.is_set():
                raise StopRequested("interrupted") from exc
            raise
