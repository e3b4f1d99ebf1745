"""The LLM gateway: the sandbox's only way out, and the ledger of every token.

An OpenAI-compatible chat-completions endpoint served by the controller. Each task run gets
its own *channel*: a unix socket (bind-mounted into the sandbox) or a loopback TCP port
(the local backend), so every request is attributed to one task. The gateway holds the real
credentials (none enters a sandbox), forwards to the upstream model, counts tokens and cost
per task, generation and run, refuses calls past a budget with an error the agent sees
(HTTP 402, which the openai SDK does not retry), and appends every request and response to
the task's trajectory log on the host, where the sandbox cannot write.

On a cluster (`harness.ray_executor`) a channel is *relayed*: the sandbox still sees a unix
socket, served on its node by `harness.relay`, which carries each call over TCP to this
gateway's relay endpoint, authenticated by a per-run token. Credentials and the ledger stay
here, so accounting and budgets are the same as on one machine.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import socketserver
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Protocol

from harness._http import send_json
from harness.ledger import (DEFAULT_MAX_OUTPUT_TOKENS, Budget, BudgetRefusal, Ledger, Usage, cap_output,
                            output_field, worst_case_input_tokens)
from harness.prices import PriceTable

__all__ = [
    "Budget",
    "Channel",
    "Gateway",
    "Ledger",
    "OpenAIUpstream",
    "PriceTable",
    "RelayEndpoint",
    "Upstream",
    "Usage",
]

log = logging.getLogger(__name__)


class Upstream(Protocol):
    """Where the gateway sends a chat request; returns the chat.completion body."""

    def complete(self, body: dict[str, Any]) -> dict[str, Any]: ...


class OpenAIUpstream:
    """A real endpoint through the openai SDK (OpenAI, vLLM, Ollama, a LiteLLM proxy...)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None):
        import openai

        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "none", max_retries=2)

    @classmethod
    def from_environment(cls) -> "OpenAIUpstream | None":
        """The endpoint a user configured the usual way, or None when nothing is set."""
        base_url, api_key = os.environ.get("OPENAI_BASE_URL"), os.environ.get("OPENAI_API_KEY")
        if not base_url and not api_key:
            return None
        return cls(base_url, api_key)

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        allowed = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        return self._client.chat.completions.create(**allowed).model_dump(exclude_none=True)


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


class _UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


class _RelayServer(ThreadingHTTPServer):
    """Many nodes' relays connect at once: the default listen backlog (5) drops their
    connections past a few dozen concurrent calls (measured: bench/executor_scaling.py)."""

    daemon_threads = True
    request_queue_size = 1024


def serve_unix(handler: type[BaseHTTPRequestHandler], name: str) -> tuple[Any, Path]:
    """An HTTP server on a fresh unix socket, in a thread. The socket lives in a short
    private temp dir (socket paths are limited to 108 bytes) with mode 0666, so a sandbox's
    non-root user can connect to it through a bind mount."""
    directory = Path(tempfile.mkdtemp(prefix="ratchet-gw-"))
    directory.chmod(0o755)
    socket_path = directory / "llm.sock"
    server = _UnixHTTPServer(str(socket_path), handler)
    socket_path.chmod(0o666)
    _serve(server, name)
    return server, socket_path


def stop_unix(server: Any, socket_path: Path) -> None:
    server.shutdown()
    server.server_close()
    socket_path.unlink(missing_ok=True)
    try:
        socket_path.parent.rmdir()
    except OSError:
        pass


def _serve(server: Any, name: str) -> None:
    threading.Thread(target=server.serve_forever, daemon=True,
                     kwargs={"poll_interval": 0.05},  # close fast
                     name=name).start()


