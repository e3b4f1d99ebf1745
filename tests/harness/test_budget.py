"""A budget that holds: real HTTP to the gateway from 64 concurrent callers, a scripted
upstream behind it, oversized requests, small limits. The defence (a call's worst case
reserved before it is forwarded) is switched off once to show the attack overshooting."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest

from harness.models.gateway import Budget, Gateway, OpenAIUpstream
from harness.models.ledger import Ledger, Usage, cap_output, output_field, worst_case_input_tokens
from harness.models.prices import PriceTable
from harness.models.scripted_model import ScriptedModelServer

MODEL = "priced-model"
PRICE = (1.0, 2.0)  # USD per million tokens
CALLERS = 64
BIG = "x" * 400_000  # ~100k tokens by the scripted model's count: $0.10 a call
LIMIT = 1.0  # two worst cases ($0.40 each: a byte a token) fit at once; ten real calls would not


class _SlowUpstream(OpenAIUpstream):
    """The scripted model, answering after a delay: the 64 calls are all in flight at once."""

    def complete(self, body):
        time.sleep(1.0)
        return super().complete(body)


def _post(gateway: Gateway, channel) -> int:
    transport = httpx2.HTTPTransport(uds=str(channel.socket_path), retries=20)  # a full listen
    with httpx2.Client(transport=transport, timeout=60) as client:            # queue: connect again
        answer = client.post("http://gateway/v1/chat/completions", json={
            "model": "m", "max_tokens": 1_000_000,  # asks for far more than the ceiling
            "messages": [{"role": "user", "content": BIG}]})
    return answer.status_code


def _storm(tmp_path: Path, scope: str, *, reserve: bool) -> tuple[Gateway, list[int], float]:
    """64 concurrent oversized calls into one limited scope; the statuses, and the spend
    the trajectories record (the gateway's log of what upstream was paid for)."""
    with ScriptedModelServer({"default": "ok"}) as upstream:
        gateway = Gateway(_SlowUpstream(upstream.base_url, "k"), model=MODEL,
                          log_dir=tmp_path / "trajectories", prices=PriceTable({MODEL: PRICE}),
                          budget=Budget(**{f"per_{scope}": LIMIT}), max_output_tokens=1000,
                          ledger=Ledger(tmp_path / "spend.jsonl"))
        gateway.reserve_worst_case = reserve
        # the task scope: all calls of one task; generation: 64 tasks of one generation;
        # run: 64 tasks of 64 generations
        channels = [gateway.open_channel("task" if scope == "task" else f"task-{i}",
                                         f"gen-{i}" if scope == "run" else "gen-0")
                    for i in range(1 if scope == "task" else CALLERS)]
        try:
            with ThreadPoolExecutor(CALLERS) as pool:
                statuses = list(pool.map(lambda i: _post(gateway, channels[i % len(channels)]),
                                         range(CALLERS)))
        finally:
            for channel in channels:
                gateway.close_channel(channel)
    paid = sum(json.loads(line)["usage"]["cost_usd"]
               for path in (tmp_path / "trajectories").glob("*.jsonl")
               for line in path.read_text().splitlines() if '"usage"' in line)
    return gateway, statuses, paid


@pytest.mark.parametrize("scope", ["task", "generation", "run"])
def test_64_concurrent_oversized_callers_never_pass_a_limit(tmp_path, scope):
    """Invariant: under any concurrency, a task's, a generation's or the run's spend never
    passes its limit; calls past it get 402 and never reach upstream."""
    gateway, statuses, paid = _storm(tmp_path, scope, reserve=True)
    assert set(statuses) <= {200, 402}
    assert statuses.count(200) >= 2  # the budget is used, not refused wholesale
    assert paid <= LIMIT
    assert gateway.ledger.run.cost_usd == pytest.approx(paid)
    spend_log = [json.loads(line) for line in (tmp_path / "spend.jsonl").read_text().splitlines()]
    assert len(spend_log) == statuses.count(200)
    assert sum(entry["cost_usd"] for entry in spend_log) == pytest.approx(paid)


def test_without_the_reservation_the_same_storm_overshoots(tmp_path):
    """The attack works with the defence off: checked before and charged after, 64
    concurrent calls all pass the check and spend many times the limit."""
    _, statuses, paid = _storm(tmp_path, "run", reserve=False)
    assert statuses.count(200) > 10
    assert paid > 2 * LIMIT


def test_the_output_ceiling_is_forced_on_every_call():
    """A call asking for more output than the ceiling, or for none, is sent with the
    ceiling; a smaller ask is kept. The worst case reserved is what it can produce."""
    assert cap_output({"max_tokens": 10**6}, 1000) == ({"max_tokens": 1000}, 1000)
    assert cap_output({}, 1000) == ({"max_tokens": 1000}, 1000)
    assert cap_output({"max_tokens": 50}, 1000) == ({"max_tokens": 50}, 50)
    assert cap_output({"max_completion_tokens": "lots"}, 1000) == ({"max_completion_tokens": 1000}, 1000)
    assert cap_output({}, 1000, output_field("o4-mini")) == ({"max_completion_tokens": 1000}, 1000)
    assert output_field("openai/gpt-5-mini") == "max_completion_tokens"
    assert output_field("gpt-4o") == output_field("qwen2.5-coder:7b") == "max_tokens"
    body = {"messages": [{"role": "user", "content": "é" * 10}]}
    assert worst_case_input_tokens(body) >= 20  # bytes, not characters


def test_the_request_upstream_gets_carries_the_ceiling(tmp_path):
    """What is reserved is what is sent: upstream sees max_tokens held to the ceiling."""
    with ScriptedModelServer({"default": "ok"}) as upstream:
        gateway = Gateway(OpenAIUpstream(upstream.base_url, "k"), model=MODEL,
                          log_dir=tmp_path, prices=PriceTable({MODEL: PRICE}), max_output_tokens=321)
        channel = gateway.open_channel("t")
        try:
            for asked in (None, 10**6, 7):
                transport = httpx2.HTTPTransport(uds=str(channel.socket_path))
                with httpx2.Client(transport=transport) as client:
                    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
                    if asked is not None:
                        body["max_tokens"] = asked
                    assert client.post("http://gateway/v1/chat/completions", json=body).status_code == 200
        finally:
            gateway.close_channel(channel)
    assert [r["max_tokens"] for r in upstream.requests] == [321, 321, 7]


def test_a_channels_usage_is_a_snapshot_so_a_second_run_on_the_same_key_is_counted():
    """The self proposer subtracts a channel's usage before a sandboxed run from the usage
    after it. With the ledger's live totals handed out, "before" moved with the calls and a
    second attempt on the same key counted 0 calls ("the agent got no answer")."""
    ledger = Ledger()
    ledger.settle(None, "gen-0001.self", "gen-0001", Usage(1, 10, 5))
    before = ledger.task("gen-0001.self")
    ledger.settle(None, "gen-0001.self", "gen-0001", Usage(1, 20, 7))
    after = ledger.task("gen-0001.self")
    assert (after.calls - before.calls, after.prompt_tokens - before.prompt_tokens) == (1, 20)


def test_the_forecast_says_the_spend_before_and_after_a_generation_is_recorded():
    """A budget can stop a run inside the seed's evaluation: the forecast then says what was
    spent and that no generation finished, instead of dividing by a generation that never was."""
    from harness.loop.journal import GenerationState, RunState
    from harness.loop.spend import RunSpend
    from harness.models.ledger import Ledger, Usage

    ledger = Ledger()
    ledger.carry(Usage(cost_usd=0.06), "spent on the seed's evaluation")
    spend = RunSpend(ledger, budget_usd=0.10)
    state = RunState(generations={0: GenerationState(number=0)})
    assert spend.forecast(state, 2) == ("forecast: $0.0600 spent and no generation finished "
                                        "yet; one generation (the seed's evaluation) costs at "
                                        "least that")
    state.generations[0].recorded = True
    assert spend.forecast(state, 2) == (
        "forecast: $0.0600 per generation so far ($0.0600 over 1); the $0.10 budget ($0.0400 "
        "left) covers about 0 more; 2 more planned")
