"""Grading a log is a pure function; forged or incomplete logs never resolve a task."""

from __future__ import annotations

import pytest

from benchmark import load_tasks
from benchmark import _grading
from benchmark._grading import END_TEST_OUTPUT, START_TEST_OUTPUT, grade_log
from tests.conftest import DATA

TAG = " [c0ffee]"
F1 = "test_ordinal_regression.py::test_ordinal_thirteenth"
F2 = "test_ordinal_regression.py::test_ordinal_hundred_thirteenth"
P1 = "test_ordinal_regression.py::test_ordinal_eleventh"


@pytest.fixture(scope="module")
def task():
    return load_tasks(DATA / "handwritten.jsonl").tasks[0]


def _log(body: str, tag: str = TAG) -> str:
    return f"Applied patch\n{START_TEST_OUTPUT}{tag}\n{body}\n{END_TEST_OUTPUT}{tag}\n"


def _summary(lines: list[str], closing: str) -> str:
    return ("============================= test session starts ==============================\n"
            "collected 3 items\n\n"
            "=========================== short test summary info ============================\n"
            + "\n".join(lines) + f"\n============================== {closing} in 0.02s ===============================")


def test_markers_are_the_official_harness_markers():
    from swebench.harness import constants

    assert _grading.START_TEST_OUTPUT == constants.START_TEST_OUTPUT
    assert _grading.END_TEST_OUTPUT == constants.END_TEST_OUTPUT
    assert _grading.APPLY_PATCH_FAIL == constants.APPLY_PATCH_FAIL


def test_all_passing_resolves(task):
    outcome = grade_log(task, _log(_summary([f"PASSED {F1}", f"PASSED {F2}", f"PASSED {P1}"],
                                            "3 passed")), marker_tag=TAG)
    assert outcome.resolved and outcome.tests_ran and not outcome.problems


def test_one_failing_test_does_not_resolve(task):
    outcome = grade_log(task, _log(_summary(
        [f"PASSED {F1}", f"PASSED {P1}", f"FAILED {F2} - assert 'rd' == 'th'"], "1 failed, 2 passed")),
        marker_tag=TAG)
    assert not outcome.resolved
    assert outcome.tests_status["FAIL_TO_PASS"]["failure"] == [F2]


def test_forged_passed_lines_in_captured_output_do_not_count(task):
    """Code under test that prints 'PASSED <id>' lines sits outside pytest's own summary
    block; only that block is read, so the forgery changes nothing."""
    forged = "\n".join(f"PASSED {t}" for t in (F1, F2, P1))
    body = ("============================= test session starts ==============================\n"
            f"----- Captured stdout call -----\n{forged}\n"
            + _summary([f"FAILED {F1} - x", f"FAILED {F2} - x", f"PASSED {P1}"], "2 failed, 1 passed"))
    outcome = grade_log(task, _log(body), marker_tag=TAG)
    assert not outcome.resolved
    assert outcome.tests_status["FAIL_TO_PASS"]["failure"] == [F1, F2]


def test_summary_that_does_not_add_up_is_not_trusted(task):
    """Forged lines inside the summary block break pytest's own counts: nothing is trusted."""
    body = _summary([f"PASSED {F1}", f"PASSED {F2}", f"PASSED {P1}", f"FAILED {F1} - x"],
                    "1 failed, 2 passed")
    outcome = grade_log(task, _log(body), marker_tag=TAG)
    assert not outcome.resolved and not outcome.tests_ran
    assert "does not describe the run" in outcome.problems[0]


def test_suite_that_exits_early_fails_every_test(task):
    """No closing line: the suite did not finish, so no test counts as passed."""
    body = "============================= test session starts ==============================\n" \
           + "\n".join(f"PASSED {t}" for t in (F1, F2, P1))
    outcome = grade_log(task, _log(body), marker_tag=TAG)
    assert not outcome.resolved and not outcome.tests_ran
    assert "did not finish" in outcome.problems[0]


