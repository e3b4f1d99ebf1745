"""Command line: ``python -m agent_seed run --problem FILE [--repo DIR] [--out DIR]`` and
``python -m agent_seed selfcheck``.

Exit codes of ``run``: 0 submitted, 3 step limit reached, 4 model call failed (e.g. the
gateway refused past the budget), 1 anything else. The trajectory is in OUT/trajectory.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_CODES = {"submitted": 0, "limits_exceeded": 3, "model_error": 4}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m agent_seed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="solve one task in a repository")
    run.add_argument("--problem", required=True, type=Path, help="file with the problem statement")
    run.add_argument("--repo", default="/testbed", type=Path, help="task repository (default /testbed)")
    run.add_argument("--out", default="/tmp/agent-out", type=Path, help="where trajectory.json goes")
    run.add_argument("--config", type=Path, help="config file (default: the package's config.yaml)")
    sub.add_parser("selfcheck", help="run the agent's offline self-checks")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, model=None) -> int:
    """``model`` replaces the configured one (the self-check passes a ScriptedModel)."""
    args = parse_args(argv)
    if args.command == "selfcheck":
        from .selfcheck import main as selfcheck

        return selfcheck()

    from .agent import TRAJECTORY_FILE, Agent
    from .config import load_config
    from .model import model_from_env

    config = load_config(args.config)
    problem = args.problem.read_text(encoding="utf-8")
    agent = Agent(model or model_from_env(config), config, repo=args.repo, out_dir=args.out)
    status, result = agent.run(problem)
    print(f"agent_seed: {status} after {agent.steps} model calls; "
          f"trajectory: {args.out / TRAJECTORY_FILE}", file=sys.stderr)
    if status != "submitted":
        print(f"agent_seed: {result.strip()[:2000]}", file=sys.stderr)
    return EXIT_CODES.get(status, 1)


if __name__ == "__main__":
    sys.exit(main())
