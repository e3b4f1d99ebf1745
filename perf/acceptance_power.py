"""The loop's error rates and power, per acceptance design, on simulated stochastic agents.

Drives ratchet's own decision step (`harness.loop.acceptance.decide_in_looks` with the rule
parsed from its spec, futility looks and the run-wide alpha correction included) through
30-generation runs, the way `harness.loop.controller` uses it:

- task success rates ~ Beta(0.5, 0.75) (mean 0.4), a candidate's moved by `harness.loop.power.shifted`;
- the best is compared by its baseline runs: K *fresh* runs made after its acceptance
  (``baseline=fresh``, the loop's behaviour), or, to show what that fixes, the runs that
  got it accepted (``baseline=draw``, the loop before issue 14);
- with P proposals, each is screened on one run per deciding task and the most resolved is
  tested on fresh runs.

Per design it prints: P(at least one bad acceptance in a 30-generation run) under a stream of
no-op proposals and under a stream of harmful ones (-0.02); the power of one generation for a
+0.05 and a +0.10 change (with P > 1: one of the P proposals has the gain, the others are
no-ops); agent runs per generation (no-op stream, incl. screening and fresh baselines).
Each figure is a Monte Carlo estimate: its standard error is printed with the table.

    python perf/acceptance_power.py --runs 1000   # the table in docs/acceptance.md (~6 min)
    python perf/acceptance_power.py --quick       # fewer simulated runs (~30 s)
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.loop.acceptance import parse_rule  # noqa: E402
from harness.loop.power import Population, draw_runs, shifted, simulate_generation  # noqa: E402

GENERATIONS = 30
POPULATION = Population(0.5, 0.75)


@dataclass(frozen=True)
class Design:
    rule: str
    n: int
    """Deciding tasks (the deciding split's size; the studied split does not enter)."""
    k: int = 1
    p: int = 1
    baseline: str = "fresh"
    looks: bool = True
    """Futility looks (the loop always makes them; False shows what they cost in power)."""

    @property
    def name(self) -> str:
        return (f"{self.rule} N={self.n} K={self.k} P={self.p}"
                + ("" if self.baseline == "fresh" else " baseline=draw")
                + ("" if self.looks else " no-looks"))


def _screen(rates_list: list[list[float]], rng: random.Random) -> int:
    """Index of the proposal with the most resolved on one run per task (first on a tie)."""
    scores = [sum(rng.random() < p for p in rates) for rates in rates_list]
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def one_run(design: Design, effect: float, rng: random.Random) -> tuple[int, float]:
    """A 30-generation run where every proposal has ``effect``: (acceptances, runs per gen)."""
    rule = parse_rule(design.rule)
    best_rates = POPULATION.draw(design.n, rng)
    best_runs = draw_runs(best_rates, design.k, rng)
    accepted = runs = 0
    for gen in range(1, GENERATIONS + 1):
        proposals = [shifted(best_rates, effect, POPULATION.mean) for _ in range(design.p)]
        chosen = proposals[_screen(proposals, rng)] if design.p > 1 else proposals[0]
        runs += design.n * design.p if design.p > 1 else 0
        candidate_runs = draw_runs(chosen, design.k, rng)
        decision = simulate_generation(rule, best_runs, candidate_runs, generation=gen,
                                       generations=GENERATIONS, looks=design.looks)
        runs += decision.stopped_after or decision.planned or 0
        if decision.accepted:
            accepted += 1
            best_rates = chosen
            if design.baseline == "fresh":
                best_runs = draw_runs(chosen, design.k, rng)
                runs += design.n * design.k
            else:
                best_runs = candidate_runs
    return accepted, runs / GENERATIONS


def power_of(design: Design, effect: float, sims: int, rng: random.Random) -> float:
    """P(a generation of a 30-generation run accepts a +effect change), averaged over the
    generations (the level of ``open`` spending falls with g); with P > 1 the gain is in one
    proposal of P, the others no-ops, and screening must find it."""
    rule = parse_rule(design.rule)
    hits = 0
    for sim in range(sims):
        rates = POPULATION.draw(design.n, rng)
        best = draw_runs(rates, design.k, rng)
        good = shifted(rates, effect, POPULATION.mean)
        proposals = [good] + [rates] * (design.p - 1)
        index = _screen(proposals, rng) if design.p > 1 else 0
        decision = simulate_generation(rule, best, draw_runs(proposals[index], design.k, rng),
                                       generation=1 + sim % GENERATIONS, generations=GENERATIONS,
                                       looks=design.looks)
        hits += decision.accepted and index == 0
    return hits / sims


DESIGNS = [
    Design("strict", 30), Design("strict", 100), Design("strict", 30, baseline="draw"),
    Design("margin:3", 30), Design("margin:3", 100),
    Design("sign:0.05:each", 100),
    Design("sign", 9, 3), Design("sign", 9, 5),
    Design("sign", 30, 1), Design("sign", 30, 3), Design("sign", 30, 5), Design("sign", 30, 10),
    Design("sign", 100, 1), Design("sign", 100, 3), Design("sign", 100, 3, looks=False),
    Design("sign", 100, 5), Design("sign", 100, 3, 4),
    Design("sign", 300, 1), Design("sign", 300, 3),
    Design("sign:0.05:open", 100, 3),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer simulated runs")
    parser.add_argument("--runs", type=int, default=None, help="simulated 30-generation runs per design")
    parser.add_argument("--only", default=None, help="only designs whose name contains this")
    args = parser.parse_args()
    sims = args.runs or (60 if args.quick else 400)
    power_sims = sims * 2
    rng = random.Random(14)
    print(f"{sims} simulated {GENERATIONS}-generation runs per design and stream; power over "
          f"{power_sims} generations; task rates ~ Beta(0.5, 0.75)")
    print(f"standard errors: P(bad) <= {0.5 / math.sqrt(sims):.3f}, power <= {0.5 / math.sqrt(power_sims):.3f}")
    print()
    print("| design | P(>=1 no-op accepted / 30 gens) | P(>=1 harmful -0.02 accepted / 30 gens) "
          "| power +0.05 | power +0.10 | agent runs / gen |")
    print("|---|---|---|---|---|---|")
    for design in DESIGNS:
        if args.only and args.only not in design.name:
            continue
        started = time.monotonic()
        noop = [one_run(design, 0.0, rng) for _ in range(sims)]
        harm = [one_run(design, -0.02, rng) for _ in range(sims)]
        p_noop = sum(1 for a, _ in noop if a) / sims
        p_harm = sum(1 for a, _ in harm if a) / sims
        per_gen = sum(r for _, r in noop) / sims
        p05 = power_of(design, 0.05, power_sims, rng)
        p10 = power_of(design, 0.10, power_sims, rng)
        print(f"| {design.name} | {p_noop:.3f} | {p_harm:.3f} | {p05:.3f} | {p10:.3f} | "
              f"{per_gen:.0f} |", flush=True)
        print(f"  ({time.monotonic() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
