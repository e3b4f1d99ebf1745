"""Acceptance rules on crafted outcome tables: the decisions the ratchet moves on."""

from __future__ import annotations

import math
from fractions import Fraction
from math import comb

import pytest

from harness.loop.acceptance import (
    DEFAULT_RULE,
    RULES,
    MarginRule,
    PairedExactTest,
    StrictRule,
    decide_in_looks,
    level,
    look_points,
    one_sided_sign_p_value,
    parse_rule,
    two_sided_mcnemar_p_value,
)
from harness.loop.settings import LoopSettings


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


def test_mcnemar_is_the_two_sided_exact_test():
    """mcnemar was a one-sided test under a two-sided name; it is now twice the one-sided p:
    7 wins 1 loss is p = 9/256 one-sided (accepted at 0.05) and 18/256 two-sided (not)."""
    outcomes = table(wins=7, losses=1, both=2)
    sign, mcnemar = parse_rule("sign:0.05:each"), parse_rule("mcnemar:0.05:each")
    a, b = sign.decide(*outcomes), mcnemar.decide(*outcomes)
    assert a.p_value == pytest.approx(9 / 256) and a.accepted
    assert b.p_value == pytest.approx(18 / 256) and not b.accepted
    assert "two-sided exact McNemar" in b.reason
    assert two_sided_mcnemar_p_value(3, 3) == 1.0 and two_sided_mcnemar_p_value(0, 0) == 1.0


def test_old_spec_strings_still_parse():
    """settings.json of runs made before the run-wide correction name sign:0.05 and
    mcnemar:0.05; they load (now corrected over the run)."""
    assert parse_rule("sign:0.05") == PairedExactTest(0.05, "sign", "run")
    assert parse_rule("mcnemar:0.05") == PairedExactTest(0.05, "mcnemar", "run")


def test_default_rule_is_the_sign_test_at_a_run_budget_of_005():
    assert DEFAULT_RULE == "sign"
    assert parse_rule("sign") == PairedExactTest(0.05, "sign", "run") == parse_rule(DEFAULT_RULE)
    assert LoopSettings(run="r", suite="s", generations=3, agent_model="m",
                        meta_model="m").acceptance == DEFAULT_RULE


@pytest.mark.parametrize(("spending", "generation", "generations", "expected"), [
    ("run", 1, 30, 0.05 / 30),
    ("run", 30, 30, 0.05 / 30),
    ("run", 31, 30, 6 * 0.05 / (math.pi ** 2 * 31 ** 2)),  # past the planned run: open level
    ("open", 1, None, 6 * 0.05 / math.pi ** 2),
    ("open", 7, 30, 6 * 0.05 / (math.pi ** 2 * 49)),
    ("each", 12, 30, 0.05),
])
def test_the_run_budget_is_spent_over_generations(spending, generation, generations, expected):
    assert level(0.05, spending, generation, generations) == pytest.approx(expected)


def test_open_spending_sums_to_the_budget():
    assert math.fsum(level(0.05, "open", g, None) for g in range(1, 200_000)) == pytest.approx(0.05, rel=1e-4)


def test_the_sign_rule_corrects_alpha_for_the_run_and_records_it():
    """6 wins 0 losses is p = 1/64: accepted in a run of 2 generations (level 0.025), rejected
    in a run of 30 (level 0.05/30); the decision says which level and why."""
    outcomes = table(wins=6, neither=3)
    rule = parse_rule("sign")
    short = rule.decide(*outcomes, generation=1, generations=2)
    assert short.accepted and short.level == pytest.approx(0.025)
    assert short.correction == "run budget 0.05 / 2 generations = 0.025"
    long = rule.decide(*outcomes, generation=1, generations=30)
    assert not long.accepted and long.level == pytest.approx(0.05 / 30)
    assert "0.05 / 30 generations" in long.reason
    open_ = parse_rule("sign:0.05:open").decide(*outcomes, generation=3)
    assert open_.level == pytest.approx(6 * 0.05 / (math.pi ** 2 * 9)) and "open-ended" in open_.correction


# --- futility looks ------------------------------------------------------------------------

def test_look_points():
    assert look_points(9) == [3, 6, 9]
    assert look_points(100) == [34, 67, 100]
    assert look_points(2) == [1, 2]
    assert look_points(1) == [1]


def test_futility_stop_records_only_what_was_run():
    """A candidate that loses the first third is stopped; the decision counts the pairs that
    ran and nothing else (no imagined wins for the pairs never run)."""
    candidate, best = table(wins=0, losses=2, both=4, neither=3)  # 9 pairs, order t0..t8
    ran: list = []

    def run(keys):
        ran.extend(keys)
        return {k: candidate[k] for k in keys}

    decision = decide_in_looks(parse_rule("sign"), list(candidate), run, best)
    assert not decision.accepted and ran == ["t0", "t1", "t2"]
    assert (decision.tasks, decision.wins, decision.losses) == (3, 0, 2)
    assert (decision.stopped_after, decision.planned) == (3, 9)
    assert decision.candidate_resolved == 1 and "futility look after 3 of 9" in decision.reason


