"""The LLM gateway: real HTTP end to end, no mocks.

The upstream is a real :class:`ScriptedModelServer` reached through :class:`OpenAIUpstream`
(the openai SDK); the "sandbox" is the real openai SDK talking to a gateway channel over
its unix socket (as inside a container) or over loopback TCP (the local backend).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from harness.models.gateway import Budget, Channel, Gateway, OpenAIUpstream, PriceTable, RequestPolicy
from harness.models.scripted_model import ScriptedModelServer

UPSTREAM_KEY = "fake-upstream-key-7f3a9c0e41d2"
"""The controller's real credential: it must never leave the host side of the gateway."""
SANDBOX_KEY = "sandbox-token-5b8e"
"""Whatever the sandbox puts in its Authorization header: it must never reach upstream."""
MODEL = "priced-model"
PRICE = (1000.0, 2000.0)  # USD per million tokens: 1000 prompt + 100 completion = $1.20
CALL_COST = (1000 * PRICE[0] + 100 * PRICE[1]) / 1e6
MAX_OUTPUT = 100
"""The gateways' output ceiling here: a call's reserved worst case is ~$0.3, so a $1 budget
takes one $1.20 call (and refuses the next), as it did before reservations."""

SCRIPT: dict[str, Any] = {"rules": [
    # one usage per concurrent task, so a misattributed call shows in the counts
    *({"any_contains": f"worker-{i}", "reply": f"ok {i}",
       "usage": {"prompt_tokens": 100 * (i + 1), "completion_tokens": i + 1}} for i in range(4)),
    {"last_user_contains": "fix", "reply": "a fix",
     "usage": {"prompt_tokens": 1000, "completion_tokens": 100}},
]}


# -- fixtures -----------------------------------------------------------------------------

@pytest.fixture
def upstream() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(SCRIPT) as server:
        yield server


class _Gateways:
    """Makes gateways over the test's upstream and closes every channel they open."""

    def __init__(self, upstream_url: str, log_dir: Path):
        self.upstream_url, self.log_dir = upstream_url, log_dir
        self.channels: list[tuple[Gateway, Channel]] = []

    def make(self, *, model: str = MODEL, budget: Budget = Budget(),
             prices: PriceTable | None = None, policy: RequestPolicy | None = None,
             upstream_url: str | None = None, **upstream: Any) -> Gateway:
        return Gateway(OpenAIUpstream(upstream_url or self.upstream_url, UPSTREAM_KEY, **upstream),
                       model=model, log_dir=self.log_dir, budget=budget, max_output_tokens=MAX_OUTPUT,
                       prices=prices or PriceTable({MODEL: PRICE}), policy=policy)

    def open(self, gateway: Gateway, task: str, generation: str = "gen-0", *,
             tcp: bool = False) -> Channel:
        channel = gateway.open_channel(task, generation, tcp=tcp)
        self.channels.append((gateway, channel))
        return channel

    def close(self) -> list[threading.Thread]:
        """Close every channel, all at once, in the background: a close waits out its
        server's poll interval (0.5 s), which would otherwise dominate this module's time."""
        closing = [threading.Thread(target=gateway.close_channel, args=(channel,))
                   for gateway, channel in self.channels]
        for thread in closing:
            thread.start()
        return closing


@pytest.fixture(scope="module")
def _closing() -> Iterator[list[threading.Thread]]:
    """Channel closes still running; all are finished before the module ends."""
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), "a gateway channel did not close"


@pytest.fixture
def gateways(upstream: ScriptedModelServer, tmp_path: Path,
             _closing: list[threading.Thread]) -> Iterator[_Gateways]:
    made = _Gateways(upstream.base_url, tmp_path / "trajectories")
    yield made
    _closing.extend(made.close())


def sandbox_client(channel: Channel, **options: Any) -> openai.OpenAI:
    """The openai SDK as an agent in a sandbox uses it: over the socket, or over TCP."""
    if channel.socket_path is not None:
        transport = httpx2.HTTPTransport(uds=str(channel.socket_path))
        return openai.OpenAI(base_url="http://gateway/v1", api_key=SANDBOX_KEY,
                             http_client=httpx2.Client(transport=transport), **options)
    assert channel.base_url is not None
    return openai.OpenAI(base_url=channel.base_url, api_key=SANDBOX_KEY, **options)


