"""Grading as data and pure functions: a task becomes an eval script, a log becomes a verdict.

Nothing here touches Docker. The eval script is the SWE-bench harness's shape (restore the
test files, apply the hidden test patch, run the tests between the output markers, restore
again), so the same text is handed to the official harness in agreement checks.

The log is read strictly. The test output is taken between markers that carry a per-run
nonce; for pytest, only the final "short test summary info" block is trusted, and its
PASSED/FAILED lines must add up to the counts on pytest's own closing line. A forged
``PASSED`` line printed by the code under test, a suite that exits early, or a summary that
does not add up, leaves tests unaccounted for, and an unaccounted test is a failed test.
The status map itself comes from swebench's log parsers, and the verdict from its
``get_eval_tests_report`` (the SWE-bench rule: every FAIL_TO_PASS and PASS_TO_PASS passes).
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from benchmark._guard import APPLY_FAILED_MARKER
from benchmark._tripwire import Planted, cases_of
from benchmark._task import TaskSpec

__all__ = [
    "START_TEST_OUTPUT",
    "END_TEST_OUTPUT",
    "APPLY_PATCH_FAIL",
    "TEST_EXIT_CODE",
    "TestOutcome",
    "TestSteps",
    "eval_script_lines",
    "grade_log",
    "grade_output",
    "parser_name",
    "swebench_instance",
    "test_steps",
]

# The SWE-bench harness's markers (swebench.harness.constants; a test keeps them equal).
START_TEST_OUTPUT = ">>>>> Start Test Output"
END_TEST_OUTPUT = ">>>>> End Test Output"
APPLY_PATCH_FAIL = APPLY_FAILED_MARKER
TEST_EXIT_CODE = ">>>>> Test Exit Code"

_PYTEST_PARSERS = {"parse_log_pytest", "parse_log_pytest_options", "parse_log_pytest_v2"}
_TEST_PATCH_EOF = "EOF_RATCHET_TEST_PATCH"


def parser_name(task: TaskSpec) -> str:
    """The swebench ``PARSER_REGISTRY`` key for a task (``pytest`` is short for
    ``parse_log_pytest``)."""
    if task.is_official:  # the row's own parser (or its repository's official one)
        from benchmark._official import official_spec

        return official_spec(task).log_parser
    name = task.log_parser or (task.environment.log_parser if task.environment else "pytest")
    return name if name.startswith("parse_log_") else f"parse_log_{name}"


_MINUS_A = re.compile(r"^--- a/(\S+)$", re.MULTILINE)


def _modified_test_files(task: TaskSpec) -> list[str]:
    """Test-patch files that exist at base (``--- a/``): restored before and after."""
    return list(dict.fromkeys(_MINUS_A.findall(task.test_patch)))


@dataclass(frozen=True)
class TestSteps:
    """What running a task's hidden tests takes: the data behind the eval script, handed to
    the official harness as a script and to ratchet's grading wrapper as it is."""

    base: str
    restore: list[str]
    """Test files that exist at base: restored before the test patch is applied."""
    remove: list[str]
    """Test files the test patch creates: removed first."""
    test_patch: str
    test_command: str


def test_steps(task: TaskSpec) -> TestSteps:
    env = task.environment
    test_cmd = env.test_cmd if env else "python -m pytest -rA -p no:cacheprovider"
    modified = _modified_test_files(task)
    test_command = f"{test_cmd} {shlex.join(task.test_files)}"
    if task.is_official:  # the row's own spec: its environment lines and test command
        from benchmark._official import official_spec

        test_command = official_spec(task).script
    return TestSteps(
        # an image ratchet builds holds the task repo as a fresh one-commit repository: its
        # base is HEAD, whatever upstream commit the tree came from; a prebuilt image keeps history
        base=(task.base_commit or "HEAD") if task.image or task.is_official else "HEAD",
        restore=modified,
        remove=[path for path in task.test_files if path not in modified],
        test_patch=task.test_patch if task.test_patch.endswith("\n") else task.test_patch + "\n",
        test_command=test_command,
    )


