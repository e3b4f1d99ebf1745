"""The accounting of model calls: usage, budgets, and the ledger that makes a budget hold.

Kept apart from the gateway's HTTP serving (`harness.models.gateway`), which calls into it once per
request; both gateways of a run (agent and meta model) share one `Ledger`.

A budget holds because a call's worst case is *reserved* before the call is forwarded
(`Ledger.reserve`): the request's input tokens, bounded by its size in bytes (a byte-level
BPE tokenizer never makes more tokens than bytes), plus the most output tokens the gateway
lets it ask for (`cap_output`), priced, against every scope the call belongs to (its task,
its generation, the run), under one lock. A call whose worst case does not fit is refused;
one that fits is *settled* to its real usage when it returns (`Ledger.settle`). So the
spend of a scope never passes its limit, however many calls run at once.

Spend is durable as it happens: with a spend log (``runs/RUN/spend.jsonl``) every settled
call is appended and fsynced before the gateway returns its answer, and a resumed run's
ledger starts from the log (`Ledger.open`), so a kill at any moment loses at most the
calls in flight.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harness.models.prices import PriceTable

__all__ = ["Budget", "DEFAULT_MAX_OUTPUT_TOKENS", "Ledger", "PriceTable", "Reservation", "Usage",
           "cap_output", "output_field", "worst_case_input_tokens"]

log = logging.getLogger(__name__)

DEFAULT_MAX_OUTPUT_TOKENS = 8192
"""The most output tokens one call may ask for through the gateway (`cap_output`)."""


@dataclass
class Usage:
    """What model calls used and cost: the host side's one usage type (the ledger's totals,
    a proposal's and each attempt's). The scripted server's `harness.models.scripted_model.Usage`
    is wire format (the ``usage`` object a reply reports), read into this one by the gateway."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model_seconds: float = 0.0
    unpriced_calls: int = 0
    """Calls of a model with no known price (``--allow-unpriced``): their cost is unknown,
    not $0, and ``cost_usd`` holds only the priced calls' part."""

    @classmethod
    def of_reply(cls, response: dict[str, Any]) -> "Usage":
        """One call's token counts from a chat.completion body's ``usage`` object (the wire's)."""
        usage = response.get("usage") or {}
        return cls(1, int(usage.get("prompt_tokens", 0) or 0), int(usage.get("completion_tokens", 0) or 0))

    def counts(self) -> dict[str, int]:
        """Calls and tokens only: what a reply reports, for a record where the cost is not
        known (a proposal's attempts; the ledger holds what they cost)."""
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens}

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: "Usage") -> None:
        self.unpriced_calls += other.unpriced_calls
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




def worst_case_input_tokens(body: dict[str, Any]) -> int:
    """An upper bound on the input tokens of `body` as it is sent: its size in UTF-8 bytes.
    Byte-level BPE tokenizers (GPT, Llama 3, Qwen, Mistral's Tekken) and byte-fallback
    SentencePiece never make more tokens than bytes; the JSON around the text (keys, quotes,
    braces: ~30 bytes a message) covers a chat template's few tokens per message. It is
    up to ~4x the real count, which matters only near a limit: a reservation is settled to
    the real usage as soon as the call returns."""
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens")
_COMPLETION_TOKENS_ONLY = re.compile(r"^(?:[\w.-]+/)?(?:o\d|gpt-5)")
"""OpenAI's reasoning models refuse ``max_tokens`` and take ``max_completion_tokens``."""


def output_field(model: str) -> str:
    """The output-limit field to set on a call to `model` that gave none: ``max_tokens``,
    which every OpenAI-compatible server (vLLM, Ollama, llama.cpp, LiteLLM) reads, except
    for OpenAI's reasoning models (o1, o3, o4-mini, gpt-5...), which refuse it."""
    return "max_completion_tokens" if _COMPLETION_TOKENS_ONLY.match(model) else "max_tokens"