def test_markers_without_the_run_nonce_are_ignored(task):
    """Output markers printed by the code under test lack this run's nonce."""
    fake = _log(_summary([f"PASSED {F1}", f"PASSED {F2}", f"PASSED {P1}"], "3 passed"), tag="")
    outcome = grade_log(task, fake, marker_tag=TAG)
    assert not outcome.resolved and "markers are missing" in outcome.problems[0]


def test_skipped_or_deselected_fail_to_pass_tests_fail(task):
    skipped = _summary([f"PASSED {P1}", f"SKIPPED [1] {F1}: nope", f"PASSED {F2}"], "2 passed, 1 skipped")
    assert not grade_log(task, _log(skipped), marker_tag=TAG).resolved
    deselected = _summary([f"PASSED {F2}", f"PASSED {P1}"], "2 passed, 1 deselected")
    outcome = grade_log(task, _log(deselected), marker_tag=TAG)
    assert not outcome.resolved and outcome.tests_status["FAIL_TO_PASS"]["failure"] == [F1]


def _with_exit(log: str, code: int) -> str:
    return log + f">>>>> Test Exit Code: {code}\n"


def test_exit_code_that_contradicts_the_log_is_not_trusted(task):
    """An all-pass log from a run that exited 1 was written by the code under test."""
    all_pass = _log(_summary([f"PASSED {F1}", f"PASSED {F2}", f"PASSED {P1}"], "3 passed"))
    assert grade_log(task, _with_exit(all_pass, 0), marker_tag=TAG).resolved
    outcome = grade_log(task, _with_exit(all_pass, 1), marker_tag=TAG)
    assert not outcome.resolved and "exited with 1" in outcome.problems[0]


def test_exit_code_printed_inside_the_test_output_is_ignored(task):
    body = _summary([f"PASSED {F1}", f"PASSED {F2}", f"PASSED {P1}"], "3 passed")
    log = f"{START_TEST_OUTPUT}{TAG}\n>>>>> Test Exit Code: 0\n{body}\n{END_TEST_OUTPUT}{TAG}\n>>>>> Test Exit Code: 1\n"
    assert not grade_log(task, log, marker_tag=TAG).resolved


def test_a_second_session_printed_after_the_real_one_is_not_trusted(task):
    """An atexit hook that prints a whole fake summary after pytest's own closing line."""
    real = _summary([f"FAILED {F1} - x", f"FAILED {F2} - x", f"PASSED {P1}"], "2 failed, 1 passed")
    fake = _summary([f"PASSED {F1}", f"PASSED {F2}", f"PASSED {P1}"], "3 passed")
    outcome = grade_log(task, _with_exit(_log(real + "\n" + fake), 1), marker_tag=TAG)
    assert not outcome.resolved


# -- what the grading wrapper adds: trip-wires and pytest's junit report ----------------------

from benchmark._grading import grade_output  # noqa: E402
from benchmark._tripwire import Planted  # noqa: E402

WIRE = Planted("test_ordinal_regression.py", "test_ordinal_hundred_eleventh")
ALL_PASS = [f"PASSED {F1}", f"PASSED {F2}", f"PASSED {P1}"]


def _junit(*cases: tuple[str, str]) -> dict:
    return {"present": True, "valid": True,
            "cases": [["test_ordinal_regression", name, status] for name, status in cases]}


HONEST_JUNIT = _junit(("test_ordinal_thirteenth", "passed"), ("test_ordinal_hundred_thirteenth", "passed"),
                      ("test_ordinal_eleventh", "passed"), (WIRE.test, "failed"))


def test_a_failed_trip_wire_and_an_agreeing_junit_report_resolve(task):
    body = _summary([*ALL_PASS, f"FAILED {WIRE.nodeid} - AssertionError"], "1 failed, 3 passed")
    outcome = grade_output(task, body, 1, tripwires=[WIRE], junit=HONEST_JUNIT)
    assert outcome.resolved and not outcome.tampered, outcome


def test_a_trip_wire_that_passed_is_tampering(task):
    """Code that rewrites pytest's reports to passed cannot spare the test that must fail."""
    body = _summary([*ALL_PASS, f"PASSED {WIRE.nodeid}"], "4 passed")
    outcome = grade_output(task, body, 0, tripwires=[WIRE])
    assert outcome.tampered and not outcome.resolved and "trip-wire" in outcome.tamper_reasons[0]


