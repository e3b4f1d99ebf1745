"""The run's money as the loop sees it, and when the loop must stop.

The spend log (`harness.models.ledger`) holds every call the gateways settled, on disk as it
happened; the journal holds the spend of each step it records. `RunSpend` keeps the two in
step: a step's spend is claimed from the ledger when the step is journaled, and what was
paid but never journaled (discarded work, a process killed before it journaled) is brought
into the journal at the next run start or end. A stop is the run's budget spent or a signal.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from harness.errors import StopRequested
from harness.loop.journal import RunState
from harness.models.gateway import Budget
from harness.models.ledger import Ledger, Usage

__all__ = ["RunSpend"]


@dataclass
class RunSpend:
    ledger: Ledger
    budget_usd: float | None
    stop_flag: threading.Event = field(default_factory=threading.Event)

    def carry_journaled(self, state: RunState) -> None:
        """A run from before spend logs: the spend its journal records is the ledger's start."""
        missing = state.spent_usd - self.ledger.run.cost_usd
        if missing > 1e-9:
            self.ledger.carry(Usage(cost_usd=missing, unpriced_calls=max(
                0, state.unpriced_calls - self.ledger.run.unpriced_calls)),
                "spend journaled before this run had a spend log")

    def claim(self, key: str) -> dict[str, Any]:
        """The journal fields for what channel `key` spent since it was last journaled."""
        usage = self.ledger.claim(key)
        return {"cost_usd": usage.cost_usd, **({"unpriced_calls": usage.unpriced_calls}
                                                if usage.unpriced_calls else {})}

    def unjournaled(self, state: RunState) -> dict[str, Any]:
        """The journal fields bringing its spend (``state``, folded to the last record) to
        the spend log's: calls of discarded work, or of a process killed before it
        journaled them."""
        cost = self.ledger.run.cost_usd - state.spent_usd
        unpriced = self.ledger.run.unpriced_calls - state.unpriced_calls
        return {**({"cost_usd": round(cost, 9)} if cost > 1e-9 else {}),
                **({"unpriced_calls": unpriced} if unpriced > 0 else {})}

    def refusal(self) -> str | None:
        """Why the run's budget refuses more work, or None."""
        return self.ledger.refusal("-", "-", Budget(per_run=self.budget_usd))

    def should_start(self) -> bool:
        """Whether the next task may start: no stop asked for, budget left."""
        return not (self.stop_flag.is_set() or self.refusal())

    def check_stop(self) -> None:
        """Raise StopRequested if the budget is spent or a stop was asked for."""
        refusal = self.refusal()
        if refusal:
            raise StopRequested(refusal)
        if self.stop_flag.is_set():
            raise StopRequested("interrupted")

    def forecast(self, state: RunState, generations: int) -> str:
        """Spend per generation so far, and how many more generations the budget covers."""
        done = sum(1 for g in state.generations.values() if g.recorded)
        spent = self.ledger.run
        if spent.unpriced_calls:
            return (f"forecast: spend per generation unknown ({spent.unpriced_calls} call(s) of an "
                    f"unpriced model; ${spent.cost_usd:.4f} priced over {done} generation(s))")
        if not done:
            return (f"forecast: ${spent.cost_usd:.4f} spent and no generation finished yet; "
                    "one generation (the seed's evaluation) costs at least that")
        each = spent.cost_usd / done
        line = f"forecast: ${each:.4f} per generation so far (${spent.cost_usd:.4f} over {done})"
        left = generations + 1 - done
        if self.budget_usd is None:
            return line + f"; no budget set; {left} generation(s) to go"
        remaining = max(0.0, self.budget_usd - spent.cost_usd)
        covers = "any number of" if each == 0 else f"about {int(remaining // each)}"
        return (line + f"; the ${self.budget_usd:.2f} budget (${remaining:.4f} left) covers {covers} "
                f"more; {left} more planned")
