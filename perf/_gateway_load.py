"""The gateway under load, shared by ``gateway_load.py`` and ``executor_scaling.py``: N
client threads in a child process post chat requests to gateway channels (straight to their
unix sockets, or through one `harness.models.relay.Relay` each, as on a cluster node); this
process's CPU over the load is the gateway's alone.

Imports ``harness`` from ``sys.path`` as the caller left it, so ``gateway_load.py --tree``
can measure another checkout's gateway with the same code.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    from harness.models.gateway import Gateway, OpenAIUpstream, PriceTable
    from harness.models.relay import Relay
    from harness.models.scripted_model import ScriptedModelServer
except ImportError:  # a checkout from before harness/ was split into subpackages (--against)
    from harness.gateway import Gateway, OpenAIUpstream, PriceTable  # type: ignore[no-redef]
    from harness.relay import Relay  # type: ignore[no-redef]
    from harness.scripted_model import ScriptedModelServer  # type: ignore[no-redef]

__all__ = ["REQUEST_BYTES", "RELAY_REQUESTS", "model_process", "relay_throughput"]

RELAY_REQUESTS = 640
"""Requests per measurement, split over the clients."""
REQUEST_BYTES = 8192
"""A mid-conversation chat request; real ones grow with the trajectory."""


class _TrivialUpstream:
    """Answers at once: the relay measurement is the gateway's cost, not a model's. It is
    asynchronous like the real `OpenAIUpstream` (``acomplete``), so the gateway serves it the
    way it serves a real endpoint; a checkout from before ``acomplete`` calls ``complete``."""

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0,
                "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}}

    async def acomplete(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.complete(body)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def _clients(targets: list, endpoint, per_client: int, ready, results) -> None:
    """In a child process: one relay per target when `endpoint` is given (as on a node),
    then one client thread per target posting `per_client` requests over a kept-alive
    unix-socket connection."""
    relays = [Relay(endpoint, target, node="bench") for target in targets] if endpoint else []
    paths = [str(r.socket_path) for r in relays] or targets
    body = json.dumps({"model": "agent", "messages": [
        {"role": "system", "content": "s" * 2048},
        {"role": "user", "content": "u" * (REQUEST_BYTES - 2200)}]}).encode()
    latencies: list[float] = []
    errors = Counter()
    go = threading.Barrier(len(paths) + 1)

    def client(path: str) -> None:
        connection = _UnixConnection(path)
        go.wait()
        for _ in range(per_client):
            started = time.perf_counter()
            try:
                connection.request("POST", "/v1/chat/completions", body,
                                   {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                status = type(exc).__name__
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors[status] += 1

    threads = [threading.Thread(target=client, args=(p,)) for p in paths]
    for thread in threads:
        thread.start()
    ready.put("ready")
    go.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    results.put((time.perf_counter() - started, sorted(latencies), dict(errors)))
    for relay in relays:
        relay.close()


def relay_throughput(clients: int, relayed: bool, work: Path, *,
                     model_url: str | None = None, requests: int = RELAY_REQUESTS) -> dict[str, Any]:
    """`RELAY_REQUESTS` calls from `clients` threads, through relays or straight to the
    channels' unix sockets; `model_url`: the real upstream client (openai SDK) to a
    scripted model instead of the trivial upstream."""
    upstream = OpenAIUpstream(model_url, "scripted") if model_url else _TrivialUpstream()
    gateway = Gateway(upstream, model="scripted", prices=PriceTable(),
                      log_dir=work / f"gw-{clients}-{relayed}-{bool(model_url)}")
    endpoint = gateway.serve_relay("127.0.0.1") if relayed else None
    channels = [gateway.open_channel(f"task-{n}", relay=relayed) for n in range(clients)]
    targets = [c.relay_id if relayed else str(c.socket_path) for c in channels]
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    child = context.Process(target=_clients, args=(targets, endpoint, max(1, requests // clients),
                                                   ready, results))
    child.start()
    try:
        ready.get(timeout=60)
        cpu = time.process_time()
        seconds, latencies, errors = results.get(timeout=300)
        cpu = time.process_time() - cpu
    finally:
        child.join(timeout=30)
        for channel in channels:
            gateway.close_channel(channel)
        gateway.stop_relay()
    calls = gateway.ledger.run.calls
    return {"clients": clients, "relayed": relayed, "sdk": bool(model_url),
            "requests": len(latencies),
            "per_s": len(latencies) / seconds, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)], "errors": errors,
            "gateway_cpu_ms": 1000 * cpu / max(1, calls), "ledger_calls": calls}



def _serve_model(script, answer) -> None:
    server = ScriptedModelServer(script).start()
    answer.put(server.base_url)
    threading.Event().wait()


@contextmanager
def model_process(script) -> Iterator[str]:
    """A scripted model in a child process (its CPU is not the controller's); its URL."""
    context = multiprocessing.get_context("spawn")
    answer = context.Queue()
    process = context.Process(target=_serve_model, args=(script, answer), daemon=True)
    process.start()
    try:
        yield answer.get(timeout=60)
    finally:
        process.terminate()
        process.join()
