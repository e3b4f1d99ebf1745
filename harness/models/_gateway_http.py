"""The gateway's HTTP side: an aiohttp app that admits a sandbox's request and hands it to
`Gateway._handle` (or `_ahandle`), where accounting and the upstream call happen.

Per request, in order: the relay token (relay endpoint only), the channel (by path), the
route, the body read up to the policy's cap (HTTP 413 past it, the rest never held in
memory), then `harness.models._chat_request.check_request` (HTTP 400). A refused request is logged
to the task's trajectory with an excerpt and its size; it is the agent's failure, never the
endpoint's. A call to an asynchronous upstream is handled on the loop (`Gateway._ahandle`);
otherwise blocking work (`_handle`, log writes) runs in the shared pool (`harness.models._aio`).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from harness.models import _aio
from harness.models._chat_request import Rejected, RequestPolicy, check_request, rejection_record
from harness.models._serve import Handler, error_body as _error, json_reply

if TYPE_CHECKING:
    from harness.models.gateway import Channel, Gateway

__all__ = ["gateway_handler", "read_capped"]

Resolve = Callable[[str], "Channel | tuple[int, dict[str, Any]]"]


async def read_capped(request: web.BaseRequest, cap: int | None,
                      keep: int | None) -> tuple[bytes, int, bool]:
    """(bytes read, body size, over the cap). Past `cap`, only the first `keep` bytes (all
    read so far, when `keep` is None) are kept; a declared size past it is not read at all
    (aiohttp drains it after the reply)."""
    declared = request.content_length
    if declared is not None and (cap is None or declared <= cap):  # the usual case: one read
        try:
            raw = await request.content.readexactly(declared)
        except asyncio.IncompleteReadError as short:
            raw = short.partial
        return raw, len(raw), False
    if cap is not None and declared is not None:  # declared past the cap
        want = cap if keep is None else min(keep, cap)
        head = b""
        while len(head) < want and (chunk := await request.content.read(want - len(head))):
            head += chunk
        return head, declared, True
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        chunks.append(chunk)
        if cap is not None and size > cap:  # chunked, no declared size
            head = b"".join(chunks)
            return (head if keep is None else head[:keep]), size, True
    return b"".join(chunks), size, False


def gateway_handler(gateway: "Gateway", resolve: Resolve, *, token: str | None = None,
                    policy: RequestPolicy | None = None) -> Handler:
    """The request handler serving channels that `resolve` finds by request path; with
    `token`, a request without it is refused before anything else is read (relay endpoint)."""
    policy = policy or RequestPolicy()
    expected = f"Bearer {token}".encode() if token is not None else b""

    async def serve(request: web.BaseRequest) -> web.StreamResponse:
        if token is not None and not hmac.compare_digest(
                request.headers.get("Authorization", "").encode(), expected):
            return json_reply(401, _error("a relay call needs the run's token", "unauthorized"))
        found = resolve(request.path)
        if isinstance(found, tuple):
            return json_reply(*found)
        channel = found
        route = request.path.rstrip("/")
        if request.method == "GET" and route.endswith("/models"):
            return json_reply(200, {"object": "list", "data": [
                {"id": gateway.model, "object": "model", "owned_by": "ratchet"}]})
        if request.method != "POST" or not route.endswith("/chat/completions"):
            return json_reply(404, _error(f"no route {request.method} {request.path}", "not_found"))
        node = request.headers.get("X-Ratchet-Node") if token is not None else None
        raw, size, over = await read_capped(request, policy.max_body_bytes, policy.excerpt_bytes)
        try:
            if over:
                raise Rejected(413, f"request body of at least {size} bytes is over the ratchet "
                                    f"gateway's limit of {policy.max_body_bytes} bytes; send less "
                                    "context", "request_too_large")
            body = check_request(raw, policy)
        except Rejected as rejected:
            record = {**rejection_record(raw, size, rejected, policy), "task": channel.task,
                      "generation": channel.generation, **({"node": node} if node else {})}
            await _aio.offload(gateway._append, channel, record)
            return json_reply(rejected.status, _error(rejected.message, rejected.code))
        if gateway.serves_on_loop:
            status, response = await gateway._ahandle(channel, body, node=node)
        else:
            status, response = await _aio.offload(
                functools.partial(gateway._handle, channel, body, node=node))
        return json_reply(status, response)

    return serve
