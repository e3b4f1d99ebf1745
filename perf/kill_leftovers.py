"""What a `kill -9` leaves behind, and what is still there after `ratchet resume`, for this
tree and (optionally) another checkout: issue 16's "leftovers per kill, before and after".

    python perf/kill_leftovers.py [--kills 2] [--against DIR] [--json out.json]

Each kill: `ratchet init` a fresh workspace, `ratchet run --scripted demo --generations 1`
on three quickstart tasks with a TMPDIR of its own, SIGKILL the process group once generation
1 is being evaluated (a sandbox of the run is running), count, `ratchet resume` to the end,
count again. Counted, all attributed to this measurement only (the daemon is shared):

- containers: carrying this measurement's owner label (``RATCHET_CONTAINER_OWNER``);
- volumes: every volume Docker mounted into one of those containers (read from Docker's
  event stream, so short-lived containers count), still present;
- worktrees: ``runs/RUN/worktrees/gen-*`` left on disk;
- temp dirs: ``ratchet-*`` entries in the run's TMPDIR; socket dirs: ``ratchet-gw-*`` in it.

``--against DIR`` runs the same with ``harness`` imported from DIR (e.g. ``git worktree add
--detach /tmp/before d4b4a62``, the tree before issue 16). Exits non-zero if a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parent.parent
SLICE = ("toolz__toolz-1.2.0__dissoc-many-keys", "isodate__isodate-0.7.2__december-month-carry",
         "toolz__toolz-1.2.0__get-in-non-subscriptable")
OWNER_ENV = "RATCHET_CONTAINER_OWNER"
OWNER_LABEL = "org.ratchet.sandbox"


def _ratchet(tree: Path) -> list[str]:
    """The CLI of `tree`, whatever is installed."""
    return [sys.executable, "-c", f"import sys; sys.path[:0] = [{str(tree)!r}]; "
            "import harness; assert harness.__file__.startswith(sys.path[0]), harness.__file__; "
            "from harness.cli import app; sys.argv[0] = 'ratchet'; app()"]


class VolumeWatch:
    """Volumes Docker mounts into containers of one owner, from the event stream."""

    def __init__(self, client: docker.DockerClient, owner: str) -> None:
        self.client, self.owner = client, owner
        self.containers: set[str] = set()
        self.mounts: list[tuple[str, str]] = []
        self._events = client.events(decode=True, since=int(time.time()) - 1)
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        try:
            for event in self._events:
                actor = event.get("Actor", {})
                attrs = actor.get("Attributes", {})
                if event.get("Type") == "container" and attrs.get(OWNER_LABEL) == self.owner:
                    self.containers.add(actor.get("ID", ""))
                elif event.get("Type") == "volume" and event.get("Action") == "mount":
                    self.mounts.append((attrs.get("container", ""), actor.get("ID", "")))
        except Exception:  # the stream closes when the watch does
            return

    def left(self) -> int:
        ours = {volume for container, volume in self.mounts if container in self.containers}
        existing = {v.name for v in self.client.volumes.list()}
        return len(ours & existing)

    def close(self) -> None:
        self._events.close()


def _count(client, owner: str, watch: VolumeWatch, ws: Path, run: str, tmp: Path) -> dict:
    trees = ws / "runs" / run / "worktrees"
    return {"containers": len(client.containers.list(all=True, ignore_removed=True,
                                                     filters={"label": f"{OWNER_LABEL}={owner}"})),
            "volumes": watch.left(),
            "worktrees": len(list(trees.glob("gen-*"))) if trees.is_dir() else 0,
            "temp dirs": len(list(tmp.glob("ratchet-*"))),
            "socket dirs": len(list(tmp.glob("**/ratchet-gw-*")))}


def one_kill(tree: Path, work: Path, index: int) -> dict:
    """One run killed mid-generation-1 and resumed; the counts at the kill and after."""
    client = docker.from_env()
    owner = f"killbench-{uuid.uuid4().hex[:10]}"
    tmp = Path(tempfile.mkdtemp(prefix="kb", dir="/tmp"))  # short: socket paths < 108 bytes
    ws, run = work / f"ws-{index}", "k9"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
           OWNER_ENV: owner, "TMPDIR": str(tmp), "COLUMNS": "200"}
    cli = _ratchet(tree)
    subprocess.run([*cli, "init", str(ws)], env=env, check=True, capture_output=True)
    sys.path[:0] = [str(ROOT)]
    from benchmark import load_suite

    tasks = {t.instance_id: t for t in load_suite("quickstart").tasks}
    suite = work / "slice.jsonl"
    suite.write_text("".join(tasks[i].model_dump_json(exclude_none=True) + "\n" for i in SLICE))
    watch = VolumeWatch(client, owner)
    proc = subprocess.Popen([*cli, "run", "--suite", str(suite), "--generations", "1", "--scripted",
                             "demo", "--run-id", run, "--workers", "2"], cwd=ws, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal = ws / "runs" / run / "journal.jsonl"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        text = journal.read_text() if journal.exists() else ""
        running = client.containers.list(filters={"label": f"{OWNER_LABEL}={owner}", "status": "running"})
        if re.search(r'"event":\s*"proposal",\s*"generation":\s*1\b', text) and running:
            break
        if proc.poll() is not None:
            raise SystemExit(f"the run ended (exit {proc.returncode}) before generation 1 ran")
        time.sleep(0.3)
    else:
        raise SystemExit("generation 1 never started")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    at_kill = _count(client, owner, watch, ws, run, tmp)
    resumed = subprocess.run([*cli, "resume", run], cwd=ws, env=env, capture_output=True, text=True)
    if resumed.returncode != 0:
        raise SystemExit(f"resume failed: {resumed.stdout[-2000:]}{resumed.stderr[-2000:]}")
    time.sleep(1)
    after = _count(client, owner, watch, ws, run, tmp)
    watch.close()
    for container in client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"}):
        container.remove(force=True, v=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"at kill": at_kill, "after resume": after}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--against", type=Path, help="another checkout, measured the same way")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    trees = [("this", ROOT)] + ([("against", args.against.resolve())] if args.against else [])
    work = Path(tempfile.mkdtemp(prefix="ratchet-killbench-"))
    rows = []
    for index in range(args.kills):
        for name, tree in trees:
            started = time.monotonic()
            counts = one_kill(tree, work / name, index)
            rows.append({"tree": name, "kill": index, **counts,
                         "seconds": round(time.monotonic() - started)})
            print(json.dumps(rows[-1]), flush=True)
    keys = ["containers", "volumes", "worktrees", "temp dirs", "socket dirs"]
    print(f"\n{'tree':8} {'when':13} " + " ".join(f"{k:>11}" for k in keys) + "   (per kill, mean)")
    for name, _ in trees:
        for when in ("at kill", "after resume"):
            mine = [r[when] for r in rows if r["tree"] == name]
            print(f"{name:8} {when:13} " + " ".join(
                f"{sum(m[k] for m in mine) / len(mine):>11.1f}" for k in keys))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