def ask(client: openai.OpenAI, text: str = "please fix it", *, model: str = "gpt-4o"):
    return client.chat.completions.create(model=model,
                                          messages=[{"role": "user", "content": text}])


def records(channel: Channel) -> list[dict[str, Any]]:
    return [json.loads(line) for line in channel.trajectory.read_text().splitlines()]


# -- accounting -----------------------------------------------------------------------------

@pytest.mark.parametrize("tcp", [False, True], ids=["unix-socket", "tcp"])
def test_usage_is_counted_per_task_generation_and_run(gateways, tcp):
    """Ledger tokens and cost per task, per generation and for the run are exactly the
    scripted usage times the price table's entry for the gateway's model."""
    gateway = gateways.make()
    a1 = sandbox_client(gateways.open(gateway, "task-a1", "gen-1", tcp=tcp))
    a2 = sandbox_client(gateways.open(gateway, "task-a2", "gen-1", tcp=tcp))
    b1 = sandbox_client(gateways.open(gateway, "task-b1", "gen-2", tcp=tcp))
    for client, calls in ((a1, 2), (a2, 1), (b1, 1)):
        for _ in range(calls):
            completion = ask(client)
            assert completion.choices[0].message.content == "a fix"
            assert completion.usage.prompt_tokens == 1000
            assert completion.usage.completion_tokens == 100

    def expect(usage, calls: int) -> None:
        assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (
            calls, 1000 * calls, 100 * calls)
        assert usage.cost_usd == pytest.approx(CALL_COST * calls)
        assert usage.model_seconds > 0

    ledger = gateway.ledger
    expect(ledger.tasks["task-a1"], 2)
    expect(ledger.tasks["task-a2"], 1)
    expect(ledger.tasks["task-b1"], 1)
    expect(ledger.generations["gen-1"], 3)
    expect(ledger.generations["gen-2"], 1)
    expect(ledger.run, 4)
    snapshot = ledger.snapshot()
    assert snapshot["run"]["prompt_tokens"] == 4000
    assert set(snapshot["tasks"]) == {"task-a1", "task-a2", "task-b1"}


