"""A scripted model: a real HTTP server that speaks the OpenAI chat protocol from a script.

Why it exists: tests, the demo and a user with no endpoint need an upstream model that is
deterministic, free and offline, yet reached the way a real one is (over HTTP, through the
``openai`` SDK), so that the gateway, the agent and the proposer are exercised for real.
Like httpx's ``MockTransport``, it is a shipped fake, not a mock.

A :class:`Script` answers a chat request with, in this order: the recorded response of a
recorded request with equal ``messages`` (replay, first recording wins); the reply of the
first :class:`Rule` whose conditions all hold; the ``default`` reply; else
:class:`NoRuleMatched`, served as an HTTP 400 quoting the last user message. Served:
``POST /v1/chat/completions`` (non-streaming) and ``GET /v1/models``; errors are
OpenAI-shaped JSON (``{"error": {"message", "type", ...}}``), never a hang or a 500.

Exceptions: ``ScriptError(ValueError)``, a script that cannot be read or is invalid;
``NoRuleMatched(LookupError)``, nothing in the script answers a request.
"""

from __future__ import annotations

import copy
import hmac
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from harness.models._http import send_json
from harness.errors import NoRuleMatched, ScriptError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["Effect", "NoRuleMatched", "Recording", "Rule", "Script", "ScriptError",
           "ScriptedModelServer", "StochasticScript", "StochasticTask", "Usage", "shifted"]

DEFAULT_MODEL = "scripted"
"""The model name answered when a request names none, and listed by ``GET /v1/models``."""
_SYSTEM_ROLES = ("system", "developer")


def shifted(rates: list[float], effect: float, mean: float) -> list[float]:
    """The candidate's rates: the mean moved by ``effect``, each rate kept in [0, 1]."""
    if effect >= 0:
        return [p + effect * (1 - p) / (1 - mean) for p in rates]
    return [p * (1 + effect / mean) for p in rates]


class Usage(BaseModel):
    """Token counts to report for a reply instead of the estimate: a wire schema (part of a
    script, and the ``usage`` object of the reply, built in ``_completion``), not the
    host's `harness.models.ledger.Usage`, which the gateway reads from that reply."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    prompt_tokens: int
    completion_tokens: int


class Rule(BaseModel):
    """One scripted answer and the conditions under which it is given (all must hold)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    last_user_contains: str | None = None
    """A substring of the last user message."""
    any_contains: str | None = None
    """A substring of any message, whatever its role."""
    system_contains: str | None = None
    """A substring of a system (or developer) message."""
    regex: re.Pattern[str] | None = None
    """A pattern found (``re.search``) in the last user message."""
    model: str | None = None
    """The request's model name, exactly."""
    turn: int | None = None
    """The number of assistant messages already in the request (0 on the first call)."""
    reply: str | None = None
    """The one text this rule answers with."""
    replies: list[str] | None = Field(None, min_length=1)
    """Texts by turn: with k assistant messages in the request, ``replies[min(k, len-1)]``."""
    usage: Usage | None = None
    """Token counts to report; estimated (ceil(chars / 4)) when absent."""

    @model_validator(mode="after")
    def _one_reply(self) -> Rule:
        if (self.reply is None) == (self.replies is None):
            raise ValueError("a rule gives exactly one of `reply` or `replies`")
        return self

    def matches(self, messages: list[dict[str, Any]], model: str) -> bool:
        """Whether every condition of this rule holds for a request."""
        last_user = _last_user_text(messages)
        texts = [_text(m) for m in messages]
        systems = [_text(m) for m in messages if m.get("role") in _SYSTEM_ROLES]
        return all((
            self.last_user_contains is None or self.last_user_contains in last_user,
            self.any_contains is None or any(self.any_contains in t for t in texts),
            self.system_contains is None or any(self.system_contains in t for t in systems),
            self.regex is None or self.regex.search(last_user) is not None,
            self.model is None or self.model == model,
            self.turn is None or self.turn == _turn(messages),
        ))

    def text_for(self, messages: list[dict[str, Any]]) -> str:
        """This rule's reply to a request (the turn's entry of ``replies``)."""
        replies = self.replies or [self.reply or ""]
        return replies[min(_turn(messages), len(replies) - 1)]


class Recording(BaseModel):
    """A request's messages and the response recorded for them (a gateway log line)."""

    model_config = ConfigDict(frozen=True)
    messages: list[dict[str, Any]]
    response: dict[str, Any]


