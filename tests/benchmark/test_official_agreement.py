"""ratchet's verdicts agree with the official SWE-bench harness (``run_evaluation``, 5.0.2).

The suite's tasks (quickstart when it exists and is non-empty, else the handwritten file)
become a local SWE-bench dataset that points at ratchet's own task images. Three patches per
task are graded by both harnesses: the gold patch (resolved by both), an empty patch and a
"broken" patch (resolved by neither). The broken patch is the gold patch with every added
line replaced by a ``raise RuntimeError`` at the same indentation: it has the gold patch's
headers, context and removed lines, so it applies wherever the gold patch does (asserted
below), but the fix is gone and the touched code raises or no longer compiles.

What run_evaluation 5.0.2 does with an empty patch (read in its source and checked here):
``get_dataset_from_preds`` drops every prediction whose ``model_patch`` is ``""`` or None
before any container starts, so no ``report.json`` is written for it; the run report lists
it under ``empty_patch_ids`` (not ``error_ids``, not ``unresolved_ids``). ratchet instead
grades an empty patch like any other (the tests run on the unchanged base and fail). Both
come to "not resolved"; the comparison is on the ``resolved`` booleans, with "no report"
read as not resolved.

It never deletes our images: 5.0.2 has no ``--cache_level`` / ``--clean`` options any more;
its only ``images.remove`` is in the image builder, reached only with a task repo (which the
CLI cannot even pass). Containers are removed with ``docker stop --time=15`` + ``rm``, and
its containers run ``tail -f /dev/null`` as PID 1, which ignores SIGTERM: every instance
costs a 15 s stop. The test still checks that the images survive the run.

Time: the three official runs go concurrently (different run ids, so nothing they write
collides), each with ``--max_workers 2``, while ratchet grades the same patches; the wall
time is about ceil(tasks / 2) x 17 s, set by the official harness's stop timeout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark._grading import swebench_instance
from benchmark._task import TaskSpec, load_tasks

ROOT = Path(__file__).resolve().parents[2]
HANDWRITTEN = ROOT / "tests" / "benchmark" / "data" / "handwritten.jsonl"
QUICKSTART = ROOT / "benchmark" / "suites" / "quickstart.jsonl"
KINDS = ("gold", "empty", "broken")
OFFICIAL_TIMEOUT_S = 1800

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
BROKEN_LINE = 'raise RuntimeError("deliberately broken by ratchet\'s agreement test")'


def suite_tasks() -> tuple[Path, list[TaskSpec]]:
    """Quickstart when it exists and loads non-empty, else the handwritten task file."""
    if QUICKSTART.exists():
        try:
            loaded = load_tasks(QUICKSTART)
        except Exception:  # a suite being written right now may not parse yet
            loaded = None
        if loaded is not None and loaded.tasks:
            return QUICKSTART, loaded.tasks
    return HANDWRITTEN, load_tasks(HANDWRITTEN).tasks


def broken_patch(patch: str) -> str:
    """The gold patch with its fix taken out: every non-blank added line becomes a
    ``raise RuntimeError`` at that line's indentation (blank ones stay blank). A hunk that
    adds nothing gets one raise line before its first removed line, and the hunk headers
    after it in the same file are shifted. Context and removed lines are untouched, so the
    result applies wherever the gold patch applies."""
    out: list[str] = []
    lines = patch.splitlines()
    shift = 0  # lines added to the new side so far in this file
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("diff --git "):
            shift = 0
        match = _HUNK.match(line)
        if not match:
            out.append(line)
            i += 1
            continue
        old_start, old_len, new_start, new_len, tail = match.groups()
        old_len = 1 if old_len is None else int(old_len)
        new_len = 1 if new_len is None else int(new_len)
        body: list[str] = []
        old_left, new_left = old_len, new_len
        i += 1
        while i < len(lines) and (old_left > 0 or new_left > 0 or lines[i].startswith("\\")):
            body_line = lines[i]
            tag = body_line[:1]
            if tag == "\\":
                pass
            elif tag == "+":
                new_left -= 1
            elif tag == "-":
                old_left -= 1
            else:  # context (a blank context line may have lost its leading space)
                old_left -= 1
                new_left -= 1
            body.append(body_line)
            i += 1
        added = 0
        replaced = False
        new_body: list[str] = []
        for body_line in body:
            if body_line.startswith("+") and body_line[1:].strip():
                content = body_line[1:]
                indent = content[: len(content) - len(content.lstrip())]
                new_body.append(f"+{indent}{BROKEN_LINE}")
                replaced = True
            else:
                new_body.append(body_line)
        if not replaced and not (new_start == "0" and new_len == 0):  # not a deleted file
            at = next((k for k, b in enumerate(new_body) if b.startswith("-")), None)
            if at is None:
                at = next(k for k, b in enumerate(new_body) if b.startswith("+"))
            content = new_body[at][1:]
            indent = content[: len(content) - len(content.lstrip())]
            new_body.insert(at, f"+{indent}{BROKEN_LINE}")
            added = 1
        new_start_shifted = int(new_start) + shift
        out.append(f"@@ -{old_start},{old_len} +{new_start_shifted},{new_len + added} @@{tail}")
        out.extend(new_body)
        shift += added
    return "\n".join(out) + "\n"


def _hunk_counts_consistent(patch: str) -> bool:
    """Every hunk's header counts match its body (what `git apply` checks first)."""
    lines = patch.splitlines()
    for at, line in enumerate(lines):
        match = _HUNK.match(line)
        if not match:
            continue
        old_len = int(match.group(2) or 1)
        new_len = int(match.group(4) or 1)
        old = new = 0
        for body in lines[at + 1:]:
            if old == old_len and new == new_len:
                break
            tag = body[:1]
            if tag == "\\":
                continue
            if tag == "+":
                new += 1
            elif tag == "-":
                old += 1
            elif tag in (" ", ""):
                old += 1
                new += 1
            else:
                return False
        if (old, new) != (old_len, new_len):
            return False
    return True


