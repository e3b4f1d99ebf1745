"""Which runs of a task mean what: attempt indices by role, pairing, and honest scores.

Every task run is journaled under (agent tree hash, task id, attempt). A run's role decides
its attempt index, a pure function of the generation, so a resumed run finds its own runs
again and no run ever plays two roles:

- ``decide``: the candidate's K runs per deciding task, the ones the rule tests (for
  generation 0, the seed's evaluation, which is also its baseline: it was never selected on);
- ``baseline``: K *fresh* runs of a generation just accepted. The runs that got it accepted
  are a selection draw (they won the test, so they overstate it); the best is compared, and
  shown, by these instead;
- ``screen``: one run per deciding task of each of P proposals (``--proposals``); only the
  screening winner is then tested, on fresh ``decide`` runs.

Index = generation * 10000 + role offset + slot (slot < 100): generation 0's decide runs are
attempts 0..K-1, so journals written before attempts existed still read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MAX_ATTEMPTS", "MAX_PROPOSALS", "attempt_index", "pairs", "score"]

MAX_ATTEMPTS = 99
MAX_PROPOSALS = 39
_STRIDE = 10_000
_BASELINE = 5_000
_SCREEN = 1_000


def attempt_index(generation: int, role: str, slot: int = 0, proposal: int = 0) -> int:
    """The journal's attempt number of one run (see the module doc)."""
    if not 0 <= slot <= MAX_ATTEMPTS:
        raise ValueError(f"slot must be in 0..{MAX_ATTEMPTS}, got {slot}")
    if role == "decide":
        offset = 0
    elif role == "baseline":
        offset = _BASELINE
    elif role == "screen":
        if not 0 <= proposal < MAX_PROPOSALS:
            raise ValueError(f"proposal must be in 0..{MAX_PROPOSALS - 1}, got {proposal}")
        offset = _SCREEN + 100 * proposal
    else:
        raise ValueError(f"unknown role {role!r} (decide, baseline, screen)")
    return generation * _STRIDE + offset + slot


def pairs(results: Mapping[tuple[str, int], Mapping[str, Any]], task_ids: Iterable[str],
          attempts: list[int]) -> dict[tuple[str, int], bool]:
    """Outcomes keyed (task id, slot j) for the runs that exist: attempt ``attempts[j]`` of a
    task is slot j, so the candidate's j-th run pairs with the best's j-th baseline run."""
    return {(task_id, j): bool(results[(task_id, attempt)]["resolved"])
            for task_id in task_ids for j, attempt in enumerate(attempts)
            if (task_id, attempt) in results}


def score(results: Mapping[tuple[str, int], Mapping[str, Any]], task_ids: list[str],
          attempts: list[int]) -> dict[str, Any]:
    """Resolved runs over the runs that were made: a run never made is not a failure.

    ``resolved``/``runs`` count runs (tasks x attempts), ``planned`` is what a full
    evaluation runs, ``rate`` = resolved / runs (0 when nothing ran). ``evaluated`` is kept
    equal to ``runs`` for readers of older scores."""
    made = [results[(t, a)] for t in task_ids for a in attempts if (t, a) in results]
    resolved = sum(1 for r in made if r.get("resolved"))
    return {"resolved": resolved, "runs": len(made), "evaluated": len(made),
            "planned": len(task_ids) * len(attempts), "tasks": len(task_ids),
            "attempts": len(attempts), "rate": resolved / len(made) if made else 0.0,
            "cost_usd": round(sum(float(r.get("cost_usd", 0.0)) for r in made), 6)}