def cap_output(body: dict[str, Any], ceiling: int,
               field: str = "max_tokens") -> tuple[dict[str, Any], int]:
    """`body` with its output-token fields held to `ceiling` (`field` set to it when the
    caller asked for none), and the most output tokens the call can then produce."""
    capped = dict(body)
    given = [name for name in _OUTPUT_FIELDS if capped.get(name) is not None]
    if not given:
        capped[field] = ceiling
        return capped, ceiling
    most = 0
    for name in given:
        value = capped[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= ceiling:
            value = ceiling
        capped[name] = value
        most = max(most, value)
    return capped, most


@dataclass(frozen=True)
class Reservation:
    """A call's worst-case cost, held against its scopes until the call is settled."""

    task: str
    generation: str
    cost_usd: float


class BudgetRefusal(str):
    """The message refusing a call; ``scope`` is the scope whose limit it would pass."""

    scope: str

    def __new__(cls, message: str, scope: str) -> "BudgetRefusal":
        made = super().__new__(cls, message)
        made.scope = scope
        return made


_USAGE_FIELDS = tuple(Usage.__dataclass_fields__)


class Ledger:
    """Usage and reservations per task, per generation and for the run, behind one lock;
    with `spend_log`, every settled call is appended to it (fsynced) as it happens."""

    def __init__(self, spend_log: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self.spend_log = spend_log
        self.run = Usage()
        self.generations: dict[str, Usage] = {}
        self.tasks: dict[str, Usage] = {}
        self.refused: dict[str, str] = {}
        """Task key -> the scope whose limit refused one of its calls."""
        self.run_exhausted: str | None = None
        """Why a call was refused by the run's own limit: the run is over for this budget."""
        self.failed: dict[str, str] = {}
        self.retrying: dict[str, str] = {}
        """Task key -> the endpoint error its call is being retried after (until one succeeds)."""
        self._reserved_run = 0.0
        self._reserved: dict[tuple[str, str], float] = {}
        self._claimed: dict[str, Usage] = {}

    @classmethod
    def open(cls, spend_log: Path) -> "Ledger":
        """A run's ledger, starting from the true spend: every call its spend log holds,
        by generation and for the run (task budgets start afresh: a task run begun again
        is a new attempt). A line torn by a kill is the one call that was in flight."""
        ledger = cls(spend_log)
        if spend_log.is_file():
            for line in spend_log.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    usage = Usage(**{k: entry.get(k, 0) for k in _USAGE_FIELDS})
                except (ValueError, TypeError):
                    log.warning("%s: skipping a torn line (a call cut off by a kill)", spend_log)
                    continue
                ledger.run.add(usage)
                ledger.generations.setdefault(str(entry.get("generation", "-")), Usage()).add(usage)
        return ledger

    def task(self, key: str) -> Usage:
        """A copy of what channel `key` used so far: the live totals move on with each call,
        so a caller can take one before a run and one after and subtract."""
        with self._lock:
            return replace(self.tasks.get(key, Usage()))

    def was_refused(self, key: str) -> bool:
        with self._lock:
            return key in self.refused

    def record_failure(self, task: str, message: str) -> None:
        """A call of `task` failed for a reason outside the agent (the endpoint down,
        overloaded, or refusing the gateway's credentials); the first one is kept."""
        with self._lock:
            self.failed.setdefault(task, message)

    def note_retry(self, task: str, message: str) -> None:
        """A call of `task` is waiting out an endpoint failure (`harness.models._retry`)."""
        with self._lock:
            self.retrying[task] = message

    def note_answered(self, task: str) -> None:
        """A call of `task` got its answer: the endpoint is back."""
        with self._lock:
            self.retrying.pop(task, None)

    def failure(self, task: str) -> str | None:
        """Why the endpoint, not the agent, may have ended `task`'s run: a call that failed,
        or one still being retried when asked (the run ended while the gateway waited out
        an outage; its sandbox's clock ran out on the endpoint's time)."""
        with self._lock:
            if task in self.failed:
                return self.failed[task]
            if task in self.retrying:
                return f"a call was still being retried when the run ended ({self.retrying[task]})"
            return None

    def forget_failure(self, task: str) -> None:
        """A new attempt of `task` starts with a clean slate."""
        with self._lock:
            self.failed.pop(task, None)
            self.retrying.pop(task, None)

    # -- reserve, settle, release ---------------------------------------------------------

    def reserve(self, task: str, generation: str, budget: Budget,
                cost_usd: float) -> Reservation | BudgetRefusal:
        """Hold `cost_usd` (a call's worst case) against the task, its generation and the
        run, or refuse when it does not fit under one of their limits beside what is spent
        and what calls in flight hold."""
        with self._lock:
            checks = (
                ("task", self.tasks.get(task, Usage()).cost_usd,
                 self._reserved.get(("task", task), 0.0), budget.per_task),
                ("generation", self.generations.get(generation, Usage()).cost_usd,
                 self._reserved.get(("generation", generation), 0.0), budget.per_generation),
                ("run", self.run.cost_usd, self._reserved_run, budget.per_run),
            )
            for scope, spent, held, limit in checks:
                if limit is not None and (spent >= limit or spent + held + cost_usd > limit):
                    self.refused[task] = scope
                    message = (f"ratchet budget exhausted: this {scope} has spent ${spent:.4f} of "
                               f"its ${limit:.4f} limit (${held:.4f} more is held by calls in "
                               f"flight) and this call's worst case, ${cost_usd:.4f}, does not fit; "
                               "no more model calls are allowed")
                    if spent < limit and cost_usd > limit - spent:
                        message += (" (a call's worst case is its request's bytes as input tokens "
                                    "plus the output ceiling: a smaller --max-output-tokens or a "
                                    "larger budget lets it fit)")
                    if scope == "run":
                        self.run_exhausted = message
                    return BudgetRefusal(message, scope)
            self._reserved[("task", task)] = self._reserved.get(("task", task), 0.0) + cost_usd
            self._reserved[("generation", generation)] = (
                self._reserved.get(("generation", generation), 0.0) + cost_usd)
            self._reserved_run += cost_usd
            return Reservation(task, generation, cost_usd)

    def release(self, reservation: Reservation | None) -> None:
        """Give back a reservation (the call failed and cost nothing, or it is settled)."""
        if reservation is None:
            return
        with self._lock:
            for key in (("task", reservation.task), ("generation", reservation.generation)):
                left = self._reserved.get(key, 0.0) - reservation.cost_usd
                if left <= 1e-12:
                    self._reserved.pop(key, None)
                else:
                    self._reserved[key] = left
            self._reserved_run = max(0.0, self._reserved_run - reservation.cost_usd)

    def settle(self, reservation: Reservation | None, task: str, generation: str, usage: Usage,
               **detail: Any) -> None:
        """Charge a call's real usage in place of its reservation: first to the spend log
        (fsynced: it survives a kill from here on), then to the counts."""
        try:
            if self.spend_log is not None:
                self._append({"time": time.time(), "task": task, "generation": generation,
                              **asdict(usage), **detail,
                              "reserved_usd": reservation.cost_usd if reservation else None})
        finally:
            with self._lock:
                self.run.add(usage)
                self.generations.setdefault(generation, Usage()).add(usage)
                self.tasks.setdefault(task, Usage()).add(usage)
            self.release(reservation)
        if reservation is not None and usage.cost_usd > reservation.cost_usd + 1e-9:
            log.warning("a call of %s cost $%.6f, more than its reserved worst case $%.6f (the "
                        "endpoint ignored max_tokens, or its tokenizer made more tokens than "
                        "bytes)", task, usage.cost_usd, reservation.cost_usd)

    def record(self, task: str, generation: str, usage: Usage) -> None:
        """Charge `usage` with no reservation (a call that was not forwarded by a gateway)."""
        self.settle(None, task, generation, usage)

    def carry(self, usage: Usage, why: str) -> None:
        """Enter spend the log does not hold (a run from before spend logs): the journal's."""
        self.settle(None, "-", "-", usage, carried=why)

    def _append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry) + "\n").encode("utf-8")
        with self._log_lock:
            self.spend_log.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.spend_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- the journal's share -------------------------------------------------------------

    def claim(self, task: str) -> Usage:
        """What `task` spent since it was last claimed: the slice a journal record carries,
        so no call is journaled twice (a task begun again after an infrastructure error
        keeps its key)."""
        with self._lock:
            total = self.tasks.get(task, Usage())
            before = self._claimed.get(task, Usage())
            self._claimed[task] = Usage(**asdict(total))
        delta = Usage(**{k: getattr(total, k) - getattr(before, k) for k in _USAGE_FIELDS})
        return delta

    def refusal(self, task: str, generation: str, budget: Budget) -> str | None:
        """Why a call must be refused now, or None: a scope at or past its limit, or the
        run's limit already refusing a call's worst case (`run_exhausted`)."""
        with self._lock:
            if budget.per_run is not None and self.run_exhausted:
                return self.run_exhausted
        found = self.reserve(task, generation, budget, 0.0)
        if isinstance(found, Reservation):
            self.release(found)
            return None
        return str(found)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"run": asdict(self.run),
                    "generations": {k: asdict(v) for k, v in self.generations.items()},
                    "tasks": {k: asdict(v) for k, v in self.tasks.items()}}
