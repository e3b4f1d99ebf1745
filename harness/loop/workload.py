"""Which agent runs which tasks, at which attempts, for each step of a generation.

The run's tasks are split once (`harness.loop.splits`): the proposer studies one part, the
rule decides on another (often the same), a report-only split is run for the best alone.
Each run's role sets its attempt index (`harness.loop.attempts`); this module names the runs
each step needs by role, and reads them back from the journal (through `Evaluation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark import TaskSpec
from harness.loop.attempts import attempt_index, pairs, score
from harness.loop.evaluation import Evaluation, Results
from harness.loop.journal import RunState
from harness.loop.lineage import Lineage
from harness.loop.records import outcomes
from harness.loop.splits import SplitPlan
from harness.run.agent_source import AgentSource, resolve_agent

__all__ = ["Workload"]


@dataclass
class Workload:
    evaluation: Evaluation
    splits: SplitPlan
    lineage: Lineage
    workspace: Path
    attempts: int = 1
    """K: runs of each deciding task per candidate (``--attempts``)."""
    report_split: str | None = None
    _agents: dict[str, AgentSource] = field(default_factory=dict)

    @property
    def accept_ids(self) -> list[str]:
        return [t.instance_id for t in self.splits.decide]

    def agent(self, gen: int) -> AgentSource:
        """A recorded generation's agent; commits are immutable, so one copy per commit."""
        sha = self.lineage.head(gen)
        if sha not in self._agents:
            self._agents[sha] = resolve_agent(sha, repo_dir=self.workspace)
        return self._agents[sha]

    def slots(self, gen: int, role: str, proposal: int = 0) -> list[int]:
        count = 1 if role == "screen" else self.attempts
        return [attempt_index(gen, role, j, proposal) for j in range(count)]

    def baseline_slots(self, gen: int) -> list[int]:
        """The runs a recorded generation is compared and shown by: its fresh baseline (the
        seed's own evaluation for generation 0, which nothing was selected on)."""
        return self.slots(gen, "decide" if gen == 0 else "baseline")

    def best_baseline(self, state: RunState) -> tuple[int, dict[tuple[str, int], bool]]:
        """The best generation and its baseline pairs, running whatever of them is missing
        (a run from before fresh baselines, or one killed while making them)."""
        best_gen = max((n for n, g in state.generations.items()
                        if g.recorded and g.verdict == "accepted"), default=0)
        slots = self.baseline_slots(best_gen)
        self.evaluation.stage = f"fresh baseline of gen {best_gen}"
        runs = self.evaluation.evaluate(best_gen, self.agent(best_gen), self.splits.decide, slots)
        return best_gen, pairs(runs, self.accept_ids, slots)

    def run_pairs(self, gen: int, agent: AgentSource,
                  keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], bool]:
        """Run the candidate's deciding pairs ``keys`` (task id, slot) that have not run; the
        outcomes of those pairs (what `acceptance.decide_in_looks` asks for at each look)."""
        slots, wanted = self.slots(gen, "decide"), set(keys)
        by_id = {t.instance_id: t for t in self.splits.decide}
        for j in sorted({j for _, j in keys}):
            self.evaluation.stage = f"attempt {j + 1}/{len(slots)}"
            self.evaluation.evaluate(gen, agent, [by_id[t] for t, k in keys if k == j], [slots[j]])
        made = pairs(self.evaluation.results(agent.tree_hash, self.splits.decide, slots),
                     self.accept_ids, slots)
        return {key: value for key, value in made.items() if key in wanted}

    def fresh_baseline(self, gen: int, agent: AgentSource) -> tuple[Results, dict[str, Any]]:
        """K more runs of an accepted candidate: its baseline from now on, and its score."""
        slots = self.slots(gen, "baseline")
        self.evaluation.stage = "fresh baseline"
        fresh = self.evaluation.evaluate(gen, agent, self.splits.decide, slots)
        return fresh, score(fresh, self.accept_ids, slots)

    def study_only(self, gen: int, agent: AgentSource) -> Results:
        """One run of each studied task that does not decide: evidence for the proposer."""
        deciding = set(self.accept_ids)
        extra = [t for t in self.splits.study if t.instance_id not in deciding]
        return self.evaluation.evaluate(gen, agent, extra, self.slots(gen, "decide")[:1]) if extra else {}

    def held_out(self, gen: int, agent: AgentSource) -> dict[str, Any]:
        """The best's score on the report-only split (``{}`` without one): one run of each of
        its tasks for generation 0 and each accepted generation, shown as the report's held-out
        curve, never used to decide."""
        report: list[TaskSpec] = self.splits.report
        if not report:
            return {}
        self.evaluation.stage = f"report split ({len(report)} tasks)"
        slots = self.slots(gen, "baseline")[:1]
        results = self.evaluation.evaluate(gen, agent, report, slots)
        return {"report_split": {"split": self.report_split,
                                 **score(results, [t.instance_id for t in report], slots),
                                 "outcomes": outcomes(results)}}

    def screen(self, gen: int, candidates: list[dict[str, Any]], count: int) -> dict[int, int]:
        """One run per deciding task of each candidate (``--proposals``): resolved, by index."""
        screened: dict[int, int] = {}
        for c in candidates:
            self.evaluation.stage = f"screening proposal {c['index']}/{count}"
            runs = self.evaluation.evaluate(gen, resolve_agent(c["sha"], repo_dir=self.workspace),
                                            self.splits.decide, self.slots(gen, "screen", c["index"]))
            screened[c["index"]] = sum(1 for r in runs.values() if r["resolved"])
        return screened

    def studied_runs(self, gen: int) -> dict[str, dict]:
        """One run per study task of a recorded generation: its fresh baseline where it has one."""
        found: dict[str, dict] = {}
        attempts = self.baseline_slots(gen) + self.slots(gen, "decide")
        for (task_id, _), result in self.evaluation.results(
                self.agent(gen).tree_hash, self.splits.study, attempts).items():
            found.setdefault(task_id, result)
        return found
