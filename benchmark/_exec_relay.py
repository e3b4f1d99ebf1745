"""The exec relay: an agent in its own locked container runs its commands in the task
container through the harness (docs/architecture.md, "The agent runtime in an image that is
not ratchet's").

The agent's container holds neither the task repository nor a Docker socket: it sends each
command over a unix socket, bind-mounted in like the gateway's, as
``POST /exec {"command", "timeout_s", "cwd", "env"}`` and gets ``{"output", "returncode",
"elided"}`` back (``returncode`` null: the command was killed at its time limit). The
harness runs it with ``docker exec`` in the task container as the sandbox user, in a new
session (``setsid``), stdout and stderr merged, under two limits the agent cannot lift:

- **time**: the smaller of the asked timeout and the relay's ceiling, measured here on the
  host; past it the command's whole process group is killed in the task container (every
  process of the sandbox user, if one escaped the group and still holds the output);
- **output**: at most `output_cap` bytes come back (its head and tail, with how much was
  left out between them); the rest is read and dropped, never held in memory.

One command at a time (the agent runs them in turn); a second one sent while one runs is
refused. Why stdlib ``http.server`` and not aiohttp like the gateway's sites: each request
blocks on Docker anyway, the relay is one client's, and `benchmark` cannot use `harness`'s
event loop (imports point one way).
"""

from __future__ import annotations

import json
import re
import shutil
import socketserver
import tempfile
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from benchmark import _docker
from benchmark._errors import InfraError

__all__ = ["EXEC_SOCKET_ENV", "OUTPUT_CAP", "ExecRelay", "ExecReply"]

EXEC_SOCKET_ENV = "RATCHET_EXEC_SOCKET"
"""The variable that tells the agent where the relay listens (unset: it runs commands itself)."""
OUTPUT_CAP = 1 << 20
"""Bytes of a command's output sent back to the agent (the seed agent shows it 10,000 chars)."""
REQUEST_LIMIT = 8 << 20
"""The largest request body read (a command may carry a whole file in a heredoc)."""
KILL_GRACE_S = 5.0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# bash -c OUTER: a new session whose leader prints its pid (the group to kill), enters the
# task's environment (setup lines, quietly), goes to the directory and becomes the command.
# bash -c OUTER: a new session (setsid's own complaint about a killed child goes nowhere)
# whose leader prints its pid (the group to kill), merges stderr into stdout (one pipe keeps
# their order; Docker's two streams do not), enters the task's environment (its setup lines,
# quietly), goes to the directory and becomes the command.
_INNER = ('exec 2>&1\nprintf "%s\\n" "$$"\n{setup}\ncd -- "$1" || exit 1\nexec bash -c "$2"')
_OUTER = ('if command -v setsid >/dev/null; then exec setsid -w bash -c "$1" relay "$2" "$3" '
          '2>/dev/null; else exec bash -c "$1" relay "$2" "$3"; fi')
# As the sandbox user, past the limit: kill the command's group, then every process of the
# user started since its leader (what left the group with setsid or a double fork); what was
# started before the command (a server an earlier command left running) stays.
_KILL = r"""started() { local s; s=$(cat /proc/$1/stat 2>/dev/null) || return 1; s=${s##*) }; set -- $s; echo ${20}; }
since=$(started "$1") || since=
kill -9 -- "-$1" 2>/dev/null
[ -n "$since" ] || exit 0
for p in /proc/[0-9]*; do
  p=${p#/proc/}; [ "$p" = $$ ] && continue
  s=$(started "$p") || continue
  [ "$s" -ge "$since" ] && kill -9 "$p" 2>/dev/null
done
exit 0"""


@dataclass
class ExecReply:
    """What a command gave: its merged output (capped), exit code (None: killed at its
    limit) and how many bytes of output were left out."""

    output: str
    returncode: int | None
    elided: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "returncode": self.returncode, "elided": self.elided}


class _Capped:
    """Head and tail of a stream, at most `cap` bytes together, and the count dropped."""

    def __init__(self, cap: int):
        self.head_cap, self.head = cap // 2, bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_cap, self.tail_len, self.total = cap - cap // 2, 0, 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail.append(chunk)
            self.tail_len += len(chunk)
            while self.tail_len - len(self.tail[0]) >= self.tail_cap:
                self.tail_len -= len(self.tail.popleft())

    def text(self) -> tuple[str, int]:
        tail = b"".join(self.tail)[-self.tail_cap:] if self.tail else b""
        elided = self.total - len(self.head) - len(tail)
        middle = (f"\n[ratchet exec relay: {elided} bytes of output left out]\n".encode()
                  if elided else b"")
        return (bytes(self.head) + middle + tail).decode("utf-8", "replace"), elided


