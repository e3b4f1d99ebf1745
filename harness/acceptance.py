"""Acceptance rules: is a candidate generation better than the current best?

The loop's only way forward. A rule compares per-task outcomes (task id -> resolved) of
the candidate and of the best, *paired*: only tasks evaluated for both count, so a
candidate that was run on an easier subset (staged evaluation, a task lost to an
infrastructure error) cannot win by it. On the shared tasks

- a **win** is a task the candidate resolves and the best does not,
- a **loss** is the reverse,

and candidate_resolved - best_resolved == wins - losses, so every rule is a rule on wins
and losses. Tasks both resolve, or both fail, say nothing about which agent is better.

**Ties never accept, under every rule** (wins <= losses is always a rejection): moving
``best`` to an agent that is merely as good would let the lineage drift on noise.

Rules are named by a spec string, ``parse_rule("margin:2")``; the :class:`Decision`
records that spec, so a verdict says which rule made it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

__all__ = [
    "RULES",
    "AcceptanceRule",
    "Decision",
    "MarginRule",
    "PairedExactTest",
    "StrictRule",
    "one_sided_sign_p_value",
    "parse_rule",
]


@dataclass(frozen=True)
class Decision:
    """One verdict, with the counts it rests on (all on the tasks both sides were run on)."""

    accepted: bool
    rule: str
    """The spec of the rule that decided, e.g. ``"sign:0.05"``; ``parse_rule`` reads it back."""
    reason: str
    """One sentence a person can read in ``ratchet log``."""
    candidate_resolved: int
    best_resolved: int
    tasks: int
    """Number of shared tasks; tasks evaluated for one side only are not counted anywhere."""
    wins: int
    losses: int
    p_value: float | None
    """Only for the paired exact test; ``None`` for count rules."""


class AcceptanceRule(Protocol):
    """The seam: implementations do not inherit from it, they only match it."""

    def decide(self, candidate: Mapping[str, bool], best: Mapping[str, bool]) -> Decision: ...


@dataclass(frozen=True)
class _Tally:
    tasks: int
    candidate_resolved: int
    best_resolved: int
    wins: int
    losses: int
    unshared: int

    def describe(self) -> str:
        text = (f"candidate resolves {self.candidate_resolved} of {self.tasks} shared tasks, "
                f"best {self.best_resolved} ({self.wins} {_plural(self.wins, 'win')}, "
                f"{self.losses} {_plural(self.losses, 'loss', 'losses')})")
        if self.unshared:
            text += (f"; {self.unshared} {_plural(self.unshared, 'task')} evaluated for one "
                     "side only ignored")
        return text


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return word if n == 1 else (plural or word + "s")


def _tally(candidate: Mapping[str, bool], best: Mapping[str, bool]) -> _Tally:
    shared = candidate.keys() & best.keys()
    wins = sum(1 for t in shared if candidate[t] and not best[t])
    losses = sum(1 for t in shared if best[t] and not candidate[t])
    return _Tally(
        tasks=len(shared),
        candidate_resolved=sum(1 for t in shared if candidate[t]),
        best_resolved=sum(1 for t in shared if best[t]),
        wins=wins,
        losses=losses,
        unshared=len(candidate.keys() ^ best.keys()),
    )


def _decision(rule: str, tally: _Tally, accepted: bool, why: str,
              p_value: float | None = None) -> Decision:
    return Decision(accepted=accepted, rule=rule, reason=f"{why}: {tally.describe()}",
                    candidate_resolved=tally.candidate_resolved,
                    best_resolved=tally.best_resolved, tasks=tally.tasks, wins=tally.wins,
                    losses=tally.losses, p_value=p_value)


def _reject_early(rule: str, tally: _Tally, candidate: Mapping[str, bool],
                  best: Mapping[str, bool], p_value: float | None = None) -> Decision | None:
    """The rejections every rule shares: nothing to compare, a tie, or worse."""
    if tally.tasks == 0:
        return Decision(
            accepted=False, rule=rule,
            reason=(f"no task was evaluated for both candidate ({len(candidate)} "
                    f"{_plural(len(candidate), 'task')}) and best ({len(best)} "
                    f"{_plural(len(best), 'task')}): nothing to compare, so no improvement "
                    "shown"),
            candidate_resolved=0, best_resolved=0, tasks=0, wins=0, losses=0, p_value=None)
    if tally.wins == tally.losses:
        return _decision(rule, tally, False, "a tie, and ties are not improvements", p_value)
    if tally.wins < tally.losses:
        return _decision(rule, tally, False, "worse than best", p_value)
    return None


@dataclass(frozen=True)
class StrictRule:
    """Accept iff the candidate resolves strictly more of the shared tasks.

    The plain ratchet. Use it on large suites or deterministic evaluations; on a small
    suite with a sampling model one lucky task is enough to accept, so the lineage
    overfits noise (prefer ``margin`` or ``sign`` there).
    """

    FORM: ClassVar[str] = "strict"

    @property
    def spec(self) -> str:
        return "strict"

    @classmethod
    def from_param(cls, name: str, param: str | None) -> StrictRule:
        if param is not None:
            raise ValueError("strict takes no parameter")
        return cls()

    def decide(self, candidate: Mapping[str, bool], best: Mapping[str, bool]) -> Decision:
        tally = _tally(candidate, best)
        return (_reject_early(self.spec, tally, candidate, best)
                or _decision(self.spec, tally, True, "strictly more resolved"))


@dataclass(frozen=True)
class MarginRule:
    """Accept iff the candidate resolves at least ``k`` more of the shared tasks (k >= 1).

    A cheap guard against noise when you know roughly how many tasks flip between two
    runs of the same agent: set ``k`` above that. It ignores how many tasks flipped both
    ways; the sign test weighs that too.
    """

    FORM: ClassVar[str] = "margin:K (K a positive integer)"
    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"margin K must be a positive integer, got {self.k!r}")

    @property
    def spec(self) -> str:
        return f"margin:{self.k}"

    @classmethod
    def from_param(cls, name: str, param: str | None) -> MarginRule:
        if param is None:
            raise ValueError("margin needs K")
        try:
            k = int(param)
        except ValueError:
            raise ValueError(f"K={param!r} is not an integer") from None
        return cls(k)

    def decide(self, candidate: Mapping[str, bool], best: Mapping[str, bool]) -> Decision:
        tally = _tally(candidate, best)
        rejected = _reject_early(self.spec, tally, candidate, best)
        if rejected:
            return rejected
        gain = tally.wins - tally.losses
        if gain >= self.k:
            return _decision(self.spec, tally, True, f"{gain} more resolved, margin {self.k} met")
        return _decision(self.spec, tally, False,
                         f"only {gain} more resolved, margin {self.k} needed")


def one_sided_sign_p_value(wins: int, losses: int) -> float:
    """P(X >= wins) for X ~ Binomial(wins + losses, 1/2), exactly (integer sums).

    The one-sided exact sign test on the discordant pairs, which is also the exact
    McNemar test. With no discordant pair it is 1.0: no evidence at all.
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses must be >= 0, got {wins} and {losses}")
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / (1 << n)