def _patches(task: TaskSpec) -> dict[str, str]:
    return {"gold": task.patch, "empty": "", "broken": broken_patch(task.patch)}


def test_broken_patch_is_a_well_formed_variant_of_gold():
    """No Docker: the broken patch keeps gold's files and removed lines, its hunks add up,
    and it no longer contains gold's added code."""
    _, tasks = suite_tasks()
    for task in tasks:
        broken = broken_patch(task.patch)
        assert broken != task.patch
        assert BROKEN_LINE in broken
        assert _hunk_counts_consistent(broken), task.instance_id

        def side(text: str, tag: str) -> list[str]:
            return [ln for ln in text.splitlines()
                    if ln.startswith(tag) and not ln.startswith(tag * 3 + " ")]

        assert side(broken, "-") == side(task.patch, "-")
        assert [ln for ln in broken.splitlines() if ln.startswith("diff --git ")] == \
            [ln for ln in task.patch.splitlines() if ln.startswith("diff --git ")]
        gold_added = {ln for ln in side(task.patch, "+") if ln[1:].strip()}
        assert not gold_added & set(side(broken, "+")), task.instance_id


def test_broken_patch_of_a_pure_deletion_gets_a_raise_line():
    gold = (
        "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n"
        "@@ -1,3 +1,2 @@\n def f():\n-    x = 1\n     return 2\n"
        "@@ -10,2 +9,3 @@\n def g():\n+    return 3\n     pass\n"
    )
    broken = broken_patch(gold)
    assert _hunk_counts_consistent(broken)
    assert "@@ -1,3 +1,3 @@" in broken and "@@ -10,2 +10,3 @@" in broken
    assert broken.count(BROKEN_LINE) == 2


# run_evaluation's closing report lists every container on the daemon and inspects each
# (docker-py's `containers.list`): one removed in between (ratchet's own gradings run beside
# it here, a user's run may be going) raised NotFound and failed the official run. The list
# is bookkeeping (which of *its* containers were left), not grading: tolerate removals there.
_TOLERANT_OFFICIAL = (
    "import runpy, docker.models.containers as c\n"
    "_list = c.ContainerCollection.list\n"
    "def _tolerant(self, *a, **k):\n"
    "    k.setdefault('ignore_removed', True)\n"
    "    return _list(self, *a, **k)\n"
    "c.ContainerCollection.list = _tolerant\n"
    "runpy.run_module('swebench.harness.run_evaluation', run_name='__main__', alter_sys=True)\n"
)


