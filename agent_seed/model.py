"""How the agent talks to a model: the ``ModelClient`` seam and its two implementations.

- ``OpenAIModel``: the chat-completions API via the openai package. In a sandbox the only
  way out is the ratchet gateway on a unix socket (env ``RATCHET_LLM_SOCKET``); the
  gateway holds the credentials, so the agent sends a dummy key. Outside a sandbox it uses
  ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` as usual.
- ``ScriptedModel``: a real, deterministic client that replays canned replies, shipped for
  the self-check and tests (a fake, not a mock).

Any failure of a model call is translated into ``ModelError`` at this boundary.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from .config import AgentConfig
from .errors import ModelError

__all__ = ["ModelClient", "ModelReply", "OpenAIModel", "ScriptedModel", "model_from_env"]

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class ModelReply:
    content: str
    usage: dict[str, int] = field(default_factory=dict)


class ModelClient(Protocol):
    name: str

    def complete(self, messages: Messages) -> ModelReply: ...


def _http_library():
    """The HTTP library the installed openai is built on: httpx2 (openai 3.x), else httpx."""
    try:
        import httpx2 as http
    except ImportError:
        import httpx as http
    return http


class OpenAIModel:
    def __init__(self, name: str, *, socket_path: str | None = None, base_url: str | None = None,
                 api_key: str | None = None, timeout_s: float = 600.0, max_retries: int = 2,
                 **create_kwargs: Any) -> None:
        import openai

        self.name = name
        self.create_kwargs = create_kwargs
        options: dict[str, Any] = {"timeout": timeout_s, "max_retries": max_retries}
        if socket_path:
            http = _http_library()
            transport = http.HTTPTransport(uds=socket_path)
            options.update(base_url="http://gateway/v1", api_key="sandbox",
                           http_client=http.Client(transport=transport, timeout=timeout_s))
        else:
            options["api_key"] = api_key or os.environ.get("OPENAI_API_KEY") or "none"
            if base_url:
                options["base_url"] = base_url
        self._openai = openai
        self.client = openai.OpenAI(**options)

    def complete(self, messages: Messages) -> ModelReply:
        try:
            response = self.client.chat.completions.create(
                model=self.name, messages=cast(Any, messages), **self.create_kwargs)
        except self._openai.OpenAIError as exc:
            raise ModelError(f"model call failed: {type(exc).__name__}: {exc}") from exc
        if not response.choices:
            raise ModelError("model call failed: the response has no choices")
        usage = response.usage.model_dump() if response.usage else {}
        return ModelReply(
            content=response.choices[0].message.content or "",
            usage={k: v for k, v in usage.items() if isinstance(v, int)},
        )


def model_from_env(config: AgentConfig) -> OpenAIModel:
    """The model named by RATCHET_MODEL (else config), through RATCHET_LLM_SOCKET if set."""
    return OpenAIModel(
        os.environ.get("RATCHET_MODEL") or config.model,
        socket_path=os.environ.get("RATCHET_LLM_SOCKET") or None,
        base_url=os.environ.get("OPENAI_BASE_URL") or None,
        timeout_s=config.model_timeout_s,
        max_retries=config.model_max_retries,
        **config.model_kwargs,
    )


class ScriptedModel:
    """Replays ``replies`` in order; a callable reply gets the messages and returns text.
    When the script runs out it raises ModelError, as a refusing gateway would."""

    name = "scripted"

    def __init__(self, replies: Sequence[str | Callable[[Messages], str]]) -> None:
        self.replies = list(replies)
        self.calls: list[Messages] = []

    def complete(self, messages: Messages) -> ModelReply:
        self.calls.append([dict(m) for m in messages])
        if len(self.calls) > len(self.replies):
            raise ModelError(f"scripted model: script exhausted after {len(self.replies)} replies")
        reply = self.replies[len(self.calls) - 1]
        content = reply(messages) if callable(reply) else reply
        return ModelReply(content=content, usage={"prompt_tokens": 0, "completion_tokens": 0})