def test_model_without_price_is_counted_as_unknown_and_warns_once(gateways, caplog):
    """A model with no price (allowed with --allow-unpriced) is counted as unknown cost,
    never as $0, with one warning, not a crash."""
    gateway = gateways.make(model="unpriced-model")
    client = sandbox_client(gateways.open(gateway, "task-1"))
    with caplog.at_level(logging.WARNING, logger="harness.models.gateway"):
        for _ in range(3):
            assert ask(client).choices[0].message.content == "a fix"
    usage = gateway.ledger.run
    assert (usage.calls, usage.prompt_tokens, usage.cost_usd, usage.unpriced_calls) == (3, 3000, 0.0, 3)
    warnings = [r for r in caplog.records
                if r.name == "harness.models.gateway" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unpriced-model" in warnings[0].getMessage()
    assert "RATCHET_PRICES" in warnings[0].getMessage()


# -- budgets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["task", "generation", "run"])
def test_budget_refuses_with_402_naming_scope_and_limit(gateways, upstream, scope):
    """Past a budget the gateway answers 402 with a message naming the scope and its limit;
    the openai SDK raises it to the agent without retrying, and upstream sees no call."""
    budget = Budget(**{f"per_{scope}": 1.0})
    gateway = gateways.make(budget=budget)
    # the first call spends $1.20 in task "spender"; the refused call comes from a task that
    # shares the limited scope: the same task, another task of the generation, another
    # generation of the run
    spender = gateways.open(gateway, "spender", "gen-1")
    refused_task, refused_gen = {"task": ("spender", "gen-1"), "generation": ("other", "gen-1"),
                                 "run": ("other", "gen-2")}[scope]
    refused = spender if refused_task == "spender" else gateways.open(
        gateway, refused_task, refused_gen)
    ask(sandbox_client(spender))
    assert len(upstream.requests) == 1

    with pytest.raises(openai.APIStatusError) as caught:
        ask(sandbox_client(refused))  # default max_retries: a retried 402 would show below
    error = caught.value
    assert error.status_code == 402
    assert f"this {scope} has spent $1.2000 of its $1.0000 limit" in error.message
    assert "budget exhausted" in error.message
    assert len(upstream.requests) == 1  # nothing forwarded
    refusals = [r for r in records(refused) if "refused" in r]
    assert len(refusals) == 1  # one request reached the gateway: the SDK did not retry
    assert "$1.0000 limit" in refusals[0]["refused"]
    assert gateway.ledger.run.calls == 1


def test_budget_of_one_task_does_not_refuse_another(gateways, upstream):
    """A per-task limit is per task: a spent task is refused, a fresh one is not."""
    gateway = gateways.make(budget=Budget(per_task=1.0))
    spent = sandbox_client(gateways.open(gateway, "spent"))
    fresh = sandbox_client(gateways.open(gateway, "fresh"))
    ask(spent)
    with pytest.raises(openai.APIStatusError):
        ask(spent)
    assert ask(fresh).choices[0].message.content == "a fix"
    assert len(upstream.requests) == 2


# -- what is forwarded and what is logged ----------------------------------------------------

def test_forwarded_model_is_the_gateways_not_the_sandboxs(gateways, upstream):
    """The sandbox cannot pick a pricier model: upstream gets the gateway's model name and
    the cost is the gateway model's."""
    gateway = gateways.make()
    client = sandbox_client(gateways.open(gateway, "task-1"))
    ask(client, model="gpt-4o")
    ask(client, model="o1-pro-most-expensive")
    assert [r["model"] for r in upstream.requests] == [MODEL, MODEL]
    assert gateway.ledger.run.cost_usd == pytest.approx(2 * CALL_COST)
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_every_request_response_and_refusal_is_in_the_trajectory(gateways):
    """Each call appends one JSONL record: the request as the sandbox sent it, the
    response as returned (same id), usage; a refusal is recorded with its reason."""
    gateway = gateways.make(budget=Budget(per_task=2.0))
    channel = gateways.open(gateway, "traj/task 1", "gen-7")  # unsafe chars in the name
    client = sandbox_client(channel)
    first, second = ask(client, "please fix one"), ask(client, "please fix two")
    with pytest.raises(openai.APIStatusError):
        ask(client, "please fix three")
    assert channel.trajectory.parent == gateways.log_dir
    assert channel.trajectory.name == "traj_task_1.jsonl"
    lines = records(channel)
    assert len(lines) == 3
    for line, completion, text in ((lines[0], first, "please fix one"),
                                   (lines[1], second, "please fix two")):
        assert (line["task"], line["generation"]) == ("traj/task 1", "gen-7")
        assert line["request"]["messages"] == [{"role": "user", "content": text}]
        assert line["request"]["model"] == "gpt-4o"  # what the sandbox asked for
        assert line["response"]["id"] == completion.id
        assert line["response"]["choices"][0]["message"]["content"] == "a fix"
        assert line["usage"]["prompt_tokens"] == 1000 and line["usage"]["calls"] == 1
    assert lines[2]["request"]["messages"][0]["content"] == "please fix three"
    assert "response" not in lines[2] and "task has spent" in lines[2]["refused"]


class _HeaderRecorder:
    """A real HTTP hop in front of the scripted server that keeps every request's headers,
    so the test can see exactly what reached the upstream side."""

    def __init__(self, target: str):
        self.headers: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                recorder.headers.append({k.lower(): v for k, v in self.headers.items()})
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                forwarded = urllib.request.Request(
                    target + self.path.removeprefix("/v1"), data=raw, method="POST",
                    headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(forwarded, timeout=10) as answer:
                    status, data = answer.status, answer.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_credentials_stay_on_their_side(upstream, tmp_path):
    """The sandbox's Authorization header never reaches upstream (the gateway's key does),
    and the upstream key is in no response the sandbox gets and in no trajectory."""
    recorder = _HeaderRecorder(upstream.base_url)
    gateway = Gateway(OpenAIUpstream(recorder.base_url, UPSTREAM_KEY), model=MODEL,
                      log_dir=tmp_path, prices=PriceTable({MODEL: PRICE}),
                      budget=Budget(per_task=1.0), max_output_tokens=MAX_OUTPUT)
    channel = gateway.open_channel("task-1")
    try:
        raw = httpx2.Client(transport=httpx2.HTTPTransport(uds=str(channel.socket_path)))
        sent = {"model": "m", "messages": [{"role": "user", "content": "please fix"}]}
        answers = [raw.post("http://gateway/v1/chat/completions", json=sent,
                            headers={"Authorization": f"Bearer {SANDBOX_KEY}"})
                   for _ in range(2)]  # the second is refused by the budget
        answers.append(raw.get("http://gateway/v1/models"))
    finally:
        gateway.close_channel(channel)
        recorder.close()
    assert [a.status_code for a in answers] == [200, 402, 200]
    assert len(recorder.headers) == 1
    assert recorder.headers[0]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert not any(SANDBOX_KEY in value for h in recorder.headers for value in h.values())
    for answer in answers:
        assert UPSTREAM_KEY not in answer.text
        assert UPSTREAM_KEY not in str(answer.headers)
    assert UPSTREAM_KEY not in channel.trajectory.read_text()
    assert SANDBOX_KEY not in channel.trajectory.read_text()


def test_upstream_failure_is_a_readable_502(gateways, upstream):
    """When upstream fails (here: the scripted model has no answer, a 400 upstream), the
    sandbox gets a 502 that says so, the failure is on record, and nothing is counted."""
    gateway = gateways.make()
    channel = gateways.open(gateway, "task-1")
    client = sandbox_client(channel, max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, "something no rule answers")
    assert caught.value.status_code == 502
    assert "the upstream model failed" in caught.value.message
    assert "no scripted rule matched" in caught.value.message
    assert UPSTREAM_KEY not in caught.value.message
    (line,) = records(channel)
    assert "no scripted rule matched" in line["error"] and "response" not in line
    assert gateway.ledger.run.calls == 0
    assert gateway.ledger.failure("task-1") is None  # a 400 is the request's (the agent's) fault
    assert ask(client).choices[0].message.content == "a fix"  # the channel still works


def test_an_endpoint_that_is_down_is_recorded_as_not_the_agents_failure(tmp_path):
    gateway = Gateway(OpenAIUpstream("http://127.0.0.1:9/v1", UPSTREAM_KEY, retry_seconds=0),
                      model=MODEL, log_dir=tmp_path)
    channel = gateway.open_channel("task-1", tcp=True)
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            ask(sandbox_client(channel, max_retries=0))
    finally:
        gateway.close_channel(channel)
    assert caught.value.status_code == 502
    assert gateway.ledger.failure("task-1").startswith("APIConnectionError")
    assert gateway.ledger.failure("task-2") is None
    gateway.close_channel(gateway.open_channel("task-1", tcp=True))  # the task's next attempt
    assert gateway.ledger.failure("task-1") is None


def test_concurrent_channels_attribute_usage_to_their_task(gateways):
    """Four tasks calling at once, over sockets and TCP: each task's ledger entry and
    trajectory hold only its own calls."""
    gateway = gateways.make()
    channels = [gateways.open(gateway, f"task-{i}", tcp=bool(i % 2)) for i in range(4)]
    calls = 6
    start = threading.Barrier(len(channels))

    def work(i: int) -> None:
        client = sandbox_client(channels[i], max_retries=0)
        start.wait(timeout=10)
        for _ in range(calls):
            assert ask(client, f"I am worker-{i}").choices[0].message.content == f"ok {i}"

    with ThreadPoolExecutor(max_workers=len(channels)) as pool:
        for future in [pool.submit(work, i) for i in range(len(channels))]:
            future.result(timeout=30)  # re-raises a worker's failure here
    for i, channel in enumerate(channels):
        usage = gateway.ledger.tasks[f"task-{i}"]
        assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (
            calls, calls * 100 * (i + 1), calls * (i + 1))
        lines = records(channel)
        assert len(lines) == calls
        assert all(line["task"] == f"task-{i}" and
                   line["response"]["choices"][0]["message"]["content"] == f"ok {i}"
                   for line in lines)
    assert gateway.ledger.run.calls == calls * len(channels)


class _Slow:
    """An upstream that takes `seconds` per call and notes which thread served each call."""

    def __init__(self, seconds: float):
        self.seconds, self.threads = seconds, []

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        self.threads.append(threading.current_thread().name)
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1}}

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.seconds)
        return self._answer(body)


