"""Where each model's calls go: the agent's and the meta model's endpoints, from a run's settings.

Why: an overnight run often points the agent at a local server (vLLM, Ollama) and the meta
model at a paid API, each with its own key. The settings hold only the endpoint's URL, the
NAME of the variable that holds its key, and the model's request settings (``kwargs``); the
key is read from this process's environment when the upstream is made, and never enters a
sandbox, the run's files or a log. Unset fields fall back: the agent's to ``OPENAI_BASE_URL``
and ``OPENAI_API_KEY`` (the simple case of before), the meta model's to the agent's.

Both upstreams sit behind their own gateway (`harness.models.gateway`), so both are accounted in
the one ledger. ``kwargs`` are applied by :class:`WithDefaults` on what the gateway forwards:
for the agent as defaults its own request can override, for the meta model on every
proposer call; fields the openai SDK does not name (``top_k`` of vLLM, ...) go in
``extra_body``, so they reach the endpoint as configured.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.models.gateway import OpenAIUpstream, Upstream
from harness.errors import EndpointSettingError

if TYPE_CHECKING:
    from harness.loop.settings import LoopSettings

__all__ = ["Endpoint", "EndpointSettingError", "WithDefaults", "build_upstreams",
           "resolve_endpoints"]

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_URL_ENV = "OPENAI_BASE_URL"


@dataclass(frozen=True)
class Endpoint:
    """One model's endpoint as resolved: no key in it, only where to read it."""

    role: str
    """"agent" or "meta"."""
    model: str
    base_url: str | None
    """None: the openai SDK's default (api.openai.com)."""
    api_key_env: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def key(self, environ: Mapping[str, str]) -> str | None:
        return environ.get(self.api_key_env) or None

    def describe(self) -> str:
        """For the console: never the key."""
        where = self.base_url or "the openai SDK's default endpoint"
        extra = f", {', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())}" if self.kwargs else ""
        return f"{self.role} model {self.model!r} at {where} (key from ${self.api_key_env}{extra})"


def resolve_endpoints(settings: "LoopSettings",
                      environ: Mapping[str, str] = os.environ) -> tuple[Endpoint, Endpoint]:
    """(agent, meta) endpoints of a run; EndpointSettingError naming the setting to fix."""
    agent_url = settings.agent_base_url or environ.get(DEFAULT_URL_ENV) or None
    agent_key_env = settings.agent_api_key_env or DEFAULT_KEY_ENV
    agent = Endpoint("agent", settings.agent_model, agent_url, agent_key_env,
                     dict(settings.agent_kwargs or {}))
    meta = Endpoint("meta", settings.meta_model, settings.meta_base_url or agent_url,
                    settings.meta_api_key_env or agent_key_env, dict(settings.meta_kwargs or {}))
    for endpoint, named in ((agent, settings.agent_api_key_env),
                            (meta, settings.meta_api_key_env or settings.agent_api_key_env)):
        if named and not endpoint.key(environ):
            raise EndpointSettingError(
                f"models.{endpoint.role}.api_key_env names {named}, which is not set in this "
                f"environment: export {named}=YOUR_KEY (ratchet reads the key from there and "
                "never writes it to the run)")
        if endpoint.base_url is None and not endpoint.key(environ):
            raise EndpointSettingError(
                f"no endpoint for the {endpoint.role} model: set models.{endpoint.role}.base_url "
                f"(and api_key_env) in the run file, or {DEFAULT_URL_ENV} and {DEFAULT_KEY_ENV}; "
                "or run the scripted demo with --scripted demo")
    return agent, meta


class WithDefaults:
    """An upstream that adds request settings the request did not set itself."""

    def __init__(self, inner: Upstream, defaults: Mapping[str, Any]) -> None:
        self.inner = inner
        known = _sdk_fields()
        self.defaults = {k: v for k, v in defaults.items() if k in known}
        self.extra_body = {k: v for k, v in defaults.items() if k not in known}

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        merged = {**self.defaults, **body}
        if self.extra_body:
            merged["extra_body"] = {**self.extra_body, **(body.get("extra_body") or {})}
        return self.inner.complete(merged)


def _sdk_fields() -> set[str]:
    """The request fields the openai SDK's ``chat.completions.create`` takes by name."""
    from openai.resources.chat.completions import Completions

    return {name for name, p in inspect.signature(Completions.create).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_upstreams(settings: "LoopSettings", environ: Mapping[str, str] = os.environ
                    ) -> tuple[Upstream, Upstream, tuple[Endpoint, Endpoint]]:
    """The agent's and the meta model's upstreams, each with its own URL, key and kwargs."""
    agent, meta = resolve_endpoints(settings, environ)
    made = []
    for endpoint in (agent, meta):
        upstream: Upstream = OpenAIUpstream(base_url=endpoint.base_url, api_key=endpoint.key(environ))
        made.append(WithDefaults(upstream, endpoint.kwargs) if endpoint.kwargs else upstream)
    return made[0], made[1], (agent, meta)
