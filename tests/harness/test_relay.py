"""The gateway across nodes: a node's unix-socket relay carries a sandbox's calls over TCP
to the controller's relay endpoint. Real HTTP end to end (the upstream is a scripted model
server reached with the openai SDK, the "sandbox" is the openai SDK on the relay's socket)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from harness.models.gateway import Budget, Channel, Gateway, OpenAIUpstream, PriceTable, RelayEndpoint
from harness.models.relay import Relay
from harness.models.scripted_model import ScriptedModelServer
from tests.harness.test_gateway import SANDBOX_KEY, UPSTREAM_KEY, ask, sandbox_client

MODEL = "priced-model"
SCRIPT = {"rules": [{"last_user_contains": "fix", "reply": "a fix",
                     "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}]}


@pytest.fixture
def gateway(tmp_path: Path):
    with ScriptedModelServer(SCRIPT) as upstream:
        made = Gateway(OpenAIUpstream(upstream.base_url, UPSTREAM_KEY), model=MODEL,
                       log_dir=tmp_path / "trajectories", prices=PriceTable({MODEL: (1000.0, 2000.0)}),
                       budget=Budget(per_task=2.0), max_output_tokens=100)
        yield made
        made.stop_relay()


def _client(relay: Relay, **options) -> openai.OpenAI:
    """The openai SDK as an agent in a sandbox on a node uses it: on the relay's socket."""
    return sandbox_client(Channel("sandbox", "-", Path("-"), socket_path=relay.socket_path), **options)


def _post(url: str, token: str | None, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_relayed_calls_reach_one_ledger_with_the_node_named(gateway):
    endpoint = gateway.serve_relay()
    channel = gateway.open_channel("gen-0001.task-a", "gen-0001", relay=True)
    assert channel.socket_path is None and channel.relay_id
    with Relay(endpoint, channel.relay_id, node="node-b") as relay:
        client = _client(relay)
        assert ask(client).choices[0].message.content == "a fix"
        assert ask(client).usage.prompt_tokens == 1000
        assert [m.id for m in client.models.list()] == [MODEL]
    usage = gateway.ledger.task("gen-0001.task-a")
    assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (2, 2000, 200)
    assert gateway.ledger.run.cost_usd == pytest.approx(2 * 1.2)
    log = [json.loads(line) for line in channel.trajectory.read_text().splitlines()]
    assert [r["node"] for r in log] == ["node-b", "node-b"]
    assert all(r["request"]["model"] == "gpt-4o" for r in log)  # what the sandbox asked for
    text = channel.trajectory.read_text()
    assert endpoint.token not in text and UPSTREAM_KEY not in text and SANDBOX_KEY not in text

    # the per-task budget is enforced through the relay like on a local channel
    with Relay(endpoint, channel.relay_id) as relay:
        client = _client(relay, max_retries=0)
        with pytest.raises(openai.APIStatusError) as refused:
            ask(client)
        assert refused.value.status_code == 402
    gateway.close_channel(channel)


def test_the_endpoint_refuses_calls_without_the_runs_token(gateway):
    endpoint = gateway.serve_relay()
    channel = gateway.open_channel("task-a", "bench", relay=True)
    url = f"{endpoint.url}/relay/{channel.relay_id}/v1/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "fix"}]}
    for token in (None, "not-the-token", endpoint.token + "x"):
        status, answer = _post(url, token, body)
        assert status == 401 and answer["error"]["code"] == "unauthorized"
    assert gateway.ledger.run.calls == 0 and not channel.trajectory.exists()
    assert _post(url, endpoint.token, body)[0] == 200

    gateway.close_channel(channel)  # a late call of a finished (or lost) run
    status, answer = _post(url, endpoint.token, body)
    assert status == 410 and answer["error"]["code"] == "channel_closed"
    assert _post(f"{endpoint.url}/relay/unknown/v1/chat/completions", endpoint.token, body)[0] == 410
    assert gateway.ledger.run.calls == 1


def test_a_sandbox_gets_a_readable_error_when_the_controller_is_gone():
    dead = RelayEndpoint("http://127.0.0.1:9", "token")  # nothing listens on the discard port
    with Relay(dead, "some-channel") as relay:
        client = _client(relay, max_retries=0)
        with pytest.raises(openai.APIStatusError) as failed:
            ask(client)
    assert failed.value.status_code == 502
    assert "controller's gateway is unreachable" in str(failed.value)
    assert relay.unreachable.startswith("127.0.0.1:9: ConnectionRefusedError")
    assert not relay.socket_path.exists()


def test_the_nodes_probe_tells_a_reachable_gateway_from_an_unreachable_one(gateway):
    from harness.run.ray_executor import _probe_gateway

    assert _probe_gateway(gateway.serve_relay().url) is None  # a 401 without the token: reached
    problem = _probe_gateway("http://127.0.0.1:9")
    assert problem and "Connection refused" in problem


def test_a_relayed_request_is_checked_by_the_controllers_gateway(gateway):
    """Through a node's relay, an unknown field is the gateway's 400 (logged with the node,
    not an endpoint failure), and a body past the cap is refused by the relay itself (413),
    so the node never holds it."""
    endpoint = gateway.serve_relay()
    channel = gateway.open_channel("task-r", "gen-0001", relay=True)
    with Relay(endpoint, channel.relay_id, node="node-c", max_body_bytes=100_000) as relay:
        client = _client(relay, max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "fix"}],
                                           extra_body={"top_k": 3})
        assert "unsupported request field(s) 'top_k'" in caught.value.message
        with pytest.raises(openai.APIStatusError) as caught:
            ask(client, "fix " + "x" * 200_000)
        assert caught.value.status_code == 413
        assert ask(client).choices[0].message.content == "a fix"  # the relay still works
    (rejected, answered) = [json.loads(line) for line in channel.trajectory.read_text().splitlines()]
    assert rejected["node"] == "node-c" and rejected["status"] == 400
    assert answered["node"] == "node-c" and "response" in answered
    assert gateway.ledger.failure("task-r") is None and gateway.ledger.run.calls == 1
    gateway.close_channel(channel)


def test_many_idle_kept_alive_relays_cost_the_controller_no_thread_each(gateway):
    """A hundred relays, each with a kept-alive connection to the endpoint after a call:
    the controller's thread count does not grow with them (http.server held one thread per
    kept-alive connection)."""
    import threading

    endpoint = gateway.serve_relay()
    channels = [gateway.open_channel(f"idle-{n}", relay=True) for n in range(100)]
    relays = [Relay(endpoint, c.relay_id, node="n") for c in channels]
    try:
        before = threading.active_count()
        for relay in relays:
            assert [m.id for m in _client(relay).models.list()] == [MODEL]
        assert threading.active_count() - before < 20
    finally:
        for relay in relays:
            relay.close()
        for channel in channels:
            gateway.close_channel(channel)
