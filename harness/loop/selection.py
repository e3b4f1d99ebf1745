"""Parent selection: which generation the next candidate is proposed from.

``best`` is the ratchet: always build on the current best, so the lineage is a single
line of accepted improvements. ``archive`` is the Darwin Gödel Machine's open-ended
variant: any valid generation may be a parent, high scorers and little-explored ones
more often, so a stepping stone that did not beat the best can still lead somewhere.
``clade`` is the Huxley-Gödel Machine's: an agent is credited with its whole clade's
results (itself and every descendant), and parents are drawn by Thompson sampling on that
posterior, so a lineage that keeps producing good children gets explored further.

Selectors are pure functions of the archive and an ``random.Random``: the controller owns
the seed, so a resumed run draws the same parents.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from harness.protocols import PARENT_SELECTORS, ParentSelector

__all__ = [
    "SELECTORS",
    "ArchiveSelector",
    "BestSelector",
    "CladeSelector",
    "GenerationRecord",
    "ParentSelector",
    "parse_selector",
]


@dataclass(frozen=True)
class GenerationRecord:
    """What selection needs to know about one generation, and nothing more."""

    number: int
    parent: int | None
    """``None`` for generation 0, the seed agent."""
    score: float
    """Fraction (or count) of tasks resolved; only compared between generations."""
    valid: bool
    """Passed its checks and was evaluated; an invalid generation is never a parent."""
    accepted: bool
    """Moved ``best`` forward. Generation 0 counts as accepted whatever this says."""
    children: int
    """Generations already proposed from this one."""
    resolved: int = 0
    """Tasks it resolved among those it was run on."""
    evaluated: int = 0
    """Tasks it was actually run on (a stopped evaluation runs fewer): a task never run is
    no evidence either way, so ``evaluated - resolved`` are its only failures."""


@dataclass(frozen=True)
class BestSelector:
    """The ratchet (default): the current best, i.e. the latest accepted generation.

    Generation 0 counts as accepted, so a run whose candidates were all rejected keeps
    proposing from the seed. Deterministic: ``rng`` is not used.
    """

    FORM: ClassVar[str] = "best"

    def select(self, archive: Sequence[GenerationRecord], rng: random.Random) -> GenerationRecord:
        if not archive:
            raise ValueError("cannot select a parent from an empty archive: "
                             "record generation 0 (the seed agent) first")
        accepted = [r for r in archive if r.accepted or r.number == 0]
        if not accepted:
            raise ValueError(f"no accepted generation among {len(archive)} and no generation 0: "
                             "the archive must start with the seed agent")
        return max(accepted, key=lambda r: r.number)


def _log_sigmoid(x: float) -> float:
    """log(1 / (1 + e^-x)), without overflow or underflow for large |x|."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


@dataclass(frozen=True)
class ArchiveSelector:
    """DGM-style: sample a valid generation i with probability proportional to

        w_i = sigmoid(λ · (score_i − midpoint)) / (1 + children_i)

    as in the Darwin Gödel Machine (Zhang et al., 2025): the sigmoid favours high scorers,
    the 1 / (1 + children) factor favours generations that have been explored less.
    Defaults: λ = 10 (``lam``), midpoint = the median score of the valid generations
    (the DGM fixes it at 0.5 for scores in [0, 1]; the median adapts to where the run is).
    λ = 0 ignores score and samples by novelty alone.

    Weights are normalised in log space, so they never all underflow to zero (a huge λ
    with a midpoint above every score still selects the top scorer), and generations
    are ordered by number before sampling: the draw depends only on the archive's content
    and the rng's state, not on the order the controller lists it in.
    """

    FORM: ClassVar[str] = "archive"
    lam: float = 10.0
    midpoint: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam!r}")
        if self.midpoint is not None and not math.isfinite(self.midpoint):
            raise ValueError(f"midpoint must be finite, got {self.midpoint!r}")

    def weights(self, archive: Sequence[GenerationRecord]) -> dict[int, float]:
        """Selection probability of each valid generation, by number (they sum to 1)."""
        valid = sorted((r for r in archive if r.valid), key=lambda r: r.number)
        if not valid:
            raise ValueError(f"no valid generation among {len(archive)} to select a parent from"
                             if archive else "cannot select a parent from an empty archive")
        if len({r.number for r in valid}) != len(valid):
            raise ValueError("the archive lists a generation number twice")
        mid = (self.midpoint if self.midpoint is not None
               else statistics.median(r.score for r in valid))
        logs = [_log_sigmoid(self.lam * (r.score - mid)) - math.log1p(r.children) for r in valid]
        top = max(logs)
        raw = [math.exp(x - top) for x in logs]
        total = math.fsum(raw)
        return {r.number: w / total for r, w in zip(valid, raw)}

    def select(self, archive: Sequence[GenerationRecord], rng: random.Random) -> GenerationRecord:
        weights = self.weights(archive)
        by_number = {r.number: r for r in archive if r.valid}
        numbers = list(weights)
        [chosen] = rng.choices(numbers, weights=[weights[n] for n in numbers], k=1)
        return by_number[chosen]


