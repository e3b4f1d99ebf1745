"""The gateway on a cluster node: a unix socket for one sandbox, relayed to the controller.

A sandbox on a cluster node sees exactly what it sees on one machine, a unix socket at
``/run/ratchet/llm.sock``. Behind it, this relay (running on the node, outside the sandbox)
forwards each chat call over TCP to the controller's gateway (`Gateway.serve_relay`) with
the run's token. The token and the credentials never enter the sandbox: the relay holds the
token, the controller holds the credentials, and the controller's ledger counts every call.

Served by aiohttp on the process's event loop (`harness.models._aio`), with one kept-alive client
session per relay; the body is capped like the gateway's (`RequestPolicy.max_body_bytes`),
so a sandbox cannot make the node hold more than that.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web

from harness.models import _aio, _serve
from harness.models._chat_request import RequestPolicy
from harness.models._gateway_http import read_capped
from harness.models._serve import error_body, json_reply
from harness.models.gateway import RelayEndpoint

__all__ = ["Relay"]

_ALLOWED = ("/v1/chat/completions", "/v1/models")


class Relay:
    """One sandbox's socket, forwarding to one relayed channel of the controller's gateway."""

    def __init__(self, endpoint: RelayEndpoint, channel_id: str, *, node: str = "",
                 timeout_s: float = 900.0, max_body_bytes: int | None = None):
        self._url = endpoint.url.rstrip("/") + f"/relay/{channel_id}"
        self._where = endpoint.url.split("://", 1)[-1].rstrip("/")
        self._headers = {"Authorization": f"Bearer {endpoint.token}", "X-Ratchet-Node": node,
                         "Content-Type": "application/json"}
        self._timeout_s = timeout_s
        self._max_body = max_body_bytes or RequestPolicy.from_environment().max_body_bytes
        self.unreachable: str | None = None
        """Why a call could not reach the controller (the first time), if one could not."""
        self._session: aiohttp.ClientSession | None = None
        self._served = _serve.serve_unix(self._serve)
        self.socket_path = self._served.socket_path

    def close(self) -> None:
        _serve.stop(self._served)
        if self._session is not None:
            _aio.run(self._session.close())
            self._session = None

    def __enter__(self) -> "Relay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        route = request.path.rstrip("/")
        if route not in _ALLOWED:
            return json_reply(404, error_body(f"no route {request.path_qs}", "not_found"))
        body, size, over = await read_capped(request, self._max_body, 0)
        if over:  # refused here: the node never holds more than the cap
            return json_reply(413, error_body(
                f"request body of {size} bytes is over the ratchet gateway's limit of "
                f"{self._max_body} bytes; send less context", "request_too_large"))
        return json_reply(*await self._forward(request.method, route, body))

    async def _forward(self, method: str, route: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if self._session is None:  # made on the loop, kept: one kept-alive connection pool
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        for attempt in range(2):
            try:
                async with self._session.request(method, self._url + route, data=body or None,
                                                 headers=self._headers) as response:
                    status, raw = response.status, await response.read()
                break
            except aiohttp.ServerDisconnectedError:
                if attempt == 0:
                    continue  # the controller closed an idle kept-alive connection: a fresh one
                return self._unreachable(ConnectionResetError("the controller disconnected"))
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                return self._unreachable(getattr(exc, "os_error", None) or exc)
        try:
            return status, json.loads(raw)
        except ValueError:
            return 502, error_body(f"the controller answered HTTP {status} without JSON",
                                   "relay_error")

    def _unreachable(self, exc: BaseException) -> tuple[int, dict[str, Any]]:
        self.unreachable = self.unreachable or f"{self._where}: {type(exc).__name__}: {exc}"
        return 502, error_body(f"the ratchet controller's gateway is unreachable from this node: "
                               f"{type(exc).__name__}", "relay_error")
