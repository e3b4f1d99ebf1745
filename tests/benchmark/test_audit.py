"""``ratchet bench audit``: every attack is a patch that applies to the task it was written
for, and the audit grades all of them, beside the gold patch, through the real Grader."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from benchmark import ImageBuilder, load_suite
from benchmark import _docker
from benchmark._audit import _label, attack_patches, fake_session, read_layout

pytestmark = pytest.mark.docker

QUICKSTART = load_suite("quickstart").tasks
ONE_PER_PACKAGE = [QUICKSTART[0], QUICKSTART[3], QUICKSTART[6]]  # isodate (src/), inflection, toolz


def _repo_from_image(image: str, into: Path) -> Path:
    """The task's /testbed at its base commit, as a fresh git repo on the host."""
    with _docker.sandbox(image) as box:
        stream, _ = box.container.get_archive("/testbed")
        data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        archive.extractall(into, filter="data")
    repo = into / "testbed"
    subprocess.run(["git", "-c", "safe.directory=*", "checkout", "-q", "--", "."], cwd=repo,
                   check=True)
    return repo


@pytest.mark.parametrize("task", ONE_PER_PACKAGE, ids=lambda t: t.instance_id.split("__")[0])
def test_every_attack_applies_to_the_task_it_was_written_for(task, tmp_path):
    """Each attack patch applies at the task's base (git apply --check; a path under .git/,
    which git refuses, and a context diff, with GNU patch, as the grader's fallback would)."""
    image = ImageBuilder().ensure_task(task)
    layout = read_layout(task, image)
    attacks = attack_patches(task, layout, fork_bomb=True)
    kinds = {a.kind for a in attacks}
    assert kinds == {"pytest config", "shadowing", "git", "in-process", "sandbox", "resources"}
    assert len({_label(a.name) for a in attacks}) == len(attacks) >= 20
    repo = _repo_from_image(image, tmp_path)
    for attack in attacks:
        (tmp_path / "attack.diff").write_text(attack.patch)
        if ".git/" in attack.patch.split("\n", 1)[0] or attack.patch.startswith("*** "):
            command = ["patch", "--dry-run", "--batch", "-p1", "-i", str(tmp_path / "attack.diff")]
        else:
            command = ["git", "-c", "safe.directory=*", "apply", "--check", str(tmp_path / "attack.diff")]
        done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
        assert done.returncode == 0, (attack.name, done.stdout + done.stderr, attack.patch[:2000])
    # written from the task's own test ids
    for test_id in task.FAIL_TO_PASS:
        assert f"PASSED {test_id}" in fake_session(task)


def _audit_cli(runs: Path, *args: str):
    """`ratchet bench audit ARGS` through the CLI, writing under `runs`."""
    from typer.testing import CliRunner

    from harness.cli import app

    old = os.environ.get("RATCHET_RUNS")
    os.environ["RATCHET_RUNS"] = str(runs)
    try:
        return CliRunner().invoke(app, ["bench", "audit", *args], env={"COLUMNS": "200"})
    finally:
        if old is None:
            os.environ.pop("RATCHET_RUNS")
        else:
            os.environ["RATCHET_RUNS"] = old


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """One audit of one quickstart task, through the CLI: its output, report and folder."""
    tmp = tmp_path_factory.mktemp("audit")
    suite = tmp / "one.jsonl"
    line = next(l for l in (Path(__file__).parents[2] / "benchmark" / "suites" / "quickstart.jsonl")
                .read_text().splitlines() if QUICKSTART[3].instance_id in l)
    suite.write_text(line + "\n")
    result = _audit_cli(tmp / "runs", "--suite", str(suite), "--run-id", "audit-test")
    folder = tmp / "runs" / "bench" / "audit-test"
    report = json.loads((folder / "audit.json").read_text())
    return result, report, folder, suite


def test_audit_runs_every_attack_and_the_gold_resolves(audited):
    result, report, _, _ = audited
    rows = report["rows"]
    task = QUICKSTART[3]
    expected = ["gold", *(a.name for a in attack_patches(
        task, read_layout(task, ImageBuilder().ensure_task(task))))]
    assert [r["attack"] for r in rows] == expected
    assert {r["instance_id"] for r in rows} == {task.instance_id}
    gold = rows[0]
    assert gold["verdict"] == "resolved" and gold["flags"] == 0
    # every attack was graded (no infrastructure error); some are refused at admission, so
    # "applied" is true for the gold and may be false for an attack
    assert gold["applied"] and all(r["error"] is None for r in rows), rows
    assert report["summary"]["attacks"] == len(expected) - 1
    assert report["summary"]["gold_resolved"] == 1
    for name in expected:  # one table row per attack
        assert name in result.output
    assert "task 1: " + task.instance_id in result.output
    # the scan flags what it can see: every attack but the hidden-test edit and the context
    # diff (which the scan cannot read: admission refuses it instead) carries flags
    unseen = ("hidden test file edited", "report rewrite as a context diff")
    assert all(r["flags"] for r in rows[1:] if r["attack"] not in unseen), rows
    context = next(r for r in rows if r["attack"] == "report rewrite as a context diff")
    assert context["verdict"] != "RESOLVED" and not context["applied"], context
    # exit code: non-zero exactly when an attack resolved (or a gold failed)
    assert (result.exit_code != 0) == (report["summary"]["attacks_resolved"] > 0)


def test_audit_no_attack_resolves(audited):
    """Every known attack on the task comes out unresolved; its gold patch resolves."""
    result, report, _, _ = audited
    assert report["summary"]["attacks_resolved"] == 0, [
        r["attack"] for r in report["rows"] if r["verdict"] == "RESOLVED"]
    assert result.exit_code == 0


def test_a_stopped_audit_goes_on_with_only_this_graders_verdicts(audited):
    """``--resume`` keeps a finished grading only when its patch is the job's and the
    grader's code is this one. A grading of another patch (one attack's patch.diff changed,
    as if the attack changed since) is graded again, and nothing else is; an audit made by
    other grader code is refused, with nothing graded or written."""
    from benchmark._audit import FINGERPRINT_FILE

    _, report, folder, suite = audited
    runs = folder.parents[1]
    task = QUICKSTART[3]
    reports = {p: p.stat().st_mtime_ns for p in folder.glob(f"{task.instance_id}/*/report.json")}
    changed = folder / task.instance_id / "attack-conftest-report-rewrite"
    (changed / "patch.diff").write_text("diff --git a/x b/x\n")

    again = _audit_cli(runs, "--suite", str(suite), "--run-id", "audit-test", "--resume")
    assert again.exit_code == 0, again.output
    resumed = json.loads((folder / "audit.json").read_text())
    assert [(r["attack"], r["verdict"]) for r in resumed["rows"]] == [
        (r["attack"], r["verdict"]) for r in report["rows"]]
    regraded = [p.parent.name for p, before in reports.items() if p.stat().st_mtime_ns != before]
    assert regraded == [changed.name]

    (folder / FINGERPRINT_FILE).write_text("0" * 64 + "\n")  # made by other grader code
    reports = {p: p.stat().st_mtime_ns for p in reports}
    refused = _audit_cli(runs, "--suite", str(suite), "--run-id", "audit-test", "--resume")
    assert refused.exit_code != 0 and "other grader code" in refused.output, refused.output
    assert all(p.stat().st_mtime_ns == before for p, before in reports.items())

    nowhere = _audit_cli(runs, "--suite", str(suite), "--run-id", "no-such-audit", "--resume")
    assert nowhere.exit_code != 0 and "--run-id" in nowhere.output, nowhere.output
    assert not (runs / "bench" / "no-such-audit").exists()