def eval_script_lines(task: TaskSpec, *, marker_tag: str = "") -> list[str]:
    """The eval script body (no shebang or ``set`` line), SWE-bench style.

    `marker_tag` is appended to the output markers (the official harness gets the plain
    markers it looks for).
    """
    steps = test_steps(task)
    lines = ["cd /testbed"]
    if steps.restore:
        lines.append(f"git checkout {steps.base} -- {shlex.join(steps.restore)}")
    if steps.remove:
        lines.append(f"rm -rf -- {shlex.join(steps.remove)}")
    lines += [
        f"git apply --verbose - <<'{_TEST_PATCH_EOF}'\n{steps.test_patch}{_TEST_PATCH_EOF}",
        f": '{START_TEST_OUTPUT}{marker_tag}'",
        steps.test_command,
        f": '{END_TEST_OUTPUT}{marker_tag}'",
    ]
    if steps.restore:
        lines.append(f"git checkout {steps.base} -- {shlex.join(steps.restore)}")
    return lines


@dataclass
class TestOutcome:
    """What one graded log says. `tests_status` is SWE-bench's shape."""

    resolved: bool
    tests_ran: bool
    tests_status: dict[str, dict[str, list[str]]]
    status_map: dict[str, str]
    problems: list[str] = field(default_factory=list)
    tampered: bool = False
    tamper_reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "resolved": self.resolved,
            "tests_ran": self.tests_ran,
            "tests_status": self.tests_status,
            "problems": self.problems,
            "tampered": self.tampered,
            "tamper_reasons": self.tamper_reasons,
        }


def _between_markers(log: str, tag: str) -> tuple[str | None, int | None]:
    """(test output, the test command's exit code): the code is read only after the
    nonce-tagged end marker, where the code under test cannot print."""
    start, end = f"{START_TEST_OUTPUT}{tag}", f"{END_TEST_OUTPUT}{tag}"
    head, sep, rest = log.partition(start)
    if not sep:
        return None, None
    body, sep, tail = rest.rpartition(end)
    if not sep:
        return None, None
    code = re.search(rf"^{re.escape(TEST_EXIT_CODE)}: (-?\d+)$", tail, re.MULTILINE)
    return body, int(code.group(1)) if code else None


_SUMMARY_HEADER = re.compile(r"^=+ short test summary info =+$", re.MULTILINE)
_CLOSING_LINE = re.compile(r"^=+ (?P<counts>.*?) in [\d.]+s(?: \([^)]*\))? =+$", re.MULTILINE)
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")
_STATUS_LINE = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+)", re.MULTILINE)


def _trusted_pytest_block(output: str) -> tuple[str | None, str | None]:
    """The summary block pytest itself printed last, or (None, why)."""
    closings = list(_CLOSING_LINE.finditer(output))
    if not closings:
        return None, "the test run printed no closing summary line (it did not finish)"
    closing = closings[-1]
    if output[closing.end():].strip():
        return None, "output follows pytest's closing line: the log does not describe the run"
    headers = [m for m in _SUMMARY_HEADER.finditer(output) if m.end() <= closing.start()]
    counts = {kind.rstrip("s"): int(n) for n, kind in _COUNT.findall(closing.group("counts"))}
    if not headers:
        if counts.get("passed", 0) or counts.get("failed", 0):
            return None, "tests ran but no '-rA' short test summary was printed"
        return "", None
    block = output[headers[-1].end():closing.start()]
    seen = Counter(status for status, _ in _STATUS_LINE.findall(block))
    for status, kind in (("PASSED", "passed"), ("FAILED", "failed")):
        if seen[status] != counts.get(kind, 0):
            return None, (
                f"the summary lists {seen[status]} {status} lines but pytest counted "
                f"{counts.get(kind, 0)} {kind}: the log does not describe the run"
            )
    return block, None


def grade_log(task: TaskSpec, log: str, *, marker_tag: str = "") -> TestOutcome:
    """The verdict of one eval log (test output between the nonce-tagged markers, the exit
    code after them), by the SWE-bench rule, read strictly (see module doc)."""
    output, exit_code = _between_markers(log, marker_tag)
    return grade_output(task, output, exit_code)


