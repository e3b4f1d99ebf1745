"""`ratchet bench run`: the real seed agent, in real sandboxes, through the real gateway,
against the scripted oracle model; resumable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import load_suite
from harness.models.oracle import ORACLE_USAGE, oracle_script
from harness.models.scripted_model import ScriptedModelServer
from tests.conftest import ROOT

RATCHET = str(Path(sys.executable).with_name("ratchet"))


def _ratchet(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run([RATCHET, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**env, "COLUMNS": "200"})


@pytest.mark.docker
def test_oracle_resolves_quickstart_and_a_rerun_redoes_only_unfinished_tasks():
    tasks = load_suite("quickstart").tasks
    out = _ratchet("bench", "run", "--agent", "agent_seed", "--suite", "quickstart",
                   "--scripted", "oracle", "--run-id", "oracle")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "SCRIPTED MODEL" in out.stdout
    run_dir = Path(os.environ["RATCHET_RUNS"]) / "bench" / "oracle"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resolved"] == len(tasks) == 9
    # every task took three scripted calls: the totals are the scripted usage, exactly
    assert summary["prompt_tokens"] == 3 * len(tasks) * ORACLE_USAGE.prompt_tokens
    assert summary["completion_tokens"] == 3 * len(tasks) * ORACLE_USAGE.completion_tokens
    predictions = [json.loads(l) for l in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert {p["instance_id"] for p in predictions} == {t.instance_id for t in tasks}
    assert all(p["model_patch"].startswith("diff --git") for p in predictions)
    trajectories = {t.instance_id: (run_dir / "trajectories" / f"{t.instance_id}.jsonl") for t in tasks}
    assert all(len(p.read_text().splitlines()) == 3 for p in trajectories.values())

    # a run killed before this task finished: its result is gone, everything else stays
    redo = tasks[4].instance_id
    (run_dir / "results" / f"{redo}.json").unlink()
    again = _ratchet("bench", "run", "--suite", "quickstart", "--scripted", "oracle",
                     "--run-id", "oracle")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("finished earlier, skipped") == len(tasks) - 1
    lines = {i: len(p.read_text().splitlines()) for i, p in trajectories.items()}
    assert lines.pop(redo) == 6 and set(lines.values()) == {3}
    assert json.loads((run_dir / "summary.json").read_text())["prompt_tokens"] == summary["prompt_tokens"]


def test_without_a_model_it_says_how_to_get_one():
    out = _ratchet("bench", "run", "--suite", "quickstart")
    assert out.returncode == 2
    assert "OPENAI_BASE_URL" in out.stderr and "--scripted oracle" in out.stderr


def test_an_unknown_agent_is_named():
    out = _ratchet("bench", "run", "--suite", "quickstart", "--agent", "no-such-ref",
                   "--scripted", "oracle")
    assert out.returncode == 2 and "'no-such-ref' is neither a directory nor a git ref" in out.stderr


def test_a_model_endpoint_that_is_down_is_named_before_anything_runs(tmp_path):
    """Nothing answers at OPENAI_BASE_URL: one error naming the URL before any task runs
    (exit 2, no predictions). An endpoint failing mid-run is an error, never a failed task:
    tests/harness/test_endpoint_failures_docker.py."""
    task = load_suite("quickstart").tasks[0]
    suite = tmp_path / "one.jsonl"
    suite.write_text(task.model_dump_json(exclude_none=True) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = subprocess.run([RATCHET, "bench", "run", "--suite", str(suite), "--model", "gpt-4o-mini",
                          "--run-id", "down"], capture_output=True, text=True, cwd=ROOT,
                         env={**env, "COLUMNS": "200", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                              "OPENAI_API_KEY": "not-a-key"})
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert "http://127.0.0.1:9/v1 does not answer" in out.stderr and "OPENAI_BASE_URL" in out.stderr
    assert not (Path(os.environ["RATCHET_RUNS"]) / "bench" / "down").exists()


@pytest.mark.docker
def test_a_429_burst_then_recovery_costs_no_task_its_verdict(tmp_path):
    """The endpoint answers the run's first four calls with 429 and ``Retry-After``, then
    recovers: the gateway waits it out and the task is resolved, not an error."""
    task = load_suite("quickstart").tasks[0]
    suite = tmp_path / "one.jsonl"
    suite.write_text(task.model_dump_json(exclude_none=True) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    with ScriptedModelServer(oracle_script([task])) as model:
        model.fail_next(4, 429, retry_after=0.5)
        out = subprocess.run([RATCHET, "bench", "run", "--suite", str(suite), "--model", "gpt-4o-mini",
                              "--run-id", "burst"], capture_output=True, text=True, cwd=ROOT,
                             env={**env, "COLUMNS": "200", "OPENAI_BASE_URL": model.base_url,
                                  "OPENAI_API_KEY": "not-a-key", "RATCHET_RETRY_SECONDS": "120"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((Path(os.environ["RATCHET_RUNS"]) / "bench" / "burst" / "summary.json").read_text())
    assert summary["resolved"] == 1 and summary["errors"] == 0
    assert model.refused_calls == 4 and len(model.requests) == 3  # the oracle's three turns
    assert "HTTP 429; retry" in out.stderr + out.stdout