def test_a_trip_wire_missing_from_a_run_of_its_file_is_tampering(task):
    outcome = grade_output(task, _summary(ALL_PASS, "3 passed"), 0, tripwires=[WIRE])
    assert outcome.tampered and "missing" in outcome.tamper_reasons[0]


def test_no_trip_wire_result_when_its_file_never_ran_is_not_tampering(task):
    """A collection error: the file's own tests are absent too, so nothing was hidden."""
    body = _summary(["ERROR test_ordinal_regression.py"], "1 error")
    outcome = grade_output(task, body, 2, tripwires=[WIRE])
    assert not outcome.tampered and not outcome.resolved


def test_a_log_that_pytests_junit_report_contradicts_is_tampering(task):
    """A summary printed after the real one (atexit) lists as passed what junit failed."""
    failed = _junit(("test_ordinal_thirteenth", "failed"), ("test_ordinal_hundred_thirteenth", "failed"),
                    ("test_ordinal_eleventh", "passed"))
    outcome = grade_output(task, _summary(ALL_PASS, "3 passed"), 0, junit=failed)
    assert outcome.tampered and not outcome.resolved
    assert any("failed in pytest's junit report" in r for r in outcome.tamper_reasons)
    assert any("exited 0" in r for r in outcome.tamper_reasons)


def test_a_finished_session_without_a_junit_report_is_tampering(task):
    """A fake session printed before os._exit(0): pytest never got to write its report."""
    outcome = grade_output(task, _summary(ALL_PASS, "3 passed"), 0,
                           junit={"present": False, "valid": False, "cases": []})
    assert outcome.tampered and "no valid junit" in outcome.tamper_reasons[0]
    outcome = grade_output(task, _summary(ALL_PASS, "3 passed"), 0, junit=_junit())
    assert outcome.tampered and "not in pytest's junit report" in outcome.tamper_reasons[0]


def test_parametrized_ids_cut_at_a_space_match_their_junit_cases(task):
    """parse_log_pytest cuts ``test_x[a b]`` to ``test_x[a``; junit has the whole id."""
    odd = task.model_copy(update={"FAIL_TO_PASS": ("test_ordinal_regression.py::test_p[a",),
                                  "PASS_TO_PASS": ()})
    body = _summary(["PASSED test_ordinal_regression.py::test_p[a b]"], "1 passed")
    outcome = grade_output(odd, body, 0, junit=_junit(("test_p[a b]", "passed")))
    assert outcome.resolved and not outcome.tampered, outcome


def test_grade_results_without_the_tamper_fields_still_load():
    """Records written before trip-wires existed lack the two fields: they default."""
    old = {"instance_id": "x", "label": "model", "resolved": False, "patch_exists": True,
           "patch_applied": True, "tests_ran": True, "tests_status": {}, "set_aside": [],
           "problems": [], "error": None, "seconds": 1.0, "log_path": ""}
    from benchmark._grader import GradeResult

    result = GradeResult(**old)
    assert result.tampered is False and result.tamper_reasons == []
    assert result.swebench_report()["x"]["ratchet"]["tampered"] is False


def test_a_twin_trips_only_when_it_passes_with_its_original():
    """A twin passing alone is a wrong patch whose output happens to be the twin's value;
    passing with its original (or missing where the original passed) is tampering."""
    from benchmark._grading import _tripwire_reasons

    twin = Planted("t.py", "test_b", "twin", "test_a")
    assert _tripwire_reasons([twin], {"t.py::test_a": "FAILED", "t.py::test_b": "PASSED"}) == []
    assert _tripwire_reasons([twin], {"t.py::test_a": "FAILED", "t.py::test_b": "FAILED"}) == []
    assert _tripwire_reasons([twin], {"t.py::test_a": "PASSED", "t.py::test_b": "FAILED"}) == []
    assert _tripwire_reasons([twin], {"t.py::test_a": "PASSED", "t.py::test_b": "PASSED"})
    assert _tripwire_reasons([twin], {"t.py::test_a": "PASSED"})
    assert _tripwire_reasons([twin], {"t.py::test_a": "FAILED"}) == []
