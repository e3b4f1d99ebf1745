"""The plain `ratchet forge` on packages it has no recipe for, and where its time goes.

    python perf/forge_any.py [--count 5] [--out DIR] [NAME==VERSION ...]

For each package, one after another (forging builds images: one at a time), runs exactly
``ratchet forge --package NAME==VER --count N --out DIR/NAME.jsonl`` (no other option) in
this process, with its phases timed: reading and resolving (sdist, dependencies, test
layout), pristine image and baseline, screening, validation (task images and gold/empty
gradings). Prints one row per package: backend, what was detected, tasks kept, seconds in
all and per kept task, and the phase split; ``DIR/summary.json`` keeps the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LoadSampler, time_calls  # noqa: E402

# Named by no recipe, no shipped suite, no forge doc and no test; several build backends.
PACKAGES = ("sqlparse==0.6.1", "glom==25.12.0", "humanize==4.17.0", "more-itertools==11.2.1",
            "jsonpointer==3.12", "docopt-ng==0.9.0", "jmespath==1.1.0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", default=list(PACKAGES))
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/forge-any"))
    args = parser.parse_args()

    import typer

    import benchmark.forge.forge as forge_module
    from benchmark.forge import Forge
    from harness.cli import app

    phase = threading.local()
    time_calls(phase, Forge, "__init__", "read+resolve")
    time_calls(phase, Forge, "pristine_baseline", "pristine+baseline")
    time_calls(phase, Forge, "screen", "screening")
    time_calls(phase, forge_module, "validate_tasks", "validation")
    args.out.mkdir(parents=True, exist_ok=True)
    load = LoadSampler()
    rows = []
    for package in args.packages:
        phase.sink = defaultdict(float)
        out = args.out / f"{package.split('==')[0]}.jsonl"
        out.unlink(missing_ok=True)
        started = time.monotonic()
        error = ""
        try:
            app(["forge", "--package", package, "--count", str(args.count), "--out", str(out)],
                standalone_mode=False)
        except (SystemExit, typer.Exit, Exception) as exc:  # noqa: BLE001 - reported per package
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - started
        tasks = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        recipe = tasks[0]["forge"]["recipe"] if tasks else {}
        rows.append({"package": package, "kept": len(tasks), "seconds": round(seconds, 1),
                     "seconds_per_kept": round(seconds / len(tasks), 1) if tasks else None,
                     "phases": {k: round(v, 1) for k, v in phase.sink.items()},
                     "detected": recipe.get("detected", []), "error": error[-400:]})
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=2))
    print("\n| package | kept | s total | s per kept | read+resolve | pristine+baseline | "
          "screening | validation | detected |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["phases"]
        print(f"| {r['package']} | {r['kept']} | {r['seconds']} | {r['seconds_per_kept']} | "
              f"{p.get('read+resolve', 0)} | {p.get('pristine+baseline', 0)} | "
              f"{p.get('screening', 0)} | {p.get('validation', 0)} | "
              f"{'; '.join(r['detected']) or r['error']} |")
    kept = sum(r["kept"] for r in rows)
    total = sum(r["seconds"] for r in rows)
    print(f"\nall: {kept} tasks kept from {sum(1 for r in rows if r['kept'])}/{len(rows)} "
          f"packages in {total:.0f}s, {total / kept if kept else 0:.1f}s per kept task")
    print(load.report())


if __name__ == "__main__":
    main()
