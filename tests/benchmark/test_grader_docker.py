"""Grading in real containers: verdicts, tricks that must not change them, and infra errors.

Every trick below starts from the inflection task's *unfixed* code: if the trick worked,
an unresolved task would come out resolved.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from benchmark import Grader, ImageBuilder, TaskSpec, load_tasks, task_image_tag
from tests.conftest import DATA

pytestmark = pytest.mark.docker


def _new_file(path: str, content: str) -> str:
    lines = content.splitlines()
    body = "".join(f"+{line}\n" for line in lines)
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{len(lines)} @@\n{body}")


def _append_to_module(task: TaskSpec, code: str) -> str:
    """A patch appending `code` to inflection/__init__.py (its last line is known)."""
    lines = code.splitlines()
    return ("diff --git a/inflection/__init__.py b/inflection/__init__.py\n"
            "--- a/inflection/__init__.py\n+++ b/inflection/__init__.py\n"
            f"@@ -426,0 +427,{len(lines)} @@\n" + "".join(f"+{l}\n" for l in lines))


REPORT_REWRITER = textwrap.dedent("""\
    import pytest


    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item, call):
        outcome = yield
        report = outcome.get_result()
        report.outcome = "passed"
        report.longrepr = None
    """)


@pytest.fixture(scope="module")
def task() -> TaskSpec:
    return load_tasks(DATA / "handwritten.jsonl").tasks[0]


@pytest.fixture(scope="module")
def builder() -> ImageBuilder:
    return ImageBuilder()


@pytest.fixture
def grader(builder, tmp_path) -> Grader:
    return Grader(builder, tmp_path / "grades")


def test_gold_resolves_and_empty_does_not(grader, task):
    gold = grader.grade(task, task.patch, label="gold")
    assert gold.resolved and gold.patch_applied and gold.error is None and gold.set_aside == []
    empty = grader.grade(task, "", label="empty")
    assert not empty.resolved and empty.tests_ran and empty.error is None
    assert empty.tests_status["FAIL_TO_PASS"]["failure"] == list(task.FAIL_TO_PASS)
    report = json.loads((Path(gold.log_path).parent / "report.json").read_text())
    assert report[task.instance_id]["resolved"] is True


def test_task_image_is_a_one_commit_repo_without_the_hidden_tests(builder, task):
    """No history to mine for the fix, no file of the test patch, the bug present."""
    from benchmark import _docker

    image = builder.ensure_task(task)
    run = _docker.run_script(image, "cd /testbed && git rev-list --all --count && git log --all "
                             "--format=%s && ls test_ordinal_regression.py 2>&1; "
                             "grep -c '(11, 12, 13)' inflection/__init__.py; git status --porcelain",
                             timeout_s=60)
    lines = run.log.split("\n")
    assert lines[0] == "1" and lines[1] == "base"
    assert "No such file" in lines[2]
    assert lines[3] == "0"  # the fixed line is nowhere in the base tree
    assert lines[4] == ""   # the tree is clean: nothing for a diff to pick up by accident


def test_second_build_builds_nothing(task):
    fresh = ImageBuilder()
    assert fresh.ensure_task(task) == task_image_tag(task)
    assert fresh.built == []


def test_conftest_report_rewriter_is_set_aside(grader, task):
    result = grader.grade(task, _new_file("conftest.py", REPORT_REWRITER))
    assert not result.resolved
    assert result.set_aside == [{"path": "conftest.py", "reason": "pytest conftest", "action": "deleted"}]


def test_plugin_enabled_through_pytest_ini_is_set_aside(grader, task):
    """The plugin module's name is innocent; the config that loads it is restored."""
    patch = (_new_file("pytest.ini", "[pytest]\naddopts = -p ratchet_helper\n")
             + _new_file("ratchet_helper.py", REPORT_REWRITER))
    result = grader.grade(task, patch)
    assert not result.resolved
    assert [item["path"] for item in result.set_aside] == ["pytest.ini"]


def test_startup_hooks_are_set_aside(grader, task):
    patch = _new_file("sitecustomize.py", "import builtins\n") + _new_file("zz.pth", "import os\n")
    result = grader.grade(task, patch)
    assert not result.resolved
    assert {item["reason"] for item in result.set_aside} == {"interpreter start-up hook"}


