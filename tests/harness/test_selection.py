"""Parent selectors: the ratchet's ``best`` and the DGM-style ``archive``."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from harness.loop.selection import (
    SELECTORS,
    ArchiveSelector,
    BestSelector,
    GenerationRecord,
    parse_selector,
)


def gen(number: int, score: float = 0.5, *, valid: bool = True, accepted: bool = False,
        children: int = 0, parent: int | None = 0) -> GenerationRecord:
    return GenerationRecord(number=number, parent=None if number == 0 else parent, score=score,
                            valid=valid, accepted=accepted, children=children)


def draws(selector, archive, n: int = 4000, seed: int = 7) -> Counter[int]:
    rng = random.Random(seed)
    return Counter(selector.select(archive, rng).number for _ in range(n))


# --- best ----------------------------------------------------------------------------------

def test_best_picks_the_latest_accepted_generation():
    archive = [gen(0, 0.2), gen(1, 0.4, accepted=True), gen(2, 0.9), gen(3, 0.5, accepted=True),
               gen(4, 0.6, valid=False)]
    assert BestSelector().select(archive, random.Random(0)).number == 3


def test_best_does_not_depend_on_archive_order():
    archive = [gen(3, accepted=True), gen(0), gen(5, accepted=True), gen(4)]
    assert BestSelector().select(archive, random.Random(0)).number == 5


def test_best_falls_back_to_generation_0_which_counts_as_accepted():
    """Invariant: a run whose candidates were all rejected keeps proposing from the seed."""
    archive = [gen(0, accepted=False), gen(1, 0.9), gen(2, 0.8)]
    assert BestSelector().select(archive, random.Random(0)).number == 0


def test_best_without_any_accepted_generation_or_seed_is_an_error():
    with pytest.raises(ValueError, match="no accepted generation"):
        BestSelector().select([gen(1), gen(2)], random.Random(0))


# --- archive -------------------------------------------------------------------------------

def test_archive_weights_follow_the_dgm_formula():
    archive = [gen(0, 0.2, children=3), gen(1, 0.5, children=0), gen(2, 0.6, children=1),
               gen(3, 0.9, valid=False)]
    lam, mid = 10.0, 0.5  # the median of the valid scores 0.2, 0.5, 0.6

    def raw(score: float, children: int) -> float:
        return 1 / (1 + math.exp(-lam * (score - mid))) / (1 + children)

    expected = {0: raw(0.2, 3), 1: raw(0.5, 0), 2: raw(0.6, 1)}
    total = sum(expected.values())
    weights = ArchiveSelector().weights(archive)
    assert weights == pytest.approx({n: w / total for n, w in expected.items()})
    assert math.fsum(weights.values()) == pytest.approx(1.0)


def test_archive_favours_high_score():
    archive = [gen(0, 0.1), gen(1, 0.3), gen(2, 0.5), gen(3, 0.7), gen(4, 0.9)]
    counts = draws(ArchiveSelector(), archive)
    assert counts[4] > counts[3] > counts[2] > counts[1] > counts[0]
    # and the frequencies are the formula's probabilities (top: 0.982 / 2.491 ≈ 0.39)
    for number, weight in ArchiveSelector().weights(archive).items():
        assert counts[number] / 4000 == pytest.approx(weight, abs=0.03)


def test_archive_favours_few_children():
    archive = [gen(0, 0.5, children=9), gen(1, 0.5, children=0), gen(2, 0.5, children=3)]
    counts = draws(ArchiveSelector(), archive)
    assert counts[1] > counts[2] > counts[0]
    # equal scores: proportional to 1/10, 1, 1/4
    assert counts[1] / counts[0] == pytest.approx(10, rel=0.35)


def test_archive_never_picks_an_invalid_generation():
    """Invariant: an invalid generation (failed checks, never evaluated) is never a parent,
    however high its recorded score and however few its children."""
    archive = [gen(0, 0.1, children=5), gen(1, 1.0, valid=False), gen(2, 0.99, valid=False),
               gen(3, 0.2, children=2)]
    counts = draws(ArchiveSelector(), archive)
    assert set(counts) == {0, 3}


def test_archive_is_reproducible_with_the_same_seed():
    archive = [gen(i, score=i / 10, children=i % 3) for i in range(10)]
    selector = ArchiveSelector()
    a = [g.number for g in _sequence(selector, archive, seed=42)]
    b = [g.number for g in _sequence(selector, archive, seed=42)]
    c = [g.number for g in _sequence(selector, list(reversed(archive)), seed=42)]
    assert a == b == c
    assert a != [g.number for g in _sequence(selector, archive, seed=43)]


def _sequence(selector, archive, seed: int, n: int = 50) -> list[GenerationRecord]:
    rng = random.Random(seed)
    return [selector.select(archive, rng) for _ in range(n)]


def test_archive_midpoint_above_every_score_still_selects():
    """Log-space weights: with a midpoint far above every score and a huge λ, every raw
    sigmoid underflows to 0.0; normalising in log space still leaves a distribution."""
    archive = [gen(0, 0.0), gen(1, 0.1)]
    weights = ArchiveSelector(lam=10_000.0, midpoint=1.0).weights(archive)
    assert weights[1] == pytest.approx(1.0) and 0.0 <= weights[0] < 1e-300
    assert ArchiveSelector(lam=10_000.0, midpoint=1.0).select(archive, random.Random(0)).number == 1


def test_archive_lambda_zero_samples_by_novelty_only():
    weights = ArchiveSelector(lam=0.0).weights([gen(0, 0.0), gen(1, 1.0)])
    assert weights == pytest.approx({0: 0.5, 1: 0.5})


@pytest.mark.parametrize(("archive", "message"), [
    ([], "empty archive"),
    ([gen(0, valid=False), gen(1, valid=False)], "no valid generation among 2"),
])
def test_archive_without_a_valid_generation_is_an_error(archive, message):
    with pytest.raises(ValueError, match=message):
        ArchiveSelector().select(archive, random.Random(0))


def test_empty_archive_is_an_error_for_best_too():
    with pytest.raises(ValueError, match="empty archive"):
        BestSelector().select([], random.Random(0))


@pytest.mark.parametrize("kwargs", [{"lam": -1.0}, {"lam": float("inf")},
                                    {"midpoint": float("nan")}])
def test_archive_parameters_are_checked(kwargs):
    with pytest.raises(ValueError):
        ArchiveSelector(**kwargs)


# --- parsing -------------------------------------------------------------------------------

def test_parse_selector():
    assert parse_selector("best") == BestSelector()
    assert parse_selector(" Archive ") == ArchiveSelector()
    assert set(SELECTORS) == {"best", "archive", "clade"}


def test_unknown_selector_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown parent selector 'tournament'; "
                                         r"known selectors: best, archive, clade"):
        parse_selector("tournament")


def test_selector_parameter_is_refused_with_the_expected_form():
    with pytest.raises(ValueError, match=r"bad parent selector 'best:2'.*expected best.*"
                                         r"known selectors: best, archive, clade"):
        parse_selector("best:2")