class Script(BaseModel):
    """What the scripted model says: recordings, then ordered rules, then a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rules: list[Rule] = []
    default: str | None = None
    """The reply when no recording or rule answers; without it such a request gets a 400."""
    recordings: list[Recording] = []
    """Replayed before any rule: see :meth:`from_trajectory`."""

    @classmethod
    def load(cls, path: str | Path) -> Script:
        """A script from a YAML or JSON file (``.json`` is read as JSON, anything else YAML)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            return cls.model_validate(data or {})
        except (OSError, ValueError, yaml.YAMLError) as exc:  # ValidationError is a ValueError
            raise ScriptError(f"cannot load script {path}: {exc}") from exc

    @classmethod
    def from_trajectory(cls, records: Iterable[Mapping[str, Any]]) -> Script:
        """A script that replays records ``{"request": {...}, "response": {...}}``."""
        try:
            return cls(recordings=[Recording(messages=r["request"]["messages"],
                                             response=r["response"]) for r in records])
        except (KeyError, TypeError, ValidationError) as exc:
            raise ScriptError(f"not a trajectory record ({exc!r}); expected "
                              '{"request": {"messages": [...]}, "response": {...}}') from exc

    def respond(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The chat.completion body answering a chat request body; raises NoRuleMatched."""
        messages: list[dict[str, Any]] = list(request.get("messages") or [])
        model = str(request.get("model") or DEFAULT_MODEL)
        for recording in self.recordings:
            if recording.messages == messages:
                return copy.deepcopy(recording.response)
        rule = next((r for r in self.rules if r.matches(messages, model)), None)
        if rule is not None:
            return _completion(model, messages, rule.text_for(messages), rule.usage)
        if self.default is not None:
            return _completion(model, messages, self.default, None)
        raise NoRuleMatched(
            f"no scripted rule matched (model {model!r}, turn {_turn(messages)}); "
            f"last user message starts: {_last_user_text(messages)[:200]!r}")


def _text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p["text"] for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    return next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")


def _turn(messages: list[dict[str, Any]]) -> int:
    return sum(1 for m in messages if m.get("role") == "assistant")


def _completion(model: str, messages: list[dict[str, Any]], content: str,
                usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        prompt_chars = sum(len(_text(m)) for m in messages)
        usage = Usage(prompt_tokens=math.ceil(prompt_chars / 4),
                      completion_tokens=math.ceil(len(content) / 4))
    return {
        "id": f"chatcmpl-scripted-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": content}}],
        "usage": {**usage.model_dump(),
                  "total_tokens": usage.prompt_tokens + usage.completion_tokens},
    }


class ScriptedModelServer:
    """Serves a :class:`Script` over HTTP on ``host:port`` (0: any free port), in a thread.

    Use as a context manager, or ``start()``/``stop()``. ``requests`` holds every chat
    request body received (parsed JSON), in arrival order. With ``api_key``, like a real
    endpoint, a request without ``Authorization: Bearer API_KEY`` is answered 401 (and
    counted in ``unauthorized``), so a test can show whose key reached which endpoint.
    """

    def __init__(self, script: Script | Mapping[str, Any], host: str = "127.0.0.1",
                 port: int = 0, api_key: str | None = None) -> None:
        self.script = script if isinstance(script, Script) else Script.model_validate(script)
        self.host, self.port = host, port
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self.refused_calls = 0
        """Chat calls answered with a scripted outage (`fail_next`)."""
        self._outage: list[tuple[int, float | None]] = []
        self.unauthorized = 0
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, the ``base_url`` of an OpenAI client."""
        if self._httpd is None:
            raise RuntimeError("the scripted model server is not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}/v1"

    def start(self) -> ScriptedModelServer:
        if self._httpd is not None:
            raise RuntimeError("the scripted model server is already started")
        self._httpd = _HTTPServer((self.host, self.port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="scripted-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None and self._thread is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def fail_next(self, calls: int, status: int = 429, retry_after: float | None = None) -> None:
        """Answer the next `calls` chat calls with HTTP `status` (a rate limit by default),
        with a ``Retry-After`` header of `retry_after` seconds if given: an endpoint's
        outage or 429 burst, then recovery. They are counted in `refused_calls`, not in
        `requests`."""
        with self._lock:
            self._outage.extend([(status, retry_after)] * calls)

    def outage_answer(self) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """The next scripted outage answer (status, body, headers), or None."""
        with self._lock:
            if not self._outage:
                return None
            status, retry_after = self._outage.pop(0)
            self.refused_calls += 1
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return (*_error(status, f"scripted outage: HTTP {status}", "rate_limit_error"), headers)

    def handle(self, method: str, path: str, raw: bytes,
               authorization: str | None = None) -> tuple[int, dict[str, Any]]:
        """The (status, JSON body) answering one HTTP request; no I/O, so no hang."""
        if self.api_key is not None and not hmac.compare_digest(
                (authorization or "").encode(), f"Bearer {self.api_key}".encode()):
            with self._lock:
                self.unauthorized += 1
            return _error(401, "incorrect API key provided", "authentication_error")
        path = path.split("?", 1)[0].rstrip("/")
        if (method, path) == ("GET", "/v1/models"):
            names = dict.fromkeys([DEFAULT_MODEL, *(r.model for r in self.script.rules
                                                    if r.model)])
            return 200, {"object": "list", "data": [
                {"id": n, "object": "model", "created": 0, "owned_by": "ratchet"} for n in names]}
        if (method, path) != ("POST", "/v1/chat/completions"):
            return _error(404, f"unknown path {method} {path!r}", "not_found_error")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return _error(400, f"request body is not valid JSON: {exc}")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return _error(400, "request body must be a JSON object with a `messages` list "
                               "of objects")
        with self._lock:
            self.requests.append(body)
        if body.get("stream"):
            return _error(400, "streaming is not supported by the scripted model; "
                               "send stream=false")
        try:
            return 200, self.script.respond(body)
        except NoRuleMatched as exc:
            return _error(400, str(exc))


def _error(status: int, message: str,
           kind: str = "invalid_request_error") -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": kind, "param": None, "code": None}}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default, 5, resets connections of a burst of callers
    owner: ScriptedModelServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "ratchet-scripted-model"

    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "0")
        self._answer(self.rfile.read(int(length)) if length.isdigit() else b"")

    def _answer(self, raw: bytes) -> None:
        owner = self.server.owner
        outage = owner.outage_answer() if self.command == "POST" else None
        if outage is not None:
            send_json(self, outage[0], outage[1], outage[2])
            return
        status, body = owner.handle(self.command, self.path, raw,
                                    self.headers.get("Authorization"))
        send_json(self, status, body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read bodies instead
        pass


class StochasticTask(BaseModel):
    """One task of a :class:`StochasticScript`: how to recognise it, and how to solve it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    anchor: str
    """A substring of the task's first user message (e.g. its problem statement's first line)."""
    rate: float = Field(ge=0.0, le=1.0)
    """P(a run solves it) for the agent as it is."""
    solve: list[str] = Field(min_length=1)
    """The replies of a solving run, by turn (e.g. apply the fix, test, submit)."""


class Effect(BaseModel):
    """A change to the agent's config that moves every task's success rate."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    system_contains: str
    """Present in the system prompt (e.g. a line the meta model wrote into the lessons file)."""
    effect: float = Field(ge=-1.0, le=1.0)
    """The move of the mean rate (`shifted`); 0 is a no-op change."""


class StochasticScript(Script):
    """An agent model that solves each task with a probability, like a sampling model.

    At a run's first call it flips a coin with the task's rate (moved by every `Effect`
    whose text is in the system prompt: the agent's own config decides): heads, it answers
    that run with the task's ``solve`` replies; tails, it gives up at once with ``give_up``
    (so the run is cheap and unresolved). Coins are drawn from ``seed``, the task and the
    effects present, in the order of that task's runs, so a run of the loop is reproducible
    whatever the worker interleaving. Other requests fall through to the ordinary script.
    """

    tasks: list[StochasticTask] = []
    effects: list[Effect] = []
    give_up: str = "I cannot fix this.\n\n```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"
    seed: int = 0
    mean: float = 0.4
    """The population mean `shifted` keeps rates in range with (Beta(0.5, 0.75): 0.4)."""

    def model_post_init(self, context: Any) -> None:
        self._draws: dict[tuple[str, tuple[str, ...]], int] = {}
        self._draw_lock = threading.Lock()

    def rate_for(self, task: StochasticTask, system: str) -> tuple[float, tuple[str, ...]]:
        present = tuple(e.system_contains for e in self.effects if e.system_contains in system)
        rate = task.rate
        for effect in self.effects:
            if effect.system_contains in present:
                rate = shifted([rate], effect.effect, self.mean)[0]
        return min(1.0, max(0.0, rate)), present

    def respond(self, request: Mapping[str, Any]) -> dict[str, Any]:
        messages: list[dict[str, Any]] = list(request.get("messages") or [])
        model = str(request.get("model") or DEFAULT_MODEL)
        users = [_text(m) for m in messages if m.get("role") == "user"]
        task = next((t for t in self.tasks if users and t.anchor in users[0]), None)
        if task is None:
            return super().respond(request)
        turn = _turn(messages)
        if turn == 0:
            system = "\n".join(_text(m) for m in messages if m.get("role") in _SYSTEM_ROLES)
            rate, present = self.rate_for(task, system)
            with self._draw_lock:
                key = (task.anchor, present)
                n = self._draws.get(key, 0)
                self._draws[key] = n + 1
            import random

            coin = random.Random(f"{self.seed}|{task.anchor}|{'|'.join(present)}|{n}").random()
            return _completion(model, messages, task.solve[0] if coin < rate else self.give_up, None)
        first = next(_text(m) for m in messages if m.get("role") == "assistant")
        if first == task.solve[0]:
            return _completion(model, messages, task.solve[min(turn, len(task.solve) - 1)], None)
        return _completion(model, messages, self.give_up, None)