class _SlowAsync(_Slow):
    async def acomplete(self, body: dict[str, Any]) -> dict[str, Any]:
        import asyncio

        await asyncio.sleep(self.seconds)
        return self._answer(body)


@pytest.mark.parametrize("upstream_kind", [_Slow, _SlowAsync], ids=["blocking", "async"])
def test_calls_wait_on_their_upstream_side_by_side(tmp_path, upstream_kind):
    """An upstream with ``acomplete`` is awaited on the gateway's loop (no pool thread per
    call in flight); one with only ``complete`` runs in the pool. Either way 32 calls of
    0.5 s each overlap, and each is counted once on its own task."""
    slow = upstream_kind(0.5)
    gateway = Gateway(slow, model=MODEL, log_dir=tmp_path, prices=PriceTable({MODEL: PRICE}),
                      max_output_tokens=MAX_OUTPUT)
    channels = [gateway.open_channel(f"task-{i}", tcp=True) for i in range(32)]
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(channels)) as pool:
            answers = list(pool.map(lambda c: ask(sandbox_client(c, max_retries=0)), channels))
        took = time.monotonic() - started
    finally:
        for channel in channels:
            gateway.close_channel(channel)
    assert [a.choices[0].message.content for a in answers] == ["ok"] * 32
    assert took < 8, f"32 calls of 0.5 s took {took:.1f} s: they did not overlap"
    assert all(gateway.ledger.tasks[f"task-{i}"].calls == 1 for i in range(32))
    on_loop = [name == "gateway-loop" for name in slow.threads]
    assert all(on_loop) if upstream_kind is _SlowAsync else not any(on_loop)
    # a gateway that replays paid answers reads trajectories: its calls stay in the pool
    gateway.replay_paid = True
    assert not gateway.serves_on_loop


