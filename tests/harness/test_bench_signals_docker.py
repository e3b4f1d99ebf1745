"""A `ratchet bench` command stopped by SIGTERM ends like one stopped by Ctrl-C: the gradings
in flight finish, the containers it started (ahead of their jobs, or finished and waiting
for removal) are removed, it exits 143, and the work it finished is kept for `--resume`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from benchmark import docker_host, load_suite

pytestmark = pytest.mark.docker

RATCHET = str(Path(sys.executable).with_name("ratchet"))


def _containers(owner: str) -> list[str]:
    import docker

    client = docker.from_env()
    return [c.name for c in client.containers.list(
        all=True, filters={"label": f"{docker_host.CONTAINER_LABEL}={owner}"})]


def _reports(run: Path) -> int:
    return len(list(run.glob("*/*/report.json")))


def test_a_sigtermed_audit_leaves_nothing_running_and_resumes(tmp_path):
    task = next(t for t in load_suite("quickstart").tasks
                if t.instance_id == "toolz__toolz-1.2.0__dissoc-many-keys")
    suite = tmp_path / "one.jsonl"
    suite.write_text(task.model_dump_json(exclude_none=True) + "\n")
    owner = f"sigterm-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, docker_host.OWNER_ENV: owner, "RATCHET_RUNS": str(tmp_path / "runs"),
           "COLUMNS": "200"}
    command = [RATCHET, "bench", "audit", "--suite", str(suite), "--run-id", "a1"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    run = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if _reports(tmp_path / "runs" / "bench" / "a1") >= 3:
            run = tmp_path / "runs" / "bench" / "a1"
            break
        time.sleep(0.2)
    assert run is not None, "the audit did not get going: " + (proc.stderr.read() if proc.poll() is not None else "")
    proc.send_signal(signal.SIGTERM)
    out, errors = proc.communicate(timeout=120)
    assert proc.returncode == 143, errors[-2000:]
    assert "stopping (SIGTERM)" in errors
    assert _containers(owner) == []  # nothing started ahead, nothing finished, left behind
    done = _reports(run)
    assert 0 < done

    resumed = subprocess.run([*command, "--resume"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    summary = json.loads((run / "audit.json").read_text())["summary"]
    assert summary["attacks_resolved"] == 0 and summary["gold_resolved"] == 1
    assert _containers(owner) == []