def test_no_futility_stop_before_any_pair_differs():
    """0 wins 0 losses at a look is no evidence: the evaluation goes on (a small suite whose
    first third happens to be tasks both agents solve must not stop a real gain)."""
    candidate, best = table(wins=6, both=3)
    order = [f"t{i}" for i in (6, 7, 8, 0, 1, 2, 3, 4, 5)]  # the 3 ties first
    decision = decide_in_looks(parse_rule("sign"), order, lambda ks: {k: candidate[k] for k in ks},
                               best, generation=1, generations=2)
    assert decision.accepted and decision.tasks == 9


def test_no_futility_stop_while_ahead():
    candidate, best = table(wins=6, both=3)
    decision = decide_in_looks(parse_rule("sign"), list(candidate), lambda ks: {k: candidate[k] for k in ks},
                               best, generation=1, generations=2)
    assert decision.accepted and decision.stopped_after is None and decision.tasks == 9


def test_pairs_keyed_by_task_and_attempt():
    """With attempts, outcomes are keyed (task, slot): each slot is a pair of its own."""
    candidate = {("a", 0): True, ("a", 1): True, ("b", 0): True, ("b", 1): False}
    best = {("a", 0): False, ("a", 1): False, ("b", 0): True, ("b", 1): False}
    decision = StrictRule().decide(candidate, best)
    assert (decision.tasks, decision.wins, decision.losses) == (4, 2, 0)


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
    ("sign", PairedExactTest(0.05)),
    ("sign:0.01:open", PairedExactTest(0.01, "sign", "open")),
])
def test_parse_rule(spec, expected):
    assert parse_rule(spec) == expected


@pytest.mark.parametrize("spec", ["strict", "margin:2", "sign:0.05", "mcnemar:0.01", "sign",
                                  "sign:0.1:open", "mcnemar:0.2:each"])
def test_decision_rule_parses_back_to_the_same_rule(spec):
    rule = parse_rule(spec)
    assert parse_rule(rule.decide(*table(wins=1)).rule) == rule


def test_unknown_rule_lists_the_known_rules():
    with pytest.raises(ValueError) as info:
        parse_rule("bayes:0.9")
    message = str(info.value)
    assert "unknown acceptance rule 'bayes:0.9'" in message
    for form in ("strict", "margin:K", "sign[:ALPHA", "mcnemar[:ALPHA"):
        assert form in message


@pytest.mark.parametrize(("spec", "expected_form"), [
    ("margin", "margin:K"),
    ("margin:two", "margin:K"),
    ("margin:0", "margin:K"),
    ("margin:1.5", "margin:K"),
    ("sign:often", "sign[:ALPHA"),
    ("sign:0.05:daily", "SPENDING"),
    ("mcnemar:5", "mcnemar[:ALPHA"),
    ("strict:1", "expected strict"),
])
def test_bad_parameter_says_the_expected_form_and_the_known_rules(spec, expected_form):
    with pytest.raises(ValueError) as info:
        parse_rule(spec)
    message = str(info.value)
    assert f"bad acceptance rule {spec!r}" in message
    assert expected_form in message
    assert "known rules:" in message and "mcnemar[:ALPHA" in message and "margin:K" in message


def test_registry_names():
    assert set(RULES) == {"strict", "margin", "sign", "mcnemar"}
    assert RULES["sign"] is RULES["mcnemar"]


# --- run settings --------------------------------------------------------------------------

@pytest.mark.parametrize(("option", "value", "message"), [
    ("--attempts", "0", "attempts must be an integer in 1..99"),
    ("--attempts", "100", "attempts must be an integer in 1..99"),
    ("--proposals", "0", "proposals must be an integer in 1..39"),
    ("--acceptance", "sign:0.05:weekly", "SPENDING must be one of run, open, each"),
])
def test_bad_run_settings_are_one_clear_error(tmp_path, option, value, message):
    import subprocess
    import sys
    from pathlib import Path

    ratchet = str(Path(sys.executable).with_name("ratchet"))
    assert subprocess.run([ratchet, "init", str(tmp_path / "ws")], capture_output=True).returncode == 0
    out = subprocess.run([ratchet, "run", "--suite", "quickstart", option, value, "--scripted", "demo",
                          "--workspace", str(tmp_path / "ws")], capture_output=True, text=True,
                         env={"COLUMNS": "300", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode != 0 and message in " ".join((out.stdout + out.stderr).split())
    assert not (tmp_path / "ws" / "runs").exists() or not any((tmp_path / "ws" / "runs").glob("*/journal.jsonl"))


def test_old_settings_load_with_the_planned_length_as_horizon(tmp_path):
    """settings.json written before attempts/proposals/horizon existed still loads."""
    import json

    old = {"run": "r", "suite": "quickstart", "generations": 12, "agent_model": "m",
           "meta_model": "m", "acceptance": "mcnemar:0.05", "stage_size": 3}
    (tmp_path / "settings.json").write_text(json.dumps(old))
    settings = LoopSettings.load(tmp_path / "settings.json")
    assert (settings.horizon, settings.attempts, settings.proposals) == (12, 1, 1)
    settings.check()