# -- prices ----------------------------------------------------------------------------------

def test_price_table_load_reads_ratchet_prices(tmp_path, monkeypatch):
    """RATCHET_PRICES names a JSON file {"model": [input, output]} that adds to (and
    overrides) genai-prices' database; an explicit path does the same."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"my-model": [1.5, 3], "gpt-4o": [100, 200]}))
    monkeypatch.setenv("RATCHET_PRICES", str(prices))
    table = PriceTable.load()
    assert table.prices["my-model"] == (1.5, 3.0)
    assert table.prices["gpt-4o"] == (100.0, 200.0)
    assert table.cost("gpt-4o", 1_000_000, 0) == pytest.approx(100.0)  # the override wins
    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)  # the database's
    assert table.cost("my-model", 1_000_000, 2_000_000) == pytest.approx(7.5)
    assert table.cost("nobody-priced-this", 10, 10) is None
    assert PriceTable().cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.50)  # loading changed no default

    monkeypatch.delenv("RATCHET_PRICES")
    assert "my-model" not in PriceTable.load().prices
    assert PriceTable.load(prices).prices["my-model"] == (1.5, 3.0)


# -- what a sandbox may send (harness.models._chat_request) -----------------------------------------

def raw_client(channel: Channel) -> httpx2.Client:
    """Plain HTTP on a channel's socket: requests the openai SDK would not build."""
    return httpx2.Client(transport=httpx2.HTTPTransport(uds=str(channel.socket_path)),
                         base_url="http://gateway", timeout=60)


PLEASE_FIX = [{"role": "user", "content": "please fix"}]