@dataclass(frozen=True)
class CladeSelector:
    """HGM-style: credit each agent with its clade's results, pick by Thompson sampling.

    The clade of generation i is i and all its descendants. Its successes S_i and failures
    F_i are the tasks they resolved and failed, summed over the clade, counting only tasks
    that were run (``evaluated``), never an unrun task as a failure. Each valid generation
    draws ``theta_i ~ Beta(prior_a + tau*S_i, prior_b + tau*F_i)`` and the highest draw is
    the parent: the clade-metaproductivity estimate of the Huxley-Gödel Machine (Wang et
    al., 2025), explored in proportion to the chance that it is the most productive. A
    smaller ``tau`` widens the posteriors (more exploration). Draws are made in order of
    generation number with the given ``rng``: the same archive and seed pick the same.
    """

    FORM: ClassVar[str] = "clade"
    prior_a: float = 1.0
    prior_b: float = 1.0
    tau: float = 1.0

    def __post_init__(self) -> None:
        for name in ("prior_a", "prior_b", "tau"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    @staticmethod
    def clade_counts(archive: Sequence[GenerationRecord]) -> dict[int, tuple[int, int]]:
        """(successes, failures) of each generation's clade, by number."""
        by_number = {r.number: r for r in archive}
        if len(by_number) != len(archive):
            raise ValueError("the archive lists a generation number twice")
        counts = {n: [0, 0] for n in by_number}
        for record in archive:
            own = (max(0, record.resolved), max(0, record.evaluated - record.resolved))
            seen: set[int] = set()
            node: int | None = record.number
            while node is not None and node in by_number and node not in seen:  # up to the root
                seen.add(node)
                counts[node][0] += own[0]
                counts[node][1] += own[1]
                node = by_number[node].parent
        return {n: (s, f) for n, (s, f) in counts.items()}

    def select(self, archive: Sequence[GenerationRecord], rng: random.Random) -> GenerationRecord:
        if not archive:
            raise ValueError("cannot select a parent from an empty archive: "
                             "record generation 0 (the seed agent) first")
        counts = self.clade_counts(archive)
        valid = sorted((r for r in archive if r.valid or r.number == 0), key=lambda r: r.number)
        if not valid:
            raise ValueError(f"no valid generation among {len(archive)} to select a parent from")
        best, best_draw = valid[0], -1.0
        for record in valid:
            successes, failures = counts[record.number]
            draw = rng.betavariate(self.prior_a + self.tau * successes,
                                   self.prior_b + self.tau * failures)
            if draw > best_draw:
                best, best_draw = record, draw
        return best


SELECTORS = PARENT_SELECTORS
"""Selector names for ``parse_selector`` (`harness.protocols.PARENT_SELECTORS`); ``best`` is
the default."""


def _known() -> str:
    return "known selectors: " + ", ".join(SELECTORS.load(name).FORM for name in SELECTORS)


def parse_selector(name: str) -> ParentSelector:
    """``"best"``, ``"archive"`` or ``"clade"`` -> a selector with its default parameters.

    Raises ValueError naming the known selectors for an unknown name or a parameter (none
    is taken from a name; build ``ArchiveSelector(lam=..., midpoint=...)`` for others).
    """
    key, sep, _ = name.strip().partition(":")
    cls = SELECTORS.get(key.strip().lower())
    if cls is None:
        raise ValueError(f"unknown parent selector {name!r}; {_known()}")
    if sep:
        raise ValueError(f"bad parent selector {name!r}: {cls.FORM} takes no parameter; "
                         f"expected {cls.FORM}; {_known()}")
    return cls()
