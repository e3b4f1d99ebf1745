"""Assembling the shipped suite from forge outputs: stratified splits, repeated bugs and
invalid tasks left out (`benchmark/forge/assemble.py`)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchmark.forge.assemble import assemble, stratified_splits

ROOT = Path(__file__).resolve().parents[2]
FORGED = ROOT / "benchmark" / "suites" / "forged.jsonl"


def _row(i: int, repo: str = "pkg", kind: str = "flip_compare", **extra) -> dict:
    return {"instance_id": f"{repo}__{repo}-1.0__ast-{kind}-{i:04d}", "repo": repo, "version": "1.0",
            "patch": f"gold {repo} {i}", "FAIL_TO_PASS": [f"tests/t.py::test_{repo}_{i}"],
            "split": "train", "forge": {"kind": kind}, **extra}


def _shipped() -> list[dict]:
    return [json.loads(line) for line in FORGED.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_stratified_splits_halve_each_package_and_kind_whatever_the_file_order():
    rows = ([_row(i, "a", "flip_compare") for i in range(7)] + [_row(i, "a", "remove_loop") for i in range(4)]
            + [_row(i, "b", "off_by_one") for i in range(9)])
    splits = stratified_splits(rows)
    assert Counter(splits.values()) == {"heldout": 10, "train": 10}
    for repo in ("a", "b"):
        held = sum(splits[r["instance_id"]] == "heldout" for r in rows if r["repo"] == repo)
        total = sum(r["repo"] == repo for r in rows)
        assert abs(2 * held - total) <= 1, (repo, held, total)
    loops = [splits[r["instance_id"]] for r in rows if r["forge"]["kind"] == "remove_loop"]
    assert Counter(loops) == {"heldout": 2, "train": 2}
    assert stratified_splits(list(reversed(rows))) == splits


def test_assemble_keeps_the_first_of_an_id_and_leaves_out_repeated_and_invalid_bugs(tmp_path):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    kept = [_row(i) for i in range(4)]
    first.write_text("".join(json.dumps(r) + "\n" for r in kept))
    again = {**kept[0], "problem_statement": "a later copy"}
    same_patch = {**_row(10), "patch": kept[1]["patch"]}
    same_tests = {**_row(11), "FAIL_TO_PASS": list(kept[2]["FAIL_TO_PASS"])}
    bad, fresh = _row(12), _row(13)
    second.write_text("".join(json.dumps(r) + "\n" for r in (again, same_patch, same_tests, bad, fresh)))
    rows, dropped = assemble([first, second], invalid={bad["instance_id"]})
    assert [r["instance_id"] for r in rows] == [r["instance_id"] for r in kept + [fresh]]
    assert "problem_statement" not in rows[0]
    assert dropped == {"same id": 1, "same bug": 2, "invalid": 1}
    assert {r["instance_id"]: r["split"] for r in rows} == stratified_splits(rows)


def test_the_command_writes_the_suite_and_refuses_a_missing_input(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(_row(i)) + "\n" for i in range(3)))
    done = subprocess.run([sys.executable, "-m", "benchmark.forge.assemble", str(out), str(src)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "3 tasks from 1 packages" in done.stdout and "1 train / 2 heldout" in done.stdout
    missing = subprocess.run([sys.executable, "-m", "benchmark.forge.assemble", str(tmp_path / "o2.jsonl"),
                              str(tmp_path / "nope.jsonl")], capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2 and "nope.jsonl is not a file" in missing.stderr
    assert not (tmp_path / "o2.jsonl").exists()


def test_the_shipped_suite_is_split_by_the_documented_rule_with_enough_held_out():
    """The `forged` suite (docs/forge.md): no package over ~a quarter of it, every split
    assigned by `stratified_splits` (half held out, rounded up). Issue 19 asks for at least
    200 tasks from 12 packages with 100 held out; the suite holds 208 tasks from 15 packages,
    104 held out."""
    rows = _shipped()
    packages = Counter(r["repo"] for r in rows)
    assert len(rows) >= 208 and len(packages) >= 15, packages
    assert Counter(r["split"] for r in rows)["heldout"] >= 100
    assert max(packages.values()) <= 0.26 * len(rows), packages
    assert {r["instance_id"]: r["split"] for r in rows} == stratified_splits(rows)
    assert Counter(r["split"] for r in rows)["heldout"] == (len(rows) + 1) // 2
    assert len({r["instance_id"] for r in rows}) == len(rows)


def test_two_commands_in_the_same_second_never_share_a_run_folder(tmp_path, monkeypatch):
    """Two forges started side by side in one second once wrote into one `forge-STAMP`
    folder, each overwriting the other's forge_report.json and baseline.log."""
    from harness.cli.common import _run_dir

    monkeypatch.setenv("RATCHET_RUNS", str(tmp_path))
    folders = [_run_dir("forge", None) for _ in range(3)]
    assert len(set(folders)) == 3 and all(f.is_dir() for f in folders)
    assert _run_dir("validate", "mine") == _run_dir("validate", "mine") == tmp_path / "bench" / "mine"
