"""A generation's proposal step: one proposal, or P screened ones (``--proposals P``).

Each proposal is journaled before anything can stop the run (a proposal that was paid for
is used on resume). With P > 1 each valid candidate is committed on a branch of its own
(`Lineage.candidate_branch`), screened on one run per deciding task, and the most resolved
(the first on a tie) goes into the generation's worktree. Only it is then tested, on fresh
runs: the screening draw never enters the test. The step ends with a ``proposal`` record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.loop.lineage import Lineage
from harness.loop.proposals import Proposals
from harness.loop.runlog import RunLog
from harness.loop.spend import RunSpend
from harness.loop.splits import SplitPlan
from harness.loop.tamper import proposal_flags
from harness.loop.workload import Workload
from harness.propose.evidence import Evidence, collect_evidence
from harness.propose.meta import ProposalResult

__all__ = ["ProposeStep"]


@dataclass
class ProposeStep:
    proposals: Proposals
    lineage: Lineage
    log: RunLog
    spend: RunSpend
    workload: Workload
    splits: SplitPlan
    count: int = 1
    """P: proposals made from the parent per generation."""
    evidence_tokens: int = 6000
    say: Callable[[str], None] = lambda message: None

    def run(self, gen: int, parent: int, worktree: Path) -> None:
        """Propose, journal, stop if asked; ends with the generation's ``proposal`` record."""
        if self.count > 1:
            self._several(gen, parent, worktree)
            return
        self.lineage.reset(gen)
        self.say(f"gen {gen}: proposing a change of generation {parent}")
        result, spend = self.propose(gen, parent, worktree)
        # journaled before any stop: a proposal that was paid for is used on resume
        self.log.append("proposal", generation=gen, valid=result.valid,
                        reason=result.proposal.headline if result.valid else result.error,
                        diagnosis=result.proposal.diagnosis if result.valid else None,
                        flags=proposal_flags(worktree) if result.valid else [], **spend)
        self.spend.check_stop()

    def evidence(self, parent: int) -> Evidence:
        """The parent's evidence: study tasks only; no grader log where they also decide."""
        return collect_evidence(self.workload.studied_runs(parent), self.splits.study,
                                grader_log=not self.splits.studies_deciding,
                                max_tokens=self.evidence_tokens)

    def propose(self, gen: int, parent: int, worktree: Path,
                tag: str = "") -> tuple[ProposalResult, dict[str, Any]]:
        """One proposal from the parent's evidence; the result and its spend's journal fields."""
        result, key = self.proposals.propose(gen, worktree, self.evidence(parent), tag)
        return result, self.spend.claim(key)

    def _several(self, gen: int, parent: int, worktree: Path) -> None:
        for index in range(1, self.count + 1):
            if index in self.log.state.generations[gen].candidates:
                continue
            self.lineage.reset(gen)
            self.say(f"gen {gen}: proposal {index}/{self.count}: a change of generation {parent}")
            result, spend = self.propose(gen, parent, worktree, tag=f".p{index}")
            headline = result.proposal.headline if result.valid else ""
            diagnosis = result.proposal.diagnosis if result.valid else None
            sha = (self.lineage.save_candidate(gen, index, (diagnosis or headline).strip() or headline)
                   if result.valid else None)
            self.log.append("candidate", generation=gen, index=index, valid=result.valid,
                            reason=headline if result.valid else result.error, sha=sha,
                            diagnosis=diagnosis, **spend)
            self.spend.check_stop()  # after the journal: a paid candidate is kept
        candidates = self.log.state.generations[gen].candidates
        valid = [c for _, c in sorted(candidates.items()) if c["valid"]]
        if not valid:
            why = "; ".join(f"{i}: {c['reason']}" for i, c in sorted(candidates.items()))
            self.log.append("proposal", generation=gen, valid=False,
                            reason=f"none of the {self.count} proposals was valid ({why})")
            return
        screened = self.workload.screen(gen, valid, self.count)
        chosen = max(valid, key=lambda c: (screened[c["index"]], -c["index"]))
        self.say(f"gen {gen}: screening resolved {screened}; testing proposal {chosen['index']} "
                 "on fresh runs")
        self.lineage.restore_candidate(gen, chosen["sha"])
        self.log.append("proposal", generation=gen, valid=True, reason=chosen["reason"],
                        diagnosis=chosen["diagnosis"], chosen=chosen["index"],
                        flags=proposal_flags(worktree), screened={str(k): v for k, v in screened.items()})
