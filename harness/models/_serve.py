"""aiohttp sites on the process's event loop (`harness.models._aio`): a unix socket per task
channel or relay, a TCP port for a local channel or the relay endpoint.

Why aiohttp: one runner per site can be added and removed while the loop runs, on a unix
socket or TCP, and its keep-alive connections cost no thread; it also brings the HTTP
client the relay needs. Callers are synchronous: each function here waits for the loop.
"""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from harness.models import _aio

__all__ = ["Served", "error_body", "json_reply", "serve_tcp", "serve_unix", "stop"]

BACKLOG = 1024
"""Many nodes' relays connect at once: the kernel's default backlog drops their connections
past a few dozen concurrent calls (measured: perf/executor_scaling.py)."""


@dataclass
class Served:
    """A running site: its runner, and where it listens."""

    runner: web.ServerRunner
    socket_path: Path | None = None
    address: tuple[str, int] | None = None


def error_body(message: str, code: str) -> dict[str, Any]:
    """An OpenAI-shaped error body, which the openai SDK shows the agent."""
    return {"error": {"message": message, "type": code, "code": code}}


def json_reply(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
"""One function answers every request of a site: aiohttp's low-level server, no router or
middleware (the routes are two suffixes; measured cheaper per call)."""


async def _start(handler: Handler, sock: socket.socket) -> web.ServerRunner:
    # shutdown_timeout: a closing channel waits this long for a call still in flight
    runner = web.ServerRunner(web.Server(handler, access_log=None), shutdown_timeout=1.0)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=BACKLOG).start()
    return runner


def serve_unix(handler: Handler) -> Served:
    """`handler` on a fresh unix socket. The socket lives in a short private temp dir (socket
    paths are limited to 108 bytes) with mode 0666, so a sandbox's non-root user can connect
    to it through a bind mount."""
    directory = Path(tempfile.mkdtemp(prefix="ratchet-gw-"))
    directory.chmod(0o755)
    socket_path = directory / "llm.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(socket_path))
    socket_path.chmod(0o666)
    return Served(_aio.run(_start(handler, sock)), socket_path=socket_path)


def serve_tcp(handler: Handler, host: str = "127.0.0.1", port: int = 0) -> Served:
    """`handler` on TCP `host`:`port` (0: any free port)."""
    sock = socket.create_server((host, port), reuse_port=False)
    bound = sock.getsockname()[:2]
    return Served(_aio.run(_start(handler, sock)), address=(bound[0], bound[1]))


def stop(served: Served) -> None:
    """Stop listening, close the site's connections, remove its socket file."""
    _aio.run(served.runner.cleanup())
    if served.socket_path is not None:
        served.socket_path.unlink(missing_ok=True)
        try:
            served.socket_path.parent.rmdir()
        except OSError:
            pass
