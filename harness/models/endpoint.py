"""Is the model endpoint there? Asked once, before a command spends or writes anything.

An unreachable endpoint used to surface late and muddled: ``bench run`` wrote predictions
with empty patches, and the loop retried every task, then stopped with exit 0 without
naming the URL. ``check_endpoint`` makes it one error at the start that names the URL and
the setting to fix. It sends ``GET {base}/models`` through the openai SDK (same transport,
proxy and TLS settings as the real calls; free on every OpenAI-compatible server): any HTTP
answer but 401/403 means the server is there (404 included: some servers have no /models);
no connection, a timeout, or a refused key is an ``EndpointError``.

The gateway (`harness.models.gateway`) owns calls and retries during a run; this module only names
where the user points ratchet, for messages.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from harness.errors import EndpointError

__all__ = ["DEFAULT_URL", "EndpointError", "check_endpoint", "configured_url"]

DEFAULT_URL = "https://api.openai.com/v1"
"""Where the openai SDK goes when OPENAI_BASE_URL is not set."""

_FIX = ("set OPENAI_BASE_URL to your OpenAI-compatible server (e.g. http://localhost:8000/v1) "
        "and OPENAI_API_KEY to its key, or run the scripted demo with --scripted demo")


def configured_url() -> str:
    """The endpoint the user configured (OPENAI_BASE_URL), or the SDK's default."""
    return os.environ.get("OPENAI_BASE_URL") or DEFAULT_URL


def check_endpoint(base_url: str | None = None, api_key: str | None = None,
                   timeout_s: float = 10.0) -> None:
    """Raise EndpointError unless an OpenAI-compatible server answers at ``base_url``
    (default: the environment's). Costs one free request."""
    import openai

    url = base_url or configured_url()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"OPENAI_BASE_URL {url!r} is not an http(s) URL: {_FIX}")
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
    client = openai.OpenAI(base_url=url, api_key=key or "none", max_retries=0, timeout=timeout_s)
    try:
        client.models.list()
    except openai.APIConnectionError as exc:  # includes timeouts
        cause = exc.__cause__ or exc
        raise EndpointError(f"the model endpoint {url} does not answer "
                            f"({type(cause).__name__}: {str(cause)[:200] or 'no detail'}): "
                            f"start the server, or {_FIX}") from None
    except openai.APIStatusError as exc:
        if exc.status_code in (401, 403):
            raise EndpointError(f"the model endpoint {url} refused the key (HTTP "
                                f"{exc.status_code}): check OPENAI_API_KEY") from None
    finally:
        client.close()
