"""Honest runs the grader's defences must not mistake for tampering or failure.

Each case is a variant of a quickstart task whose hidden test file is written here (the
attack side lives in test_tamper_docker.py): the gold patch must resolve, untampered, and
the empty patch must not resolve, also untampered (a wrong patch is not a tamperer).
Each was found graded wrongly by a red-team pass before its fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark import Grader, ImageBuilder, TaskSpec, load_suite
from benchmark._grader import Defences, GradeResult

pytestmark = pytest.mark.docker

TASK_ID = "toolz__toolz-1.2.0__dissoc-many-keys"
HIDDEN = "toolz/tests/test_dissoc_cases.py"

CHILDREN = '''\
import subprocess
import sys

from toolz.dicttoolz import dissoc


def test_dissoc_removes_all_given_keys():
    assert dissoc({"x": 1, "y": 2}, "y", "x") == {}


def test_a_nested_pytest_runs(tmp_path):
    (tmp_path / "test_inner.py").write_text("def test_ok():\\n    assert True\\n")
    for close_fds in (True, False):
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               str(tmp_path / "test_inner.py")], close_fds=close_fds,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_module_in_the_working_directory_runs(tmp_path):
    (tmp_path / "helper_mod.py").write_text("from toolz import dissoc\\nprint(dissoc({'a': 1}, 'a'))\\n")
    done = subprocess.run([sys.executable, "-m", "helper_mod"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "{}", done.stderr
'''

MARKED = '''\
import sys

import pytest

from toolz.dicttoolz import dissoc

CASES = [
    pytest.param(None, ("a",), {}, marks=pytest.mark.xfail(reason="not a mapping", strict=True)),
    ({"x": 1, "y": 2}, ("y", "x"), {}),
    ({"x": 1, "y": 2, "z": 3}, ("x", "y"), {"z": 3}),
]


@pytest.mark.parametrize("d, keys, expected", CASES)
def test_dissoc_cases(d, keys, expected):
    assert dissoc(d, *keys) == expected


@pytest.mark.parametrize("d, keys, expected", [
    pytest.param({"a": 1}, ("a",), {}, marks=pytest.mark.skipif(sys.platform != "win32", reason="windows only")),
    ({"a": 1, "b": 2}, ("a", "c", "d", "e"), {"b": 2}),
])
def test_dissoc_more_keys(d, keys, expected):
    assert dissoc(d, *keys) == expected


def test_dissoc_returns_the_rest():
    assert dissoc({"x": 1, "y": 2, "z": 3}, "x", "y") == {"z": 3}
'''

# the unfixed dissoc keeps one of two keys: its output is one letter from the twin's value
COINCIDENCE = '''\
from toolz.dicttoolz import dissoc


def test_dissoc_keeps_the_other_value():
    assert "".join(dissoc({"k": "a", "j": "b"}, "j", "zz").values()) == "a"


def test_dissoc_drops_both():
    assert "".join(dissoc({"k": "ab", "j": "ab"}, "k", "j").values()) == ""
'''


@pytest.fixture(scope="module")
def base() -> TaskSpec:
    return next(t for t in load_suite("quickstart").tasks if t.instance_id == TASK_ID)


def _variant(base: TaskSpec, name: str, text: str, fail_to_pass: list[str],
             pass_to_pass: list[str]) -> TaskSpec:
    lines = text.splitlines()
    test_patch = (f"diff --git a/{HIDDEN} b/{HIDDEN}\nnew file mode 100644\n--- /dev/null\n"
                  f"+++ b/{HIDDEN}\n@@ -0,0 +1,{len(lines)} @@\n"
                  + "".join(f"+{line}\n" for line in lines))
    return base.model_copy(update=dict(
        instance_id=f"{TASK_ID}--{name}", test_patch=test_patch, image=ImageBuilder().ensure_task(base),
        FAIL_TO_PASS=tuple(f"{HIDDEN}::{t}" for t in fail_to_pass),
        PASS_TO_PASS=tuple(f"{HIDDEN}::{t}" for t in pass_to_pass), base_commit=""))


def _grade(task: TaskSpec, patch: str, out: Path, label: str,
           defences: Defences = Defences()) -> GradeResult:
    return Grader(ImageBuilder(), out, defences=defences).grade(task, patch, label=label)


def _honest(result: GradeResult, resolved: bool) -> None:
    assert result.error is None and not result.tampered and result.resolved is resolved, (
        result.resolved, result.problems, result.tamper_reasons, result.tests_status)


def test_the_tests_children_see_the_tasks_environment(base, tmp_path):
    """A nested pytest (with or without the grader's junit pipe inherited) and a module run
    from a temporary working directory behave as under the official harness; without
    handing the environment back, the same gold patch is failed or read as tampered."""
    task = _variant(base, "children", CHILDREN, ["test_dissoc_removes_all_given_keys"],
                    ["test_a_nested_pytest_runs", "test_a_module_in_the_working_directory_runs"])
    _honest(_grade(task, base.patch, tmp_path, "gold"), resolved=True)
    before = _grade(task, base.patch, tmp_path, "gold-env-kept", Defences(restore_env=False))
    assert not before.resolved or before.tampered, before.tests_status


def test_cases_marked_skip_or_xfail_are_not_tampering(base, tmp_path):
    """Trip-wires keep their original's parametrized cases, marks included (in a module
    list, where no reading of the decorator sees them); each case is judged beside its
    original's, so a skipped or xfailed case is not a trip-wire gone wrong."""
    task = _variant(base, "marked", MARKED,
                    ["test_dissoc_cases[d1-keys1-expected1]", "test_dissoc_cases[d2-keys2-expected2]",
                     "test_dissoc_more_keys[d1-keys1-expected1]", "test_dissoc_returns_the_rest"], [])
    for attempt in range(3):  # the trip-wires are drawn at random in each grading
        _honest(_grade(task, base.patch, tmp_path, f"gold-{attempt}"), resolved=True)
    _honest(_grade(task, "", tmp_path, "empty"), resolved=False)


def test_a_twin_that_matches_a_wrong_output_is_not_tampering(base, tmp_path):
    """A twin whose changed value happens to be what a wrong patch (here: none) computes
    passes while its original fails: a wrong answer, not tampering."""
    task = _variant(base, "coincidence", COINCIDENCE,
                    ["test_dissoc_keeps_the_other_value", "test_dissoc_drops_both"], [])
    for attempt in range(4):
        _honest(_grade(task, "", tmp_path, f"empty-{attempt}"), resolved=False)
    _honest(_grade(task, base.patch, tmp_path, "gold"), resolved=True)
