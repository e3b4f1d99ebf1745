"""Run the README's Quick start first command exactly as written, then check what it did.

The README is a promise: its first command installs everything and runs the scripted demo.
This reads that line from README.md (so an edit of the README is what gets tested), runs it
with bash from the repository root, and checks the outcome a new user is promised:
generation 1 accepted, generation 2 rejected, best = 1, and the lineage refs in git.

Run it with the venv's interpreter (`.ci/setup` made it): it reads the run with ratchet's own
journal code. Usage: .venv/bin/python .ci/quickstart.py [--print]   (--print: only show the command it would run)
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands(readme: str) -> list[str]:
    """The command lines of the first ```bash block under the "## Quick start" heading."""
    section = readme.split("## Quick start", 1)
    if len(section) < 2:
        raise SystemExit("README.md has no '## Quick start' section")
    block = re.search(r"```bash\n(.*?)```", section[1], re.DOTALL)
    if not block:
        raise SystemExit("README.md's Quick start has no ```bash block")
    lines = [line.strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _demo_runs() -> set[str]:
    runs = ROOT / "runs"
    return {p.name for p in runs.glob("demo-*") if (p / "journal.jsonl").exists()} if runs.exists() else set()


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def check_demo_run(run: str) -> list[str]:
    """What is wrong with the demo run `run`, as sentences; empty when it is as promised."""
    sys.path.insert(0, str(ROOT))
    from harness.loop.journal import Journal, replay

    problems = []
    state = replay(Journal.read(ROOT / "runs" / run / "journal.jsonl"))
    verdicts = {n: g.verdict for n, g in state.generations.items()}
    if verdicts.get(1) != "accepted":
        problems.append(f"generation 1 was {verdicts.get(1)!r}, not accepted")
    if verdicts.get(2) != "rejected":
        problems.append(f"generation 2 was {verdicts.get(2)!r}, not rejected")
    if state.best != 1:
        problems.append(f"best is generation {state.best}, not 1")
    if not (state.ended and (state.end_reason or "").startswith("run_finished")):
        problems.append(f"the run did not finish (end: {state.end_reason!r})")
    refs = set(_git("for-each-ref", "--format=%(refname:short)", f"refs/heads/ratchet/{run}/").split())
    wanted = {f"ratchet/{run}/gen-{n:04d}" for n in range(3)} | {f"ratchet/{run}/best"}
    if wanted - refs:
        problems.append(f"lineage refs missing: {sorted(wanted - refs)}")
    elif _git("rev-parse", f"ratchet/{run}/best") != _git("rev-parse", f"ratchet/{run}/gen-0001"):
        problems.append(f"ratchet/{run}/best is not generation 1")
    return problems


def main() -> int:
    command = quickstart_commands((ROOT / "README.md").read_text())[0]
    if "--print" in sys.argv:
        print(command)
        return 0
    before = _demo_runs()
    print(f"==> Quick start, as the README says: {command}", flush=True)
    started = time.monotonic()
    done = subprocess.run(["bash", "-c", command], cwd=ROOT)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        print(f"FAIL: the Quick start command exited {done.returncode} after {seconds:.0f} s", file=sys.stderr)
        return 1
    new = sorted(_demo_runs() - before)
    if len(new) != 1:
        print(f"FAIL: expected one new demo run under runs/, found {new}", file=sys.stderr)
        return 1
    problems = check_demo_run(new[0])
    for problem in problems:
        print(f"FAIL: {new[0]}: {problem}", file=sys.stderr)
    if not problems:
        print(f"==> Quick start OK in {seconds:.0f} s: run {new[0]}, generation 1 accepted, "
              "generation 2 rejected, best = 1, lineage refs present")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
