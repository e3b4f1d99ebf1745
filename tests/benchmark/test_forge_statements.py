"""Forged problem statements: issue-like, with a reproduction, and never giving away the
hidden tests or the fix (`check_statement`, the one rule the forge and these tests share)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.forge import check_statement, write_statement
from benchmark.forge.lm import lm_statement, openai_complete
from benchmark.forge.statements import new_files
from tests.conftest import ROOT

FORGED = ROOT / "benchmark" / "suites" / "forged.jsonl"
TEMPLATED = Path(__file__).parent / "data" / "forged_templated_statements.jsonl"

TEST_FILE = '''\
import unittest

from pkg import ordinal, Counter


def _fresh():
    return Counter(start=1)


class TestOrdinal(unittest.TestCase):
    def test_ordinal_first(self):
        self.assertEqual(ordinal(2), "nd")
        c = _fresh()
        c.bump(3)
        self.assertEqual(c.value, 4)

    def test_ordinal_teens(self):
        self.assertEqual(ordinal(11), "th")
'''


def _new_file_patch(path: str, text: str) -> str:
    lines = text.splitlines()
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{len(lines)} @@\n" + "".join(f"+{line}\n" for line in lines))


TEST_PATCH = _new_file_patch("tests/test_ordinal.py", TEST_FILE)
GOLD = """\
diff --git a/pkg/counter.py b/pkg/counter.py
--- a/pkg/counter.py
+++ b/pkg/counter.py
@@ -10,3 +10,3 @@ class Counter:
     def bump(self, n):
-        self.value = self.value + n - 1
+        self.value = self.value + n
"""
F2P = ["tests/test_ordinal.py::TestOrdinal::test_ordinal_first"]
LOG = """\
=================================== FAILURES ===================================
__________________________ TestOrdinal.test_ordinal_first __________________________
tests/test_ordinal.py:15: in test_ordinal_first
    self.assertEqual(c.value, 4)
