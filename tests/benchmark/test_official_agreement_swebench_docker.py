"""`ratchet bench grade` agrees with the official harness (``run_evaluation``, 5.0.2) task by
task on an image laid out like an official SWE-bench eval image, for official rows graded by
their own spec: the classic row of twelve fields (ratchet's pytest default in the ``testbed``
env) and the same task as a swebench 5.x row carrying its own ``image``, ``eval_script`` and
``log_parser``. Gold, empty and broken patches (`test_official_agreement`'s machinery), the
CLI as a user runs it, and the report's swebench 5.x fields and official file name."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark._grading import swebench_instance
from benchmark._images import task_image_tag
from benchmark._task import load_tasks
from tests.benchmark.swebench_layout import build_layout_image, official_rows
from tests.benchmark.test_official_agreement import (KINDS, _patches, _run_official, stop_official,
                                                     wait_official)

RATCHET = str(Path(sys.executable).with_name("ratchet"))
_EOF = "EOF_114329324912"
REWRITER = """diff --git a/conftest.py b/conftest.py
new file mode 100644
--- /dev/null
+++ b/conftest.py
@@ -0,0 +1,8 @@
+import pytest
+
+
+@pytest.hookimpl(hookwrapper=True)
+def pytest_runtest_makereport(item, call):
+    outcome = yield
+    report = outcome.get_result()
+    report.outcome = "passed"
"""
"""No fix at all: a root conftest.py that rewrites every test report to "passed"."""


def eval_script(row: dict) -> str:
    """The row's eval script in the shape swebench's published rows carry (its 4.x
    generator's, for a pytest repository), hand-written here for the layout image."""
    base, files = row["base_commit"], "tests/test_duration.py"
    return "\n".join([
        "#!/bin/bash", "set -uxo pipefail",
        "source /opt/miniconda3/bin/activate", "conda activate testbed", "cd /testbed",
        "git config --global --add safe.directory /testbed", "cd /testbed", "git status",
        "git show", f"git -c core.fileMode=false diff {base}",
        "source /opt/miniconda3/bin/activate", "conda activate testbed",
        f"git checkout {base} {files}",
        f"git apply -v - <<'{_EOF}'\n{row['test_patch'].rstrip(chr(10))}\n{_EOF}",
        ": '>>>>> Start Test Output'", f"pytest -rA {shlex.quote(files)}",
        ": '>>>>> End Test Output'", f"git checkout {base} {files}"]) + "\n"


@pytest.mark.docker
def test_bench_grade_agrees_with_run_evaluation_on_a_swebench_layout_image(docker_daemon, tmp_path,
                                                                          monkeypatch):
    import docker

    client = docker.from_env(timeout=120)
    layout, head = build_layout_image()
    classic = official_rows()[0]
    assert head == classic["base_commit"]
    modern = {**classic, "instance_id": classic["instance_id"] + "-5x", "image": layout,
              "eval_script": eval_script(classic), "log_parser": "parse_log_pytest",
              "eval_type": "pass_and_fail"}
    suite = tmp_path / "official.jsonl"
    suite.write_text(json.dumps(classic) + "\n" + json.dumps(modern) + "\n")
    loaded = load_tasks(suite)
    assert loaded.problems == [] and len(loaded.tasks) == 2
    tasks = loaded.tasks
    for name in ("RATCHET_SWEBENCH_NAMESPACE", "RATCHET_SWEBENCH_TAG"):
        monkeypatch.delenv(name, raising=False)
    env = dict(os.environ)
    images = {t.instance_id: task_image_tag(t) for t in tasks}
    derived = images[classic["instance_id"]]
    assert derived == "swebench/sweb.eval.x86_64.gweis_1776_isodate-leap-century:latest"
    repository, _, tag = derived.rpartition(":")
    client.images.get(layout).tag(repository, tag)  # present by its official name: no pull

    official_dir = tmp_path / "official"
    official_dir.mkdir()
    dataset = official_dir / "dataset.jsonl"
    dataset.write_text("".join(json.dumps(swebench_instance(t, images[t.instance_id])) + "\n"
                               for t in tasks))
    assert json.loads(dataset.read_text().splitlines()[1])["eval_script"] == modern["eval_script"]
    patches = {t.instance_id: {**_patches(t), "attack": REWRITER} for t in tasks}
    procs, preds_files = {}, {}
    for kind in (*KINDS, "attack"):
        preds = official_dir / f"preds-{kind}.jsonl"
        preds.write_text("".join(json.dumps({
            "instance_id": t.instance_id, "model_name_or_path": f"ratchet-{kind}",
            "model_patch": patches[t.instance_id][kind]}) + "\n" for t in tasks))
        preds_files[kind] = preds
        procs[kind] = _run_official(official_dir, dataset, kind, preds)

    ours: dict[str, dict] = {}
    timings: dict[str, float] = {}
    try:
        for kind in (*KINDS, "attack"):  # the CLI, as a user runs it, while the official runs wait
            started = time.monotonic()
            out = subprocess.run(
                [RATCHET, "bench", "grade", "--suite", str(suite), "--predictions",
                 str(preds_files[kind]), "--run-id", f"grade-{kind}"],
                capture_output=True, text=True, cwd=tmp_path, timeout=1800,
                env={**env, "COLUMNS": "240", "RATCHET_RUNS": str(tmp_path / "runs")})
            timings[kind] = time.monotonic() - started
            assert out.returncode == 0, out.stdout + out.stderr
            run_dir = tmp_path / "runs" / "bench" / f"grade-{kind}"
            report = json.loads((run_dir / "report.json").read_text())
            # also under the official harness's file name, with swebench 5.x's fields
            assert json.loads((run_dir / f"ratchet-{kind}.grade-{kind}.json").read_text()) == report
            for key in ("infra_failure_instances", "ambiguous_failure_instances",
                        "infra_failure_ids", "ambiguous_failure_ids", "failure_reasons"):
                assert key in report, key
            ours[kind] = report
        wait_official(official_dir, procs)
    finally:
        stop_official(procs)

    disagreements = []
    for task in tasks:
        for kind in KINDS:
            mine = task.instance_id in ours[kind]["resolved_ids"]
            assert task.instance_id not in ours[kind]["error_ids"], ours[kind]["ratchet"]
            report_path = (official_dir / "logs" / "run_evaluation" / f"agree-{kind}"
                           / f"ratchet-{kind}" / task.instance_id / "report.json")
            report = (json.loads(report_path.read_text())[task.instance_id]
                      if report_path.exists() else None)
            theirs = bool(report and report["resolved"])
            if mine != theirs:
                disagreements.append(f"{task.instance_id}/{kind}: official={theirs} ratchet={mine}")
            if kind == "broken":
                assert report is not None and report["patch_successfully_applied"]
            # the hardened wrapper graded it: trip-wires planted (pytest parser), not tampered
            detail = ours[kind]["ratchet"][task.instance_id]
            assert detail["tripwires"] and not detail["tampered"], detail
    assert not disagreements, "\n".join(disagreements)
    # the attack the official harness falls for (SWE-bench #631): resolved there, not here
    for task in tasks:
        report_path = (official_dir / "logs" / "run_evaluation" / "agree-attack" / "ratchet-attack"
                       / task.instance_id / "report.json")
        assert json.loads(report_path.read_text())[task.instance_id]["resolved"], \
            "the official harness no longer falls for the report rewriter: update this test"
        assert task.instance_id not in ours["attack"]["resolved_ids"]
        set_aside = ours["attack"]["ratchet"][task.instance_id]["set_aside"]
        assert any(item["path"] == "conftest.py" for item in set_aside), set_aside
    for task in tasks:
        assert task.instance_id in ours["gold"]["resolved_ids"]
        assert task.instance_id not in ours["empty"]["resolved_ids"]
        assert task.instance_id not in ours["broken"]["resolved_ids"]
    print("bench grade seconds per kind (2 tasks each): "
          + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
