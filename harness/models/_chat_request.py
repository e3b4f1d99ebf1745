"""What a sandbox may send the gateway: a chat-completions request, checked before any
accounting or upstream call.

Why: the sandbox's request is untrusted input. Unchecked, an unknown field (an evolved
agent's ``top_k``) raised ``TypeError`` inside the openai SDK and was counted as an endpoint
failure (the agent's own mistake turned into an infrastructure error that stops a run);
``n``, ``service_tier``, ``extra_headers`` and ``extra_body`` reached the paid upstream (more
completions, a pricier tier, another project's billing header); a body of any size was read
into memory and logged whole. Each check is a field of :class:`RequestPolicy`, so a test can
switch it off and show the attack it stops.

A refused request is the agent's failure (HTTP 400/413 it reads; nothing is noted against
the endpoint), and its trajectory record keeps only an excerpt (:func:`rejection_record`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from harness.errors import Rejected

__all__ = ["ALLOWED_FIELDS", "Rejected", "RequestPolicy", "check_request", "rejection_record"]

ALLOWED_FIELDS = frozenset({
    # what a chat turn is, and how it is sampled: every OpenAI-compatible server reads these
    "model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "stop", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    "top_logprobs", "user",
    # tool calling and structured output, which agents use
    "tools", "tool_choice", "parallel_tool_calls", "response_format",
    # reasoning models' effort (the meta model's settings use it too)
    "reasoning_effort",
    # accepted only at their one-answer, non-streaming values (see check_request)
    "n", "stream",
})
"""Chat-completions fields a sandbox may send. Left out on purpose: ``service_tier``
(a pricier tier), ``modalities``/``audio``/``web_search_options``/``prediction`` (billed
extras), ``store``/``metadata`` (data kept at the provider), ``stream_options``, the
deprecated ``functions``/``function_call``, and the SDK's transport options
``extra_headers``/``extra_query``/``extra_body``/``timeout``, which would reach the upstream
as headers, query or body of the controller's own request."""

DEFAULT_MAX_BODY_BYTES = 4 * 2**20
"""4 MiB: about a million tokens of JSON text, far past any model's context."""


@dataclass(frozen=True)
class RequestPolicy:
    """The checks on a sandbox's request; ``None``/``False`` switches one off (tests only)."""

    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES
    """Larger bodies get HTTP 413; ``RATCHET_GATEWAY_MAX_BODY_BYTES`` sets it."""
    allowed_fields: frozenset[str] | None = ALLOWED_FIELDS
    """Any other top-level field is HTTP 400; also ``n`` must be 1."""
    refuse_streaming: bool = True
    """``stream: true`` is HTTP 400 (the gateway answers whole completions only)."""
    excerpt_bytes: int | None = 2048
    """A refused request is logged as its first bytes and its size, not whole."""

    @classmethod
    def from_environment(cls) -> "RequestPolicy":
        value = os.environ.get("RATCHET_GATEWAY_MAX_BODY_BYTES")
        if value is None:
            return cls()
        if not value.isdigit() or int(value) <= 0:
            raise ValueError(f"RATCHET_GATEWAY_MAX_BODY_BYTES must be a positive number of "
                             f"bytes, not {value!r}")
        return cls(max_body_bytes=int(value))


def check_request(raw: bytes, policy: RequestPolicy) -> dict[str, Any]:
    """The request body as a dict, or `Rejected` saying what is wrong and what is allowed."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise Rejected(400, f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise Rejected(400, "request body must be a JSON object (a chat-completions request)")
    if policy.allowed_fields is not None:
        unknown = sorted(set(body) - policy.allowed_fields)
        if unknown:
            shown = ", ".join(repr(name[:64]) for name in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise Rejected(400, f"unsupported request field(s) {shown}{more}: the ratchet gateway "
                                f"forwards only {', '.join(sorted(policy.allowed_fields))}",
                           "unsupported_field")
        if body.get("n", 1) != 1:
            raise Rejected(400, "n must be 1: the ratchet gateway returns one completion per call",
                           "unsupported_field")
    if policy.refuse_streaming and body.get("stream"):
        raise Rejected(400, "streaming is not supported by the ratchet gateway: send stream=false "
                            "(or leave it out) and read the whole completion", "stream_unsupported")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict)
                                                                 for m in messages):
        raise Rejected(400, "`messages` must be a non-empty list of message objects")
    return body


def rejection_record(raw: bytes, size: int, rejected: Rejected,
                     policy: RequestPolicy) -> dict[str, Any]:
    """The trajectory fields of a refused request: why, and its excerpt and size, never more
    than `policy.excerpt_bytes` of it (the whole text when that check is off)."""
    kept = raw if policy.excerpt_bytes is None else raw[:policy.excerpt_bytes]
    return {"time": time.time(), "rejected": rejected.message, "status": rejected.status,
            "request_bytes": size, "request_excerpt": kept.decode("utf-8", "replace")}