def test_unknown_field_is_the_agents_400_not_an_endpoint_failure(gateways, upstream):
    """An agent's stray field (``top_k``) is a 400 it reads and nothing is noted against the
    endpoint. With the allowlist off, the field reached the openai SDK, whose TypeError was
    counted as an endpoint failure (the task would end with an infrastructure error)."""
    for allowlist in (False, True):
        policy = RequestPolicy() if allowlist else RequestPolicy(allowed_fields=None)
        gateway = gateways.make(policy=policy)
        task = f"task-allowlist-{allowlist}"
        client = sandbox_client(gateways.open(gateway, task), max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="m", messages=PLEASE_FIX, extra_body={"top_k": 5})
        if allowlist:
            assert caught.value.status_code == 400
            assert "unsupported request field(s) 'top_k'" in caught.value.message
            assert "tool_choice" in caught.value.message  # says what is allowed
            assert gateway.ledger.failure(task) is None
        else:
            assert caught.value.status_code == 502
            assert gateway.ledger.failure(task).startswith("TypeError")
    assert upstream.requests == []


def test_billing_fields_never_reach_the_upstream(gateways, upstream):
    """``extra_headers`` (another project's billing header), ``service_tier``, ``extra_body``
    and ``n`` > 1 sent by a sandbox reach the paid upstream with the allowlist off; with it
    on each is a 400 and the upstream sees no request."""
    recorder = _HeaderRecorder(upstream.base_url)
    attacks = [{"extra_headers": {"OpenAI-Project": "proj_someone_else"}},
               {"service_tier": "priority"}, {"extra_body": {"service_tier": "priority"}},
               {"n": 3}]
    try:
        for allowlist in (False, True):
            gateway = gateways.make(upstream_url=recorder.base_url, policy=(
                RequestPolicy() if allowlist else RequestPolicy(allowed_fields=None)))
            http = raw_client(gateways.open(gateway, f"task-{allowlist}"))
            answers = [http.post("/v1/chat/completions",
                                 json={"model": "m", "messages": PLEASE_FIX, **attack})
                       for attack in attacks]
            if not allowlist:
                assert [a.status_code for a in answers] == [200] * 4
                assert recorder.headers[0]["openai-project"] == "proj_someone_else"
                assert [r.get("service_tier") for r in upstream.requests[1:3]] == ["priority"] * 2
                assert upstream.requests[3]["n"] == 3
            else:
                assert [a.status_code for a in answers] == [400] * 4
                assert "'n'" not in answers[3].text and "n must be 1" in answers[3].text
        assert len(recorder.headers) == 4 and len(upstream.requests) == 4  # all from "off"
    finally:
        recorder.close()


def test_oversized_body_is_a_413_logged_as_an_excerpt(gateways, upstream):
    """A 5 MB request passes whole to the upstream (and into memory) without the cap; with
    the default 4 MiB cap it is an HTTP 413 the openai SDK raises at once (no retry), the
    upstream sees nothing, and the trajectory keeps 2 KB of it and its size."""
    big = [{"role": "user", "content": "please fix " + "x" * 5_000_000}]
    off = sandbox_client(gateways.open(gateways.make(policy=RequestPolicy(max_body_bytes=None)),
                                       "uncapped"))
    assert off.chat.completions.create(model="m", messages=big).choices[0].message.content == "a fix"
    assert len(upstream.requests) == 1

    channel = gateways.open(gateways.make(), "capped")
    with pytest.raises(openai.APIStatusError) as caught:
        sandbox_client(channel).chat.completions.create(model="m", messages=big)
    assert caught.value.status_code == 413
    assert "over the ratchet gateway's limit of 4194304 bytes" in caught.value.message
    assert len(upstream.requests) == 1
    (record,) = records(channel)  # one request: the SDK did not retry
    assert record["status"] == 413 and record["request_bytes"] > 5_000_000
    assert len(record["request_excerpt"]) == 2048 and "please fix" in record["request_excerpt"]
    assert channel.trajectory.stat().st_size < 4096
    # the connection is still usable afterwards (the rest of the body was drained)
    assert ask(sandbox_client(channel)).choices[0].message.content == "a fix"


def test_body_cap_without_a_declared_length(gateways):
    """A chunked body (no Content-Length) is cut off at the cap too."""
    channel = gateways.open(gateways.make(policy=RequestPolicy(max_body_bytes=10_000)), "chunked")

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}]}'

    answer = raw_client(channel).post("/v1/chat/completions", content=chunks())
    assert answer.status_code == 413
    (record,) = records(channel)
    assert 10_000 < record["request_bytes"] < 100_000  # reading stopped past the cap


