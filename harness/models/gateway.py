"""The LLM gateway: the sandbox's only way out, and the ledger of every token.

An OpenAI-compatible chat-completions endpoint served by the controller. Each task run gets
its own *channel*: a unix socket (bind-mounted into the sandbox) or a loopback TCP port
(the local backend), so every request is attributed to one task. The gateway holds the real
credentials (none enters a sandbox), forwards to the upstream model, counts tokens and cost
per task, generation and run, refuses calls past a budget with an error the agent sees
(HTTP 402, which the openai SDK does not retry), and appends every request and response to
the task's trajectory log on the host, where the sandbox cannot write.

Serving is aiohttp on one event loop per process (`harness.models._serve`, `harness.models._aio`); a
request is admitted by `harness.models._gateway_http` (size cap, field allowlist, no streaming:
`RequestPolicy`) before `Gateway._handle`, the one place that does accounting and calls the
upstream. `OpenAIUpstream` retries an endpoint's 429s, 5xx and lost connections for a
bounded time (`harness.models._retry`).

On a cluster (`harness.run.ray_executor`) a channel is *relayed*: the sandbox still sees a unix
socket, served on its node by `harness.models.relay`, which carries each call over TCP to this
gateway's relay endpoint, authenticated by a per-run token. Credentials and the ledger stay
here, so accounting and budgets are the same as on one machine.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from harness.models import _aio, _serve
from harness.models._chat_request import RequestPolicy
from harness.models._gateway_http import gateway_handler
from harness.models._retry import (RETRY_LISTENER, acall_with_retries, call_with_retries,
                                   retry_seconds_setting)
from harness.models._serve import error_body as _error
from harness.models.ledger import (DEFAULT_MAX_OUTPUT_TOKENS, Budget, BudgetRefusal, Ledger,
                                   Reservation, Usage, cap_output, output_field,
                                   worst_case_input_tokens)
from harness.models.prices import PriceTable
from harness.protocols import ModelClient

__all__ = [
    "Budget",
    "Channel",
    "Gateway",
    "Ledger",
    "OpenAIUpstream",
    "PriceTable",
    "RelayEndpoint",
    "RequestPolicy",
    "Upstream",
    "Usage",
]

log = logging.getLogger(__name__)


Upstream = ModelClient
"""Where the gateway sends a chat request: a model client (`harness.protocols.ModelClient`)."""


class OpenAIUpstream:
    """A real endpoint through the openai SDK (OpenAI, vLLM, Ollama, a LiteLLM proxy...).

    `timeout`: seconds per attempt (the SDK's default when None); `retry_seconds`: how long
    429s, 5xx and lost connections are retried, with backoff (`harness.models._retry`), before the
    call fails (default ``RATCHET_RETRY_SECONDS``, else 300); `request_kwargs`: settings
    sent with every request (``temperature``, ``reasoning_effort``, ``extra_body``...),
    under the sandbox's own allowed fields."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | None = None, retry_seconds: float | None = None,
                 **request_kwargs: Any):
        import openai

        # retries are ours (time-bounded, logged), not the SDK's fixed count
        self._options: dict[str, Any] = {"base_url": base_url, "api_key": api_key or "none",
                                         "max_retries": 0,
                                         **({} if timeout is None else {"timeout": timeout})}
        self._client = openai.OpenAI(**self._options)
        self._async: tuple[Any, Any] | None = None
        self.retry_seconds = retry_seconds if retry_seconds is not None else retry_seconds_setting()
        self.request_kwargs = request_kwargs

    @classmethod
    def from_environment(cls) -> "OpenAIUpstream | None":
        """The endpoint a user configured the usual way, or None when nothing is set."""
        base_url, api_key = os.environ.get("OPENAI_BASE_URL"), os.environ.get("OPENAI_API_KEY")
        if not base_url and not api_key:
            return None
        return cls(base_url, api_key)

    def _sent(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        return {**self.request_kwargs, **allowed}

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        sent = self._sent(body)
        return call_with_retries(lambda: self._client.chat.completions.create(**sent),
                                 self.retry_seconds).model_dump(exclude_none=True)

    async def acomplete(self, body: dict[str, Any]) -> dict[str, Any]:
        """`complete` on the running loop (the gateway's): the SDK's async client, made once
        per loop since its connections belong to the loop that opened them."""
        import asyncio

        import openai

        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            # the SDK's default transport: its aiohttp one (cheaper per call, measured) reports
            # an endpoint that refuses connections as a timeout
            self._async = (loop, openai.AsyncOpenAI(**self._options))
        client, sent = self._async[1], self._sent(body)

        async def create() -> Any:
            return await client.chat.completions.create(**sent)

        response = await acall_with_retries(create, self.retry_seconds)
        return response.model_dump(exclude_none=True)


@dataclass
class Channel:
    """One task's way to the gateway: a unix socket path, a loopback URL, or a relay id
    (a cluster node's relay calls the relay endpoint with it)."""

    task: str
    generation: str
    trajectory: Path
    socket_path: Path | None = None
    base_url: str | None = None
    relay_id: str | None = None
    _server: Any = None


@dataclass(frozen=True)
class RelayEndpoint:
    """Where cluster nodes send their sandboxes' calls, and the run's token for it."""

    url: str
    token: str


@dataclass
class _Call:
    """An admitted call between its reservation and its settlement."""

    channel: Channel
    forwarded: dict[str, Any]
    held: Reservation
    record: dict[str, Any]
    started: float


class Gateway:
    """Serves channels; every request goes through `_handle`."""

    def __init__(self, upstream: Upstream, *, model: str, log_dir: Path,
                 prices: PriceTable | None = None, budget: Budget = Budget(),
                 ledger: Ledger | None = None, policy: RequestPolicy | None = None,
                 max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS):
        self.upstream = upstream
        self.policy = policy or RequestPolicy.from_environment()
        """What a sandbox's request may be (size, fields, streaming) and how much of a
        refused one is logged; see `harness.models._chat_request`."""
        self.model = model
        self.log_dir = log_dir
        self.prices = prices or PriceTable.load()
        self.budget = budget
        self.ledger = ledger or Ledger()
        self.max_output_tokens = max_output_tokens
        """Output tokens a call may ask for at most: its worst case is reserved before it goes."""
        self.reserve_worst_case = True
        """Off only in the test that shows a budget overshot without it (check, then charge)."""
        self.replay_paid = False
        """Answer a request its channel's trajectory already holds a paid answer to (from a
        process killed before it journaled the result) with that answer, at no new cost:
        the meta model's gateway, so a proposal that was paid for is not bought twice."""
        self._paid: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._warned: set[str] = set()
        self._write_lock = threading.Lock()
        self._relayed: dict[str, Channel] = {}
        self._relay: tuple[RelayEndpoint, Any] | None = None

    # -- channels --------------------------------------------------------------------

    def open_channel(self, task: str, generation: str = "bench", *, tcp: bool = False,
                     relay: bool = False) -> Channel:
        """A fresh endpoint for one task run: a unix socket (the default), a loopback port
        (`tcp`), or an id on the relay endpoint (`relay`, see `serve_relay`)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.ledger.forget_failure(task)
        channel = Channel(task, generation, self.log_dir / f"{_safe(task)}.jsonl")
        if relay:
            if self._relay is None:
                raise RuntimeError("open_channel(relay=True) needs serve_relay() first")
            channel.relay_id = secrets.token_hex(12)
            with self._write_lock:
                self._relayed[channel.relay_id] = channel
            return channel
        handler = gateway_handler(self, lambda path: channel, policy=self.policy)
        if tcp:
            channel._server = _serve.serve_tcp(handler)
            channel.base_url = f"http://127.0.0.1:{channel._server.address[1]}/v1"
        else:
            channel._server = _serve.serve_unix(handler)
            channel.socket_path = channel._server.socket_path
        return channel

    def close_channel(self, channel: Channel) -> None:
        if channel.relay_id is not None:
            with self._write_lock:
                self._relayed.pop(channel.relay_id, None)
        elif channel._server is not None:
            _serve.stop(channel._server)
            channel._server = None

    def serve_relay(self, host: str = "127.0.0.1", port: int = 0) -> RelayEndpoint:
        """Serve relayed channels on TCP at `host` (an address the cluster's nodes reach)
        and `port` (0: any free one), behind a fresh token; idempotent. Calls carry ``Authorization: Bearer TOKEN`` and
        go to ``/relay/CHANNEL-ID/v1/...``; a closed channel answers 410."""
        if self._relay is not None:
            return self._relay[0]
        token = secrets.token_urlsafe(32)
        gateway = self

        def resolve(path: str) -> Channel | tuple[int, dict[str, Any]]:
            parts = path.split("/", 3)  # "", "relay", id, rest
            if len(parts) < 4 or parts[1] != "relay":
                return 404, _error(f"no route {path}", "not_found")
            with gateway._write_lock:
                channel = gateway._relayed.get(parts[2])
            if channel is None:
                return 410, _error("this task's channel is closed", "channel_closed")
            return channel

        server = _serve.serve_tcp(gateway_handler(self, resolve, token=token, policy=self.policy),
                                  host, port)
        bound_host, bound_port = server.address
        endpoint = RelayEndpoint(f"http://{bound_host}:{bound_port}", token)
        self._relay = (endpoint, server)
        return endpoint

    def stop_relay(self) -> None:
        if self._relay is not None:
            _serve.stop(self._relay[1])
            self._relay = None

    # -- requests --------------------------------------------------------------------

    def _handle(self, channel: Channel, body: dict[str, Any], *,
                node: str | None = None) -> tuple[int, dict[str, Any]]:
        """One call, blocking: admit, call the upstream, settle (a pool thread runs this)."""
        call = self._admit(channel, body, node)
        if isinstance(call, tuple):
            return call
        listening = RETRY_LISTENER.set(partial(self.ledger.note_retry, channel.task))
        try:
            response = self.upstream.complete(call.forwarded)
        except Exception as exc:  # any upstream failure becomes an error the agent can read
            return self._failed(call, exc)
        finally:
            RETRY_LISTENER.reset(listening)
        return self._answered(call, response)

    async def _ahandle(self, channel: Channel, body: dict[str, Any], *,
                       node: str | None = None) -> tuple[int, dict[str, Any]]:
        """`_handle` on the event loop, for an upstream with ``acomplete``: no thread hand-off
        per call (measured: perf/gateway_load.py). Accounting and the trajectory line are
        short and run inline; the upstream call is awaited."""
        call = self._admit(channel, body, node)
        if isinstance(call, tuple):
            return call
        listening = RETRY_LISTENER.set(partial(self.ledger.note_retry, channel.task))
        try:
            async with _aio.upstream_slot():
                response = await self.upstream.acomplete(call.forwarded)  # type: ignore[attr-defined]
        except Exception as exc:
            return self._failed(call, exc)
        finally:
            RETRY_LISTENER.reset(listening)
        return self._answered(call, response)

    @property
    def serves_on_loop(self) -> bool:
        """Whether a call is handled on the event loop (`_ahandle`) rather than in the pool:
        the upstream is asynchronous, and no trajectory has to be read (replay)."""
        return callable(getattr(self.upstream, "acomplete", None)) and not self.replay_paid

    def _admit(self, channel: Channel, body: dict[str, Any],
               node: str | None) -> "_Call | tuple[int, dict[str, Any]]":
        """The call to make, with its worst case reserved, or the answer that ends it here
        (a replayed paid answer, or a budget refusal)."""
        record: dict[str, Any] = {"time": time.time(), "task": channel.task,
                                  "generation": channel.generation, "request": body}
        if node:
            record["node"] = node
        paid = self._paid_answer(channel, body) if self.replay_paid else None
        if paid is not None:
            record.update(response=paid, replayed=True)
            self._append(channel, record)
            return 200, paid
        # the controller picks the model; the output is held to the ceiling, so the call's
        # worst case is known and reserved before it goes (harness.models.ledger)
        forwarded, most_output = cap_output({**body, "model": self.model}, self.max_output_tokens,
                                            output_field(self.model))
        worst = self.prices.cost(self.model, worst_case_input_tokens(forwarded), most_output)
        held = self.ledger.reserve(channel.task, channel.generation, self.budget,
                                   (worst or 0.0) if self.reserve_worst_case else 0.0)
        if isinstance(held, BudgetRefusal):
            record["refused"] = str(held)
            self._append(channel, record)
            return 402, _error(str(held), "budget_exhausted")
        return _Call(channel, forwarded, held, record, time.monotonic())

    def _failed(self, call: "_Call", exc: Exception) -> tuple[int, dict[str, Any]]:
        self.ledger.release(call.held)
        call.record["error"] = f"{type(exc).__name__}: {exc}"
        self._append(call.channel, call.record)
        status = getattr(exc, "status_code", None)
        # an auth failure's text can quote part of the key: the sandbox gets none of it
        shown = (f"the upstream refused the gateway's credentials (HTTP {status}); see the "
                 "controller's trajectory log" if status in (401, 403)
                 else f"{type(exc).__name__}: {exc}")
        if status is None or status >= 500 or status in (401, 403, 408, 429):
            # not the agent's doing (a 400, such as an overlong context, is)
            self.ledger.record_failure(call.channel.task, shown.splitlines()[0][:300])
        return 502, _error(f"the upstream model failed: {shown}", "upstream_error")

    def _answered(self, call: "_Call", response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        channel = call.channel
        self.ledger.note_answered(channel.task)
        usage_body = response.get("usage") or {}
        prompt = int(usage_body.get("prompt_tokens") or 0)
        completion = int(usage_body.get("completion_tokens") or 0)
        cost = self.prices.cost(self.model, prompt, completion)
        if cost is None:  # --allow-unpriced: unknown, never $0
            with self._write_lock:
                first = self.model not in self._warned
                self._warned.add(self.model)
            if first:
                log.warning("no price for model %r: its calls are counted as unknown cost and no "
                            "budget limits them (give its price with RATCHET_PRICES)", self.model)
        usage = Usage(1, prompt, completion, cost or 0.0, time.monotonic() - call.started,
                      unpriced_calls=int(cost is None))
        self.ledger.settle(call.held, channel.task, channel.generation, usage, model=self.model)
        call.record.update(response=response, usage=asdict(usage), reserved_usd=call.held.cost_usd)
        self._append(channel, call.record)
        return 200, response

    def _paid_answer(self, channel: Channel, body: dict[str, Any]) -> dict[str, Any] | None:
        """The next unused paid answer to exactly `body` in the channel's trajectory as it
        was when this gateway first served the channel's task, or None."""
        key = json.dumps(body, sort_keys=True)
        with self._write_lock:
            if channel.task not in self._paid:
                found: dict[str, list[dict[str, Any]]] = {}
                if channel.trajectory.is_file():
                    for line in channel.trajectory.read_text(encoding="utf-8").splitlines():
                        try:
                            old = json.loads(line)
                        except ValueError:  # torn by a kill
                            continue
                        if "response" in old and "usage" in old and not old.get("replayed"):
                            found.setdefault(json.dumps(old["request"], sort_keys=True),
                                             []).append(old["response"])
                self._paid[channel.task] = found
            answers = self._paid[channel.task].get(key)
            return answers.pop(0) if answers else None

    def _append(self, channel: Channel, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        with self._write_lock, channel.trajectory.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