def _mangle(nodeid: str) -> tuple[str, str]:
    """pytest's junitxml (classname, name) for a node id (``mangle_test_address``)."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


_PASSING = ("PASSED", "XFAIL", "XPASS")


def _junit_disagreements(status_map: dict[str, str], exit_code: int | None,
                         junit: dict) -> list[str]:
    """Where pytest's own junit report contradicts the log or the exit code, in the
    direction a forger wants (a test the log passes that junit failed or never ran)."""
    by_class: dict[str, list[tuple[str, str]]] = {}
    for classname, name, status in junit["cases"]:
        by_class.setdefault(classname, []).append((name, status))
    reasons = []
    for nodeid, status in status_map.items():
        if "::" not in nodeid or status not in _PASSING:
            continue
        classname, name = _mangle(nodeid)
        truncated = "[" in name  # the parser cuts ids at their first space
        found = [s for n, s in by_class.get(classname, ())
                 if n == name or (truncated and n.startswith(name))]
        if not found:
            reasons.append(f"{nodeid} passed in the log but is not in pytest's junit report")
        elif all(s in ("failed", "error") for s in found):
            reasons.append(f"{nodeid} passed in the log but failed in pytest's junit report")
    if exit_code == 0 and any(s in ("failed", "error") for _, _, s in junit["cases"]):
        reasons.append("the tests exited 0 but pytest's junit report has failures")
    return reasons


def _tripwire_reasons(tripwires: Sequence[Planted], status_map: dict[str, str]) -> list[str]:
    """What the trip-wires say of a run, case by case beside the test each was made from
    (a parametrized trip-wire keeps its original's cases and ids). A twin trips where it
    passes *with* its original: on an honest wrong patch whose output happens to be the
    twin's value the original fails, so that alone is not tampering. A ``negated`` twin
    (one check turned into its opposite) is judged the same way: it passes wherever its
    original fails. A ``finally`` copy trips where it comes out anything but failed, unless
    its original came out the same (a case skipped or xfailed by its own marks). A
    ``cases`` twin (every case's expected value changed, so its ids are its own) trips where
    any of its cases passes while its original's cases pass (none failed: a case skipped
    away does not excuse it). Each trips where it is missing and its original passed: it
    was taken out of the run."""
    reasons = []
    for planted in tripwires:
        cases = cases_of(planted.nodeid, status_map)
        if not planted.original:  # a report from before originals were recorded
            bad = sorted({s for s in cases.values() if s not in ("FAILED", "ERROR")})
            if bad:
                reasons.append(f"trip-wire test {planted.nodeid} (it must fail) came out {', '.join(bad)}")
            elif not cases and any(key.startswith(planted.file + "::") for key in status_map):
                reasons.append(f"trip-wire test {planted.nodeid} is missing from a run that "
                               "reported its file's other tests")
            continue
        original = cases_of(f"{planted.file}::{planted.original}", status_map)
        if planted.kind == "cases":  # its case ids follow its own values: judged as a whole
            passed = {case for case, status in original.items() if status in ("PASSED", "XPASS")}
            failed = {case for case, status in original.items() if status in ("FAILED", "ERROR")}
            if not cases and passed:
                reasons.append(f"trip-wire test {planted.nodeid} is missing where its original "
                               f"{planted.original} passed")
            elif passed and not failed and (  # a case skipped away does not excuse it
                    shown := sorted(c for c, status in cases.items() if status in ("PASSED", "XPASS"))):
                reasons.append(f"trip-wire test {planted.nodeid}{shown[0]} (a twin of "
                               f"{planted.original} with every case's expected value changed) "
                               "passed while its original passed")
            continue
        for case in sorted(set(cases) | set(original)):
            mine, theirs = cases.get(case), original.get(case)
            if mine is None:
                tripped = theirs == "PASSED"
                why = f"is missing where its original {planted.original}{case} passed"
            elif planted.kind in ("twin", "negated"):
                tripped = mine in ("PASSED", "XPASS") and theirs in ("PASSED", "XPASS")
                change = ("one expected value changed" if planted.kind == "twin"
                          else "one check turned into its opposite")
                why = f"(a twin of {planted.original} with {change}) came out {mine} with it"
            else:
                tripped = mine not in ("FAILED", "ERROR") and not (
                    mine in ("XFAIL", "SKIPPED") and mine == theirs)
                why = f"(it must fail) came out {mine}"
            if tripped:
                reasons.append(f"trip-wire test {planted.nodeid}{case} {why}")
                break
    return reasons


def _capped(reasons: list[str], most: int = 5) -> list[str]:
    return reasons if len(reasons) <= most else [*reasons[:most], f"... and {len(reasons) - most} more"]


def grade_output(task: TaskSpec, output: str | None, exit_code: int | None, *,
                 tripwires: Sequence[Planted] = (), junit: dict | None = None) -> TestOutcome:
    """The verdict of one test run: its output, the exit code the grading wrapper recorded,
    the trip-wires it planted and pytest's junit report (``None``: not asked for), by the
    SWE-bench rule. A trip-wire that did not fail, or a junit report that contradicts the
    log, makes the run *tampered* (never resolved)."""
    from swebench.harness.constants import ResolvedStatus
    from swebench.harness.grading import get_eval_tests_report, get_resolution_status
    from swebench.harness.log_parsers import PARSER_REGISTRY

    wanted = {"FAIL_TO_PASS": list(task.FAIL_TO_PASS), "PASS_TO_PASS": list(task.PASS_TO_PASS)}
    problems: list[str] = []
    parser = PARSER_REGISTRY[parser_name(task)]
    pytest_log = parser_name(task) in _PYTEST_PARSERS
    if output is None:
        problems.append("the test output markers are missing: the tests never ran")
    elif pytest_log:
        output, why = _trusted_pytest_block(output)
        if why:
            problems.append(why)
    status_map: dict[str, str] = parser(output, None) if output else {}
    failed = any(status in ("FAILED", "ERROR") for status in status_map.values())
    if exit_code is not None and output is not None and not problems and (exit_code != 0) != failed:
        # pytest exits 0 exactly when nothing failed; a log that disagrees was written by
        # someone else (the official harness applies the same cross-check).
        problems.append(f"the test command exited with {exit_code} but the log reports "
                        f"{'failures' if failed else 'no failure'}: the log does not describe the run")
    tests_ran = output is not None and not problems
    tamper: list[str] = []
    if tests_ran:
        tamper += _tripwire_reasons(tripwires, status_map)
        if junit is not None and pytest_log:
            if not junit.get("valid"):
                tamper.append("the log shows a finished pytest session but pytest wrote no valid "
                              "junit report" + (f" ({junit['error']})" if junit.get("error") else ""))
            else:
                tamper += _junit_disagreements(status_map, exit_code, junit)
    if not tests_ran:
        status_map = {}
    tests_status = get_eval_tests_report(status_map, wanted)
    resolved = (tests_ran and not tamper
                and get_resolution_status(tests_status) == ResolvedStatus.FULL.value)
    return TestOutcome(resolved, tests_ran, tests_status, status_map, problems,
                       tampered=bool(tamper), tamper_reasons=_capped(tamper))


def swebench_instance(task: TaskSpec, image: str) -> dict[str, Any]:
    """The task as a row of a local SWE-bench dataset for the official harness (5.x reads
    ``image``, ``eval_script``, ``log_parser`` and ``eval_type`` per instance)."""
    row = {key: getattr(task, key) for key in (
        "instance_id", "repo", "base_commit", "problem_statement", "patch", "test_patch",
        "version", "environment_setup_commit", "hints_text", "created_at")}
    row.update(
        FAIL_TO_PASS=list(task.FAIL_TO_PASS),
        PASS_TO_PASS=list(task.PASS_TO_PASS),
        image=image,
        eval_script=task.eval_script or (  # a swebench 5.x row's own script, as it is
            "\n".join(["#!/bin/bash", "set -uxo pipefail", *eval_script_lines(task)]) + "\n"),
        log_parser=parser_name(task),
        eval_type="pass_and_fail",
    )
    return row