E   AssertionError: 3 != 4
=========================== short test summary info ============================
FAILED tests/test_ordinal.py::TestOrdinal::test_ordinal_first - AssertionError: 3 != 4
========================= 1 failed, 1 passed in 0.05s ==========================
"""


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_writer_reproduces_the_failing_check_from_the_log():
    """The statement shows the code up to the check that failed (from the log's traceback
    line), turns the unittest assertion into a plain assert, carries the helpers and imports
    it needs, and names neither the test, its file, nor the fix."""
    text = write_statement("pkg", fail_to_pass=F2P, test_patch=TEST_PATCH, gold_patch=GOLD,
                           output=LOG)
    assert "assert c.value == 4" in text
    assert "c.bump(3)" in text and "def _fresh():" in text
    assert "from pkg import ordinal, Counter" in text
    assert "`c.bump()`" in text.splitlines()[0]  # the title names the library call, not the test
    assert "test_ordinal" not in text and "TestOrdinal" not in text
    assert "3 != 4" not in text  # no assertion diff, no repr from the log
    assert check_statement(text, fail_to_pass=F2P, gold_patch=GOLD, test_patch=TEST_PATCH) == []


def test_without_a_log_the_writer_uses_the_first_check_and_exception_types_from_errors():
    text = write_statement("pkg", fail_to_pass=F2P, test_patch=TEST_PATCH, gold_patch=GOLD,
                           errors={F2P[0]: ["KeyError: 'x'"]})
    assert "assert ordinal(2) == \"nd\"" in text
    assert "raises KeyError" in text and "'x'" not in text


def test_parametrized_cases_get_their_values():
    source = ('import pytest\nfrom pkg import bump\n\n\n'
              '@pytest.mark.parametrize("version,expected", [("1.2", "1.3"), ("2.0", "2.1")])\n'
              'def test_bump(version, expected):\n    assert bump(version) == expected\n')
    patch = _new_file_patch("tests/test_bump.py", source)
    text = write_statement("pkg", fail_to_pass=["tests/test_bump.py::test_bump[2.0-2.1]"],
                           test_patch=patch, gold_patch=GOLD)
    assert 'version, expected = "2.0", "2.1"' in text
    assert "assert bump(version) == expected" in text


@pytest.mark.parametrize("leak, why", [
    ("Calling it like test_ordinal_first does fails.", "hidden test"),
    ("See TestOrdinal for details.", "hidden test"),
    ("It breaks tests/test_ordinal.py.", "hidden test file"),
    ("test_ordinal.py shows it", "hidden test file"),
    ("run pytest -k test_ordinal", "hidden test file"),
    ("The line `self.value = self.value + n` is missing.", "gold patch"),
    ("it does self.value = self.value + n - 1 now", "gold patch"),
])
def test_check_rejects_each_kind_of_leak(leak, why):
    problems = check_statement(f"pkg: counter broken\n\n{leak}\n", fail_to_pass=F2P,
                               gold_patch=GOLD, test_patch=TEST_PATCH)
    assert problems and why in problems[0]


def test_check_passes_an_ordinary_issue():
    text = "pkg: Counter.bump adds one too few\n\n```python\nc = Counter(start=1)\nc.bump(3)\nassert c.value == 4\n```\n"
    assert check_statement(text, fail_to_pass=F2P, gold_patch=GOLD, test_patch=TEST_PATCH) == []


def test_templated_statements_leak_hidden_tests_and_the_check_rejects_every_one():
    """The attack: the forge's old templated statements (kept in tests/benchmark/data) hand
    the agent the hidden test ids and files. With the check off nothing stops them; with it
    on, every one of the 86 is refused."""
    shipped = {row["instance_id"]: row for row in _rows(FORGED)}
    templated = _rows(TEMPLATED)
    assert len(templated) == 86
    for old in templated:
        task = shipped[old["instance_id"]]
        statement = old["problem_statement"]
        # check off: the hidden test's id and file are right there for the agent to read
        assert task["FAIL_TO_PASS"][0] in statement
        assert task["FAIL_TO_PASS"][0].split("::")[0] in statement
        # check on: refused
        assert check_statement(statement, fail_to_pass=task["FAIL_TO_PASS"],
                               gold_patch=task["patch"], test_patch=task["test_patch"])


def test_shipped_forged_statements_never_name_hidden_tests_files_or_the_fix():
    """Every statement of the shipped `forged` suite passes the check (they were re-stated
    by the deterministic writer from the tasks' own fields and the bugs' test logs)."""
    rows = _rows(FORGED)
    assert len(rows) >= 208
    for row in rows:
        assert check_statement(row["problem_statement"], fail_to_pass=row["FAIL_TO_PASS"],
                               gold_patch=row["patch"], test_patch=row["test_patch"]) == [], row["instance_id"]
        assert row["PASS_TO_PASS"], row["instance_id"]
        assert row["forge"]["difficulty"]["level"] in ("easy", "medium", "hard")


def test_quickstart_statements_are_left_alone():
    """The demo's scripted agent matches on quickstart statements: the re-statement touched
    only the forged suite (quickstart tasks are hand-written, not forged)."""
    rows = _rows(ROOT / "benchmark" / "suites" / "quickstart.jsonl")
    assert rows and all("forge" not in row for row in rows)


LEAKY = "pkg: broken\n\nThe check test_ordinal_first fails in tests/test_ordinal.py.\n"
CLEAN = ("pkg: Counter.bump adds one too few\n\n```python\nfrom pkg import Counter\n"
         "c = Counter(start=1)\nc.bump(3)\nprint(c.value)  # 3, expected 4\n```\n")


def test_a_model_statement_that_leaks_is_refused_and_retried_through_the_protocol(monkeypatch):
    """A model's issue goes through the same check: an answer naming the hidden test is
    sent back once with the reason; the clean second answer is used (over ratchet's scripted
    OpenAI-protocol server). A model that keeps leaking yields no statement (the forge then
    keeps the deterministic one)."""
    from harness.models.scripted_model import ScriptedModelServer

    script = {"rules": [{"last_user_contains": "was refused", "reply": CLEAN}], "default": LEAKY}
    with ScriptedModelServer(script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "scripted")
        text, calls = lm_statement(openai_complete("scripted"), "pkg", fail_to_pass=F2P,
                                   output=LOG, test_patch=TEST_PATCH, gold_patch=GOLD)
    assert calls == 2 and text == CLEAN
    with ScriptedModelServer({"default": LEAKY}) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        text, calls = lm_statement(openai_complete("scripted"), "pkg", fail_to_pass=F2P,
                                   output=LOG, test_patch=TEST_PATCH, gold_patch=GOLD)
    assert text is None and calls == 2


def test_the_prompt_carries_the_fix_the_errors_and_the_test_source():
    from benchmark.forge.lm import statement_prompt

    messages = statement_prompt("pkg", fail_to_pass=F2P, output=LOG, test_patch=TEST_PATCH,
                                gold_patch=GOLD)
    user = messages[-1]["content"]
    assert "self.value = self.value + n" in user and "AssertionError: 3 != 4" in user
    assert "c.bump(3)" in user
    assert "never mention tests" in messages[0]["content"]
    assert new_files(TEST_PATCH) == {"tests/test_ordinal.py": TEST_FILE}


def test_restating_a_row_changes_only_its_statement_and_forge_record(tmp_path):
    """`python -m benchmark.forge.restate` keeps ids, patches, tests and environment byte
    for byte; the failing check comes from the empty patch's log of a validate run."""
    from benchmark.forge.restate import empty_patch_logs, restate_row

    row = {"instance_id": "pkg__pkg-1.0__ast-x-1", "repo": "pkg", "patch": GOLD,
           "test_patch": TEST_PATCH, "FAIL_TO_PASS": F2P, "PASS_TO_PASS": ["t::other"],
           "problem_statement": "pkg: ordinal first is broken\n`tests/test_ordinal.py::...` fails",
           "forge": {"kind": "flip_compare", "file": "pkg/counter.py"}}
    log_dir = tmp_path / "validate" / row["instance_id"] / "empty"
    log_dir.mkdir(parents=True)
    (log_dir / "eval.log").write_text(LOG)
    logs = empty_patch_logs(tmp_path / "validate")
    new = restate_row(row, logs[row["instance_id"]])
    assert {k: v for k, v in new.items() if k not in ("problem_statement", "forge")} == \
        {k: v for k, v in row.items() if k not in ("problem_statement", "forge")}
    assert new["forge"]["kind"] == "flip_compare" and new["forge"]["statement"] == "plain"
    assert new["forge"]["difficulty"]["tests_broken"] == 1
    assert "assert c.value == 4" in new["problem_statement"]  # the check that failed, from the log


def test_the_seed_agents_outcome_rates_difficulty(tmp_path):
    from benchmark.forge.restate import main

    row = {"instance_id": "pkg__pkg-1.0__ast-x-1", "repo": "pkg", "patch": GOLD,
           "test_patch": TEST_PATCH, "FAIL_TO_PASS": F2P, "PASS_TO_PASS": ["t::other"],
           "problem_statement": "old", "forge": {"kind": "flip_compare"}}
    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps(row) + "\n")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"tasks": {row["instance_id"]: False}}))
    assert main([str(suite), "--seed-metrics", str(metrics)]) == 0
    difficulty = json.loads(suite.read_text())["forge"]["difficulty"]
    assert difficulty["rated_by"] == "seed agent" and difficulty["level"] == "hard"
    assert difficulty["seed_resolve_rate"] == 0.0
    assert main([str(suite), "--seed-metrics", str(tmp_path / "missing.json")]) == 2
    # re-stating again without outcomes keeps the seed agent's rating
    assert main([str(suite)]) == 0
    assert json.loads(suite.read_text())["forge"]["difficulty"] == difficulty
