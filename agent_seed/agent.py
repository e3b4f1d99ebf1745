"""The agent loop: ask the model, run the one ```bash block of its reply in the repo, show
it the output, repeat, until a command prints the submit marker or a limit is reached.

The trajectory (messages, exit status, usage) is written to ``<out>/trajectory.json``
after every step. The patch is not the agent's business: the harness takes ``git diff``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

from .config import AgentConfig, render
from .errors import (
    CommandTimeout,
    FormatError,
    LimitsExceeded,
    NonTerminating,
    Submitted,
    Terminating,
)
from .model import ModelClient

__all__ = ["EXEC_SOCKET_ENV", "TRAJECTORY_FILE", "Agent", "relay_command", "run_command", "truncate"]

TRAJECTORY_FILE = "trajectory.json"
BASH_BLOCK = re.compile(r"```bash[ \t]*\n(.*?)\n?```", re.DOTALL)


def truncate(text: str, max_chars: int) -> tuple[str, int]:
    """Cut ``text`` to ``max_chars`` keeping head and tail; return it and how much was cut."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text, 0
    head = max_chars // 2
    elided = len(text) - max_chars
    return f"{text[:head]}\n\n... [{elided} characters elided] ...\n\n{text[-(max_chars - head):]}", elided


EXEC_SOCKET_ENV = "RATCHET_EXEC_SOCKET"
"""Set when the repo is in another container: commands go to the harness's exec relay."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("relay", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def relay_command(socket_path: str, command: str, cwd: str | Path, timeout_s: float,
                  env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """``run_command`` through the exec relay: ``POST /exec`` on its unix socket; the harness
    runs the command in the task container and enforces the timeout and an output cap."""
    body = json.dumps({"command": command, "cwd": str(cwd), "timeout_s": timeout_s,
                       "env": env or {}})
    connection = _UnixHTTPConnection(socket_path, timeout=timeout_s + 60)
    try:
        connection.request("POST", "/exec", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        reply = json.loads(response.read() or b"{}")
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"exec relay: HTTP {response.status}: {reply.get('error', reply)}")
    return reply["returncode"], reply["output"]


def run_command(command: str, cwd: str | Path, timeout_s: float,
                env: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Run ``bash -c command``; return (exit code, combined stdout/stderr). On timeout the
    whole process group is killed and the exit code is None. With ``RATCHET_EXEC_SOCKET``
    set, the harness's exec relay runs it (`relay_command`)."""
    relay = os.environ.get(EXEC_SOCKET_ENV)
    if relay:
        return relay_command(relay, command, cwd, timeout_s, env)
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env={**os.environ, **(env or {})},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out.decode("utf-8", errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a child escaped the group and holds the pipe
            out = b""
        return None, (out or b"").decode("utf-8", errors="replace")


class Agent:
    def __init__(self, model: ModelClient, config: AgentConfig, repo: str | Path = "/testbed",
                 out_dir: str | Path | None = None) -> None:
        self.model, self.config, self.repo = model, config, Path(repo)
        self.out_dir = Path(out_dir) if out_dir else None
        self.messages: list[dict[str, str]] = []
        self.steps = 0
        self.usage: dict[str, int] = {}
        self.exit_status: str | None = None
        self.result = ""
        self.started = time.time()

    def render(self, name: str, **variables: Any) -> str:
        context = {"repo": str(self.repo), "config": self.config,
                   "lessons": self.config.lessons(), **variables}
        return render(self.config.templates[name], **context)

    def add(self, role: str, content: str) -> None:
        self.messages.append({"role": role, "content": content})

    def run(self, problem_statement: str) -> tuple[str, str]:
        """Run to the end; return (exit status, result). Only a bug in the agent raises."""
        self.messages = []
        try:
            self.add("system", self.render("system"))
            self.add("user", self.render("instance", problem_statement=problem_statement))
            while True:
                try:
                    self.step()
                except NonTerminating as exc:
                    self.add("user", str(exc))
                finally:
                    self.save()
        except Terminating as exc:
            self.exit_status, self.result = exc.status, str(exc)
        except BaseException as exc:
            self.exit_status, self.result = "error", "".join(traceback.format_exception(exc))
            raise
        finally:
            self.save()
        return self.exit_status, self.result

    def step(self) -> None:
        command = self.parse_command(self.query())
        self.add("user", self.render("observation", **self.execute(command)))

    def query(self) -> str:
        if self.config.step_limit and self.steps >= self.config.step_limit:
            raise LimitsExceeded(f"step limit of {self.config.step_limit} model calls reached")
        self.steps += 1
        reply = self.model.complete(self.messages)
        for key, value in reply.usage.items():
            self.usage[key] = self.usage.get(key, 0) + value
        self.add("assistant", reply.content)
        return reply.content

    def parse_command(self, content: str) -> str:
        blocks = BASH_BLOCK.findall(content)
        if len(blocks) != 1:
            raise FormatError(self.render("format_error", n_blocks=len(blocks)))
        return blocks[0]

    def execute(self, command: str) -> dict[str, Any]:
        timeout_s = self.config.command_timeout_s
        returncode, output = run_command(command, self.repo, timeout_s, self.config.env)
        output, elided = truncate(output, self.config.output_max_chars)
        if returncode is None:
            raise CommandTimeout(self.render("timeout", command=command, timeout_s=timeout_s,
                                             output=output, elided=elided))
        lines = output.lstrip().splitlines(keepends=True)
        if lines and lines[0].strip() == self.config.submit_marker:
            raise Submitted("".join(lines[1:]))
        return {"command": command, "returncode": returncode, "output": output, "elided": elided}

    def save(self) -> None:
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "exit_status": self.exit_status, "result": self.result,
            "model": getattr(self.model, "name", type(self.model).__name__),
            "steps": self.steps, "usage": self.usage,
            "elapsed_s": round(time.time() - self.started, 3),
            "messages": self.messages,
        }
        path = self.out_dir / TRAJECTORY_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

