"""The scripted model server: real HTTP, the real ``openai`` SDK, no mocks."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest

from harness.models.scripted_model import NoRuleMatched, Script, ScriptedModelServer, ScriptError

SCRIPT: dict[str, Any] = {
    "rules": [
        {"model": "special-model", "reply": "by model"},
        {"system_contains": "pirate", "reply": "arr"},
        {"last_user_contains": "count", "replies": ["one", "two", "many"]},
        {"turn": 2, "reply": "third step"},
        {"last_user_contains": "hello", "reply": "first hello rule"},
        {"last_user_contains": "hello", "reply": "never: shadowed by the rule above"},
        {"regex": r"issue #\d+", "reply": "by regex"},
        {"any_contains": "SECRET", "reply": "by any message"},
        {"last_user_contains": "bill", "reply": "billed",
         "usage": {"prompt_tokens": 123, "completion_tokens": 45}},
    ],
}


@pytest.fixture
def server():
    with ScriptedModelServer(SCRIPT) as running:
        yield running


@pytest.fixture
def client(server: ScriptedModelServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=10)


def _ask(client: openai.OpenAI, *messages: tuple[str, str], model: str = "m") -> str:
    completion = client.chat.completions.create(
        model=model, messages=[{"role": r, "content": c} for r, c in messages])
    return completion.choices[0].message.content or ""


def _post(url: str, data: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_response_is_a_well_formed_chat_completion(client, server):
    """The SDK parses the answer into a chat.completion with usage and finish_reason."""
    completion = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello there"}])
    assert completion.object == "chat.completion"
    assert completion.id and completion.created > 0 and completion.model == "m"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == "first hello rule"
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert server.requests == [{"model": "m", "messages": [
        {"role": "user", "content": "hello there"}]}]


def test_first_matching_rule_answers(client):
    """Rules are tried in order: an earlier match shadows a later one with the same condition."""
    assert _ask(client, ("user", "hello")) == "first hello rule"
    assert _ask(client, ("system", "you are a pirate"), ("user", "hello")) == "arr"


def test_each_condition(client):
    """Every condition kind selects its rule, and only its rule."""
    assert _ask(client, ("user", "hello"), model="special-model") == "by model"
    assert _ask(client, ("system", "be a pirate"), ("user", "anything")) == "arr"
    assert _ask(client, ("user", "look at issue #42 please")) == "by regex"
    assert _ask(client, ("user", "look at issue #x please"), ("assistant", "?"),
                ("user", "hello again")) == "first hello rule"
    assert _ask(client, ("system", "key SECRET"), ("user", "go")) == "by any message"
    # last_user_contains looks at the last user message only, not earlier ones
    assert _ask(client, ("user", "hello"), ("assistant", "hi"), ("user", "SECRET")) == \
        "by any message"
    # turn: two assistant messages already in the request
    assert _ask(client, ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"),
                ("user", "hello")) == "third step"


def test_content_parts_are_read_as_text(client):
    """A message whose content is a list of text parts is matched on its text."""
    completion = client.chat.completions.create(model="m", messages=[
        {"role": "user", "content": [{"type": "text", "text": "say hel"},
                                     {"type": "text", "text": "lo"}]}])
    assert completion.choices[0].message.content == "first hello rule"


def test_replies_follow_the_turn_and_stay_on_the_last(client):
    """replies[k] answers with k assistant messages in the request; past the end, the last."""
    history: list[tuple[str, str]] = []
    answers = []
    for _ in range(4):
        history.append(("user", "count"))
        answer = _ask(client, *history)
        answers.append(answer)
        history.append(("assistant", answer))
    assert answers == ["one", "two", "many", "many"]


def test_scripted_usage_is_reported(client):
    completion = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "bill me"}])
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.total_tokens) == (123, 45, 168)


def test_estimated_usage_is_ceil_chars_over_four(client):
    """Without scripted usage: ceil(chars/4) of the prompt texts and of the reply."""
    completion = client.chat.completions.create(model="m", messages=[
        {"role": "system", "content": "12345"}, {"role": "user", "content": "hello"}])
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 3  # ceil(10 / 4)
    assert completion.usage.completion_tokens == 4  # ceil(len("first hello rule") / 4)


def test_default_answers_when_no_rule_matches():
    script = {"rules": [{"last_user_contains": "x", "reply": "rule"}], "default": "fallback"}
    with ScriptedModelServer(script) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        assert _ask(client, ("user", "nothing scripted")) == "fallback"
        assert _ask(client, ("user", "x")) == "rule"


def test_no_match_is_a_readable_400(client):
    """No rule and no default: a 400 quoting the last user message, never a hang or a 500."""
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, ("user", "an unscripted question about llamas"))
    assert caught.value.status_code == 400
    assert "no scripted rule matched" in str(caught.value)
    assert "an unscripted question about llamas" in str(caught.value)


def test_no_match_raises_without_http():
    with pytest.raises(NoRuleMatched, match="starts: 'why'"):
        Script().respond({"messages": [{"role": "user", "content": "why"}]})


def test_streaming_is_refused(client, server):
    with pytest.raises(openai.BadRequestError, match="streaming is not supported"):
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello"}], stream=True)
    assert server.requests[-1]["stream"] is True


def test_malformed_json_and_unknown_path(server):
    status, body = _post(server.base_url + "/chat/completions", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = _post(server.base_url + "/chat/completions", b'{"messages": "hi"}')
    assert status == 400 and "`messages` list" in body["error"]["message"]
    status, body = _post(server.base_url + "/completions", b"{}")
    assert status == 404 and "/v1/completions" in body["error"]["message"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(server.base_url + "/nowhere", timeout=10)
    assert caught.value.code == 404 and json.loads(caught.value.read())["error"]
    assert server.requests == []


def test_models_are_listed(client):
    assert {m.id for m in client.models.list()} == {"scripted", "special-model"}


def test_replay_answers_recorded_requests_as_recorded():
    """A request whose messages equal a recorded one gets the recorded content and usage."""
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "fix it"}]
    recorded = {"id": "chatcmpl-rec", "object": "chat.completion", "created": 1, "model": "gpt-x",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "recorded answer"}}],
                "usage": {"prompt_tokens": 900, "completion_tokens": 77, "total_tokens": 977}}
    records = [{"request": {"model": "gpt-x", "messages": messages}, "response": recorded}]
    with ScriptedModelServer(Script.from_trajectory(records)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        completion = client.chat.completions.create(model="gpt-x", messages=messages)
        assert completion.choices[0].message.content == "recorded answer"
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (900, 77)
        with pytest.raises(openai.BadRequestError, match="no scripted rule matched"):
            client.chat.completions.create(model="gpt-x", messages=messages[1:])


def test_from_trajectory_rejects_other_shapes():
    with pytest.raises(ScriptError, match="not a trajectory record"):
        Script.from_trajectory([{"messages": []}])


def test_script_loads_from_yaml_and_json(tmp_path: Path):
    (tmp_path / "s.yaml").write_text(
        "default: fallback\n"
        "rules:\n"
        "  - last_user_contains: ping\n"
        "    reply: pong\n"
        "  - regex: '^step'\n"
        "    replies: [first, second]\n"
        "    usage: {prompt_tokens: 1, completion_tokens: 2}\n")
    (tmp_path / "s.json").write_text(json.dumps({"rules": [{"any_contains": "a", "reply": "b"}]}))
    script = Script.load(tmp_path / "s.yaml")
    assert len(script.rules) == 2 and script.default == "fallback"
    assert Script.load(tmp_path / "s.json").rules[0].reply == "b"
    with ScriptedModelServer(script) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        assert _ask(client, ("user", "ping")) == "pong"
        assert _ask(client, ("user", "step"), ("assistant", "first"), ("user", "step")) == "second"


def test_invalid_script_is_a_script_error(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("rules:\n  - last_user_contains: x\n")  # no reply
    with pytest.raises(ScriptError, match="bad.yaml"):
        Script.load(path)
    path.write_text("rules:\n  - reply: x\n    typo_condition: y\n")
    with pytest.raises(ScriptError, match="typo_condition"):
        Script.load(path)
    with pytest.raises(ScriptError, match="missing.yaml"):
        Script.load(tmp_path / "missing.yaml")
    path.write_text("rules:\n  - regex: '('\n    reply: x\n")
    with pytest.raises(ScriptError, match="regex"):
        Script.load(path)
    for rule in ({"reply": "a", "replies": ["b"]}, {"replies": []}):
        path.write_text(json.dumps({"rules": [rule]}))
        with pytest.raises(ScriptError):
            Script.load(path)


def test_concurrent_callers_get_their_own_answers():
    """Many threads calling at once each get the answer scripted for their own question."""
    n = 16
    script = {"rules": [{"last_user_contains": f"caller-{i}:", "reply": f"answer-{i}"}
                        for i in range(n)]}
    results: dict[int, list[str]] = {}
    barrier = threading.Barrier(n)

    def call(i: int) -> None:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        barrier.wait()
        results[i] = [_ask(client, ("user", f"caller-{i}: go")) for _ in range(5)]

    with ScriptedModelServer(script) as server:
        threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(server.requests) == 5 * n
    assert results == {i: [f"answer-{i}"] * 5 for i in range(n)}


def test_lifecycle(tmp_path: Path):
    """start/stop work without a context manager; base_url needs a started server."""
    server = ScriptedModelServer(Script(default="ok"))
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.base_url
    server.start()
    try:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        assert _ask(client, ("user", "anything")) == "ok"
    finally:
        server.stop()
    server.stop()  # idempotent
    with pytest.raises(openai.APIConnectionError):
        _ask(client, ("user", "anything"))


def test_stochastic_script_solves_at_its_rate_moved_by_the_agents_config():
    """A run's first call flips a coin with the task's rate; an Effect text in the system
    prompt (the agent's lessons) moves the rate; draws are reproducible per seed."""
    from harness.models.scripted_model import Effect, StochasticScript, StochasticTask

    def script():
        return StochasticScript(seed=1, tasks=[StochasticTask(anchor="bug A", rate=0.3, solve=["fix", "done"])],
                                effects=[Effect(system_contains="LESSON", effect=0.5)])

    def first_replies(s, system, n=2000):
        return [s.respond({"messages": [{"role": "system", "content": system},
                                        {"role": "user", "content": "bug A"}]})["choices"][0]["message"]["content"]
                for _ in range(n)]

    plain, boosted = first_replies(script(), "plain"), first_replies(script(), "with LESSON")
    assert abs(plain.count("fix") / 2000 - 0.3) < 0.04
    assert abs(boosted.count("fix") / 2000 - (0.3 + 0.5 * 0.7 / 0.6)) < 0.04
    assert first_replies(script(), "plain", 50) == plain[:50]
    s = script()
    follow = s.respond({"messages": [{"role": "user", "content": "bug A"}, {"role": "assistant", "content": "fix"},
                                     {"role": "user", "content": "ok"}]})
    assert follow["choices"][0]["message"]["content"] == "done"
