"""Offline self-checks of the agent: ``python -m agent_seed selfcheck``.

Runs the real loop, driven by the shipped ``ScriptedModel``, on throw-away git repos, and
the real openai client against a stdlib HTTP server on a unix socket. Needs only the
runtime deps (openai, jinja2, pyyaml), the standard library, bash and git: no pytest, no
network. Prints one line per check and ``N passed, M failed``; exits 0 only if all pass.
The proposer runs this to reject a broken edit of the agent, so every module is compiled
and imported and every template rendered through the code paths the agent uses.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
BUGGY = "def add(a, b):\n    return a - b\n"


def bash(command: str) -> str:
    return f"I will run this.\n\n```bash\n{command}\n```\n"


def make_repo(root: Path) -> Path:
    """A one-commit git repo with a bug in calc.add, like /testbed."""
    repo = root / "repo"
    repo.mkdir()
    (repo / "calc.py").write_text(BUGGY)
    git = ["git", "-c", "user.name=selfcheck", "-c", "user.email=selfcheck@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=repo, check=True)
    return repo


def run_agent(replies, root: Path, **config_changes):
    from .agent import Agent
    from .config import load_config
    from .model import ScriptedModel

    config = load_config().replace(**config_changes)
    model = ScriptedModel(replies)
    agent = Agent(model, config, repo=make_repo(root), out_dir=root / "out")
    status, result = agent.run("calc.add(2, 3) returns -1 instead of 5.")
    return agent, model, status, result


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def check_modules_compile_and_import(root: Path) -> None:
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        if path.stem != "__main__":
            importlib.import_module(f"{__package__}.{path.stem}" if path.stem != "__init__" else __package__)


def check_config_and_templates(root: Path) -> None:
    from .agent import Agent
    from .config import TEMPLATE_NAMES, load_config
    from .model import ScriptedModel

    config = load_config()
    agent = Agent(ScriptedModel([]), config, repo=root)
    samples: dict[str, dict[str, object]] = {
        "system": {}, "instance": {"problem_statement": "x"}, "format_error": {"n_blocks": 0},
        "observation": {"command": "ls", "returncode": 0, "output": "x", "elided": 5},
        "timeout": {"command": "sleep 9", "timeout_s": 1, "output": "x", "elided": 5},
    }
    for name in TEMPLATE_NAMES:
        expect(agent.render(name, **samples[name]).strip() != "", f"template {name} renders empty")
    system = agent.render("system")
    expect(config.submit_marker in system, "the system prompt does not name the submit marker")
    expect(config.lessons() in system, "the lessons are not in the system prompt")


def check_scripted_fix_submits(root: Path) -> None:
    agent, _, status, result = run_agent([
        bash("cat calc.py"),
        bash("sed -i 's/a - b/a + b/' calc.py"),
        bash("python3 -c 'import calc; assert calc.add(2, 3) == 5; print(\"fixed\")'"),
        bash(f"echo {MARKER}"),
    ], root)
    expect(status == "submitted", f"exit status {status!r}, result {result[:300]!r}")
    diff = subprocess.run(["git", "diff"], cwd=agent.repo, capture_output=True, text=True,
                          check=True).stdout
    expect("+    return a + b" in diff, f"the fix is not in git diff: {diff!r}")
    expect("fixed" in agent.messages[-2]["content"], "the test output was not observed")
    saved = json.loads((root / "out" / "trajectory.json").read_text())
    expect(saved["exit_status"] == "submitted", f"saved trajectory says {saved['exit_status']!r}")
    expect(len(saved["messages"]) == len(agent.messages), "saved trajectory is not the last state")


def check_format_error_continues(root: Path) -> None:
    agent, model, status, _ = run_agent([
        "I think the bug is in calc.py, but I forgot the block.",
        bash("ls") + "\nand another\n" + bash("pwd"),
        bash(f"echo {MARKER}"),
    ], root)
    expect(status == "submitted", f"exit status {status!r}")
    expect(len(model.calls) == 3, f"{len(model.calls)} model calls, expected 3")
    expected = agent.render("format_error", n_blocks=0)
    expect(model.calls[1][-1] == {"role": "user", "content": expected},
           "the format error was not sent back to the model")
    expect(model.calls[2][-1]["content"] == agent.render("format_error", n_blocks=2),
           "two blocks were not refused")


def check_step_limit_stops(root: Path) -> None:
    agent, model, status, _ = run_agent([bash("echo hi")] * 10, root, step_limit=3)
    expect(status == "limits_exceeded", f"exit status {status!r}")
    expect(len(model.calls) == 3 and agent.steps == 3, f"{len(model.calls)} model calls, expected 3")


def check_timeout_kills_command(root: Path) -> None:
    started = time.monotonic()
    _, model, status, _ = run_agent(
        [bash("echo started; sleep 30; echo done"), bash(f"echo {MARKER}")], root,
        command_timeout_s=1)
    expect(time.monotonic() - started < 15, "the slow command was not killed in time")
    expect(status == "submitted", f"exit status {status!r}")
    message = model.calls[1][-1]["content"]
    expect("timed out" in message and "started" in message, f"no timeout message: {message!r}")


def check_long_output_is_cut(root: Path) -> None:
    agent, _, status, _ = run_agent(
        [bash("python3 -c 'print(\"h\" + \"x\" * 50000 + \"t\")'"), bash(f"echo {MARKER}")], root,
        output_max_chars=1000)
    observation = agent.messages[-2]["content"] if status == "submitted" else ""
    expect(len(observation) < 3000, f"observation has {len(observation)} characters")
    expect("elided" in observation and "h" in observation and "t" in observation,
           "head, tail or the elision note is missing")


def check_model_error_ends_cleanly(root: Path) -> None:
    _, _, status, result = run_agent([], root)
    expect(status == "model_error", f"exit status {status!r}")
    saved = json.loads((root / "out" / "trajectory.json").read_text())
    expect(saved["exit_status"] == "model_error" and saved["result"] == result,
           "the model error is not recorded in the trajectory")


def check_cli_run(root: Path) -> None:
    from .__main__ import main
    from .model import ScriptedModel

    repo = make_repo(root)
    (root / "problem.txt").write_text("calc.add is wrong")
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(["run", "--problem", str(root / "problem.txt"), "--repo", str(repo),
                     "--out", str(root / "cli-out")],
                    model=ScriptedModel([bash("sed -i 's/a - b/a + b/' calc.py"),
                                         bash(f"echo {MARKER}")]))
    expect(code == 0, f"exit code {code}")
    expect((repo / "calc.py").read_text() != BUGGY, "the CLI run did not edit the repo")
    expect((root / "cli-out" / "trajectory.json").is_file(), "no trajectory.json")


class _ChatServer(socketserver.UnixStreamServer):
    requests: list[tuple[str, dict]]


class _ChatHandler(BaseHTTPRequestHandler):
    """First request: a chat completion; every later one: 402, as a gateway past budget."""

    server: _ChatServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        if len(self.server.requests) == 1:
            status, payload = 200, {
                "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "hello over uds"}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}
        else:
            status, payload = 402, {"error": {"message": "budget exhausted", "type": "budget"}}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def check_gateway_over_unix_socket(root: Path) -> None:
    from .errors import ModelError
    from .model import OpenAIModel

    socket_path = str(root / "llm.sock")
    server = _ChatServer(socket_path, _ChatHandler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        model = OpenAIModel("seed-model", socket_path=socket_path, max_retries=0, timeout_s=20)
        reply = model.complete([{"role": "user", "content": "hi"}])
        expect(reply.content == "hello over uds", f"reply {reply.content!r}")
        expect(reply.usage.get("total_tokens") == 10, f"usage {reply.usage!r}")
        expect(server.requests[0][0] == "/v1/chat/completions", f"path {server.requests[0][0]}")
        try:
            model.complete([{"role": "user", "content": "again"}])
            raise AssertionError("a 402 from the gateway did not raise ModelError")
        except ModelError as exc:
            expect("402" in str(exc), f"the error does not name the status: {exc}")
    finally:
        server.shutdown()
        server.server_close()


CHECKS: list[Callable[[Path], None]] = [
    check_modules_compile_and_import,
    check_config_and_templates,
    check_scripted_fix_submits,
    check_format_error_continues,
    check_step_limit_stops,
    check_timeout_kills_command,
    check_long_output_is_cut,
    check_model_error_ends_cleanly,
    check_cli_run,
    check_gateway_over_unix_socket,
]


def main() -> int:
    passed = failed = 0
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        with tempfile.TemporaryDirectory(prefix="agent-selfcheck-") as tmp:
            try:
                check(Path(tmp))
            except Exception as exc:  # noqa: BLE001 (each check is isolated; its failure is reported)
                failed += 1
                last = traceback.extract_tb(exc.__traceback__)[-1]
                print(f"FAIL {name}: {type(exc).__name__}: {exc} "
                      f"({Path(last.filename).name}:{last.lineno})")
            else:
                passed += 1
                print(f"ok   {name}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