class Gateway:
    """Serves channels; every request goes through `_handle`."""

    def __init__(self, upstream: Upstream, *, model: str, log_dir: Path,
                 prices: PriceTable | None = None, budget: Budget = Budget(),
                 ledger: Ledger | None = None, max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS):
        self.upstream = upstream
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
        handler = self._handler(lambda path: channel)
        if tcp:
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            channel.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
            _serve(server, f"gateway-{task}")
        else:
            server, channel.socket_path = serve_unix(handler, f"gateway-{task}")
        channel._server = server
        return channel

    def close_channel(self, channel: Channel) -> None:
        if channel.relay_id is not None:
            with self._write_lock:
                self._relayed.pop(channel.relay_id, None)
        elif channel.socket_path is not None:
            stop_unix(channel._server, channel.socket_path)
        else:
            channel._server.shutdown()
            channel._server.server_close()

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

        server = _RelayServer((host, port), self._handler(resolve, token=token))
        _serve(server, "gateway-relay")
        bound_host, bound_port = server.server_address[:2]
        endpoint = RelayEndpoint(f"http://{bound_host}:{bound_port}", token)
        self._relay = (endpoint, server)
        return endpoint

    def stop_relay(self) -> None:
        if self._relay is not None:
            self._relay[1].shutdown()
            self._relay[1].server_close()
            self._relay = None

    # -- requests --------------------------------------------------------------------

    def _handler(self, resolve: Callable[[str], "Channel | tuple[int, dict[str, Any]]"], *,
                 token: str | None = None) -> type[BaseHTTPRequestHandler]:
        """Request handling for channels `resolve` finds by request path; with `token`,
        a request without it is refused before anything else (relay endpoint)."""
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # relays keep their TCP connection: without this, a reply's headers and body
            # (two writes) meet the peer's delayed ACK and each call waits ~40 ms
            disable_nagle_algorithm = token is not None

            def address_string(self) -> str:  # unix sockets have no peer address
                return "sandbox"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("gateway: " + format, *args)

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                send_json(self, status, body)

            def _channel(self) -> Channel | None:
                if token is not None:
                    given = self.headers.get("Authorization", "")
                    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                        self._reply(401, _error("a relay call needs the run's token", "unauthorized"))
                        return None
                found = resolve(self.path)
                if isinstance(found, tuple):
                    self._reply(*found)
                    return None
                return found

            def do_GET(self) -> None:
                if self._channel() is None:
                    return
                if self.path.rstrip("/").endswith("/models"):
                    self._reply(200, {"object": "list", "data": [
                        {"id": gateway.model, "object": "model", "owned_by": "ratchet"}]})
                else:
                    self._reply(404, _error(f"no route {self.path}", "not_found"))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                channel = self._channel()
                if channel is None:
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._reply(404, _error(f"no route {self.path}", "not_found"))
                    return
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError as exc:
                    self._reply(400, _error(f"request body is not JSON: {exc}", "invalid_request"))
                    return
                node = self.headers.get("X-Ratchet-Node") if token is not None else None
                status, response = gateway._handle(channel, body, node=node)
                self._reply(status, response)

        return Handler

    def _handle(self, channel: Channel, body: dict[str, Any], *,
                node: str | None = None) -> tuple[int, dict[str, Any]]:
        started = time.monotonic()
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
        # worst case is known and reserved before it goes (harness.ledger)
        forwarded, most_output = cap_output({**body, "model": self.model}, self.max_output_tokens,
                                            output_field(self.model))
        worst = self.prices.cost(self.model, worst_case_input_tokens(forwarded), most_output)
        held = self.ledger.reserve(channel.task, channel.generation, self.budget,
                                   (worst or 0.0) if self.reserve_worst_case else 0.0)
        if isinstance(held, BudgetRefusal):
            record["refused"] = str(held)
            self._append(channel, record)
            return 402, _error(str(held), "budget_exhausted")
        if body.get("stream"):
            self.ledger.release(held)
            message = "streaming is not supported by the ratchet gateway"
            record["error"] = message
            self._append(channel, record)
            return 400, _error(message, "invalid_request")
        try:
            response = self.upstream.complete(forwarded)
        except Exception as exc:  # any upstream failure becomes an error the agent can read
            self.ledger.release(held)
            record["error"] = f"{type(exc).__name__}: {exc}"
            self._append(channel, record)
            status = getattr(exc, "status_code", None)
            # an auth failure's text can quote part of the key: the sandbox gets none of it
            shown = (f"the upstream refused the gateway's credentials (HTTP {status}); see the "
                     "controller's trajectory log" if status in (401, 403)
                     else f"{type(exc).__name__}: {exc}")
            if status is None or status >= 500 or status in (401, 403, 408, 429):
                # not the agent's doing (a 400, such as an overlong context, is)
                self.ledger.record_failure(channel.task, shown.splitlines()[0][:300])
            return 502, _error(f"the upstream model failed: {shown}", "upstream_error")
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
        usage = Usage(1, prompt, completion, cost or 0.0, time.monotonic() - started,
                      unpriced_calls=int(cost is None))
        self.ledger.settle(held, channel.task, channel.generation, usage, model=self.model)
        record.update(response=response, usage=asdict(usage), reserved_usd=held.cost_usd)
        self._append(channel, record)
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


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "code": code}}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
