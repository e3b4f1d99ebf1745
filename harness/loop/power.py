"""What an acceptance design can detect: the loop's own decision step on simulated agents.

A simulated agent resolves task i with probability p_i, the p_i drawn from Beta(0.5, 0.75)
(mean 0.4, many tasks near always or never solved, as on real suites). A candidate with
effect d resolves task i with probability

    q_i = p_i + d (1 - p_i) / (1 - m)   (d >= 0)      q_i = p_i (1 + d / m)   (d < 0)

with m the mean of the Beta, so the mean rate moves by exactly d and every q_i stays in
[0, 1]. Each simulated generation draws task rates, the best's K fresh baseline runs
and the candidate's K runs (`draw_runs`), and hands them to `harness.loop.acceptance.decide_in_looks`, the
function the loop decides with (futility looks and the run's alpha correction included):
nothing here re-implements a rule. ``perf/acceptance_power.py`` builds its tables on
`simulate_generation`; `power` is the one number ``ratchet run`` prints at start.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from harness.loop.acceptance import AcceptanceRule, Decision, decide_in_looks, parse_rule
from harness.models.scripted_model import shifted  # the stochastic scripted model moves rates the same way

__all__ = ["Population", "draw_runs", "power", "shifted", "simulate_generation"]


@dataclass(frozen=True)
class Population:
    """Per-task success rates ~ Beta(alpha, beta)."""

    alpha: float = 0.5
    beta: float = 0.75

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def draw(self, n: int, rng: random.Random) -> list[float]:
        return [rng.betavariate(self.alpha, self.beta) for _ in range(n)]


def draw_runs(rates: list[float], attempts: int, rng: random.Random) -> dict[tuple[int, int], bool]:
    """One agent's runs: (task i, slot j) -> resolved, each with probability rates[i]."""
    return {(i, j): rng.random() < p for j in range(attempts) for i, p in enumerate(rates)}


def simulate_generation(rule: AcceptanceRule, best_runs: dict[tuple[int, int], bool],
                        candidate_runs: dict[tuple[int, int], bool], *, generation: int = 1,
                        generations: int | None = None, looks: bool = True) -> Decision:
    """One decision of the loop on drawn runs: the candidate's runs in the loop's order
    (attempt by attempt, task by task), `decide_in_looks` against the best's baseline runs."""
    order = sorted(candidate_runs, key=lambda key: (key[1], key[0]))
    return decide_in_looks(rule, order, lambda keys: {k: candidate_runs[k] for k in keys}, best_runs,
                           generation=generation, generations=generations, looks=looks)


def power(rule: str, n_tasks: int, attempts: int = 1, effect: float = 0.10, *,
          generations: int | None = None, generation: int = 1, base_rate_alpha: float = 0.5,
          base_rate_beta: float = 0.75, sims: int = 2000, seed: int = 0,
          looks: bool = True) -> float:
    """P(the loop accepts a candidate whose true rate is ``effect`` above the best's), for a
    suite of ``n_tasks`` deciding tasks run ``attempts`` times each, at generation
    ``generation`` of a run of ``generations`` (None: open-ended). ``effect=0`` gives the
    chance of accepting a no-op change in that generation. Monte Carlo over ``sims``
    generations: its standard error is at most 0.5 / sqrt(sims) (0.011 at 2000)."""
    if n_tasks < 1 or attempts < 1 or sims < 1:
        raise ValueError(f"n_tasks, attempts and sims must be >= 1, got {n_tasks}, {attempts}, {sims}")
    parsed = parse_rule(rule)
    population = Population(base_rate_alpha, base_rate_beta)
    rng = random.Random(seed)
    accepted = 0
    for _ in range(sims):
        rates = population.draw(n_tasks, rng)
        best = draw_runs(rates, attempts, rng)  # the best's fresh baseline
        candidate = draw_runs(shifted(rates, effect, population.mean), attempts, rng)
        decision = simulate_generation(parsed, best, candidate, generation=generation,
                                       generations=generations, looks=looks)
        accepted += decision.accepted
    return accepted / sims