def test_body_cap_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("RATCHET_GATEWAY_MAX_BODY_BYTES", "1000")
    assert RequestPolicy.from_environment().max_body_bytes == 1000
    monkeypatch.setenv("RATCHET_GATEWAY_MAX_BODY_BYTES", "4MB")
    with pytest.raises(ValueError, match="RATCHET_GATEWAY_MAX_BODY_BYTES must be a positive"):
        RequestPolicy.from_environment()


def test_streaming_request_is_refused_with_a_clear_400(gateways, upstream):
    """``stream: true`` gets a 400 saying to send stream=false, logged, nothing forwarded.
    With the refusal off, the request went upstream and was charged, and the agent got a
    whole JSON completion where it expected a stream of events."""
    gateway = gateways.make(policy=RequestPolicy(refuse_streaming=False))
    answer = raw_client(gateways.open(gateway, "stream-off")).post(
        "/v1/chat/completions", json={"model": "m", "messages": PLEASE_FIX, "stream": True})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    assert len(upstream.requests) == 1 and gateway.ledger.run.calls == 1

    gateway = gateways.make()
    channel = gateways.open(gateway, "stream-on")
    with pytest.raises(openai.BadRequestError) as caught:
        sandbox_client(channel, max_retries=0).chat.completions.create(
            model="m", stream=True, messages=PLEASE_FIX)
    assert "streaming is not supported by the ratchet gateway: send stream=false" in caught.value.message
    assert len(upstream.requests) == 1 and gateway.ledger.run.calls == 0
    (record,) = records(channel)
    assert record["status"] == 400 and '"stream":true' in record["request_excerpt"]


def test_refused_request_is_logged_as_an_excerpt_not_whole(gateways):
    """Twenty refused 1 MB requests: with the log cap off they are logged whole (20 MB of
    trajectory); with it on, each is 2 KB and its size."""
    body = {"model": "m", "messages": [{"role": "user", "content": "z" * 1_000_000}], "top_k": 1}
    sizes = {}
    for cap in (None, 2048):
        channel = gateways.open(gateways.make(policy=RequestPolicy(excerpt_bytes=cap)), f"log-{cap}")
        http = raw_client(channel)
        assert {http.post("/v1/chat/completions", json=body).status_code for _ in range(20)} == {400}
        lines = records(channel)
        assert len(lines) == 20 and all(line["request_bytes"] > 1_000_000 for line in lines)
        assert all("top_k" in line["rejected"] for line in lines)
        sizes[cap] = channel.trajectory.stat().st_size
    assert sizes[None] > 20_000_000
    assert sizes[2048] < 20 * 3000


def test_not_json_and_no_messages_are_the_agents_400(gateways, upstream):
    gateway = gateways.make()
    channel = gateways.open(gateway, "bad-bodies")
    http = raw_client(channel)
    for content, says in ((b"{not json", "not JSON"), (b"[1, 2]", "JSON object"),
                          (b'{"model": "m"}', "`messages` must be a non-empty list")):
        answer = http.post("/v1/chat/completions", content=content)
        assert answer.status_code == 400 and says in answer.json()["error"]["message"]
    assert upstream.requests == [] and gateway.ledger.failure("bad-bodies") is None
    assert len(records(channel)) == 3


# -- retries (harness.models._retry) ----------------------------------------------------------------

def test_a_429_burst_then_recovery_costs_the_call_nothing(gateways, upstream, caplog):
    """Four 429s with ``Retry-After: 0.3``, then the endpoint answers: the agent's call
    succeeds (the gateway waited at least what was asked each time, and logged each retry),
    and nothing is noted against the endpoint. With retries off, the same burst fails the
    call and is recorded as an endpoint failure."""
    off = gateways.make(retry_seconds=0)
    upstream.fail_next(4, 429, retry_after=0.3)
    with pytest.raises(openai.APIStatusError) as caught:
        ask(sandbox_client(gateways.open(off, "no-retries"), max_retries=0))
    assert caught.value.status_code == 502
    assert off.ledger.failure("no-retries").startswith("RateLimitError")

    gateway = gateways.make(retry_seconds=60)
    client = sandbox_client(gateways.open(gateway, "retried"), max_retries=0)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="harness.models.gateway"):
        assert ask(client).choices[0].message.content == "a fix"
    assert time.monotonic() - started >= 3 * 0.3
    assert upstream.refused_calls == 4
    assert gateway.ledger.failure("retried") is None and gateway.ledger.run.calls == 1
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 3 and all("HTTP 429" in m for m in retries)


