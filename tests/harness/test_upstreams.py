"""Two endpoints (`harness.models.upstreams`): the agent's and the meta model's calls each go to their
own endpoint with their own key and settings, through gateways as the controller builds them.

Real HTTP on both sides: two scripted model servers that, like a real endpoint, answer 401 to
a wrong key (asserted on the server side), and the openai SDK as the caller."""

from __future__ import annotations


import openai
import pytest

from harness.models.upstreams import EndpointSettingError, build_upstreams, resolve_endpoints
from harness.models.gateway import Gateway, Ledger
from harness.loop.runfile import resolve
from harness.loop.settings import LoopSettings, to_settings
from harness.models.scripted_model import ScriptedModelServer

AGENT_KEY, META_KEY = "agent-key-3f9e1c", "meta-key-b07d42"


@pytest.fixture
def servers():
    agent = ScriptedModelServer({"default": "agent says hi"}, api_key=AGENT_KEY).start()
    meta = ScriptedModelServer({"default": "meta says hi"}, api_key=META_KEY).start()
    yield agent, meta
    agent.stop()
    meta.stop()


def _settings(agent: ScriptedModelServer, meta: ScriptedModelServer) -> LoopSettings:
    return to_settings(resolve([], {
        "suite": "quickstart",
        "models.agent.name": "local-coder", "models.agent.base_url": agent.base_url,
        "models.agent.api_key_env": "AGENT_KEY",
        "models.agent.kwargs": {"temperature": 0.2, "top_k": 7},
        "models.meta.name": "paid-meta", "models.meta.base_url": meta.base_url,
        "models.meta.api_key_env": "META_KEY",
        "models.meta.kwargs": {"temperature": 0.9, "reasoning_effort": "high"}}), "two")


def _call(gateway: Gateway, task: str, **extra) -> str:
    channel = gateway.open_channel(task, "gen-0001", tcp=True)
    try:
        client = openai.OpenAI(base_url=channel.base_url, api_key="sandbox-has-no-key", max_retries=0)
        reply = client.chat.completions.create(model="whatever", messages=[
            {"role": "user", "content": "hello"}], **extra)
        return reply.choices[0].message.content
    finally:
        gateway.close_channel(channel)


def test_each_models_calls_land_on_its_own_endpoint_with_its_own_key_and_kwargs(servers, tmp_path):
    agent_server, meta_server = servers
    settings = _settings(agent_server, meta_server)
    agent_up, meta_up, _ = build_upstreams(settings, {"AGENT_KEY": AGENT_KEY, "META_KEY": META_KEY})
    ledger = Ledger()
    agent_gw = Gateway(agent_up, model=settings.agent_model, log_dir=tmp_path / "a", ledger=ledger)
    meta_gw = Gateway(meta_up, model=settings.meta_model, log_dir=tmp_path / "m", ledger=ledger)

    assert _call(agent_gw, "task-1", temperature=0.0) == "agent says hi"
    assert _call(meta_gw, "gen-0001.meta") == "meta says hi"

    assert (agent_server.unauthorized, meta_server.unauthorized) == (0, 0)  # each server checked its key
    [to_agent], [to_meta] = agent_server.requests, meta_server.requests
    assert to_agent["model"] == "local-coder" and to_meta["model"] == "paid-meta"
    # the agent's own temperature wins over the default; a field the SDK does not name still arrives
    assert (to_agent["temperature"], to_agent["top_k"]) == (0.0, 7)
    assert (to_meta["temperature"], to_meta["reasoning_effort"]) == (0.9, "high")
    assert ledger.run.calls == 2  # one ledger: both models are accounted together
    logged = "".join(p.read_text() for p in tmp_path.rglob("*.jsonl"))
    assert AGENT_KEY not in logged and META_KEY not in logged


def test_a_key_sent_to_the_wrong_endpoint_is_refused_there(servers, tmp_path):
    """The server-side check the test above relies on can fail: swapped keys get 401s."""
    agent_server, meta_server = servers
    settings = _settings(agent_server, meta_server)
    agent_up, _, _ = build_upstreams(settings, {"AGENT_KEY": META_KEY, "META_KEY": AGENT_KEY})
    gateway = Gateway(agent_up, model=settings.agent_model, log_dir=tmp_path)
    with pytest.raises(openai.APIStatusError):
        _call(gateway, "task-1")
    assert agent_server.unauthorized >= 1 and agent_server.requests == []


def test_the_simple_case_is_one_endpoint_from_the_environment(servers):
    agent_server, _ = servers
    settings = to_settings(resolve([], {"suite": "quickstart", "models.agent.name": "m"}), "one")
    env = {"OPENAI_BASE_URL": agent_server.base_url, "OPENAI_API_KEY": AGENT_KEY}
    agent, meta = resolve_endpoints(settings, env)
    assert (agent.base_url, agent.api_key_env) == (meta.base_url, meta.api_key_env) == (
        agent_server.base_url, "OPENAI_API_KEY")
    for upstream in build_upstreams(settings, env)[:2]:
        assert upstream.complete({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert len(agent_server.requests) == 2 and agent_server.unauthorized == 0


def test_the_meta_model_inherits_the_agents_endpoint_but_not_its_kwargs(servers):
    agent_server, _ = servers
    settings = to_settings(resolve([], {
        "suite": "q", "models.agent.base_url": agent_server.base_url,
        "models.agent.api_key_env": "AGENT_KEY", "models.agent.kwargs": {"temperature": 0.3}}), "r")
    agent, meta = resolve_endpoints(settings, {"AGENT_KEY": AGENT_KEY})
    assert (meta.base_url, meta.api_key_env, meta.kwargs) == (agent_server.base_url, "AGENT_KEY", {})
    assert "agent-key" not in agent.describe() and "$AGENT_KEY" in agent.describe()


def test_a_named_key_variable_that_is_unset_is_refused_with_the_fix():
    settings = LoopSettings(run="r", suite="q", generations=1, agent_model="a", meta_model="b",
                            agent_base_url="http://127.0.0.1:9/v1", meta_api_key_env="PAID_KEY")
    with pytest.raises(EndpointSettingError, match="models.meta.api_key_env names PAID_KEY.*export PAID_KEY="):
        resolve_endpoints(settings, {})
    with pytest.raises(EndpointSettingError, match="no endpoint for the agent model"):
        resolve_endpoints(LoopSettings(run="r", suite="q", generations=1, agent_model="a",
                                       meta_model="b"), {})
