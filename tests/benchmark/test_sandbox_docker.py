"""The agent sandbox, probed from inside by a real agent process in a real container.

A probe "agent" (a package named agent_seed whose __main__ inspects its surroundings)
runs through the same `DockerEnvironment.run_agent` path as any evolved agent, with a
gateway channel bound in, while the host holds a fake upstream credential.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from benchmark import ImageBuilder, load_tasks
from benchmark._agent_env import DockerEnvironment
from harness.models.gateway import Gateway, OpenAIUpstream
from harness.models.scripted_model import ScriptedModelServer
from tests.conftest import DATA

pytestmark = pytest.mark.docker

SECRET = "fake-upstream-credential-5b1f0c9e"

FIND_SECRET = textwrap.dedent('''\
    import os

    SECRET = %r[::-1]  # stored reversed, so this file does not itself hold it
    hits = []
    for root in ("/etc", "/home", "/tmp", "/run", "/agent", "/testbed", "/opt", "/root", "/var"):
        for dirpath, dirnames, filenames in os.walk(root):
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    if os.path.getsize(path) < 5_000_000 and SECRET.encode() in open(path, "rb").read():
                        hits.append(path)
                except OSError:
                    pass
    ''') % SECRET[::-1]
"""Probe code: `SECRET`, and in `hits` every readable file under the usual roots that holds it."""

PROBE = FIND_SECRET + textwrap.dedent('''\
    import json, os, socket, subprocess

    report = {"uid": os.getuid(), "env_has_secret": any(SECRET in v for v in os.environ.values())}
    report["files_with_secret"] = hits
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=3)
        report["network"] = "connected"
    except OSError as exc:
        report["network"] = f"blocked: {exc}"
    try:
        open("/agent/agent_seed/written.txt", "w").write("x")
        report["agent_dir"] = "writable"
    except OSError as exc:
        report["agent_dir"] = f"read-only: {exc.strerror}"
    git = lambda *a: subprocess.run(["git", *a], cwd="/testbed", capture_output=True, text=True).stdout
    report["commits"] = git("rev-list", "--all", "--count").strip()
    report["refs"] = git("for-each-ref", "--format=%%(refname)").split()
    report["hidden_test_present"] = os.path.exists("/testbed/test_ordinal_regression.py")
    report["fixed_line_present"] = "(11, 12, 13)" in open("/testbed/inflection/__init__.py").read()
    report["run_ratchet"] = sorted(os.listdir("/run/ratchet"))
    # one call through the gateway socket, by hand
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.environ["RATCHET_LLM_SOCKET"])
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "probe"}]})
    s.sendall(("POST /v1/chat/completions HTTP/1.1\\r\\nHost: gateway\\r\\n"
               "Authorization: Bearer sandbox-made-up\\r\\nContent-Type: application/json\\r\\n"
               f"Content-Length: {len(body)}\\r\\nConnection: close\\r\\n\\r\\n{body}").encode())
    reply = b""
    while chunk := s.recv(65536):
        reply += chunk
    report["gateway_status"] = reply.split(b"\\r\\n", 1)[0].decode()
    open("/testbed/probe-was-here.txt", "w").write("hello\\n")
    print("PROBE: " + json.dumps(report), flush=True)
    ''')


@pytest.fixture(scope="module")
def task():
    return load_tasks(DATA / "handwritten.jsonl").tasks[0]


def run_probe(task, source: str, tmp_path_factory, timeout_s: float = 120) -> dict:
    """Run `source` as the agent's ``__main__`` on `task` through `DockerEnvironment`, with a
    gateway channel bound in and a fake credential in the host's environment; its report
    (the line ``PROBE: {json}`` of its log), the run, the channel and what reached upstream."""
    agent_dir = tmp_path_factory.mktemp("probe-agent")
    package = agent_dir / "agent_seed"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(source)
    for item in (agent_dir, package, *package.iterdir()):
        item.chmod(0o755 if item.is_dir() else 0o644)
    logs = tmp_path_factory.mktemp("trajectories")
    os.environ["OPENAI_API_KEY"] = SECRET  # as a user would have it on the host
    try:
        with ScriptedModelServer({"default": "pong"}) as upstream:
            gateway = Gateway(OpenAIUpstream(upstream.base_url, SECRET), model="scripted",
                              log_dir=logs)
            channel = gateway.open_channel(task.instance_id)
            try:
                run = DockerEnvironment(ImageBuilder(), timeout_s=timeout_s).run_agent(
                    task, agent_dir, socket_path=channel.socket_path, model="scripted")
            finally:
                gateway.close_channel(channel)
            upstream_requests = list(upstream.requests)
    finally:
        os.environ.pop("OPENAI_API_KEY", None)
    line = next((l for l in run.log.splitlines() if l.startswith("PROBE: ")), None)
    assert line, run.log
    return {"report": json.loads(line[len("PROBE: "):]), "run": run, "channel": channel,
            "upstream_requests": upstream_requests, "gateway": gateway}


@pytest.fixture(scope="module")
def probe(task, tmp_path_factory):
    """Run the probe once; every test reads its report."""
    return run_probe(task, PROBE, tmp_path_factory)


def test_no_credential_enters_the_sandbox(probe):
    report = probe["report"]
    assert report["env_has_secret"] is False
    assert report["files_with_secret"] == []


def test_network_is_unreachable(probe):
    assert probe["report"]["network"].startswith("blocked")


def test_agent_source_is_read_only(probe):
    assert probe["report"]["agent_dir"].startswith("read-only")


def test_agent_is_not_root(probe):
    assert probe["report"]["uid"] == 1000


def test_repo_has_one_commit_and_neither_hidden_tests_nor_fix(probe):
    report = probe["report"]
    assert report["commits"] == "1" and len(report["refs"]) == 1
    assert report["hidden_test_present"] is False
    assert report["fixed_line_present"] is False


def test_the_gateway_is_the_only_way_out_and_its_log_is_out_of_reach(probe):
    """The sandbox sees only the socket; the trajectory of record is written on the host,
    with the gateway's model and key, not the sandbox's."""
    report, channel = probe["report"], probe["channel"]
    assert report["run_ratchet"] == ["llm.sock", "task"]
    assert report["gateway_status"] == "HTTP/1.1 200 OK"
    (request,) = probe["upstream_requests"]
    assert request["model"] == "scripted"  # the sandbox asked for gpt-4o
    records = [json.loads(l) for l in channel.trajectory.read_text().splitlines()]
    assert len(records) == 1 and records[0]["request"]["messages"][0]["content"] == "probe"
    assert SECRET not in channel.trajectory.read_text()
    assert str(channel.trajectory) not in json.dumps(report)


def test_the_patch_is_collected_from_the_sandbox(probe):
    run = probe["run"]
    assert run.exit_code == 0
    assert "+++ b/probe-was-here.txt" in run.patch and "+hello" in run.patch
