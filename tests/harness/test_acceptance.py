"""Acceptance rules on crafted outcome tables: the decisions the ratchet moves on."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest

from harness.acceptance import (
    RULES,
    MarginRule,
    PairedExactTest,
    StrictRule,
    one_sided_sign_p_value,
    parse_rule,
)


def table(wins: int = 0, losses: int = 0, both: int = 0, neither: int = 0,
          prefix: str = "t") -> tuple[dict[str, bool], dict[str, bool]]:
    """(candidate, best) outcomes over the same tasks, with the given cell counts."""
    cells = [(True, False)] * wins + [(False, True)] * losses + [(True, True)] * both \
        + [(False, False)] * neither
    candidate = {f"{prefix}{i}": c for i, (c, _) in enumerate(cells)}
    best = {f"{prefix}{i}": b for i, (_, b) in enumerate(cells)}
    return candidate, best


ALL_RULES = [StrictRule(), MarginRule(1), MarginRule(3), PairedExactTest(0.05),
             PairedExactTest(0.05, "mcnemar"), PairedExactTest(0.999)]


# --- strict --------------------------------------------------------------------------------

def test_strict_accepts_one_more_resolved():
    decision = StrictRule().decide(*table(wins=2, losses=1, both=3, neither=4))
    assert decision.accepted
    assert (decision.candidate_resolved, decision.best_resolved, decision.tasks) == (5, 4, 10)
    assert (decision.wins, decision.losses, decision.p_value) == (2, 1, None)
    assert decision.rule == "strict"


def test_strict_rejects_fewer_resolved():
    decision = StrictRule().decide(*table(wins=1, losses=2, both=3))
    assert not decision.accepted
    assert "worse" in decision.reason


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.spec)
@pytest.mark.parametrize("wins", [0, 1, 4, 20])
def test_ties_never_accept_under_any_rule(rule, wins):
    """Invariant: equal resolved counts on the shared tasks are never an improvement,
    whatever the rule and however many tasks flipped each way."""
    decision = rule.decide(*table(wins=wins, losses=wins, both=2, neither=2))
    assert not decision.accepted
    assert decision.candidate_resolved == decision.best_resolved
    assert "tie" in decision.reason


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.spec)
def test_identical_outcomes_are_a_tie(rule):
    outcomes = {"a": True, "b": False, "c": True}
    assert not rule.decide(outcomes, dict(outcomes)).accepted


# --- margin --------------------------------------------------------------------------------

def test_margin_exactly_met_accepts():
    decision = MarginRule(2).decide(*table(wins=3, losses=1, both=1))
    assert decision.accepted
    assert decision.candidate_resolved - decision.best_resolved == 2
    assert decision.rule == "margin:2"


def test_margin_one_short_rejects():
    decision = MarginRule(2).decide(*table(wins=2, losses=1, both=1))
    assert not decision.accepted
    assert "margin 2 needed" in decision.reason


def test_margin_one_is_strict():
    for wins, losses in [(1, 0), (1, 1), (0, 1), (3, 2)]:
        outcomes = table(wins=wins, losses=losses, both=2)
        assert MarginRule(1).decide(*outcomes).accepted == StrictRule().decide(*outcomes).accepted


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_margin_must_be_a_positive_integer(k):
    """margin:0 would accept ties; it is refused rather than silently raised to 1."""
    with pytest.raises(ValueError, match="positive integer"):
        MarginRule(k)


# --- sign / McNemar ------------------------------------------------------------------------

@pytest.mark.parametrize(("wins", "losses", "expected"), [
    (8, 1, Fraction(10, 512)),       # C(9,8) + C(9,9) = 9 + 1
    (5, 0, Fraction(1, 32)),
    (4, 0, Fraction(1, 16)),
    (6, 2, Fraction(37, 256)),       # C(8,6) + C(8,7) + C(8,8) = 28 + 8 + 1
    (10, 3, Fraction(378, 8192)),    # 286 + 78 + 13 + 1
    (1, 1, Fraction(3, 4)),
    (0, 0, Fraction(1)),
    (0, 3, Fraction(1)),
])
def test_sign_p_value_matches_hand_computed_binomial(wins, losses, expected):
    assert one_sided_sign_p_value(wins, losses) == pytest.approx(float(expected), rel=1e-15)


def test_sign_p_value_is_exact_for_large_counts():
    """Integer sums, not a normal approximation: stays exact where floats of 2**n would
    overflow."""
    n, wins = 2000, 1100
    expected = Fraction(sum(comb(n, k) for k in range(wins, n + 1)), 2**n)
    assert one_sided_sign_p_value(wins, n - wins) == pytest.approx(float(expected), rel=1e-12)


def test_sign_accepts_8_wins_1_loss_at_005():
    decision = PairedExactTest(0.05).decide(*table(wins=8, losses=1, both=5, neither=6))
    assert decision.accepted
    assert decision.p_value == 10 / 512
    assert (decision.wins, decision.losses, decision.tasks) == (8, 1, 20)
    assert decision.rule == "sign:0.05"


def test_sign_rejects_a_small_gain_a_strict_rule_would_take():
    """The point of the test: 6 wins 2 losses is +4 but p = 37/256 ≈ 0.145, noise at 0.05."""
    outcomes = table(wins=6, losses=2, neither=12)
    assert StrictRule().decide(*outcomes).accepted
    decision = PairedExactTest(0.05).decide(*outcomes)
    assert not decision.accepted
    assert decision.p_value == pytest.approx(37 / 256)
    assert "could be noise" in decision.reason


def test_sign_p_equal_to_alpha_accepts():
    assert PairedExactTest(1 / 32).decide(*table(wins=5)).accepted
    assert not PairedExactTest(1 / 32).decide(*table(wins=4)).accepted


def test_sign_and_mcnemar_are_one_computation_with_two_names():
    outcomes = table(wins=7, losses=1, both=2)
    sign, mcnemar = parse_rule("sign:0.05"), parse_rule("mcnemar:0.05")
    assert type(sign) is type(mcnemar) is PairedExactTest
    a, b = sign.decide(*outcomes), mcnemar.decide(*outcomes)
    assert (a.accepted, a.p_value) == (b.accepted, b.p_value)
    assert (a.rule, b.rule) == ("sign:0.05", "mcnemar:0.05")


def test_sign_tie_reports_p_value_but_rejects():
    decision = PairedExactTest(0.999).decide(*table(wins=1, losses=1))
    assert not decision.accepted
    assert decision.p_value == 0.75


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, float("nan")])
def test_alpha_must_be_between_0_and_1(alpha):
    with pytest.raises(ValueError, match="between 0 and 1"):
        PairedExactTest(alpha)


# --- pairing -------------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.spec)
def test_only_shared_tasks_are_counted(rule):
    """Invariant: a task evaluated for one side only counts for neither, so a candidate
    cannot win on tasks the best was never run on (or lose on ones it skipped)."""
    candidate, best = table(wins=1, losses=1, both=2)
    candidate |= {f"extra{i}": True for i in range(10)}   # only the candidate ran these
    best |= {"best-only-a": True, "best-only-b": False}
    decision = rule.decide(candidate, best)
    assert not decision.accepted
    assert (decision.tasks, decision.candidate_resolved, decision.best_resolved) == (4, 3, 3)
    assert "12 tasks evaluated for one side only ignored" in decision.reason


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda r: r.spec)
def test_no_shared_tasks_rejects_with_a_reason(rule):
    decision = rule.decide({"a": True, "b": True}, {"c": False})
    assert not decision.accepted
    assert decision.tasks == 0 and decision.p_value is None
    assert "no task was evaluated for both" in decision.reason


def test_empty_tables_reject():
    assert not StrictRule().decide({}, {}).accepted


# --- parsing -------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "expected"), [
    ("strict", StrictRule()),
    ("margin:2", MarginRule(2)),
    (" Margin: 3 ", MarginRule(3)),
    ("sign:0.05", PairedExactTest(0.05)),
    ("mcnemar:0.1", PairedExactTest(0.1, "mcnemar")),
])
def test_parse_rule(spec, expected):
    assert parse_rule(spec) == expected


@pytest.mark.parametrize("spec", ["strict", "margin:2", "sign:0.05", "mcnemar:0.01"])
def test_decision_rule_parses_back_to_the_same_rule(spec):
    rule = parse_rule(spec)
    assert parse_rule(rule.decide(*table(wins=1)).rule) == rule


def test_unknown_rule_lists_the_known_rules():
    with pytest.raises(ValueError) as info:
        parse_rule("bayes:0.9")
    message = str(info.value)
    assert "unknown acceptance rule 'bayes:0.9'" in message
    for form in ("strict", "margin:K", "sign:ALPHA", "mcnemar:ALPHA"):
        assert form in message


@pytest.mark.parametrize(("spec", "expected_form"), [
    ("margin", "margin:K"),
    ("margin:two", "margin:K"),
    ("margin:0", "margin:K"),
    ("margin:1.5", "margin:K"),
    ("sign", "sign:ALPHA"),
    ("sign:often", "sign:ALPHA"),
    ("mcnemar:5", "mcnemar:ALPHA"),
    ("strict:1", "expected strict"),
])
def test_bad_parameter_says_the_expected_form_and_the_known_rules(spec, expected_form):
    with pytest.raises(ValueError) as info:
        parse_rule(spec)
    message = str(info.value)
    assert f"bad acceptance rule {spec!r}" in message
    assert expected_form in message
    assert "known rules:" in message and "mcnemar:ALPHA" in message and "margin:K" in message


def test_registry_names():
    assert set(RULES) == {"strict", "margin", "sign", "mcnemar"}
    assert RULES["sign"] is RULES["mcnemar"]
