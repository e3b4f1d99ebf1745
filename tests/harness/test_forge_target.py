"""`ratchet forge --target RUN`: the run's best generation is read from its directory
(`harness.read.forge_target`), and bad targets are one clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.read.forge_target import TargetError, read_target
from tests.benchmark.test_forge_curriculum import _forged_outcomes
from tests.conftest import ROOT


def _fake_run(root: Path, run: str, outcomes: dict[str, bool], suite: str = "forged") -> None:
    """A run directory as the loop leaves it: journal, settings, the best generation's metrics."""
    run_dir = root / "runs" / run
    (run_dir / "gens" / "0000").mkdir(parents=True)
    (run_dir / "journal.jsonl").write_text(json.dumps(
        {"seq": 1, "ts": "2026-12-04T00:00:00+00:00", "event": "run_started", "run": run,
         "resumed": False, "settings": {}}) + "\n")
    (run_dir / "settings.json").write_text(json.dumps({"run": run, "suite": suite}))
    (run_dir / "gens" / "0000" / "metrics.json").write_text(json.dumps({"tasks": outcomes}))


def test_read_target_reads_the_best_generation_of_a_run(tmp_path):
    tasks, outcomes = _forged_outcomes()
    _fake_run(tmp_path, "r1", outcomes)
    curriculum = read_target(tmp_path, "r1")
    assert curriculum.run == "r1" and curriculum.generation == 0
    assert curriculum.package() == "tabulate==0.10.0"


@pytest.mark.parametrize("run, outcomes, message", [
    ("missing", None, "no run missing"),
    ("empty", {}, "scored on no task"),
])
def test_read_target_refuses_what_it_cannot_use(tmp_path, run, outcomes, message):
    if outcomes is not None:
        _fake_run(tmp_path, run, outcomes)
    with pytest.raises(TargetError, match=message):
        read_target(tmp_path, run)


def test_cli_target_and_statement_errors_are_one_clear_line(tmp_path):
    """`--target` of an unknown run, neither --package nor --target, `--statements model`
    with no endpoint, an unknown writer: exit 2, one error, nothing written."""
    ratchet = str(Path(sys.executable).parent / "ratchet")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_BASE_URL"}
    env["RATCHET_RUNS"] = str(tmp_path / "runs")
    out = tmp_path / "out.jsonl"
    for args, message in ((["--target", "no-such-run"], "no run no-such-run"),
                          ([], "--package NAME==VERSION is required"),
                          (["--package", "x==1", "--statements", "model"], "needs a model"),
                          (["--package", "x==1", "--statements", "poetry"], "must be auto, model or plain")):
        result = subprocess.run([ratchet, "forge", "--out", str(out), *args], capture_output=True,
                                text=True, env=env, cwd=ROOT, timeout=120, check=False)
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in result.stdout + result.stderr
        assert not out.exists()