def test_a_persistent_outage_fails_after_the_retry_time(gateways, upstream):
    """A 503 that does not end is retried for `retry_seconds`, then it is the endpoint's
    failure (an infrastructure error), not a hang."""
    gateway = gateways.make(retry_seconds=1.5)
    upstream.fail_next(1000, 503)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        ask(sandbox_client(gateways.open(gateway, "outage"), max_retries=0))
    assert caught.value.status_code == 502 and time.monotonic() - started < 10
    assert upstream.refused_calls >= 2
    assert gateway.ledger.failure("outage").startswith("InternalServerError")


def test_a_run_that_ends_while_its_call_is_retried_is_the_endpoints_failure(
        gateways, upstream, monkeypatch):
    """The sandbox's clock can run out while the gateway still waits out an outage (its
    retries outlast the task's wall clock, or the agent's own model timeout): the agent
    never hears the verdict and its run ends unsubmitted. That is the endpoint's failure,
    not the agent's: the ledger says so while the call is being retried, and not once the
    call is answered. With the retry notice switched off the same run reads as the agent's."""
    def gave_up(gateway: Gateway, task: str) -> str | None:
        upstream.fail_next(2, 503, retry_after=1.0)  # two 503s: at least 2 s of retrying
        with pytest.raises(openai.APITimeoutError):  # the agent's clock ran out first
            ask(sandbox_client(gateways.open(gateway, task), max_retries=0, timeout=1.2))
        seen = gateway.ledger.failure(task)
        deadline = time.monotonic() + 30
        while gateway.ledger.run.calls < 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # the gateway's call ends: the endpoint answered the third try
        assert gateway.ledger.run.calls == 1 and gateway.ledger.failure(task) is None
        return seen

    seen = gave_up(gateways.make(retry_seconds=30), "gave-up")
    assert seen is not None and "still being retried" in seen and "HTTP 503" in seen

    deaf = gateways.make(retry_seconds=30)
    monkeypatch.setattr(deaf.ledger, "note_retry", lambda task, message: None)
    assert gave_up(deaf, "unheard") is None  # the check off: counted as the agent's failure


def test_a_retry_after_past_the_retry_time_is_not_waited_out(gateways, upstream):
    gateway = gateways.make(retry_seconds=5)
    upstream.fail_next(1, 429, retry_after=3600)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError):
        ask(sandbox_client(gateways.open(gateway, "asked-an-hour"), max_retries=0))
    assert time.monotonic() - started < 5


def test_retry_after_forms():
    """``retry-after-ms``, seconds and an HTTP date are all read; none is no wait asked."""
    import email.utils

    from harness.models._retry import retry_after

    def error(headers: dict[str, str]) -> openai.APIStatusError:
        response = httpx2.Response(429, headers=headers,
                                   request=httpx2.Request("POST", "http://x/v1/chat/completions"))
        return openai.RateLimitError("slow down", response=response, body=None)

    assert retry_after(error({"retry-after-ms": "1500"})) == 1.5
    assert retry_after(error({"retry-after": "7"})) == 7.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after(error({"retry-after": later})) <= 30
    assert retry_after(error({})) is None
    assert retry_after(ValueError("not an HTTP error")) is None


def test_upstream_settings_are_sent_under_the_sandboxs_fields(gateways, upstream):
    """`OpenAIUpstream` keyword settings go with every request; a field the sandbox sets
    itself wins."""
    gateway = gateways.make(temperature=0.2, seed=7)
    client = sandbox_client(gateways.open(gateway, "settings"))
    ask(client)
    client.chat.completions.create(model="m", messages=PLEASE_FIX, temperature=0.9)
    assert [(r["temperature"], r["seed"]) for r in upstream.requests] == [(0.2, 7), (0.9, 7)]
