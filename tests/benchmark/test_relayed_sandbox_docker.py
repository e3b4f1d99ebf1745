"""The agent runtime for images that are not ratchet's, probed from inside: an official-format
row on the SWE-bench-layout image (no agent runtime, no sandbox user, root-owned /testbed).

A probe "agent" runs through the same `DockerEnvironment.run_agent` path as any evolved
agent: in ratchet's agent image, its commands sent through the exec relay into the task
container. It reports what it sees in both containers while the host holds a fake upstream
credential (the checks of test_sandbox_docker.py, for two containers).
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from benchmark._task import TaskSpec
from tests.benchmark.swebench_layout import build_layout_image, official_rows
from tests.benchmark.test_sandbox_docker import FIND_SECRET, SECRET, run_probe

pytestmark = pytest.mark.docker

RELAY_CLIENT = textwrap.dedent('''\
    import http.client, json, os, socket

    class Unix(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(os.environ["RATCHET_EXEC_SOCKET"])

    def relayed(command, timeout_s=60):
        c = Unix("relay", timeout=timeout_s + 60)
        c.request("POST", "/exec", json.dumps({"command": command, "cwd": "/testbed",
                                               "timeout_s": timeout_s}))
        return json.loads(c.getresponse().read())
    ''')
"""Probe code: `relayed(command)`, a command sent to the exec relay, its reply."""

PROBE = FIND_SECRET + RELAY_CLIENT + textwrap.dedent('''\
    report = {"agent": {"uid": os.getuid(), "files_with_secret": hits,
                        "env_has_secret": any(SECRET in v for v in os.environ.values()),
                        "testbed": os.path.exists("/testbed"),
                        "docker_socket": os.path.exists("/var/run/docker.sock"),
                        "run_ratchet": sorted(os.listdir("/run/ratchet"))}}
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=3)
        report["agent"]["network"] = "connected"
    except OSError as exc:
        report["agent"]["network"] = f"blocked: {exc}"
    for what, path in (("agent_dir", "/agent/agent_seed/written.txt"), ("root", "/usr/written.txt")):
        try:
            open(path, "w").write("x")
            report["agent"][what] = "writable"
        except OSError as exc:
            report["agent"][what] = f"read-only: {exc.strerror}"
    task = {}
    task["uid"] = relayed("id -u")["output"].strip()
    task["cap_eff"] = relayed("grep CapEff /proc/self/status")["output"].split()[-1]
    task["env_has_secret"] = relayed("env | grep -c %s || true" % SECRET)["output"].strip()
    task["secret_files"] = relayed("grep -rls %s /etc /home /tmp /run /opt /root /testbed "
                                   "2>/dev/null | head; true" % SECRET)["output"].strip()
    task["network"] = relayed("timeout 5 bash -c 'echo > /dev/tcp/1.1.1.1/53' 2>&1 && echo connected")
    task["agent_visible"] = relayed("ls /agent /run/ratchet 2>&1; test -e /var/run/docker.sock "
                                    "&& echo DOCKER")["output"]
    task["python"] = relayed("python -c 'import sys; print(sys.prefix)'")["output"].strip()
    task["write"] = relayed("echo hello > probe-was-here.txt && git status --short")
    report["task"] = task
    print("PROBE: " + json.dumps(report), flush=True)
    ''')


@pytest.fixture(scope="module")
def official_task(docker_daemon):
    layout, head = build_layout_image()
    row = official_rows()[0]
    assert head == row["base_commit"]
    return TaskSpec.model_validate({**row, "image": layout})


@pytest.fixture(scope="module")
def probe(official_task, tmp_path_factory):
    assert official_task.is_official
    return run_probe(official_task, PROBE, tmp_path_factory, timeout_s=180)


def test_no_credential_enters_either_container(probe):
    agent, task = probe["report"]["agent"], probe["report"]["task"]
    assert agent["env_has_secret"] is False and agent["files_with_secret"] == []
    assert task["env_has_secret"] == "0" and task["secret_files"] == ""


def test_neither_container_reaches_the_network(probe):
    agent, task = probe["report"]["agent"], probe["report"]["task"]
    assert agent["network"].startswith("blocked")
    assert "connected" not in task["network"]["output"] and task["network"]["returncode"] != 0


def test_the_agent_container_is_read_only_and_holds_no_repo_and_no_docker_socket(probe):
    agent = probe["report"]["agent"]
    assert agent["agent_dir"].startswith("read-only") and agent["root"].startswith("read-only")
    assert agent["testbed"] is False and agent["docker_socket"] is False
    assert agent["run_ratchet"] == ["exec.sock", "llm.sock", "task"]
    assert agent["uid"] == 1000


def test_commands_run_in_the_task_container_as_a_user_without_capabilities(probe):
    """The task container keeps root's CHOWN (to give /testbed to the sandbox user); the
    sandbox user has no capability at all, and nothing of the agent is there."""
    task = probe["report"]["task"]
    assert task["uid"] == "1000"
    assert int(task["cap_eff"], 16) == 0
    assert "No such file" in task["agent_visible"] and "DOCKER" not in task["agent_visible"]
    assert task["python"] == "/opt/miniconda3/envs/testbed"  # the row's environment, entered


def test_the_patch_is_collected_from_the_task_container(probe):
    run = probe["run"]
    assert run.exit_code == 0 and run.relayed_commands == 8
    assert probe["report"]["task"]["write"]["output"].strip() == "?? probe-was-here.txt"
    assert "+++ b/probe-was-here.txt" in run.patch and "+hello" in run.patch


def test_the_run_time_limit_holds_while_a_relayed_command_runs(official_task, tmp_path_factory):
    """An agent whose command would run for an hour: the run ends at its limit (the relay's
    ceiling is the run's), as the agent's failure, not an infrastructure error, and nothing
    of the command is left behind to touch the patch."""
    import time

    source = RELAY_CLIENT + textwrap.dedent('''\
        print("PROBE: {}", flush=True)
        relayed("echo started > started.txt; sleep 3600; echo late > late.txt", timeout_s=3600)
        ''')
    started = time.monotonic()
    run = run_probe(official_task, source, tmp_path_factory, timeout_s=40)["run"]
    assert time.monotonic() - started < 120
    assert run.timed_out and run.relayed_commands == 1
    assert "+++ b/started.txt" in run.patch and "late.txt" not in run.patch


def test_bench_run_resolves_an_official_row_with_the_agent_in_its_own_container(
        official_task, tmp_path):
    """`ratchet bench run` as a user runs it, on an official-format row (the twelve fields and
    the image): the seed agent, driven by the scripted oracle, edits the repo through the
    relay, the harness takes the patch from the task container and the row's spec grades it."""
    import subprocess
    import sys
    from pathlib import Path

    row = {**official_rows()[0], "image": official_task.image}
    suite = tmp_path / "official.jsonl"
    suite.write_text(json.dumps(row) + "\n")
    ratchet = str(Path(sys.executable).with_name("ratchet"))
    out = subprocess.run([ratchet, "bench", "run", "--suite", str(suite), "--scripted", "oracle",
                          "--run-id", "relayed", "--workers", "1",
                          "--agent", str(Path(__file__).resolve().parents[2])],
                         capture_output=True, text=True, cwd=tmp_path, timeout=1200,
                         env={**os.environ, "COLUMNS": "240", "RATCHET_RUNS": str(tmp_path / "runs")})
    assert out.returncode == 0, out.stdout + out.stderr
    run_dir = tmp_path / "runs" / "bench" / "relayed"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["tasks"] == 1 and summary["resolved"] == 1 and summary["errors"] == 0, summary
    (prediction,) = [json.loads(l) for l in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert "src/isodate/duration.py" in prediction["model_patch"]
    outcome = summary["per_task"][row["instance_id"]]
    assert outcome["submitted"] and not outcome["tampered"]


def test_ratchet_run_evolves_the_agent_on_an_official_row(official_task, tmp_path):
    """`ratchet run` on the official-format row (scripted demo models): generation 0 is
    evaluated through the relay and resolves; the candidate passes the harness's checks
    (the smoke test runs relayed, the agent's self-check in ratchet's agent image) and is
    evaluated too, with no infrastructure error anywhere."""
    import subprocess
    import sys
    from pathlib import Path

    from harness.loop.journal import Journal, replay
    from tests.harness.conftest import new_workspace

    workspace = new_workspace(tmp_path / "ws")
    suite = tmp_path / "official.jsonl"
    suite.write_text(json.dumps({**official_rows()[0], "image": official_task.image}) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    out = subprocess.run([str(Path(sys.executable).with_name("ratchet")), "run", "--suite",
                          str(suite), "--generations", "1", "--scripted", "demo", "--run-id", "off"],
                         capture_output=True, text=True, cwd=workspace, timeout=1800,
                         env={**env, "COLUMNS": "200"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    events = Journal.read(workspace / "runs" / "off" / "journal.jsonl")
    evaluated = [e for e in events if e["event"] == "task_evaluated"]
    # an infrastructure error is never journaled as an evaluation: both generations have one
    assert {e["generation"] for e in evaluated} == {0, 1}, out.stdout[-3000:]
    assert all(not e["result"]["error"] for e in evaluated)
    state = replay(events)
    assert state.generations[0].score["resolved"] == 1
    assert state.generations[1].verdict in ("accepted", "rejected"), state.generations[1]


def test_bench_run_says_once_when_the_agent_image_cannot_be_made(official_task, tmp_path):
    """No agent image (here: RATCHET_BASE_IMAGE names an image that is not there): one clear
    error before any task runs, not one infrastructure error per task."""
    import subprocess
    import sys
    from pathlib import Path

    suite = tmp_path / "official.jsonl"
    suite.write_text(json.dumps({**official_rows()[0], "image": official_task.image}) + "\n")
    out = subprocess.run([str(Path(sys.executable).with_name("ratchet")), "bench", "run",
                          "--suite", str(suite), "--scripted", "oracle", "--run-id", "noimage",
                          "--agent", str(Path(__file__).resolve().parents[2])],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "COLUMNS": "240", "RATCHET_RUNS": str(tmp_path / "runs"),
                              "RATCHET_BASE_IMAGE": "ratchet-test/no-such-base:missing"})
    assert out.returncode == 2, out.stdout + out.stderr
    assert "the agent's own image" in out.stderr and "RATCHET_BASE_IMAGE" in out.stderr
    assert not list((tmp_path / "runs" / "bench" / "noimage").rglob("results/*.json"))