@dataclass(frozen=True)
class PairedExactTest:
    """Accept iff wins > losses and the one-sided exact sign test gives p <= alpha.

    For noisy evaluations (a sampling model, flaky tasks): it asks whether the candidate's
    wins over the best's could be coin flips. The exact McNemar test on paired binary
    outcomes is the same computation, so ``sign`` and ``mcnemar`` are two names for this
    one class (``name`` only changes the recorded spec). It is conservative on small
    suites: at alpha 0.05, 5 wins and 0 losses accept (p = 1/32) but 4 and 0 do not
    (p = 1/16).
    """

    FORM: ClassVar[str] = "sign:ALPHA or mcnemar:ALPHA (0 < ALPHA < 1, e.g. 0.05)"
    alpha: float
    name: str = "sign"

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:  # also false for NaN
            raise ValueError(f"ALPHA must be between 0 and 1, got {self.alpha!r}")
        if self.name not in ("sign", "mcnemar"):
            raise ValueError(f"name must be 'sign' or 'mcnemar', got {self.name!r}")

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.alpha:g}"

    @classmethod
    def from_param(cls, name: str, param: str | None) -> PairedExactTest:
        if param is None:
            raise ValueError(f"{name} needs ALPHA")
        try:
            alpha = float(param)
        except ValueError:
            raise ValueError(f"ALPHA={param!r} is not a number") from None
        return cls(alpha, name)

    def decide(self, candidate: Mapping[str, bool], best: Mapping[str, bool]) -> Decision:
        tally = _tally(candidate, best)
        p = one_sided_sign_p_value(tally.wins, tally.losses)
        rejected = _reject_early(self.spec, tally, candidate, best, p)
        if rejected:
            return rejected
        if p <= self.alpha:
            return _decision(self.spec, tally, True,
                             f"one-sided exact {self.name} test p = {p:.4g} <= alpha {self.alpha:g}", p)
        return _decision(self.spec, tally, False,
                         f"could be noise, one-sided exact {self.name} test p = {p:.4g} > "
                         f"alpha {self.alpha:g}", p)


RULES: dict[str, type[StrictRule | MarginRule | PairedExactTest]] = {
    "strict": StrictRule,
    "margin": MarginRule,
    "sign": PairedExactTest,
    "mcnemar": PairedExactTest,
}
"""Rule names for ``parse_rule``; ``sign`` and ``mcnemar`` share one implementation."""


def _known() -> str:
    return "known rules: " + "; ".join(dict.fromkeys(cls.FORM for cls in RULES.values()))


def parse_rule(spec: str) -> AcceptanceRule:
    """``"strict"``, ``"margin:2"``, ``"sign:0.05"``, ``"mcnemar:0.1"`` -> a rule.

    Raises ValueError naming the known rules and the expected form, for an unknown name or
    a bad parameter alike, so a typo in a config or on the command line says how to fix it.
    """
    name, sep, param = spec.strip().partition(":")
    name = name.strip().lower()
    cls = RULES.get(name)
    if cls is None:
        raise ValueError(f"unknown acceptance rule {spec!r}; {_known()}")
    try:
        return cls.from_param(name, param.strip() if sep else None)
    except ValueError as exc:
        raise ValueError(f"bad acceptance rule {spec!r}: {exc}; expected {cls.FORM}; "
                         f"{_known()}") from None
