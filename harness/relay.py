"""The gateway on a cluster node: a unix socket for one sandbox, relayed to the controller.

A sandbox on a cluster node sees exactly what it sees on one machine, a unix socket at
``/run/ratchet/llm.sock``. Behind it, this relay (running on the node, outside the sandbox)
forwards each chat call over TCP to the controller's gateway (`Gateway.serve_relay`) with
the run's token. The token and the credentials never enter the sandbox: the relay holds the
token, the controller holds the credentials, and the controller's ledger counts every call.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from harness._http import send_json
from harness.gateway import RelayEndpoint, _error, serve_unix, stop_unix

__all__ = ["Relay"]

_ALLOWED = ("/v1/chat/completions", "/v1/models")


class Relay:
    """One sandbox's socket, forwarding to one relayed channel of the controller's gateway."""

    def __init__(self, endpoint: RelayEndpoint, channel_id: str, *, node: str = "",
                 timeout_s: float = 900.0):
        where = urlsplit(endpoint.url)
        self._host, self._port = where.hostname, where.port or 80
        self._prefix = f"/relay/{channel_id}"
        self._headers = {"Authorization": f"Bearer {endpoint.token}", "X-Ratchet-Node": node,
                         "Content-Type": "application/json"}
        self._timeout_s = timeout_s
        self._lock = threading.Lock()  # one kept-alive connection; a sandbox's calls are serial
        self._connection: http.client.HTTPConnection | None = None
        self.unreachable: str | None = None
        """Why a call could not reach the controller (the first time), if one could not."""
        self._server, self.socket_path = serve_unix(self._handler(), f"relay-{channel_id}")

    def close(self) -> None:
        stop_unix(self._server, self.socket_path)
        with self._lock:
            if self._connection is not None:
                self._connection.close()

    def __enter__(self) -> "Relay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _forward(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        route = path.split("?", 1)[0].rstrip("/")
        if route not in _ALLOWED:
            return 404, _error(f"no route {path}", "not_found")
        with self._lock:
            for _ in range(2):
                reused = self._connection is not None
                if self._connection is None:
                    self._connection = http.client.HTTPConnection(self._host, self._port,
                                                                  timeout=self._timeout_s)
                try:
                    self._connection.request(method, self._prefix + route, body=body or None,
                                             headers=self._headers)
                    response = self._connection.getresponse()
                    status, raw = response.status, response.read()
                    break
                except (OSError, http.client.HTTPException) as exc:
                    self._connection.close()
                    self._connection = None
                    if reused and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                        continue  # the controller closed the idle connection: a fresh one
                    self.unreachable = self.unreachable or (
                        f"{self._host}:{self._port}: {type(exc).__name__}: {exc}")
                    return 502, _error(f"the ratchet controller's gateway is unreachable from "
                                       f"this node: {type(exc).__name__}", "relay_error")
        try:
            return status, json.loads(raw)
        except json.JSONDecodeError:
            return 502, _error(f"the controller answered HTTP {status} without JSON", "relay_error")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def address_string(self) -> str:
                return "sandbox"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                send_json(self, *relay._forward("GET", self.path, b""))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                send_json(self, *relay._forward("POST", self.path, body))

        return Handler
