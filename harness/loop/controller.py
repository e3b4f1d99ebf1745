"""The self-improvement loop: select a parent, propose, evaluate, decide, record.

A candidate runs K times (``attempts``) on each deciding task; the rule tests its runs,
paired with K fresh baseline runs of the best (`harness.loop.attempts`), with futility looks
after 1/3 and 2/3 of the pairs (`harness.loop.acceptance.decide_in_looks`). An accepted
candidate is run K more times: those fresh runs, never the draw that won the test, are the
new best's baseline and the score shown for it. With ``proposals`` P > 1, P candidates are
made from the parent, each screened on one run per deciding task, and only the screening
winner is tested, on fresh runs (so the screening's selection does not bias the test).

Everything a step does is journaled before it counts (`harness.loop.runlog`), so ``ratchet
resume`` after a kill at any moment redoes nothing that finished: task evaluations are
keyed by (agent tree hash, task id, attempt), a proposal already journaled is taken from
its worktree, and a recorded generation is never touched again. Git holds the lineage
(`harness.loop.lineage`): one branch per generation, ``best`` moved only on acceptance.

The collaborators are passed in, built by `harness.loop.compose.build_controller`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

from benchmark import TaskSpec
from harness.errors import StopRequested
from harness.loop.acceptance import AcceptanceRule, Decision, decide_in_looks, look_order
from harness.loop.attempts import score
from harness.loop.evaluation import Evaluation, Results
from harness.loop.journal import RunState
from harness.loop.lineage import Lineage
from harness.loop.propose_step import ProposeStep
from harness.loop.records import Recorder, archive, candidates_note
from harness.loop.runlog import RunLog
from harness.loop.selection import ParentSelector
from harness.loop.settings import LoopSettings
from harness.loop.spend import RunSpend
from harness.loop.splits import SplitPlan
from harness.loop.tamper import gate
from harness.loop.workload import Workload
from harness.run.agent_source import AgentSource, resolve_agent

__all__ = ["Controller", "LoopSettings", "StopRequested"]


@dataclass
class Controller:
    settings: LoopSettings
    log: RunLog
    lineage: Lineage
    splits: SplitPlan
    rule: AcceptanceRule
    selector: ParentSelector
    spend: RunSpend
    evaluation: Evaluation
    propose: ProposeStep
    recorder: Recorder
    workload: Workload
    say: Callable[[str], None] = lambda message: None
    intro: Callable[[], list[str]] = list
    """The lines said when the run starts (a $0 price, the splits, the rule's power)."""

    # -- the run -------------------------------------------------------------------------

    def run(self) -> RunState:
        s = self.settings
        # calls a killed process paid for but never journaled are in the spend log: the
        # journal takes them now, so its spend is the log's (and nothing is counted twice)
        self.log.append("run_started", run=s.run, resumed=bool(self.state.generations),
                        settings=asdict(s), **self.spend.unjournaled(self.state))
        for note in self.intro():
            self.say(note)
        told = False  # whether the forecast was said since the last spend
        try:
            if 0 not in self.state.generations or not self.state.generations[0].recorded:
                self._seed()
                self.say(self.spend.forecast(self.state, s.generations))
                told = True
            for gen in range(1, s.generations + 1):
                existing = self.state.generations.get(gen)
                if existing is not None and existing.recorded:
                    continue
                self.spend.check_stop()
                told = False
                self._generation(gen)
                self.say(self.spend.forecast(self.state, s.generations))
                told = True
        except StopRequested as stop:
            reason = str(stop)
            # money spent on work that was discarded (a run cut off by the budget, a task with
            # an infrastructure error) still counts: the journal is brought to the spend log
            self.log.append("budget_exhausted" if "budget" in reason else "run_stopped",
                            reason=reason, **self.spend.unjournaled(self.state))
            self.say(f"stopped: {reason}")
            if not told:  # a stop mid-generation (even the seed's): what was spent, what is left
                self.say(self.spend.forecast(self.state, s.generations))
            return self.state
        self.log.append("run_finished", reason=f"{s.generations} generations",
                        **self.spend.unjournaled(self.state))
        return self.state

    def _seed(self) -> None:
        self.lineage.start(self.settings.base)
        if 0 not in self.state.generations:
            self.log.append("generation_started", generation=0, parent=None)
        agent, slots = self.workload.agent(0), self.workload.slots(0, "decide")
        results = self.evaluation.evaluate(0, agent, self.accept_on, slots)
        results |= self.workload.study_only(0, agent)
        shown = score(results, self.workload.accept_ids, slots)
        held_out = self.workload.held_out(0, agent)
        self.log.append("proposal", generation=0, valid=True, reason="the seed agent")
        self.log.append("decided", generation=0, verdict="accepted", reason="generation 0", score=shown)
        self.recorder.record(0, self.lineage.head(0), shown, "accepted", "the seed agent", results,
                             tree=agent.tree_hash, extra=held_out)

    def _generation(self, gen: int) -> None:
        """One generation: select, propose, evaluate and decide, record."""
        parent = self._select(gen)
        worktree = self.lineage.worktree(gen, self.lineage.branch(parent))
        if self.state.generations[gen].proposal_valid is None:  # not journaled: the worktree is torn
            self.propose.run(gen, parent, worktree)
        state = self.state.generations[gen]
        if not state.proposal_valid:
            reason = f"invalid proposal: {state.proposal_reason}"
            self.say(f"gen {gen}: {reason}")
            self.log.append("decided", generation=gen, verdict="rejected", reason=reason, score=None)
            sha = self.lineage.commit(gen, message=f"invalid proposal\n\n{state.proposal_reason}",
                                      trailers={"Ratchet-Verdict": "invalid"}, allow_empty=True)
            self.recorder.record(gen, sha, {}, "invalid", reason, {}, tree="",
                                 extra=candidates_note(self.state, self.lineage, gen))
            return
        headline = state.proposal_reason or "proposal"
        candidate = resolve_agent(str(worktree))
        decision, results, shown, selection = self._decide(gen, candidate)
        verdict = "accepted" if decision.accepted else "rejected"
        held_out = self.workload.held_out(gen, candidate) if decision.accepted else {}
        self.log.append("decided", generation=gen, verdict=verdict, reason=decision.reason,
                        score=shown, selection_score=selection)
        self.say(f"gen {gen}: {verdict}: {decision.reason}")
        message = (state.proposal.get("diagnosis") or "").strip() or headline  # opens with its headline
        sha = self.lineage.commit(gen, message=message, trailers={
            "Ratchet-Score": f"{shown['resolved']}/{shown['planned']}", "Ratchet-Verdict": verdict})
        self.recorder.record(gen, sha, shown, verdict, headline, results, tree=candidate.tree_hash,
                             extra={"parent": parent, "decision": asdict(decision),
                                    "selection_score": selection,
                                    **candidates_note(self.state, self.lineage, gen), **held_out,
                                    "proposal_flags": state.proposal.get("flags") or []})

    # -- select --------------------------------------------------------------------------

    def _select(self, gen: int) -> int:
        """The parent: one seeded draw per generation, journaled, so a resumed run keeps it."""
        state = self.state.generations.get(gen)
        if state is not None and state.parent is not None:
            return state.parent
        selection_seed = f"{self.settings.seed}:{gen}"
        parent = self.selector.select(archive(self.state), random.Random(selection_seed)).number
        self.log.append("generation_started", generation=gen, parent=parent,
                        selection_seed=selection_seed)
        return parent

    # -- evaluate and decide -------------------------------------------------------------

    def _decide(self, gen: int, candidate: AgentSource) -> tuple[Decision, Results, dict, dict]:
        """Test `candidate` on fresh runs against the best's baseline, with futility looks;
        if accepted, run it K more times for its own fresh baseline. Returns the decision,
        the runs to record, the score to show (the fresh one when accepted) and the score of
        the deciding runs (the selection draw)."""
        best_gen, best = self.workload.best_baseline(self.state)
        ids, slots = self.workload.accept_ids, self.workload.slots(gen, "decide")
        self.evaluation.versus = f"{sum(best.values())}/{len(best)} (gen {best_gen}, fresh runs)"
        decision = decide_in_looks(self.rule, look_order(ids, len(slots), f"{self.settings.seed}:{gen}"),
                                   lambda keys: self.workload.run_pairs(gen, candidate, keys), best,
                                   generation=gen, generations=self.horizon or None)
        results = self.evaluation.results(candidate.tree_hash, self.accept_on, slots)
        decision = gate(decision, results)  # a tampering agent is never accepted
        selection = score(results, ids, slots)
        if decision.stopped_after is not None:
            self.say(f"gen {gen}: futility look: no gain after {decision.stopped_after} of "
                     f"{decision.planned} runs; stopping early")
            return decision, results, selection, selection
        study = self.workload.study_only(gen, candidate)
        if not decision.accepted:
            return decision, results | study, selection, selection
        self.say(f"gen {gen}: accepted; {len(slots)} fresh run(s) of each deciding task "
                 "become its baseline (the deciding runs are a selection draw)")
        fresh, shown = self.workload.fresh_baseline(gen, candidate)
        decision = gate(decision, fresh)  # tampering on its fresh runs rejects it all the same
        if not decision.accepted:
            return decision, results | fresh | study, selection, selection
        return decision, fresh | study, shown, selection

    # -- what the steps read -------------------------------------------------------------

    @property
    def state(self) -> RunState:
        return self.log.state

    @property
    def horizon(self) -> int:
        """Generations the acceptance rule's error budget is split over (0: open-ended)."""
        s = self.settings
        return s.horizon if s.horizon is not None else s.generations

    @property
    def study(self) -> list[TaskSpec]:
        return self.splits.study

    @property
    def accept_on(self) -> list[TaskSpec]:
        return self.splits.decide

    # -- stopping ------------------------------------------------------------------------

    @property
    def stop_flag(self):
        """Set by a first Ctrl-C/SIGTERM: start nothing more, finish what is in flight."""
        return self.spend.stop_flag

    def stop_now(self) -> None:
        """A second Ctrl-C/SIGTERM: start nothing more, and remove this process's containers
        (tasks in flight, a selfcheck), so their runs end at once with no verdict (what
        finished before is journaled already); the loop then stops as after the first."""
        self.evaluation.cancel()

    def close(self) -> None:
        """Release the executor (a Ray connection) and the gateway's relay endpoint."""
        self.evaluation.close()
