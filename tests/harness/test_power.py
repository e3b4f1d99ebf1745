"""harness.loop.power: the loop's decision step on simulated agents (the numbers printed at start)."""

from __future__ import annotations

import random

import pytest

from harness.loop.acceptance import parse_rule
from harness.loop.power import Population, draw_runs, power, shifted, simulate_generation


def test_shift_moves_the_mean_by_the_effect_and_keeps_rates_in_range():
    population = Population()
    rates = population.draw(20_000, random.Random(1))
    for effect in (0.10, -0.05):
        moved = shifted(rates, effect, population.mean)
        assert all(0.0 <= q <= 1.0 for q in moved)
        assert sum(moved) / len(moved) - sum(rates) / len(rates) == pytest.approx(effect, abs=0.01)


def test_a_no_op_is_rarely_accepted_by_the_corrected_sign_test_and_often_by_strict():
    """The reason the default changed: strict takes noise for gains, sign at alpha/G does not."""
    assert power("strict", 30, effect=0.0, sims=400, looks=False) > 0.3
    assert power("sign", 30, effect=0.0, generations=30, sims=400) <= 0.01


def test_power_grows_with_attempts():
    one = power("sign", 30, attempts=1, effect=0.10, generations=10, sims=300)
    three = power("sign", 30, attempts=3, effect=0.10, generations=10, sims=300)
    assert three > one + 0.1


def test_simulation_uses_the_real_decision_step():
    """A generation is decided by decide_in_looks: a futility stop shows in the decision."""
    rng = random.Random(0)
    decision = simulate_generation(parse_rule("sign"), draw_runs([1.0] * 30, 1, rng),
                                   draw_runs([0.0] * 30, 1, rng))
    assert not decision.accepted and decision.stopped_after == 10 and decision.planned == 30


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="n_tasks"):
        power("sign", 0)
