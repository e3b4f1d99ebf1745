"""What the loop writes down once a generation is decided, and what it reads back from it.

Recording a generation writes, in this order: its git note and (when accepted) ``best``,
``gens/NNNN/metrics.json``, then ``generation_recorded`` in the journal; after that record
nothing of the generation is redone on resume. The archive (what parent selectors see) and
the per-task outcomes are read from the journal's folded state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.loop.journal import RunState
from harness.loop.lineage import Lineage
from harness.loop.runlog import RunLog
from harness.loop.selection import GenerationRecord
from harness.loop.tamper import flagged_tasks, tampered_tasks

__all__ = ["Recorder", "archive", "candidates_note", "outcomes"]


def outcomes(results: dict[tuple[str, int], dict]) -> dict[str, bool]:
    """Task id -> resolved, from each task's first run among `results` (metrics.json)."""
    out: dict[str, bool] = {}
    for (task_id, _), r in sorted(results.items()):
        out.setdefault(task_id, bool(r["resolved"]))
    return out


def archive(state: RunState) -> list[GenerationRecord]:
    """What selectors see. A score's rate is over the runs made, so a generation stopped
    by a futility look is not scored as failing the tasks it never ran."""
    records = []
    for number, g in sorted(state.generations.items()):
        if not g.recorded:
            continue
        children = sum(1 for other in state.generations.values() if other.parent == number)
        score = g.score if isinstance(g.score, dict) else {}
        runs = score.get("runs", score.get("evaluated", score.get("tasks", 0))) or 0
        rate = score.get("resolved", 0) / runs if runs else 0.0
        records.append(GenerationRecord(number, g.parent, rate, bool(g.proposal_valid or number == 0),
                                        g.verdict == "accepted", children,
                                        resolved=int(score.get("resolved", 0) or 0),
                                        evaluated=int(runs)))
    return records


def candidates_note(state: RunState, lineage: Lineage, gen: int) -> dict[str, Any]:
    """For metrics.json: all P candidates (branch, commit, validity) and which was chosen."""
    candidates = state.generations[gen].candidates
    if not candidates:
        return {}
    proposal = state.generations[gen].proposal
    screened = proposal.get("screened") or {}
    return {"chosen": proposal.get("chosen"), "candidates": [
        {**c, "branch": lineage.candidate_branch(gen, i) if c.get("sha") else None,
         "screened_resolved": screened.get(str(i))} for i, c in sorted(candidates.items())]}


@dataclass
class Recorder:
    run: str
    run_dir: Path
    lineage: Lineage
    log: RunLog

    def record(self, gen: int, sha: str, score: dict, verdict: str, headline: str,
               results: dict[tuple[str, int], dict], *, tree: str,
               extra: dict | None = None) -> None:
        """Note, ``best``, metrics.json, then the journal: the generation is done."""
        metrics = {"run": self.run, "generation": gen, "sha": sha, "verdict": verdict,
                   "headline": headline, "score": score, "tree": tree,
                   "tasks": outcomes(results), "tampered": tampered_tasks(results),
                   "flagged": flagged_tasks(results), **(extra or {})}
        self.lineage.set_note(sha, metrics)
        if verdict == "accepted" and gen > 0:
            self.lineage.move_best(sha)
        out = self.run_dir / "gens" / f"{gen:04d}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        self.log.append("generation_recorded", generation=gen, sha=sha)
        if gen > 0:  # recorded: its branch keeps the code; the checkout is ~9 MB of nothing
            self.lineage.remove_worktree(gen)
