"""Assemble one suite file from several forge outputs, and give it stratified splits.

``ratchet forge`` gives each task ``split_of(instance_id)`` (~20 % held out by a hash of its
id), which is right for a file of one package but leaves a merged suite with whatever share
the hashes happen to give. A suite that decides acceptance on its held-out split needs
enough held-out tasks for the paired test to have power (``harness/splits.py``) and the same
mix of packages and bug kinds on both sides. So the shipped suite is assembled:

    python -m benchmark.forge.assemble benchmark/suites/forged.jsonl \\
        benchmark/suites/forged.jsonl runs/forge200/*.jsonl \\
        --validation runs/bench/validate-ID/validation.json

Rows are read in the order given; the first row of an ``instance_id`` wins, and a later row
that repeats an earlier task's bug (same package version and gold patch, or same
FAIL_TO_PASS set) is left out. With ``--validation`` (a ``ratchet bench validate`` report),
tasks it found invalid are left out too (a task it did not check is kept). Then
:func:`stratified_splits`. Every other field of a row stays byte for byte as it was.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

__all__ = ["assemble", "stratified_splits"]


def _stratum(row: dict) -> tuple[str, str, str]:
    kind = (row.get("forge") or {}).get("kind", "")
    return row["repo"], kind, hashlib.sha256(row["instance_id"].encode()).hexdigest()


def stratified_splits(rows: list[dict]) -> dict[str, str]:
    """{instance id: "heldout" | "train"}: the rows sorted by (package, bug kind, sha256 of
    the id), then heldout and train in turn (the first one heldout). Each package and each
    kind within it is split as evenly as its count allows (off by one at most per package),
    half the suite (rounded up) is held out, and the result depends on the set of rows only,
    not on their order in the file."""
    ordered = sorted(rows, key=_stratum)
    return {row["instance_id"]: ("heldout" if i % 2 == 0 else "train") for i, row in enumerate(ordered)}


def _bug(row: dict) -> tuple[tuple, tuple]:
    fail = row["FAIL_TO_PASS"]
    tests = tuple(sorted(json.loads(fail) if isinstance(fail, str) else fail))
    return (row["repo"], row["version"], row["patch"]), (row["repo"], row["version"], tests)


def assemble(paths: list[Path], invalid: set[str] = frozenset()) -> tuple[list[dict], Counter]:
    """(the rows of `paths` merged, invalid and repeated bugs left out, re-split; counts of
    what was left out and why)."""
    rows: list[dict] = []
    seen_ids: set[str] = set()
    seen_bugs: set[tuple] = set()
    dropped: Counter = Counter()
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if row["instance_id"] in seen_ids:
                dropped["same id"] += 1
                continue
            if row["instance_id"] in invalid:
                dropped["invalid"] += 1
                continue
            patch, tests = _bug(row)
            if patch in seen_bugs or tests in seen_bugs:
                dropped["same bug"] += 1
                continue
            seen_ids.add(row["instance_id"])
            seen_bugs.update((patch, tests))
            rows.append(row)
    splits = stratified_splits(rows)
    return [{**row, "split": splits[row["instance_id"]]} for row in rows], dropped


def invalid_ids(validation: Path) -> set[str]:
    """The ids a ``ratchet bench validate`` report (``validation.json``) found invalid."""
    report = json.loads(validation.read_text(encoding="utf-8"))
    return {task_id for task_id, verdict in report.items() if not verdict.get("valid")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.forge.assemble", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the suite file to write")
    parser.add_argument("inputs", type=Path, nargs="+", help="forge outputs (JSONL), first wins")
    parser.add_argument("--validation", type=Path, action="append", default=[],
                        help="a `ratchet bench validate` validation.json; its invalid tasks are left out")
    args = parser.parse_args(argv)
    for path in [*args.inputs, *args.validation]:
        if not path.is_file():
            print(f"error: {path} is not a file; give forge outputs (JSONL) and validation.json reports",
                  file=sys.stderr)
            return 2
    invalid = set().union(*(invalid_ids(p) for p in args.validation)) if args.validation else set()
    rows, dropped = assemble(args.inputs, invalid)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    packages = Counter(row["repo"] for row in rows)
    splits = Counter(row["split"] for row in rows)
    print(f"{args.out}: {len(rows)} tasks from {len(packages)} packages "
          f"({', '.join(f'{name} {n}' for name, n in sorted(packages.items()))}); "
          f"{splits['train']} train / {splits['heldout']} heldout"
          + (f"; left out: {', '.join(f'{n} {why}' for why, n in sorted(dropped.items()))}" if dropped else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
