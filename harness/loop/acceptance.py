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

Outcomes are keyed by anything hashable: a task id, or a (task id, slot) pair when each
task is run several times (``--attempts K``): the loop pairs the candidate's j-th run of a
task with the best's j-th fresh baseline run of it, so "task" below reads "pair" then.

Rules are named by a spec string, ``parse_rule("margin:2")``; the :class:`Decision`
records that spec, so a verdict says which rule made it. The default is ``sign``, an exact
test whose error budget is spent over the run (`level`). `decide_in_looks` is the whole
decision step the loop takes, futility looks included; `harness.loop.power` and
``perf/acceptance_power.py`` drive that same function with simulated agents.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from harness.protocols import ACCEPTANCE_RULES, AcceptanceRule

__all__ = [
    "DEFAULT_RULE",
    "LOOKS",
    "RULES",
    "SPENDINGS",
    "AcceptanceRule",
    "Decision",
    "MarginRule",
    "PairedExactTest",
    "StrictRule",
    "decide_in_looks",
    "futility",
    "level",
    "look_order",
    "look_points",
    "one_sided_sign_p_value",
    "parse_rule",
    "two_sided_mcnemar_p_value",
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
    level: float | None = None
    """The level this generation was tested at (the run's budget, corrected); exact tests only."""
    correction: str | None = None
    """How ``level`` follows from the run's budget, e.g. "run budget 0.05 / 30 generations"."""
    stopped_after: int | None = None
    """A futility look stopped the evaluation after this many pairs (counts are of those)."""
    planned: int | None = None
    """The pairs the evaluation would have run to the end."""


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


def _tally(candidate: Mapping[Hashable, bool], best: Mapping[Hashable, bool]) -> _Tally:
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


def _reject_early(rule: str, tally: _Tally, candidate: Mapping[Hashable, bool],
                  best: Mapping[Hashable, bool], p_value: float | None = None) -> Decision | None:
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

    The plain ratchet, for deterministic evaluations only. Under noise it accepts a no-op
    change in 37-48% of generations (measured, docs/acceptance.md: N = 9..300 tasks), so
    nearly every 30-generation run accepts at least one; use ``sign`` (the default).
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

    def decide(self, candidate: Mapping[Hashable, bool], best: Mapping[Hashable, bool], *,
               generation: int = 1, generations: int | None = None) -> Decision:
        tally = _tally(candidate, best)
        return (_reject_early(self.spec, tally, candidate, best)
                or _decision(self.spec, tally, True, "strictly more resolved"))


@dataclass(frozen=True)
class MarginRule:
    """Accept iff the candidate resolves at least ``k`` more of the shared tasks (k >= 1).

    A cheap guard against noise when you know roughly how many tasks flip between two
    runs of the same agent: set ``k`` above that. It ignores how many tasks flipped both
    ways, so a fixed K is safe at one suite size only: measured (docs/acceptance.md),
    margin:3 accepts a no-op in 5% of generations at N = 9 but 32% at N = 100.
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

    def decide(self, candidate: Mapping[Hashable, bool], best: Mapping[Hashable, bool], *,
               generation: int = 1, generations: int | None = None) -> Decision:
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

    The one-sided exact sign test on the discordant pairs. With no discordant pair it is
    1.0: no evidence at all.
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses must be >= 0, got {wins} and {losses}")
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / (1 << n)


def two_sided_mcnemar_p_value(wins: int, losses: int) -> float:
    """The two-sided exact McNemar test: 2 * P(X >= max(wins, losses)), capped at 1."""
    return min(1.0, 2 * one_sided_sign_p_value(max(wins, losses), min(wins, losses)))


SPENDINGS = ("run", "open", "each")
"""How a run's error budget ALPHA is spent over its generations (see `level`)."""


def level(alpha: float, spending: str, generation: int, generations: int | None) -> float:
    """The level generation ``generation`` is tested at, for a run budget ``alpha``.

    - ``run``: alpha / G for a run of G generations (Bonferroni): P(any false accept in the
      run) <= alpha. A run extended past G (``resume --generations``) tests the extra
      generations at the ``open`` level, so its total stays below alpha * (1 + 6/(pi^2 G)).
    - ``open``: alpha_g = 6 alpha / (pi^2 g^2), which sums to alpha over g = 1, 2, ...: valid
      however long the run goes, at the price of less power late.
    - ``each``: alpha per generation, uncorrected (a run of 30 then accepts a no-op with
      probability up to 1 - (1 - alpha)^30); for comparisons, not a safe default.
    """
    if generation < 1:
        raise ValueError(f"generation must be >= 1, got {generation}")
    if spending == "each":
        return alpha
    if spending == "run" and generations and generation <= generations:
        return alpha / generations
    if spending == "run" and not generations:
        return alpha
    return 6 * alpha / (math.pi ** 2 * generation ** 2)


def _describe_level(alpha: float, spending: str, generation: int, generations: int | None) -> str:
    at = level(alpha, spending, generation, generations)
    if spending == "each":
        return f"alpha {alpha:g} per generation, uncorrected"
    if spending == "run" and generations and generation <= generations:
        return f"run budget {alpha:g} / {generations} generations = {at:.4g}"
    if spending == "run" and not generations:
        return f"run budget {alpha:g}, one generation"
    return f"6*{alpha:g}/(pi^2*{generation}^2) = {at:.4g} (open-ended)"


DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class PairedExactTest:
    """Accept iff wins > losses and an exact paired test gives p <= the generation's level.

    For noisy evaluations (a sampling model, flaky tasks): it asks whether the candidate's
    wins over the best's could be coin flips. ``alpha`` is the *run's* error budget, spent
    over its generations as ``spending`` says (`level`), so the chance that a run of 30
    generations ever accepts a no-op change stays below alpha. ``sign`` is the one-sided
    exact sign test on the discordant pairs; ``mcnemar`` the two-sided exact McNemar test
    (twice the one-sided p, so it needs more evidence for the same alpha). The default rule
    is ``sign`` = ``sign:0.05``. On small suites it needs repeated attempts: at level 0.05,
    5 wins and 0 losses accept (p = 1/32) but 4 and 0 do not (p = 1/16).
    """

    FORM: ClassVar[str] = ("sign[:ALPHA[:SPENDING]] or mcnemar[:ALPHA[:SPENDING]] (ALPHA the "
                           "run's error budget, 0 < ALPHA < 1, default 0.05; SPENDING run "
                           "(alpha/G, default) | open (6 alpha/(pi^2 g^2)) | each (uncorrected))")
    alpha: float = DEFAULT_ALPHA
    name: str = "sign"
    spending: str = "run"

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:  # also false for NaN
            raise ValueError(f"ALPHA must be between 0 and 1, got {self.alpha!r}")
        if self.name not in ("sign", "mcnemar"):
            raise ValueError(f"name must be 'sign' or 'mcnemar', got {self.name!r}")
        if self.spending not in SPENDINGS:
            raise ValueError(f"SPENDING must be one of {', '.join(SPENDINGS)}, got {self.spending!r}")

    @property
    def spec(self) -> str:
        tail = "" if self.spending == "run" else f":{self.spending}"
        return f"{self.name}:{self.alpha:g}{tail}"

    @classmethod
    def from_param(cls, name: str, param: str | None) -> PairedExactTest:
        if param is None:
            return cls(DEFAULT_ALPHA, name)
        value, _, spending = param.partition(":")
        try:
            alpha = float(value)
        except ValueError:
            raise ValueError(f"ALPHA={value!r} is not a number") from None
        return cls(alpha, name, spending.strip().lower() or "run")

    def p_value(self, wins: int, losses: int) -> float:
        if self.name == "mcnemar":
            return two_sided_mcnemar_p_value(wins, losses)
        return one_sided_sign_p_value(wins, losses)

    def decide(self, candidate: Mapping[Hashable, bool], best: Mapping[Hashable, bool], *,
               generation: int = 1, generations: int | None = None) -> Decision:
        tally = _tally(candidate, best)
        p = self.p_value(tally.wins, tally.losses)
        at = level(self.alpha, self.spending, generation, generations)
        how = _describe_level(self.alpha, self.spending, generation, generations)
        test = "one-sided exact sign" if self.name == "sign" else "two-sided exact McNemar"
        rejected = _reject_early(self.spec, tally, candidate, best, p)
        if rejected:
            return replace(rejected, level=at, correction=how)
        if p <= at:
            decision = _decision(self.spec, tally, True, f"{test} test p = {p:.4g} <= {at:.4g} "
                                 f"({how})", p)
        else:
            decision = _decision(self.spec, tally, False, f"could be noise, {test} test p = "
                                 f"{p:.4g} > {at:.4g} ({how})", p)
        return replace(decision, level=at, correction=how)


RULES = ACCEPTANCE_RULES
"""Rule names for ``parse_rule`` (`harness.protocols.ACCEPTANCE_RULES`); ``sign`` and
``mcnemar`` share one implementation (one- and two-sided). Until 2026-12 ``mcnemar:ALPHA`` was the one-sided sign test, and both were
uncorrected per generation; those specs still parse, now with the run's correction."""

DEFAULT_RULE = "sign"
"""The default ``--acceptance``: the one-sided exact sign test at a run budget of 0.05."""


def _known() -> str:
    return "known rules: " + "; ".join(dict.fromkeys(RULES.load(name).FORM for name in RULES))


def parse_rule(spec: str) -> AcceptanceRule:
    """``"strict"``, ``"margin:2"``, ``"sign"``, ``"sign:0.05:open"``, ``"mcnemar:0.1"`` -> a rule.

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


# --- the decision step, with futility looks ------------------------------------------------

LOOKS = (1 / 3, 2 / 3)
"""Fractions of the deciding pairs after which a futility look may stop the evaluation."""


def look_points(pairs: int) -> list[int]:
    """How many pairs are run before each look, ending with all of them: e.g. 9 -> [3, 6, 9]."""
    return sorted({math.ceil(pairs * f) for f in LOOKS} - {0, pairs}) + [pairs]


def look_order(task_ids: Sequence[str], attempts: int, seed: str) -> list[tuple[str, int]]:
    """The order the deciding pairs (task id, slot) are run in: the tasks in a seeded shuffle,
    so each look sees a random sample of them, not the suite's first package; the same
    order again on resume (same ``seed``). All tasks at slot 0 first, then slot 1, ..."""
    shuffled = random.Random(seed).sample(list(task_ids), len(task_ids))
    return [(task_id, j) for j in range(attempts) for task_id in shuffled]


def futility(spec: str, candidate: Mapping[Hashable, bool], best: Mapping[Hashable, bool],
             *, planned: int) -> Decision | None:
    """A rejection if the pairs run so far show no gain (wins <= losses, once any pair has
    differed: 0 wins 0 losses is no evidence, and on a small suite it is common), else None.

    Only ever rejects, so it cannot raise any rule's false-accept rate; it stops a
    generation early when the evidence points the wrong way. The decision counts only the
    pairs that ran: nothing is imagined for the rest.
    """
    tally = _tally(candidate, best)
    if tally.wins > tally.losses or tally.wins + tally.losses == 0:
        return None  # ahead, or no pair has differed yet: no evidence either way
    why = (f"stopped by the futility look after {tally.tasks} of {planned} pairs, "
           f"{'no gain' if tally.wins == tally.losses else 'worse than best'} so far")
    return replace(_decision(spec, tally, False, why), stopped_after=tally.tasks, planned=planned)


def decide_in_looks(rule: AcceptanceRule, order: Sequence[Hashable],
                    run: Callable[[Sequence[Hashable]], Mapping[Hashable, bool]],
                    best: Mapping[Hashable, bool], *, generation: int = 1,
                    generations: int | None = None, looks: bool = True) -> Decision:
    """The loop's decision on one candidate: run pairs in ``order`` (``run(keys)`` returns the
    candidate's outcomes for those keys, doing the work), look for futility after 1/3 and
    2/3 of them (``looks``), and let ``rule`` decide on all of them at the end. The caller
    orders the pairs so that each look sees a fair sample (the loop shuffles the tasks)."""
    points = look_points(len(order)) if looks else [len(order)]
    outcomes: dict[Hashable, bool] = {}
    done = 0
    for point in points:
        outcomes.update(run(order[done:point]))
        done = point
        if point < len(order):
            stop = futility(rule.spec, outcomes, best, planned=len(order))
            if stop is not None:
                return stop
    return replace(rule.decide(outcomes, best, generation=generation, generations=generations),
                   planned=len(order))
