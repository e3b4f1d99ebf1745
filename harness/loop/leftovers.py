"""What killed runs left behind, found and removed: the policy of `ratchet gc` and of the
sweep ``ratchet run``/``resume`` make at start and at a normal end.

A thing is left over only when nothing live can use it:

- a **container** of this owner whose maker process (its ``org.ratchet.process`` label,
  `benchmark._process`) is dead; or, made over a day ago by a version without that label,
  one that is stopped or is a sandbox's keeper (``sleep infinity``, which never ends);
- a **dangling anonymous volume** that is empty (what the task images' ``VOLUME /wheels
  /agent-wheels`` made for a container removed without its volumes); one holding data is
  only reported;
- a **worktree** of a recorded generation (its branch keeps the code) of a run whose lock
  is free, or of the caller's own run;
- a **temp dir**: a per-process scratch dir (`harness.loop.scratch`) of a dead process, or a loose
  ``ratchet-agent-*`` / ``ratchet-gw-*`` / ``ratchet-self-*`` dir older than a day (made by
  older versions or other commands, whose maker cannot be told);
- a **stale image**: one of ``ratchet/{base,env,task}`` built by an older recipe (its
  ``org.ratchet.recipe`` label) or on a base image that is no longer the current one; made
  before recipe labels, a task image whose task has a current build, or an environment no
  current task image is built on.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from benchmark import InfraError
from benchmark import docker_host as _docker
from benchmark import processes as _process
from harness.loop.journal import Journal, replay
from harness.loop.runlock import RunLock
from harness.loop.scratch import owner_alive, system_temp

__all__ = ["Leftover", "find", "remove", "sweep"]

LOOSE_PREFIXES = ("ratchet-agent-", "ratchet-gw-", "ratchet-self-", "ratchet-node-")
LOOSE_AGE_S = 24 * 3600
_KEEPER = ["sleep", "infinity"]


@dataclass(frozen=True)
class Leftover:
    kind: str
    """container | volume | worktree | dir | image"""
    name: str
    size: int
    why: str
    ident: str
    """What removes it: a container/volume/image id, or a path."""
    removable: bool = True


def _size_of(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def containers(*, sizes: bool = False) -> list[Leftover]:
    found = []
    for c in _docker.list_containers(sizes=sizes):
        maker = c.labels.get(_docker.PROCESS_LABEL)
        run = c.labels.get(_docker.RUN_LABEL) or ""
        if maker:
            if _process.alive(maker) is not False:
                continue
            why = f"its maker ({maker}{f', run {run}' if run else ''}) is dead"
        elif maker is None and time.time() - c.created > LOOSE_AGE_S and \
                (c.status != "running" or c.command == _KEEPER):
            why = "made over a day ago, before containers were labelled with their maker; " + (
                "stopped" if c.status != "running" else "a sandbox keeper that never ends")
        else:
            continue
        found.append(Leftover("container", c.name, c.size, why, c.id))
    return found


def volumes() -> list[Leftover]:
    return [Leftover("volume", name[:12], size, "dangling anonymous volume" + (
        "" if size == 0 else " holding data: kept (`docker volume rm` it if it is yours)"),
        name, removable=size == 0) for name, size in _docker.dangling_volumes()]


def worktrees(workspace: Path, *, own_run: str | None = None) -> list[Leftover]:
    found = []
    for journal in sorted((workspace / "runs").glob("*/journal.jsonl")):
        run_dir = journal.parent
        trees = run_dir / "worktrees"
        if not trees.is_dir():
            continue
        if run_dir.name != own_run and RunLock.holder(run_dir) is not None:
            continue  # a live run's
        recorded = {n for n, g in replay(Journal.read(journal)).generations.items() if g.recorded}
        for tree in sorted(trees.glob("gen-*")):
            number = tree.name[4:]
            if number.isdigit() and int(number) in recorded:
                found.append(Leftover("worktree", str(tree.relative_to(workspace)), _size_of(tree),
                                      f"generation {int(number)} of run {run_dir.name} is recorded "
                                      "(its branch keeps the code)", str(tree)))
    return found


def dirs(*, now: float | None = None) -> list[Leftover]:
    now = time.time() if now is None else now
    found = []
    base = system_temp()
    for path in sorted(base.glob("ratchet-*")):
        if not path.is_dir() or path.is_symlink():
            continue
        alive = owner_alive(path.name)
        if alive is False:
            found.append(Leftover("dir", str(path), _size_of(path),
                                  "the temp dir of a process that is gone", str(path)))
        elif alive is None and path.name.startswith(LOOSE_PREFIXES) and \
                now - path.stat().st_mtime > LOOSE_AGE_S:
            found.append(Leftover("dir", str(path), _size_of(path),
                                  "a loose ratchet temp dir older than a day", str(path)))
    return found


def images() -> list[Leftover]:
    from benchmark import IMAGE_RECIPES as RECIPES
    from benchmark import RECIPE_LABEL, base_image_tag
    from benchmark import image_namespace as _namespace

    listed = _docker.list_images(_namespace())
    by_id = {image["id"]: image for image in listed}
    current_base = next((i["id"] for i in listed if base_image_tag() in i["tags"]), None)
    kind = {i["id"]: i["tags"][0].split("/", 1)[1].split(":", 1)[0] for i in listed}
    recipe = {i["id"]: i["labels"].get(RECIPE_LABEL) for i in listed}
    current = {ident for ident in by_id if kind[ident] in RECIPES and recipe[ident] == RECIPES[kind[ident]]}

    def on_current_base(image: dict) -> bool:
        parent, seen = image["parent"], set()
        while parent in by_id and parent != current_base and parent not in seen:
            seen.add(parent)
            parent = by_id[parent]["parent"]
        return parent == current_base

    stale: dict[str, str] = {}
    for ident, image in by_id.items():
        if kind[ident] in RECIPES and recipe[ident] not in (None, RECIPES[kind[ident]]):
            stale[ident] = f"built by recipe {recipe[ident]}, now {RECIPES[kind[ident]]}"
        elif current_base and kind[ident] == "base" and ident != current_base:
            stale[ident] = "not the current base image"
        elif current_base and kind[ident] in ("env", "task") and not on_current_base(image):
            stale[ident] = "not built on the current base image"
    # made before recipe labels: superseded where a current build of the same task exists
    instances_built_now = {by_id[i]["labels"].get("ratchet.instance_id") for i in current}
    for ident, image in by_id.items():
        if ident not in stale and kind[ident] == "task" and recipe[ident] is None and \
                image["labels"].get("ratchet.instance_id") in instances_built_now:
            stale[ident] = "an older build of a task image built again since"
    if current:  # an unlabelled environment nothing current is built on is an old one
        for ident, image in by_id.items():
            children = [c for c, other in by_id.items() if other["parent"] == ident]
            if ident not in stale and kind[ident] == "env" and recipe[ident] is None and \
                    all(c in stale for c in children):
                stale[ident] = "an older environment no current task image is built on"
    return [Leftover("image", tag, by_id[ident]["size"], why, tag)
            for ident, why in stale.items() for tag in by_id[ident]["tags"]]


def find(workspace: Path | None, *, with_images: bool = True, own_run: str | None = None,
         sizes: bool = True) -> list[Leftover]:
    """Everything left over (see the module doc); Docker parts only where a daemon answers."""
    found: list[Leftover] = []
    if workspace is not None:
        found += worktrees(workspace, own_run=own_run)
    found += dirs()
    try:
        found += containers(sizes=sizes)
        found += volumes() if sizes else []
        found += images() if with_images else []
    except InfraError:
        pass  # no daemon: nothing of Docker's to sweep
    return found


def remove(items: Iterable[Leftover], workspace: Path | None = None,
           say: Callable[[str], None] = lambda message: None) -> list[str]:
    """Remove what can be removed; the problems, one line each."""
    from harness.loop.lineage import Lineage

    problems = []
    items = list(items)
    # containers first: their volumes and images are freed by their removal
    order = {"container": 0, "worktree": 1, "dir": 2, "volume": 3, "image": 4}
    for item in sorted(items, key=lambda i: order[i.kind]):
        if not item.removable:
            continue
        why = None
        if item.kind in ("container", "volume", "image"):
            why = _docker.remove_by_id(item.kind, item.ident)
        elif item.kind == "worktree" and workspace is not None:
            tree = Path(item.ident)
            run, number = tree.parent.parent.name, int(tree.name[4:])
            Lineage(workspace, run).remove_worktree(number)
        elif item.kind == "dir":
            shutil.rmtree(item.ident, ignore_errors=True)
            why = "still there" if Path(item.ident).exists() else None
        if why:
            problems.append(f"{item.kind} {item.name}: {why}")
        else:
            say(f"removed {item.kind} {item.name}")
    return problems


def sweep(workspace: Path, run: str, say: Callable[[str], None]) -> list[Leftover]:
    """What `ratchet run`/`resume` clean at start and at a normal end (holding `run`'s lock):
    dead processes' containers and temp dirs, and recorded generations' worktrees of runs
    that are not live. Images and volumes are left to `ratchet gc`."""
    found = find(workspace, with_images=False, own_run=run, sizes=False)
    if found:
        problems = remove(found, workspace)
        counts: dict[str, int] = {}
        for item in found:
            counts[item.kind] = counts.get(item.kind, 0) + 1
        say("cleaned what stopped runs left: " + ", ".join(f"{n} {k}(s)" for k, n in sorted(counts.items()))
            + (f" ({len(problems)} could not be removed: {problems[0]})" if problems else ""))
    return found

