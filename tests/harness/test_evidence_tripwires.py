"""Trip-wires never reach the proposer: a grading log shown as evidence has no trace of them.

The logs here are real pytest runs (a small test file, with and without trip-wires planted by
the grader's own `benchmark.plant_tripwires`), so the redaction is checked against pytest's real layout.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import plant_tripwires
from harness.propose.evidence import collect_evidence, redact_tripwires

TESTS = '''\
def parse_pair(text):
    key, _, value = text.partition("=")
    return key, value


def test_parse_pair_splits_on_equals():
    assert parse_pair("a=1") == ("a", "1")


def test_parse_pair_keeps_later_equals():
    assert parse_pair("a=1=2") == ("a", "1=2")


class TestPairs:
    def test_pair_without_value(self):
        assert parse_pair("a") == ("a", "")

    def test_pair_reversed_is_wrong(self):
        assert parse_pair("1=a") == ("a", "1")
'''
WANTED = ["test_parse_pair_splits_on_equals", "test_parse_pair_keeps_later_equals",
          "TestPairs::test_pair_without_value"]


def _pytest(tmp: Path, source: str) -> str:
    (tmp / "test_pairs.py").write_text(source)
    run = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
                          "test_pairs.py"], cwd=tmp, capture_output=True, text=True)
    return run.stdout


def _summary(log: str) -> str:
    """The final count line without its time."""
    last = [line for line in log.splitlines() if line.startswith("=")][-1]
    return re.sub(r" in [\d.]+s", "", last).strip("= ")


@pytest.fixture
def logs(tmp_path):
    planted_source, planted = plant_tripwires("test_pairs.py", TESTS, WANTED,
                                              random.Random(7), count=2)
    assert len(planted) == 2
    clean_dir, wired_dir = tmp_path / "clean", tmp_path / "wired"
    clean_dir.mkdir()
    wired_dir.mkdir()
    return _pytest(clean_dir, TESTS), _pytest(wired_dir, planted_source), planted


def test_a_real_log_shows_the_tripwires_and_the_redacted_one_does_not(logs):
    clean, wired, planted = logs
    names = [p.test.rsplit("::", 1)[-1] for p in planted]
    assert all(name in wired for name in names)  # the attack surface: the raw log names them
    assert "3 failed, 3 passed" in _summary(wired)

    shown = redact_tripwires(wired, [p.nodeid for p in planted])
    assert not any(name in shown for name in names), shown
    assert "finally" not in shown  # nor their bodies
    assert _summary(shown) == _summary(clean) == "1 failed, 3 passed"
    assert "collected 4 items" in shown and "collected 4 items" in clean
    # the task's own failure is still there, whole
    assert "test_pair_reversed_is_wrong" in shown
    assert "AssertionError" in shown


def test_a_log_without_tripwires_is_left_as_it_was(logs):
    clean, _, _ = logs
    assert redact_tripwires(clean, []) == clean
    assert redact_tripwires(clean, ["test_pairs.py::test_not_there_at_all"]) == clean


def test_collect_evidence_shows_the_log_without_its_tripwires(logs, tmp_path):
    """The proposer's evidence (study tasks with a held-out decide split) reads eval.log;
    the trip-wires named in the grading's report.json are gone from it."""
    _, wired, planted = logs
    where = tmp_path / "grading"
    where.mkdir()
    (where / "eval.log").write_text(wired)
    report = {"t1": {"resolved": False, "tests_status": {},
                     "ratchet": {"tripwires": [p.nodeid for p in planted]}}}
    (where / "report.json").write_text(json.dumps(report))

    class Task:
        instance_id = "t1"
        problem_statement = "pairs"

    results = {"t1": {"resolved": False, "grade_log": str(where / "eval.log")}}
    evidence = collect_evidence(results, [Task()], grader_log=True, max_tokens=100_000)
    shown = evidence.failures[0].test_output
    assert "test_pair_reversed_is_wrong" in shown
    assert not any(p.test.rsplit("::", 1)[-1] in shown for p in planted), shown