class ExecRelay:
    """Serve the agent's commands for one task container (a `_docker.Sandbox`): start it,
    bind `socket_path` into the agent's container, stop it when the agent is done."""

    def __init__(self, box: "_docker.Sandbox", *, user: str, environment: dict[str, str],
                 setup: str = "", output_cap: int = OUTPUT_CAP, max_timeout_s: float = 600.0):
        self.box, self.user, self.environment = box, user, dict(environment)
        self.setup, self.output_cap, self.max_timeout_s = setup, output_cap, max_timeout_s
        self._busy = threading.Lock()
        self._server: socketserver.UnixStreamServer | None = None
        self._dir: Path | None = None
        self.commands = 0
        self._closing = False
        self.infra_error: str | None = None
        """Docker failed running a command: the run is the harness's failure, not the agent's."""

    @property
    def socket_path(self) -> Path:
        assert self._dir is not None, "the relay is not started"
        return self._dir / "exec.sock"

    def __enter__(self) -> "ExecRelay":
        self.box = self.box.on_own_client()  # requests come on the server's threads
        self._dir = Path(tempfile.mkdtemp(prefix="ratchet-exec-"))
        self._dir.chmod(0o755)
        relay = self

        class Handler(_Handler):
            pass

        Handler.relay = relay
        self._server = _Server(str(self.socket_path), Handler)
        self.socket_path.chmod(0o666)  # the sandbox's non-root user connects through a bind mount
        threading.Thread(target=self._server.serve_forever, name="exec-relay", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self.box.close_client()

    def run(self, command: str, *, cwd: str, timeout_s: float,
            env: dict[str, str] | None = None) -> ExecReply:
        """Run `command` in the task container as the sandbox user; see the module's doc."""
        timeout_s = max(1.0, min(float(timeout_s), self.max_timeout_s))
        self.commands += 1
        exec_id, stream = self.box.exec_stream(
            ["bash", "-c", _OUTER, "relay", _INNER.replace("{setup}", self._setup()), cwd, command],
            user=self.user, environment={**(env or {}), **self.environment})
        captured, first = _Capped(self.output_cap), bytearray()
        group: list[int] = []

        def read() -> None:
            for chunk in stream:
                if not group and len(first) < 64:  # the session leader's pid, then the output
                    first.extend(chunk)
                    line, sep, rest = bytes(first).partition(b"\n")
                    if not sep and len(first) < 64:
                        continue
                    group.append(int(line) if sep and line.strip().isdigit() else 0)
                    chunk = rest if sep else bytes(first)
                captured.add(chunk)

        reader = threading.Thread(target=read, name="exec-relay-read", daemon=True)
        reader.start()
        reader.join(timeout_s)
        timed_out = reader.is_alive()
        if timed_out:
            if group and group[0] > 1:
                self.box.capture(["bash", "-c", _KILL, "kill", str(group[0])], user=self.user)
            else:
                self.box.kill_user(self.user)
            reader.join(KILL_GRACE_S)
            if reader.is_alive():  # a process left the group and holds the output open
                self.box.kill_user(self.user)
                reader.join(KILL_GRACE_S)
        output, elided = captured.text()
        return ExecReply(output, None if timed_out else self.box.exec_exit_code(exec_id), elided)

    def _setup(self) -> str:
        return f"{{ {self.setup}\n}} </dev/null >/dev/null 2>&1" if self.setup.strip() else ":"

    def answer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for one request body."""
        try:
            request = json.loads(body)
            command, cwd = request["command"], request.get("cwd") or "/"
            timeout_s, env = float(request.get("timeout_s") or 60), request.get("env") or {}
            if not (isinstance(command, str) and isinstance(cwd, str) and isinstance(env, dict)
                    and all(isinstance(k, str) and _ENV_NAME.fullmatch(k) and isinstance(v, str)
                            for k, v in env.items())):
                raise TypeError("command and cwd are strings, env maps names to strings")
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"error": f"a request is {{command, timeout_s, cwd, env}} as JSON: {exc}"}
        if not self._busy.acquire(blocking=False):
            return 409, {"error": "one command at a time: the previous one still runs"}
        try:
            return 200, self.run(command, cwd=cwd, timeout_s=timeout_s, env=env).to_json()
        except InfraError as exc:
            if not self._closing:  # else: the run ended under it (its time limit), not Docker
                self.infra_error = str(exc)
            return 502, {"error": f"the harness could not run the command: {exc}"}
        finally:
            self._busy.release()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    relay: ExecRelay
    timeout = 30  # seconds a client may take to send its request

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != "/exec":
            status, body = 404, {"error": "POST /exec"}
        elif not 0 < length <= REQUEST_LIMIT:
            status, body = 413, {"error": f"a request body is 1 to {REQUEST_LIMIT} bytes"}
        else:
            status, body = self.relay.answer(self.rfile.read(length))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # a unix peer has no address
        pass
