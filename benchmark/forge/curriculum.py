"""A curriculum for the loop: forge more of what a run's best agent fails at.

The red/blue loop in ratchet's terms: the loop (blue) improves the agent on its study tasks;
the forge (red) reads which tasks the run's best generation still fails, groups them by
bug kind and package, and forges new tasks where the failure rate is highest, so the study
split keeps getting harder as the agent gets better (``ratchet forge --target RUN``).

Rates are smoothed ((failed + 1) / (total + 2), Laplace's rule): a kind seen once is not
taken as certain, and a kind the run never met (a new structural kind) gets the even prior
0.5, so it is still tried. Pure: the outcomes come in as data (the CLI reads them from the
run), the weights go out to `Forge.candidates`.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TypeVar

from benchmark._task import PypiSource, TaskSpec

__all__ = ["PRIOR", "Curriculum", "WeakSpot", "draw_order", "weak_spots"]

PRIOR = 0.5
"""The failure rate assumed for a kind or package the run has no task of."""
T = TypeVar("T")


@dataclass(frozen=True)
class WeakSpot:
    """A bug kind or a package, with how often the best agent failed its tasks."""

    name: str
    failed: int
    total: int

    @property
    def rate(self) -> float:
        return (self.failed + 1) / (self.total + 2)

    def as_dict(self) -> dict:
        return {"name": self.name, "failed": self.failed, "total": self.total,
                "rate": round(self.rate, 3)}


@dataclass
class Curriculum:
    """Where the run's best generation is weakest, by kind and by package."""

    run: str
    generation: int
    kinds: list[WeakSpot] = field(default_factory=list)
    packages: list[WeakSpot] = field(default_factory=list)

    def kind_weights(self, kinds: tuple[str, ...]) -> dict[str, float]:
        """A weight per forge kind: its smoothed failure rate (PRIOR where never seen)."""
        known = {spot.name: spot.rate for spot in self.kinds}
        return {kind: known.get(kind, PRIOR) for kind in kinds}

    def package(self) -> str | None:
        """The pinned package whose tasks the agent fails most (None: no forged package)."""
        return self.packages[0].name if self.packages else None

    def why(self) -> str:
        top = ", ".join(f"{s.name} {s.failed}/{s.total}" for s in self.kinds[:3]) or "none"
        pkgs = ", ".join(f"{s.name} {s.failed}/{s.total}" for s in self.packages[:3]) or "none"
        return (f"run {self.run}, best generation {self.generation} failed most: kinds {top}; "
                f"packages {pkgs}")

    def as_dict(self) -> dict:
        return {"run": self.run, "generation": self.generation, "why": self.why(),
                "kinds": [s.as_dict() for s in self.kinds],
                "packages": [s.as_dict() for s in self.packages]}


def _kind_of(task: TaskSpec) -> str | None:
    forge = (task.model_extra or {}).get("forge") or {}
    return forge.get("kind")


def _package_of(task: TaskSpec) -> str | None:
    return task.source.requirement if isinstance(task.source, PypiSource) else None


def weak_spots(outcomes: dict[str, bool], tasks: list[TaskSpec], *, run: str,
               generation: int) -> Curriculum:
    """The curriculum from one generation's outcomes ({task id: resolved}) on `tasks`.
    Tasks with no forge record (hand-written ones) count for their package only."""
    by_id = {t.instance_id: t for t in tasks}
    failed: dict[str, Counter] = {"kind": Counter(), "package": Counter()}
    total: dict[str, Counter] = {"kind": Counter(), "package": Counter()}
    for instance_id, resolved in outcomes.items():
        task = by_id.get(instance_id)
        if task is None:
            continue
        for axis, name in (("kind", _kind_of(task)), ("package", _package_of(task))):
            if name:
                total[axis][name] += 1
                failed[axis][name] += not resolved

    def ranked(axis: str) -> list[WeakSpot]:
        spots = [WeakSpot(name, failed[axis][name], count) for name, count in total[axis].items()]
        return sorted(spots, key=lambda s: (-s.rate, -s.total, s.name))

    return Curriculum(run, generation, ranked("kind"), ranked("package"))


def draw_order(by_kind: dict[str, list[T]], weights: dict[str, float], rng: random.Random) -> list[T]:
    """Every item of `by_kind`, kinds drawn in proportion to their weights (each draw takes
    the next item of the drawn kind): a kind weighted twice as high comes up about twice as
    often early on, and every item still comes up once."""
    pools = {kind: list(items) for kind, items in by_kind.items() if items}
    order: list[T] = []
    while pools:
        kinds = sorted(pools)
        kind = rng.choices(kinds, [max(weights.get(k, PRIOR), 1e-6) for k in kinds])[0]
        order.append(pools[kind].pop())
        if not pools[kind]:
            del pools[kind]
    return order
