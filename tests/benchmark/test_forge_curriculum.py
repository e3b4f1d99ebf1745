"""The forge's curriculum (`ratchet forge --target RUN`): weight the bug kinds by where a
run's best agent fails, and pick the package it fails most."""

from __future__ import annotations

import random
from collections import Counter

from benchmark import load_suite
from benchmark.forge.curriculum import PRIOR, draw_order, weak_spots


def _forged_outcomes() -> tuple[list, dict[str, bool]]:
    """The shipped forged suite, with a best agent that fails every `drop_stmt` task and
    every tabulate task and resolves the rest."""
    tasks = load_suite("forged").tasks
    outcomes = {t.instance_id: not (t.model_extra["forge"]["kind"] == "drop_stmt"
                                    or t.repo == "tabulate") for t in tasks}
    return tasks, outcomes


def test_weak_spots_rank_kinds_and_packages_by_smoothed_failure_rate():
    tasks, outcomes = _forged_outcomes()
    curriculum = weak_spots(outcomes, tasks, run="r", generation=3)
    assert curriculum.kinds[0].name == "drop_stmt"
    assert curriculum.packages[0].name == "tabulate==0.10.0" == curriculum.package()
    drop = curriculum.kinds[0]
    assert drop.failed == drop.total and drop.rate == (drop.total + 1) / (drop.total + 2)
    weights = curriculum.kind_weights(("drop_stmt", "flip_compare", "lm_rewrite"))
    assert weights["drop_stmt"] > weights["flip_compare"]
    assert weights["lm_rewrite"] == PRIOR  # a kind the run never met is still tried
    assert "drop_stmt" in curriculum.why() and "generation 3" in curriculum.why()


def test_draw_order_favours_heavy_kinds_and_keeps_every_candidate():
    by_kind = {"weak": [f"w{i}" for i in range(50)], "strong": [f"s{i}" for i in range(50)]}
    order = draw_order(by_kind, {"weak": 0.9, "strong": 0.1}, random.Random(0))
    assert sorted(order) == sorted(by_kind["weak"] + by_kind["strong"])
    first = Counter(item[0] for item in order[:20])
    assert first["w"] >= 15