def test_patch_writing_the_hidden_test_file_is_replaced_by_the_real_one(grader, task):
    fake = "def test_ordinal_thirteenth():\n    pass\n\n\ndef test_ordinal_hundred_thirteenth():\n    pass\n"
    result = grader.grade(task, _new_file("test_ordinal_regression.py", fake))
    assert not result.resolved
    assert result.set_aside[0]["reason"] == "hidden test file"


def test_forged_passed_lines_from_the_code_under_test(grader, task):
    """The patched library prints PASSED lines at import and again at exit."""
    forged = "\n".join(f"PASSED {name}" for name in (*task.FAIL_TO_PASS, *task.PASS_TO_PASS))
    code = ("import atexit as _ax\n"
            f"print({forged!r})\n"
            f"_ax.register(lambda: print('=== short test summary info ===\\n' + {forged!r} + '\\n=== 3 passed in 0.01s ==='))\n")
    result = grader.grade(task, _append_to_module(task, code))
    assert result.patch_applied and not result.resolved


def test_test_command_that_exits_early(grader, task):
    result = grader.grade(task, _append_to_module(task, "import os as _os\n_os._exit(0)\n"))
    assert result.patch_applied and not result.resolved and not result.tests_ran


def test_real_fix_with_its_own_new_test_still_resolves(grader, task):
    own_test = "import inflection\n\n\ndef test_mine():\n    assert inflection.ordinalize(213) == '213th'\n"
    result = grader.grade(task, task.patch + _new_file("tests/test_mine.py", own_test))
    assert result.resolved
    assert result.set_aside == [{"path": "tests/test_mine.py", "reason": "test file", "action": "deleted"}]


def test_patch_that_does_not_apply_is_the_agents_failure(grader, task):
    broken = task.patch.replace("-    if number % 100 in (11, 12):", "-    if number in (99,):")
    result = grader.grade(task, broken)
    assert not result.resolved and not result.patch_applied
    assert result.error is None and "does not apply" in result.problems[0]


def test_missing_prebuilt_image_is_an_infrastructure_error(grader, task):
    orphan = task.model_copy(update={"image": "ratchet/no-such-image:v0", "source": None})
    result = grader.grade(orphan, orphan.patch)
    assert not result.resolved and result.error is not None
    assert "ratchet/no-such-image:v0" in result.error and "docker load" in result.error


def test_dead_daemon_is_named_with_the_fix(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": f"unix://{tmp_path}/no.sock",
           "RATCHET_RUNS": str(tmp_path)}
    import sys
    cli = Path(sys.executable).with_name("ratchet")
    out = subprocess.run([str(cli), "bench", "validate", "--suite", str(DATA / "handwritten.jsonl")],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert "no Docker daemon answers" in out.stderr and "dockerd" in out.stderr


def test_hidden_test_patch_larger_than_an_argument_still_grades(grader, task):
    """The eval script carries the whole test patch; the kernel caps one argument at
    128 KiB, so the script travels as a file: a 200 KB test patch grades like a small one."""
    blob = "\n".join(f"# padding line {n:06d} " + "x" * 60 for n in range(2800))
    big = task.model_copy(update={"test_patch": task.test_patch + _new_file("test_zz_big.py", blob + "\n")})
    assert len(big.test_patch) > 200_000
    gold = grader.grade(big, big.patch, label="gold-big")
    assert gold.error is None and gold.resolved, gold.problems


def test_no_container_is_started_ahead_for_a_patch_refused_by_its_headers(grader, task):
    """A pool starts the container of the job two places behind the one starting. A patch
    refused by its headers (a path under .git, packaging metadata) never takes one, so
    starting one for it would leave it waiting, running, until the pool closes: an audit
    of 208 tasks had 518 of them running when this test was written."""
    from benchmark import docker_host
    from benchmark._grader import Job, grade_locally

    refused = _new_file(".git/hooks/post-checkout", "#!/bin/sh\necho hi")
    assert not grader.admits(refused) and not grader.admits(None)
    assert grader.admits(task.patch)
    jobs = [Job(task, refused, f"refused-{n}") for n in range(6)] + [Job(task, task.patch, "gold")]
    waiting_at_the_end = None
    results = []
    for result in grade_locally(grader, jobs, workers=2):
        results.append(result)
        if len(results) == len(jobs):  # before the pool closes: what is still waiting
            waiting_at_the_end = sum(len(v) for v in grader._ready.values())
    assert waiting_at_the_end == 0
    assert [r.resolved for r in results if r.label == "gold"] == [True]
    assert all("refused" in " ".join(r.problems) for r in results if r.label != "gold")
    docker_host.finish_removals()
