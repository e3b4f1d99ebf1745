"""The real loop under noise, over many seeds: is a real improvement accepted, a no-op rejected?

Each seed is one run of the real controller (Docker sandboxes, real grading, real git) on
the quickstart suite, with the stochastic scripted agent model of `harness.models.stochastic_demo`:
task i is solved with probability rate_i (drawn once per seed from Beta(0.5, 0.75)); the
meta model first proposes a lesson that moves the mean rate by ``--effect``, then a no-op
lesson. Generation 1 is the improvement; generation 2 is the no-op if generation 1 was
accepted, else (proposed again from the seed) a second try of the improvement. Prints, over
the seeds, the accept rate of improvements and of no-ops with their binomial standard
errors, and the agent runs per seed.

    python perf/loop_noise.py --seeds 10 --attempts 3 --effect 0.3
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import agent_seed  # noqa: E402
from benchmark import Grader, ImageBuilder, load_suite  # noqa: E402
from harness.models.gateway import OpenAIUpstream  # noqa: E402
from harness.loop.compose import build_controller  # noqa: E402
from harness.loop.settings import LoopSettings  # noqa: E402
from harness.loop.power import Population  # noqa: E402
from harness.models.scripted_model import ScriptedModelServer  # noqa: E402
from harness.models.stochastic_demo import stochastic_agent_script, stochastic_meta_script  # noqa: E402
from harness.loop.workspace import init_workspace  # noqa: E402


def one_seed(seed: int, args: argparse.Namespace, root: Path) -> tuple[str, str, int]:
    tasks = load_suite(args.suite).tasks
    rates = Population().draw(len(tasks), random.Random(seed))
    ws = init_workspace(root / f"ws-{seed}", seed=Path(agent_seed.__file__).parent)
    settings = LoopSettings(run=f"noise-{seed}", suite=args.suite, generations=2,
                            agent_model="scripted", meta_model="scripted", workers=args.workers,
                            attempts=args.attempts, acceptance=args.acceptance)
    grader = Grader(ImageBuilder(), root / f"grades-{seed}")
    script = stochastic_agent_script(tasks, rates, effect=args.effect, seed=seed)
    with ScriptedModelServer(script) as agent, ScriptedModelServer(stochastic_meta_script()) as meta:
        state = build_controller(ws, settings, tasks, grader, OpenAIUpstream(agent.base_url, "x"),
                                 OpenAIUpstream(meta.base_url, "x")).run()
    verdict = {n: g.verdict for n, g in state.generations.items()}
    return verdict.get(1, "?"), verdict.get(2, "?"), len(state.evaluations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--effect", type=float, default=0.3)
    parser.add_argument("--acceptance", default="sign")
    parser.add_argument("--suite", default="quickstart")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    improvements: list[bool] = []
    noops: list[bool] = []
    runs = 0
    with tempfile.TemporaryDirectory(prefix="ratchet-noise-") as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            started = time.monotonic()
            gen1, gen2, evaluations = one_seed(seed, args, Path(tmp))
            improvements.append(gen1 == "accepted")
            (noops if gen1 == "accepted" else improvements).append(gen2 == "accepted")
            runs += evaluations
            second = "no-op" if gen1 == "accepted" else "improvement again"
            print(f"seed {seed}: improvement {gen1}, then {second} {gen2}, {evaluations} agent "
                  f"runs, {time.monotonic() - started:.0f} s", flush=True)

    def rate(outcomes: list[bool]) -> str:
        if not outcomes:
            return "no trial"
        n, p = len(outcomes), sum(outcomes) / len(outcomes)
        return f"{p:.2f} +- {math.sqrt(p * (1 - p) / n):.2f} ({sum(outcomes)}/{n})"

    print(f"\n{args.acceptance}, K={args.attempts}, effect {args.effect:+.2f}, {args.seeds} seeds: "
          f"improvement accepted {rate(improvements)}; no-op accepted {rate(noops)}; "
          f"{runs / args.seeds:.0f} agent runs per seed")


if __name__ == "__main__":
    main()
