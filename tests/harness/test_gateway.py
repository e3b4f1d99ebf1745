"""The LLM gateway: real HTTP end to end, no mocks.

The upstream is a real :class:`ScriptedModelServer` reached through :class:`OpenAIUpstream`
(the openai SDK); the "sandbox" is the real openai SDK talking to a gateway channel over
its unix socket (as inside a container) or over loopback TCP (the local backend).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from harness.gateway import Budget, Channel, Gateway, OpenAIUpstream, PriceTable
from harness.scripted_model import ScriptedModelServer

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
             prices: PriceTable | None = None) -> Gateway:
        return Gateway(OpenAIUpstream(self.upstream_url, UPSTREAM_KEY), model=model,
                       log_dir=self.log_dir, budget=budget, max_output_tokens=MAX_OUTPUT,
                       prices=prices or PriceTable({MODEL: PRICE}))

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
    with caplog.at_level(logging.WARNING, logger="harness.gateway"):
        for _ in range(3):
            assert ask(client).choices[0].message.content == "a fix"
    usage = gateway.ledger.run
    assert (usage.calls, usage.prompt_tokens, usage.cost_usd, usage.unpriced_calls) == (3, 3000, 0.0, 3)
    warnings = [r for r in caplog.records
                if r.name == "harness.gateway" and r.levelno == logging.WARNING]
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


def test_a_rejected_streaming_request_is_in_the_trajectory(gateways, upstream):
    """Every request the sandbox makes is on record, including ones the gateway rejects."""
    channel = gateways.open(gateways.make(), "task-1")
    client = sandbox_client(channel, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", stream=True,
                                       messages=[{"role": "user", "content": "please fix"}])
    assert upstream.requests == []
    assert channel.trajectory.exists() and len(records(channel)) == 1


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
    gateway = Gateway(OpenAIUpstream("http://127.0.0.1:9/v1", UPSTREAM_KEY), model=MODEL,
                      log_dir=tmp_path)
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
