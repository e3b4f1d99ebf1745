"""The seed agent, run for real: its self-check, and end-to-end runs against a real HTTP
server speaking the chat-completions protocol with scripted answers, over TCP
(OPENAI_BASE_URL) and over a unix socket (RATCHET_LLM_SOCKET, as in the sandbox)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import socketserver
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.models._http import send_json

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "agent_seed"
MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
RUNTIME_DEPS = {"openai", "jinja2", "yaml", "httpx2", "httpx"}  # httpx*: openai's own client


# --- a scripted chat-completions server (TCP or unix socket) --------------------------

class ChatHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        with server.lock:
            server.requests.append({"path": self.path, "body": body,
                                    "authorization": self.headers.get("Authorization")})
            answer = server.answers.pop(0) if server.answers else (402, "budget exhausted")
        status, content = answer if isinstance(answer, tuple) else (200, answer)
        if status == 200:
            payload = {"id": f"c{len(server.requests)}", "object": "chat.completion",
                       "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
        else:
            payload = {"error": {"message": content, "type": "refused", "code": status}}
        send_json(self, status, payload)

    def log_message(self, *args) -> None:
        pass


class UnixChatServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(server, answers):
    server.answers, server.requests, server.lock = list(answers), [], threading.Lock()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def tcp_server():
    servers = []

    def start(answers):
        servers.append(serve(ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler), answers))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def unix_server(tmp_path):
    servers = []

    def start(answers):
        servers.append(serve(UnixChatServer(str(tmp_path / "llm.sock"), ChatHandler), answers))
        return servers[-1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# --- helpers -------------------------------------------------------------------------

def bash(command: str) -> str:
    return f"Next step.\n\n```bash\n{command}\n```"


FIX_SCRIPT = [
    bash("grep -n 'def mean' -A3 stats.py"),
    bash("sed -i 's|return sum(xs) / (len(xs) + 1)|return sum(xs) / len(xs)|' stats.py"),
    bash(f"{sys.executable} -c 'import stats; assert stats.mean([1, 2, 3]) == 2; print(\"ok\")'"),
    bash(f"echo {MARKER}"),
]


def make_task(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "testbed"
    repo.mkdir()
    (repo / "stats.py").write_text("def mean(xs):\n    return sum(xs) / (len(xs) + 1)\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run([*git, *args], cwd=repo, check=True)
    problem = tmp_path / "problem.txt"
    problem.write_text("stats.mean([1, 2, 3]) returns 1.5, expected 2.")
    return repo, problem


def run_agent(tmp_path: Path, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    repo, problem = make_task(tmp_path)
    clean = {k: v for k, v in os.environ.items()
             if k not in {"OPENAI_BASE_URL", "OPENAI_API_KEY", "RATCHET_LLM_SOCKET", "RATCHET_MODEL"}}
    return subprocess.run(
        [sys.executable, "-m", "agent_seed", "run", "--problem", str(problem),
         "--repo", str(repo), "--out", str(tmp_path / "out")],
        cwd=cwd, env={**clean, "RATCHET_MODEL": "scripted-model", **env},
        capture_output=True, text=True, check=False, timeout=120)


def trajectory(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "trajectory.json").read_text())


def diff(tmp_path: Path) -> str:
    return subprocess.run(["git", "diff"], cwd=tmp_path / "testbed",
                          capture_output=True, text=True, check=True).stdout


# --- tests ---------------------------------------------------------------------------

def test_selfcheck_passes():
    """`python -m agent_seed selfcheck` passes on the shipped seed agent."""
    proc = subprocess.run([sys.executable, "-m", "agent_seed", "selfcheck"], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].endswith("0 failed")


BREAKAGES = {
    "syntax error in agent.py": ("agent.py", "def step(self) -> None:", "def step(self) -> None"),
    "syntax error in errors.py": ("errors.py", "class ModelError", "class ModelError("),
    "undefined template variable": ("config.yaml", "<returncode>{{ returncode }}",
                                    "<returncode>{{ return_code }}"),
    "broken template syntax": ("config.yaml", "{% if lessons %}", "{% if lessons %"),
    "unknown config key": ("config.yaml", "step_limit: 30", "step_limit: 30\nstep_limitt: 5"),
    "submit never detected": ("agent.py", "lines[0].strip() ==", "lines[0].strip() !="),
    "broken gateway client": ("model.py", 'base_url="http://gateway/v1"', 'base_url="http://gateway/v2"'),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_selfcheck_rejects_a_broken_agent(tmp_path, breakage):
    """A broken edit anywhere in the agent (code, template, config) fails the self-check,
    which is what lets the proposer reject it."""
    name, old, new = BREAKAGES[breakage]
    copy = tmp_path / "agent_seed"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    text = (copy / name).read_text()
    assert old in text, f"the breakage no longer applies: {old!r} not in {name}"
    (copy / name).write_text(text.replace(old, new, 1))
    proc = subprocess.run([sys.executable, "-m", "agent_seed", "selfcheck"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)},
                          capture_output=True, text=True, check=False, timeout=180)
    assert proc.returncode != 0, proc.stdout + proc.stderr


def test_agent_fixes_a_bug_over_tcp(tmp_path, tcp_server):
    """With OPENAI_BASE_URL and no credential, the agent fixes the bug and submits (exit 0)."""
    server = tcp_server(FIX_SCRIPT)
    proc = run_agent(tmp_path, {"OPENAI_BASE_URL": f"http://127.0.0.1:{server.server_port}/v1"})
    assert proc.returncode == 0, proc.stderr
    assert "+    return sum(xs) / len(xs)" in diff(tmp_path)
    saved = trajectory(tmp_path)
    assert saved["exit_status"] == "submitted" and saved["steps"] == 4
    assert saved["usage"]["total_tokens"] == 60
    assert len(server.requests) == 4
    assert all(r["body"]["model"] == "scripted-model" for r in server.requests)
    # the model saw its command's output: the 4th request holds the test run's "ok"
    last = server.requests[3]["body"]["messages"][-1]
    assert last["role"] == "user" and "<returncode>0</returncode>" in last["content"]
    assert "ok" in last["content"]


def test_agent_talks_to_the_gateway_over_a_unix_socket(tmp_path, unix_server):
    """With RATCHET_LLM_SOCKET set, every call goes over the socket with the dummy key,
    even when OPENAI_BASE_URL points elsewhere."""
    server = unix_server(FIX_SCRIPT)
    proc = run_agent(tmp_path, {"RATCHET_LLM_SOCKET": str(tmp_path / "llm.sock"),
                                "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert proc.returncode == 0, proc.stderr
    assert "+    return sum(xs) / len(xs)" in diff(tmp_path)
    assert trajectory(tmp_path)["exit_status"] == "submitted"
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions"] * 4
    assert server.requests[0]["authorization"] == "Bearer sandbox"


def test_agent_runs_from_a_read_only_mount_style_path(tmp_path, unix_server):
    """As in the sandbox: the source is elsewhere (PYTHONPATH=/agent), run from any cwd."""
    agent_dir = tmp_path / "agent"
    shutil.copytree(PACKAGE, agent_dir / "agent_seed", ignore=shutil.ignore_patterns("__pycache__"))
    os.chmod(agent_dir / "agent_seed", 0o555)
    server = unix_server(FIX_SCRIPT)
    try:
        proc = run_agent(tmp_path, {"RATCHET_LLM_SOCKET": str(tmp_path / "llm.sock"),
                                    "PYTHONPATH": str(agent_dir), "PYTHONDONTWRITEBYTECODE": "1"},
                         cwd=tmp_path)
    finally:
        os.chmod(agent_dir / "agent_seed", 0o755)
    assert proc.returncode == 0, proc.stderr
    assert len(server.requests) == 4


def test_budget_refusal_ends_the_run_cleanly(tmp_path, tcp_server):
    """A 402 from the gateway ends the run with exit status model_error, recorded in the
    trajectory, and no traceback."""
    server = tcp_server([FIX_SCRIPT[0], (402, "budget of run exhausted")])
    proc = run_agent(tmp_path, {"OPENAI_BASE_URL": f"http://127.0.0.1:{server.server_port}/v1"})
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr
    saved = trajectory(tmp_path)
    assert saved["exit_status"] == "model_error"
    assert "402" in saved["result"] and "budget of run exhausted" in saved["result"]
    assert saved["steps"] == 2 and len(saved["messages"]) == 4


def test_step_limit_gives_a_non_zero_exit(tmp_path, tcp_server):
    """A model that never submits is stopped by the step limit, exit code non-zero."""
    server = tcp_server([bash("echo still working")] * 40)
    proc = run_agent(tmp_path, {"OPENAI_BASE_URL": f"http://127.0.0.1:{server.server_port}/v1"})
    assert proc.returncode == 3, proc.stderr
    assert trajectory(tmp_path)["exit_status"] == "limits_exceeded"
    assert len(server.requests) == 30


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_agent_seed_never_imports_harness_or_benchmark():
    """agent_seed is untrusted once evolved: it must not depend on the trusted packages."""
    for path in PACKAGE.rglob("*.py"):
        assert not _imported_modules(path) & {"harness", "benchmark"}, path


def test_agent_seed_imports_only_its_runtime_deps_and_the_stdlib():
    """The sandbox venv has openai, jinja2 and pyyaml only; nothing else may be imported."""
    for path in PACKAGE.rglob("*.py"):
        extra = _imported_modules(path) - set(sys.stdlib_module_names) - RUNTIME_DEPS
        assert not extra, f"{path.name} imports {sorted(extra)}"
