"""The ``clade`` selector: an agent is credited with its descendants' results (HGM-style)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from harness.loop.selection import ArchiveSelector, CladeSelector, GenerationRecord, parse_selector


def gen(number: int, parent: int | None, resolved: int, evaluated: int = 10, *,
        valid: bool = True, children: int = 0) -> GenerationRecord:
    return GenerationRecord(number=number, parent=parent, score=resolved / 10, valid=valid,
                            accepted=False, children=children, resolved=resolved,
                            evaluated=evaluated)


# 1 and 2 did equally well themselves; 1's children did well, 2's did badly.
LINEAGE = [gen(0, None, 4, children=2), gen(1, 0, 5, children=2), gen(2, 0, 5, children=2),
           gen(3, 1, 7), gen(4, 1, 8), gen(5, 2, 1), gen(6, 2, 2)]


def draws(selector, archive, n: int = 4000, seed: int = 11) -> Counter[int]:
    rng = random.Random(seed)
    return Counter(selector.select(archive, rng).number for _ in range(n))


def test_clade_counts_sum_an_agent_and_all_its_descendants():
    counts = CladeSelector.clade_counts(LINEAGE)
    assert counts[1] == (5 + 7 + 8, 5 + 3 + 2) and counts[2] == (5 + 1 + 2, 5 + 9 + 8)
    assert counts[0] == (32, 38) and counts[3] == (7, 3)


def test_an_agent_whose_descendants_do_well_is_picked_far_more_often():
    """1 and 2 scored the same; only their clades differ. With a fixed seed, 1 is picked
    many times more often than 2 (the posterior means are 0.66 vs 0.28), where the archive
    selector, which sees only an agent's own score, picks them equally often."""
    clade = draws(CladeSelector(), LINEAGE)
    assert clade[1] >= 200 and clade[1] >= 20 * max(1, clade[2]), clade
    archive = draws(ArchiveSelector(), LINEAGE)
    assert abs(archive[1] - archive[2]) < 0.25 * (archive[1] + archive[2]), archive


def test_unrun_tasks_are_not_counted_as_failures():
    """A generation stopped after 3 tasks (3 resolved) has 3 successes and 0 failures, not
    7 failures for the tasks it never ran: it is picked over a full run resolving 5 of 10."""
    stopped = gen(1, 0, 3, evaluated=3)
    full = gen(2, 0, 5, evaluated=10)
    archive = [gen(0, None, 0, evaluated=0, children=2), stopped, full]
    assert CladeSelector.clade_counts(archive)[1] == (3, 0)
    picks = draws(CladeSelector(), archive)
    assert picks[1] > picks[2], picks
    # the same generation read with its unrun tasks as failures would lose
    as_failures = [archive[0], gen(1, 0, 3, evaluated=10), full]
    wrong = draws(CladeSelector(), as_failures)
    assert wrong[1] < wrong[2], wrong


def test_invalid_generations_are_never_parents_and_add_nothing():
    archive = [gen(0, None, 2, children=1), gen(1, 0, 0, evaluated=0, valid=False)]
    assert CladeSelector.clade_counts(archive)[0] == (2, 8)
    assert set(draws(CladeSelector(), archive, n=300)) == {0}


def test_the_same_seed_picks_the_same_whatever_the_archive_order():
    """The controller seeds one rng per generation ("SEED:GEN") and journals it: a resumed
    run draws exactly what the uninterrupted run drew."""
    shuffled = list(reversed(LINEAGE))
    for generation in range(1, 30):
        seed = f"0:{generation}"
        assert (CladeSelector().select(LINEAGE, random.Random(seed))
                == CladeSelector().select(shuffled, random.Random(seed)))


def test_parse_and_parameters():
    assert parse_selector("clade") == CladeSelector()
    with pytest.raises(ValueError, match="clade takes no parameter"):
        parse_selector("clade:2")
    with pytest.raises(ValueError, match="tau"):
        CladeSelector(tau=0)
    with pytest.raises(ValueError, match="empty archive"):
        CladeSelector().select([], random.Random(0))
