"""`ratchet bench` end to end: real CLI process, real Docker, files a user would write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA

RATCHET = str(Path(sys.executable).with_name("ratchet"))
HANDWRITTEN = str(DATA / "handwritten.jsonl")


def _ratchet(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([RATCHET, *args], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "COLUMNS": "200"})


@pytest.mark.docker
def test_validate_reports_valid_and_writes_logs(tmp_path: Path):
    out = _ratchet("bench", "validate", "--suite", HANDWRITTEN, "--run-id", "v1", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1/1 valid" in out.stdout
    runs = Path(__import__("os").environ["RATCHET_RUNS"]) / "bench" / "v1"
    validation = json.loads((runs / "validation.json").read_text())
    assert validation["inflection__ordinal-13th"]["valid"] is True
    assert (runs / "inflection__ordinal-13th" / "gold" / "eval.log").read_text().count("PASSED") == 3


@pytest.mark.docker
def test_grade_writes_a_swebench_shaped_report(tmp_path: Path):
    task = json.loads(Path(HANDWRITTEN).read_text())
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"instance_id": task["instance_id"], "model_name_or_path": "m",
                                 "model_patch": task["patch"]}) + "\n"
                     + json.dumps({"instance_id": "not-in-suite", "model_patch": ""}) + "\n")
    out = _ratchet("bench", "grade", "--suite", HANDWRITTEN, "--predictions", str(preds),
                   "--run-id", "g1", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "not-in-suite, which is not in the suite" in out.stderr
    report = json.loads((Path(__import__("os").environ["RATCHET_RUNS"]) / "bench" / "g1" / "report.json").read_text())
    assert report["resolved_ids"] == [task["instance_id"]] and report["schema_version"] == 2
    assert report["model_name_or_path"] == "m"


def test_malformed_task_file_gets_one_clear_message(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    row = json.loads(Path(HANDWRITTEN).read_text())
    row["FAIL_TO_PASS"] = 7
    bad.write_text(json.dumps(row) + "\n")
    out = _ratchet("bench", "validate", "--suite", str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert f"{bad}, instance inflection__ordinal-13th, field 'FAIL_TO_PASS'" in out.stderr
    assert "holds no usable task" in out.stderr


def test_malformed_predictions_file_is_named(tmp_path: Path):
    preds = tmp_path / "preds.jsonl"
    preds.write_text('{"instance_id": "x", "model_patch": 3}\n')
    out = _ratchet("bench", "grade", "--suite", HANDWRITTEN, "--predictions", str(preds), cwd=tmp_path)
    assert out.returncode == 2
    assert "instance x, field 'model_patch': must be a string or null" in out.stderr