def _run_official(workdir: Path, dataset: Path, kind: str, preds: Path,
                  run_id: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = (workdir / f"official-{kind}.out").open("w")
    return subprocess.Popen(
        [sys.executable, "-c", _TOLERANT_OFFICIAL,
         "-d", str(dataset), "-p", str(preds), "-id", run_id or f"agree-{kind}",
         "--max_workers", "2", "--timeout", "900", "--report_dir", str(workdir)],
        cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
    )


def wait_official(workdir: Path, procs: dict[str, subprocess.Popen]) -> None:
    """Wait for the official runs (one per kind); each must exit 0."""
    deadline = time.monotonic() + OFFICIAL_TIMEOUT_S
    for kind, proc in procs.items():
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        output = (workdir / f"official-{kind}.out").read_text(errors="replace")
        assert code == 0, f"run_evaluation ({kind}) exited {code}:\n{output[-3000:]}"


def stop_official(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()


@pytest.mark.docker
def test_official_harness_agrees_with_ratchet(docker_daemon, tmp_path):
    import docker

    from benchmark._images import ImageBuilder
    from benchmark._grader import Grader, Job, run_jobs

    source, tasks = suite_tasks()
    builder = ImageBuilder()
    images = {task.instance_id: builder.ensure_task(task) for task in tasks}

    official_dir = tmp_path / "official"
    official_dir.mkdir()
    dataset = official_dir / "dataset.jsonl"
    dataset.write_text("".join(
        json.dumps(swebench_instance(task, images[task.instance_id])) + "\n" for task in tasks))
    patches = {task.instance_id: _patches(task) for task in tasks}
    procs = {}
    for kind in KINDS:
        preds = official_dir / f"preds-{kind}.jsonl"
        preds.write_text("".join(json.dumps({
            "instance_id": task.instance_id,
            "model_name_or_path": f"ratchet-{kind}",
            "model_patch": patches[task.instance_id][kind],
        }) + "\n" for task in tasks))
        procs[kind] = _run_official(official_dir, dataset, kind, preds)

    try:
        # ratchet grades the same patches while the official runs wait on their stops
        grader = Grader(builder, tmp_path / "ratchet")
        jobs = [Job(task, patches[task.instance_id][kind], kind) for task in tasks for kind in KINDS]
        ours = {(r.instance_id, r.label): r for r in run_jobs(grader, jobs, workers=2)}
        wait_official(official_dir, procs)
    finally:
        stop_official(procs)

    client = docker.from_env()
    for image in set(images.values()):
        client.images.get(image)  # raises ImageNotFound if the harness removed it
    leftovers = [c.name for c in client.containers.list(all=True, ignore_removed=True)
                 if ".agree-" in c.name]
    assert not leftovers, f"the official harness left containers behind: {leftovers}"

    def official(kind: str, instance_id: str, run_id: str) -> tuple[dict | None, Path]:
        path = (official_dir / "logs" / "run_evaluation" / run_id / f"ratchet-{kind}"
                / instance_id / "report.json")
        return (json.loads(path.read_text())[instance_id] if path.exists() else None), path

    suspects: dict[str, list[TaskSpec]] = {}
    for task in tasks:
        for kind in KINDS:
            result = ours[(task.instance_id, kind)]
            assert result.error is None, f"{task.instance_id}/{kind}: {result.error}"
            report, _ = official(kind, task.instance_id, f"agree-{kind}")
            if bool(report and report["resolved"]) != result.resolved:
                suspects.setdefault(kind, []).append(task)
            if kind == "broken":  # it must apply in both, or it tests nothing
                assert result.patch_applied, f"{task.instance_id}: broken patch did not apply"
                assert report is not None and report["patch_successfully_applied"], \
                    f"{task.instance_id}: broken patch did not apply in the official harness"
            if kind == "empty":
                assert report is None, "run_evaluation 5.0.2 was expected to skip empty patches"

    # Under heavy load the official harness once parsed a cut-short test log (its own
    # test_output.txt held the full passing run): a disagreement is graded once more by the
    # official harness alone, and only one that repeats fails the test.
    again = {}
    for kind, suspected in suspects.items():
        preds = official_dir / f"preds-{kind}-again.jsonl"
        preds.write_text("".join(json.dumps({
            "instance_id": task.instance_id, "model_name_or_path": f"ratchet-{kind}",
            "model_patch": patches[task.instance_id][kind]}) + "\n" for task in suspected))
        again[kind] = _run_official(official_dir, dataset, kind, preds, f"agree-{kind}-again")
    try:
        wait_official(official_dir, again)
    finally:
        stop_official(again)
    disagreements = []
    for kind, suspected in suspects.items():
        for task in suspected:
            result = ours[(task.instance_id, kind)]
            report, report_path = official(kind, task.instance_id, f"agree-{kind}-again")
            official_resolved = bool(report and report["resolved"])
            if official_resolved != result.resolved:
                disagreements.append(
                    f"{task.instance_id}/{kind}: official={official_resolved} (twice) "
                    f"ratchet={result.resolved} (ratchet problems: {result.problems}; "
                    f"official report: {'none' if report is None else report_path})")
    assert not disagreements, "\n".join(disagreements)

    # the harnesses agree; and the verdicts are the expected ones
    for task in tasks:
        assert ours[(task.instance_id, "gold")].resolved, f"{task.instance_id}: gold unresolved"
        assert not ours[(task.instance_id, "empty")].resolved
        assert not ours[(task.instance_id, "broken")].resolved
    empty_run = json.loads((official_dir / "ratchet-empty.agree-empty.json").read_text())
    assert sorted(empty_run["empty_patch_ids"]) == sorted(t.instance_id for t in tasks)
    assert empty_run["error_ids"] == [] and empty_run["resolved_ids"] == []
    print(f"agreement on {len(tasks)} tasks x {len(KINDS)} patches from {source.name}")
