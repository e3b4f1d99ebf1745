"""Rewrite the problem statements (and difficulty estimates) of an already forged suite,
with no image build and no model.

The deterministic writer needs only the task's own fields (gold patch, test patch, the
FAIL_TO_PASS ids) and, for the exact failing check and exception type, the pytest log of
the bug. That log is the one ``ratchet bench validate`` keeps for the empty patch (the
hidden tests run on the buggy code), so re-stating a suite is: validate it, then

    python -m benchmark.forge.restate benchmark/suites/forged.jsonl --logs runs/bench/validate-ID

Without ``--logs`` the writer uses each test's first check instead of the one that failed.
``--seed-metrics runs/RUN/gens/0000/metrics.json`` rates each task's difficulty by whether
the seed agent resolved it in that run.
Everything else in a row (ids, patches, tests, environment, split) stays byte for byte.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmark.forge.difficulty import estimate_difficulty, with_resolve_rate
from benchmark.forge.statements import check_statement, write_statement

__all__ = ["empty_patch_logs", "restate_row", "restate_suite", "seed_outcomes"]


def restate_row(row: dict, output: str = "", seed_resolved: bool | None = None) -> dict:
    """`row` (a task as JSON) with a new statement and difficulty (rated by the seed agent's
    outcome when there is one); other fields unchanged."""
    statement = write_statement(row["repo"], fail_to_pass=list(row["FAIL_TO_PASS"]),
                                test_patch=row["test_patch"], gold_patch=row["patch"],
                                output=output)
    forge = dict(row.get("forge") or {})
    forge["statement"] = "plain"
    before = forge.get("difficulty") or {}
    forge["difficulty"] = estimate_difficulty(row["patch"], list(row["FAIL_TO_PASS"]),
                                              forge.get("kind", ""))
    if seed_resolved is not None:
        forge["difficulty"] = with_resolve_rate(forge["difficulty"], int(seed_resolved), 1)
    elif before.get("seed_attempts"):  # a rating by the seed agent is kept
        attempts = int(before["seed_attempts"])
        forge["difficulty"] = with_resolve_rate(
            forge["difficulty"], round(float(before["seed_resolve_rate"]) * attempts), attempts)
    return {**row, "problem_statement": statement, "forge": forge}


def seed_outcomes(metrics_path: Path) -> dict[str, bool]:
    """{task id: resolved} of one generation's ``metrics.json`` (a run's ``gens/0000`` is
    the seed agent's)."""
    tasks = json.loads(metrics_path.read_text(encoding="utf-8")).get("tasks")
    if not isinstance(tasks, dict):
        raise ValueError(f"{metrics_path} has no per-task outcomes (its 'tasks' field)")
    return {k: bool(v) for k, v in tasks.items()}


def empty_patch_logs(validate_dir: Path) -> dict[str, str]:
    """{instance id: the grader's log of its empty patch} from a ``bench validate`` run."""
    logs = {}
    for path in validate_dir.glob("*/empty/eval.log"):
        logs[path.parent.parent.name] = path.read_text(encoding="utf-8", errors="replace")
    return logs


def restate_suite(path: Path, logs: dict[str, str], seeds: dict[str, bool] | None = None
                  ) -> tuple[list[dict], dict[str, int]]:
    """Every row of the JSONL suite at `path`, re-stated; and counts of what was used."""
    seeds = seeds or {}
    rows, stats = [], {"tasks": 0, "with_log": 0, "plain_fallback": 0, "seed_rated": 0}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        log = logs.get(row["instance_id"], "")
        new = restate_row(row, log, seeds.get(row["instance_id"]))
        stats["seed_rated"] += row["instance_id"] in seeds
        problems = check_statement(new["problem_statement"], fail_to_pass=row["FAIL_TO_PASS"],
                                   gold_patch=row["patch"], test_patch=row["test_patch"])
        assert not problems, (row["instance_id"], problems)  # write_statement guarantees it
        stats["tasks"] += 1
        stats["with_log"] += bool(log)
        stats["plain_fallback"] += "```" not in new["problem_statement"]
        rows.append(new)
    return rows, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path, help="the JSONL suite to rewrite in place")
    parser.add_argument("--logs", type=Path, help="a `ratchet bench validate` run directory")
    parser.add_argument("--seed-metrics", type=Path,
                        help="the seed agent's outcomes: a run's gens/0000/metrics.json")
    args = parser.parse_args(argv)
    if not args.suite.is_file():
        print(f"no such suite file: {args.suite}", file=sys.stderr)
        return 2
    if args.logs is not None and not args.logs.is_dir():
        print(f"no such validate run directory: {args.logs}", file=sys.stderr)
        return 2
    try:
        seeds = seed_outcomes(args.seed_metrics) if args.seed_metrics else {}
    except (OSError, ValueError) as exc:
        print(f"cannot read the seed agent's outcomes: {exc}", file=sys.stderr)
        return 2
    logs = empty_patch_logs(args.logs) if args.logs else {}
    rows, stats = restate_suite(args.suite, logs, seeds)
    args.suite.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{stats['tasks']} statements rewritten ({stats['with_log']} from the bug's test log, "
          f"{stats['plain_fallback']} without a reproduction; {stats['seed_rated']} rated by the "
          f"seed agent's outcome) in {args.suite}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
