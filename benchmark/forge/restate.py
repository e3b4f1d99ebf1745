"""Rewrite the problem statements (and difficulty estimates) of an already forged suite,
with no image build and no model.

The deterministic writer needs only the task's own fields (gold patch, test patch, the
FAIL_TO_PASS ids) and, for the exact failing check and exception type, the pytest log of
the bug. That log is the one ``ratchet bench validate`` keeps for the empty patch (the
hidden tests run on the buggy code), so re-stating a suite is: validate it, then

    python -m benchmark.forge.restate benchmark/suites/forged.jsonl --logs runs/bench/validate-ID

Without ``--logs`` the writer uses each test's first check instead of the one that failed.
Everything else in a row (ids, patches, tests, environment, split) stays byte for byte.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmark.forge.difficulty import estimate_difficulty
from benchmark.forge.statements import check_statement, write_statement

__all__ = ["empty_patch_logs", "restate_row", "restate_suite"]


def restate_row(row: dict, output: str = "") -> dict:
    """`row` (a task as JSON) with a new statement and difficulty; other fields unchanged."""
    statement = write_statement(row["repo"], fail_to_pass=list(row["FAIL_TO_PASS"]),
                                test_patch=row["test_patch"], gold_patch=row["patch"],
                                output=output)
    forge = dict(row.get("forge") or {})
    forge["statement"] = "plain"
    forge["difficulty"] = {**estimate_difficulty(row["patch"], list(row["FAIL_TO_PASS"]),
                                                 forge.get("kind", "")),
                           **{k: v for k, v in (forge.get("difficulty") or {}).items()
                              if k.startswith("seed_")}}
    return {**row, "problem_statement": statement, "forge": forge}


def empty_patch_logs(validate_dir: Path) -> dict[str, str]:
    """{instance id: the grader's log of its empty patch} from a ``bench validate`` run."""
    logs = {}
    for path in validate_dir.glob("*/empty/eval.log"):
        logs[path.parent.parent.name] = path.read_text(encoding="utf-8", errors="replace")
    return logs


def restate_suite(path: Path, logs: dict[str, str]) -> tuple[list[dict], dict[str, int]]:
    """Every row of the JSONL suite at `path`, re-stated; and counts of what was used."""
    rows, stats = [], {"tasks": 0, "with_log": 0, "plain_fallback": 0}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        log = logs.get(row["instance_id"], "")
        new = restate_row(row, log)
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
    args = parser.parse_args(argv)
    if not args.suite.is_file():
        print(f"no such suite file: {args.suite}", file=sys.stderr)
        return 2
    if args.logs is not None and not args.logs.is_dir():
        print(f"no such validate run directory: {args.logs}", file=sys.stderr)
        return 2
    logs = empty_patch_logs(args.logs) if args.logs else {}
    rows, stats = restate_suite(args.suite, logs)
    args.suite.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{stats['tasks']} statements rewritten ({stats['with_log']} from the bug's test log, "
          f"{stats['plain_fallback']} without a reproduction) in {args.suite}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
