"""The accounting of model calls: prices, usage, budgets and the ledger that holds them.

Kept apart from the gateway's HTTP serving (`harness.gateway`), which calls into it once per
request; both gateways of a run (agent and meta model) share one `Ledger`.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Budget", "Ledger", "PriceTable", "Usage"]


@dataclass(frozen=True)
class PriceTable:
    """USD per million tokens (input, output), by model name. Extend with a JSON file
    ``{"model": [input, output]}`` given as ``RATCHET_PRICES``."""

    prices: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "scripted": (0.0, 0.0), "gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60), "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60), "o4-mini": (1.10, 4.40),
    })

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "PriceTable":
        table = cls()
        path = path or os.environ.get("RATCHET_PRICES")
        if path:
            extra = json.loads(Path(path).read_text(encoding="utf-8"))
            table.prices.update({name: (float(i), float(o)) for name, (i, o) in extra.items()})
        return table

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """None for a model with no price: it costs 0, and the caller warns once."""
        price = self.prices.get(model)
        if price is None:
            return None
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model_seconds: float = 0.0

    def add(self, other: "Usage") -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.model_seconds += other.model_seconds


@dataclass(frozen=True)
class Budget:
    """Spending limits in USD; None is no limit."""

    per_task: float | None = None
    per_generation: float | None = None
    per_run: float | None = None


class Ledger:
    """Usage per task, per generation and for the run, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.run = Usage()
        self.generations: dict[str, Usage] = {}
        self.tasks: dict[str, Usage] = {}
        self.refused: set[str] = set()
        self.failed: dict[str, str] = {}

    def task(self, key: str) -> Usage:
        with self._lock:
            return self.tasks.get(key, Usage())

    def was_refused(self, key: str) -> bool:
        with self._lock:
            return key in self.refused

    def record_failure(self, task: str, message: str) -> None:
        """A call of `task` failed for a reason outside the agent (the endpoint down,
        overloaded, or refusing the gateway's credentials); the first one is kept."""
        with self._lock:
            self.failed.setdefault(task, message)

    def failure(self, task: str) -> str | None:
        with self._lock:
            return self.failed.get(task)

    def forget_failure(self, task: str) -> None:
        """A new attempt of `task` starts with a clean slate."""
        with self._lock:
            self.failed.pop(task, None)

    def record(self, task: str, generation: str, usage: Usage) -> None:
        with self._lock:
            self.run.add(usage)
            self.generations.setdefault(generation, Usage()).add(usage)
            self.tasks.setdefault(task, Usage()).add(usage)

    def refusal(self, task: str, generation: str, budget: Budget) -> str | None:
        """Why a call must be refused now, or None. Checked before a call and charged after
        it, so concurrent calls in one scope can overshoot a limit by at most one call each."""
        with self._lock:
            checks = (
                ("task", self.tasks.get(task, Usage()).cost_usd, budget.per_task),
                ("generation", self.generations.get(generation, Usage()).cost_usd, budget.per_generation),
                ("run", self.run.cost_usd, budget.per_run),
            )
        for scope, spent, limit in checks:
            if limit is not None and spent >= limit:
                with self._lock:
                    self.refused.add(task)
                return (f"ratchet budget exhausted: this {scope} has spent ${spent:.4f} of its "
                        f"${limit:.4f} limit; no more model calls are allowed")
        return None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"run": asdict(self.run),
                    "generations": {k: asdict(v) for k, v in self.generations.items()},
                    "tasks": {k: asdict(v) for k, v in self.tasks.items()}}
