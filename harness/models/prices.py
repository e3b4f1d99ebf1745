"""What a model call costs: a maintained price database, overridden by the user's own prices.

Prices come from `genai-prices` (pydantic's database of LLM API prices, MIT licensed), whose
data is bundled in the package: a lookup never touches the network (its optional
background updater is never started here). It knows the models of the major providers,
tiered prices included (a long Gemini or Claude prompt costs more per token), which a
hand-kept table of six OpenAI models did not. The user's prices (a JSON file
``{"model": [usd_per_million_input, usd_per_million_output]}`` named by ``RATCHET_PRICES``,
or the run's ``prices`` setting) win over the database: a local vLLM/Ollama model is priced
at ``[0, 0]`` that way, and the run says so.

A model with no price is never counted as free: `ratchet run` and `ratchet bench run`
refuse it before anything starts (`unpriced_refusal`), unless the user allows it, in which
case its calls are counted as *unknown* cost (`harness.models.ledger.Usage.unpriced_calls`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["PriceTable", "SCRIPTED_MODEL", "unpriced_refusal"]

SCRIPTED_MODEL = "scripted"
"""The built-in scripted model's name: priced at $0 explicitly (it is no paid endpoint)."""


def _catalog_price(model: str, prompt_tokens: int, completion_tokens: int):
    """genai-prices' calculation, or None when it does not know the model. A name such as
    ``openai/gpt-4.1`` (OpenRouter, LiteLLM) is also tried as provider ``openai``."""
    from genai_prices import Usage, calc_price

    usage = Usage(input_tokens=prompt_tokens, output_tokens=completion_tokens)
    tries: list[dict[str, Any]] = [{}]
    if "/" in model:
        provider, _, rest = model.partition("/")
        tries.append({"model_ref": rest, "provider_id": provider})
    for extra in tries:
        try:
            return calc_price(usage, **{"model_ref": model, **extra})
        except LookupError:
            continue
    return None


@dataclass(frozen=True)
class PriceTable:
    """USD per million tokens (input, output) by model name: the user's prices first, then
    genai-prices' database (``catalog``)."""

    prices: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {SCRIPTED_MODEL: (0.0, 0.0)})
    catalog: bool = True
    sources: dict[str, str] = field(default_factory=dict)
    """Where each of ``prices`` came from (a file, the run's settings), for the snapshot."""
    _flat_cache: dict[str, tuple[float, float] | tuple[()] | None] = field(
        default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None,
             extra: dict[str, Any] | None = None) -> "PriceTable":
        """The database, plus ``RATCHET_PRICES`` (or `path`), plus `extra` (the run's
        ``prices`` setting), later ones winning."""
        table = cls()
        table.sources[SCRIPTED_MODEL] = "ratchet's scripted model (no endpoint is paid)"
        path = path or os.environ.get("RATCHET_PRICES")
        if path:
            table.add(_read_prices(Path(path)), f"RATCHET_PRICES={path}")
        if extra:
            table.add(extra, "the run's prices setting")
        return table

    def add(self, prices: dict[str, Any], source: str) -> None:
        """Add ``{"model": [input, output]}`` (USD per million tokens); ValueError names a
        bad entry."""
        for name, pair in prices.items():
            try:
                given, taken = (float(value) for value in pair)
            except (TypeError, ValueError):
                raise ValueError(f"price of {name!r} in {source} is {pair!r}: give "
                                 "[usd_per_million_input_tokens, usd_per_million_output_tokens]")
            if given < 0 or taken < 0:
                raise ValueError(f"price of {name!r} in {source} is negative: {pair!r}")
            self.prices[name] = (given, taken)
            self.sources[name] = source

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for one call, or None for a model with no known price (never $0)."""
        price = self.prices.get(model) or self._flat(model)
        if price is not None:
            return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
        if not self.catalog or self._flat_cache.get(model, ()) is None:
            return None
        found = _catalog_price(model, prompt_tokens, completion_tokens)  # tiered: ~3 ms
        return None if found is None else float(found.total_price)

    def _flat(self, model: str) -> tuple[float, float] | None:
        """The database's price of `model` when it is one flat pair (most models), looked up
        once: genai-prices' own calculation costs ~3 ms a call, twice per gateway call. None
        for a tiered price (computed in full each time) or an unknown model (cached as such
        in ``_flat_cache`` with the value None)."""
        if not self.catalog:
            return None
        if model not in self._flat_cache:
            found = _catalog_price(model, 1, 1)
            flat = None
            if found is not None:
                given = getattr(found.model_price, "input_mtok", None)
                taken = getattr(found.model_price, "output_mtok", None)
                if isinstance(given, Decimal) and isinstance(taken, Decimal):
                    flat = (float(given), float(taken))
                else:
                    flat = ()  # known, but tiered
            self._flat_cache[model] = flat
        return self._flat_cache[model] or None

    def known(self, model: str) -> bool:
        return self.cost(model, 1, 1) is not None

    def free(self, model: str) -> bool:
        """Priced at exactly $0 (a local endpoint, the scripted model): budgets never stop it."""
        return self.cost(model, 1_000_000, 1_000_000) == 0.0

    def describe(self, model: str) -> dict[str, Any]:
        """One model's entry of the run's price snapshot (``runs/RUN/prices.json``)."""
        if model in self.prices:
            given, taken = self.prices[model]
            return {"source": self.sources.get(model, "given"), "input_usd_per_mtok": given,
                    "output_usd_per_mtok": taken}
        # priced at 1k tokens each way (the first tier), scaled: the snapshot's flat numbers;
        # `prices` keeps the database's full description, tiers included
        found = _catalog_price(model, 1000, 1000) if self.catalog else None
        if found is None:
            return {"source": None, "unpriced": True}
        from genai_prices import __version__

        return {"source": f"genai-prices {__version__} (bundled data)",
                "provider": found.provider.id, "model": found.model.id,
                "input_usd_per_mtok": float(found.input_price) * 1000,
                "output_usd_per_mtok": float(found.output_price) * 1000,
                "prices": str(found.model_price)}

    def snapshot(self, models: list[str]) -> dict[str, Any]:
        return {model: self.describe(model) for model in dict.fromkeys(models)}


def _read_prices(path: Path) -> dict[str, Any]:
    """A user's price file as a mapping; a ValueError naming the file and what is wrong
    (unreadable, not UTF-8, not JSON, not a mapping), never a bare decoder error."""
    from benchmark import TaskFileError, read_utf8

    source = f"RATCHET_PRICES={path}"
    try:
        data = json.loads(read_utf8(path))
    except TaskFileError as exc:
        raise ValueError(f"{source}: {exc.message}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source} holds a {type(data).__name__}, not a mapping of model names")
    return data


def unpriced_refusal(prices: PriceTable, models: dict[str, str]) -> str | None:
    """The message refusing a run whose models (role -> name) have no price, or None."""
    missing = {role: name for role, name in models.items() if not prices.known(name)}
    if not missing:
        return None
    names = ", ".join(f"{name!r} ({role})" for role, name in missing.items())
    example = json.dumps({name: [1.0, 4.0] for name in dict.fromkeys(missing.values())})
    return (f"no price known for {names}: a budget cannot hold without one. Give its price in USD "
            f"per million input and output tokens in a JSON file named by RATCHET_PRICES (e.g. "
            f"{example}; [0, 0] for a local endpoint you do not pay for) or under `prices:` in "
            "the run file, or pass "
            "--allow-unpriced to run with its cost counted as unknown (budgets then do not limit "
            "its calls)")
