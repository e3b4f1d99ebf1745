"""The gateway's cost per call and throughput under many concurrent callers, for this tree
and (optionally) another checkout, in the same run.

    python perf/gateway_load.py [--clients 1,8,64] [--rounds 2] [--against DIR] [--json out.json]

For each level of concurrent callers: ``perf/_gateway_load.relay_throughput`` (the same code
``executor_scaling.py`` uses) posts 8 KB chat requests from client threads in a child
process, each on its own gateway channel, straight to the channel's unix socket ("direct")
and through a node relay per client ("relayed"), with an upstream that answers at once; and
once at the highest level through the real ``OpenAIUpstream`` (openai SDK) to a scripted
model in another process. Read: requests/s, p50/p99 latency, and the gateway process's CPU
per request (its ``time.process_time`` over the load: the clients, relays and model are
other processes).

``--against DIR`` measures the checkout at DIR too (e.g. ``git worktree add /tmp/main main``),
each round in a fresh process per tree, alternating, so both see the same machine state.
Exits non-zero when a call errs or the ledger does not count exactly the calls made.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def measure(levels: list[int], requests: int) -> list[dict]:
    """In this process: every level, direct and relayed, then the SDK upstream."""
    sys.path[:0] = [str(HERE)]
    from _gateway_load import model_process, relay_throughput

    work = Path(tempfile.mkdtemp(prefix="ratchet-gwload-"))
    rows = [relay_throughput(n, relayed, work, requests=requests)
            for n in levels for relayed in (False, True)]
    with model_process({"default": "ok"}) as model_url:
        rows.append(relay_throughput(max(levels), False, work, model_url=model_url,
                                     requests=requests))
    return rows


def run_tree(tree: Path, levels: list[int], requests: int) -> list[dict]:
    """`measure` in a fresh interpreter importing `harness` from `tree`."""
    code = (f"import sys, json; sys.path[:0] = [{str(tree)!r}, {str(HERE)!r}]; "
            f"import gateway_load, harness, inspect, _gateway_load as g; "
            f"assert inspect.getfile(g.Gateway).startswith({str(tree)!r}), inspect.getfile(g.Gateway); "
            f"print(json.dumps(gateway_load.measure({levels!r}, {requests})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": ""})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8,64", help="levels of concurrent callers")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per tree")
    parser.add_argument("--requests", type=int, default=1280, help="requests per measurement")
    parser.add_argument("--against", type=Path, default=None, help="another checkout to compare")
    parser.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]
    trees = {"this": ROOT, **({"against": args.against.resolve()} if args.against else {})}
    figures: dict[str, list[list[dict]]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for name in order:
            print(f"round {round_ + 1}: {name} ({trees[name]})", flush=True)
            figures[name].append(run_tree(trees[name], levels, args.requests))
    failed = False
    print(f"\n{args.requests} requests of 8 KB per row, medians over {args.rounds} rounds; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"  {'tree':8} {'clients':>7} {'path':28} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>8} "
          f"{'CPU ms/req':>10}  errors")
    for name, rounds in figures.items():
        for i, row in enumerate(rounds[0]):
            cells = [r[i] for r in rounds]
            path = ("relayed" if row["relayed"] else "direct unix channel") + (
                ", openai SDK upstream" if row["sdk"] else "")
            med = {k: statistics.median(c[k] for c in cells)
                   for k in ("per_s", "p50_ms", "p99_ms", "gateway_cpu_ms")}
            errors = [c["errors"] for c in cells if c["errors"]]
            bad = [c for c in cells if c["ledger_calls"] != c["requests"] - sum(c["errors"].values())]
            failed = failed or bool(errors) or bool(bad)
            print(f"  {name:8} {row['clients']:>7} {path:28} {med['per_s']:6.0f} {med['p50_ms']:7.2f} "
                  f"{med['p99_ms']:8.2f} {med['gateway_cpu_ms']:10.2f}  {errors or '-'}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
