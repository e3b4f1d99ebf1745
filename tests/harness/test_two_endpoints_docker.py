"""A whole run with two endpoints, through the real CLI, real Docker sandboxes and real HTTP:
the agent's calls reach the agent's endpoint with the agent's key and settings, the meta
model's calls the meta endpoint with its own, and neither key is anywhere inside a sandbox
(the agent itself searches its sandbox's files and process environments for them).

Also: `ratchet run -c examples/run.yaml` (the shipped example) runs as it is."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark import ImageBuilder, load_suite
from benchmark import docker_host as _docker
from harness.cli.demo import demo_agent_script, demo_meta_script
from harness.loop.journal import Journal, replay
from harness.models.scripted_model import Rule, Script, ScriptedModelServer
from tests.conftest import ROOT
from tests.harness.conftest import new_workspace, quickstart_slice

pytestmark = pytest.mark.docker

RATCHET = str(Path(sys.executable).with_name("ratchet"))
AGENT_KEY, META_KEY = "agent-endpoint-key-9c1f3e7a", "meta-endpoint-key-4b2d8f60"
SLICE = ("toolz__toolz-1.2.0__dissoc-many-keys", "isodate__isodate-0.7.2__december-month-carry")
SCANNED = SLICE[1]


def _scan_command() -> str:
    """Search the sandbox's files and every readable process environment for either key. The
    keys travel base64-encoded, so the command itself never holds them."""
    encoded = " ".join(base64.b64encode(k.encode()).decode() for k in (AGENT_KEY, META_KEY))
    return (f"for e in {encoded}; do k=$(echo $e | base64 -d); "
            "grep -rlsF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -e \"$k\" / "
            "| sed 's/^/HIT-FILE /'; "
            "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -qF -e \"$k\" "
            "&& echo HIT-ENV; done; echo KEYSCAN-END")


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    return quickstart_slice(tmp_path, SLICE)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return new_workspace(tmp_path / "ws")


def _ratchet(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.run([RATCHET, *args], capture_output=True, text=True, cwd=cwd,
                          env={**base, "COLUMNS": "200", **(env or {})})


def test_two_endpoints_each_get_their_models_calls_with_their_key_and_no_key_enters_a_sandbox(
        workspace, suite, tmp_path):
    tasks = load_suite(str(suite)).tasks
    script = demo_agent_script(tasks)
    scanned = next(t for t in tasks if t.instance_id == SCANNED)
    solve = next(r for r in script.rules if r.any_contains and r.any_contains in scanned.problem_statement)
    scan = f"Checking the sandbox first.\n\n```bash\n{_scan_command()}\n```"
    agent_script = Script(rules=[Rule(any_contains=solve.any_contains, usage=solve.usage,
                                      replies=[scan, *solve.replies]), *script.rules])
    run_file = tmp_path / "two.yaml"
    prices = tmp_path / "prices.json"  # a local endpoint is free; the paid one has a price
    prices.write_text(json.dumps({"local-coder": [0, 0], "paid-meta": [3.0, 15.0]}))
    with ScriptedModelServer(agent_script, api_key=AGENT_KEY) as agent, \
            ScriptedModelServer(demo_meta_script(), api_key=META_KEY) as meta:
        run_file.write_text(yaml.safe_dump({
            "suite": str(suite), "generations": 1, "run_id": "two", "workers": 2,
            "models": {
                "agent": {"name": "local-coder", "base_url": agent.base_url,
                          "api_key_env": "AGENT_API_KEY", "kwargs": {"top_k": 20}},
                "meta": {"name": "paid-meta", "base_url": meta.base_url,
                         "api_key_env": "META_API_KEY", "kwargs": {"temperature": 0.7}}}}))
        out = _ratchet("run", "-c", str(run_file), cwd=workspace,
                       env={"AGENT_API_KEY": AGENT_KEY, "META_API_KEY": META_KEY,
                            "RATCHET_PRICES": str(prices)})
        agent_requests, meta_requests = list(agent.requests), list(meta.requests)
        refused = (agent.unauthorized, meta.unauthorized)
    assert out.returncode == 0, out.stdout + out.stderr
    # a real model priced at $0 (the local endpoint) is announced; the paid one is not
    assert "model 'local-coder' is priced at $0" in out.stdout, out.stdout
    assert "model 'paid-meta' is priced at $0" not in out.stdout
    assert "forecast: $" in out.stdout and "per generation so far" in out.stdout
    state = replay(Journal.read(workspace / "runs" / "two" / "journal.jsonl"))
    assert state.generations[1].recorded and state.generations[1].proposal_valid

    # each endpoint got its own model's calls, with its key (else it would have answered 401)
    assert refused == (0, 0)
    assert agent_requests and meta_requests
    assert {r["model"] for r in agent_requests} == {"local-coder"}
    assert {r["model"] for r in meta_requests} == {"paid-meta"}
    assert all(r["top_k"] == 20 for r in agent_requests)
    assert all(r["temperature"] == 0.7 for r in meta_requests)
    assert not any("<diagnosis>" in str(r["messages"]) for r in agent_requests)  # no meta call there

    # the sandbox searched itself: the scan ran and found neither key anywhere
    observed = [m["content"] for r in agent_requests for m in r["messages"]
                if m["role"] == "user" and "KEYSCAN-END" in str(m["content"])]
    assert observed, "the scan's output never came back"
    # only the scan's output counts: a timed-out command is echoed back, HIT- and all
    assert not any("HIT-" in str(text).split("<output>", 1)[-1] for text in observed), observed

    # nor is either key in anything the run wrote; the settings name only the variables
    for path in (workspace / "runs" / "two").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert AGENT_KEY.encode() not in data and META_KEY.encode() not in data, path
    settings = (workspace / "runs" / "two" / "settings.json").read_text()
    assert "AGENT_API_KEY" in settings and "META_API_KEY" in settings

    status = _ratchet("status", "two", cwd=workspace)
    assert "paid-meta" in status.stdout and "temperature: 0.7" in status.stdout

    # the scan is not blind: in a sandbox of the same image that does hold a key, it finds it
    image = ImageBuilder().ensure_task(scanned)
    leaky = _docker.run_script(image, _scan_command(), timeout_s=120, user="1000",
                               environment={"LEAKED": META_KEY, "HOME": "/tmp"})
    assert "HIT-ENV" in leaky.log and "KEYSCAN-END" in leaky.log


def test_the_shipped_example_run_file_runs(workspace):
    """`ratchet run -c examples/run.yaml`: the scripted demo, no endpoint (one generation
    here, to keep the suite quick; the file says 2)."""
    out = _ratchet("run", "-c", str(ROOT / "examples" / "run.yaml"), "--generations", "1",
                   "--run-id", "ex", cwd=workspace)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SCRIPTED DEMO" in out.stdout
    # after generation 0, the forecast (issue 17): spend per generation and what is left to go
    assert "forecast: $0.0000 per generation so far ($0.0000 over 1); no budget set; " \
           "1 generation(s) to go" in out.stdout, out.stdout
    state = replay(Journal.read(workspace / "runs" / "ex" / "journal.jsonl"))
    assert state.generations[1].recorded
    assert state.generations[1].verdict == "accepted"  # the demo's fix of the seed's fences
