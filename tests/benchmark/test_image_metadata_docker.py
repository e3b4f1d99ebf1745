"""No trace of the bug in a task image's file metadata.

A task tree comes from an sdist whose files all carry one time; the build then rewrites the
buggy file (the setup patch), deletes the hidden test files and installs the package. Left as
the build made them, those times point at the fix: `find . -newer PKG-INFO` lists exactly the
gold patch's file. Every file and directory of the base tree must share one time, and the
gold patch's files one owner and a mode their siblings have. Checked on a quickstart and a
forged task, and shown to leak with the normalisation switched off.
"""

from __future__ import annotations

import pytest

from benchmark import ImageBuilder, TaskSpec, load_suite
from benchmark import _docker
from benchmark._images import SANDBOX_USER
from benchmark._sources import TREE_TIME

pytestmark = pytest.mark.docker

LIST = "cd /testbed && find . -path ./.git -prune -o -printf '%P\\t%T@\\t%m\\t%u:%g\\n'"


def _task(suite: str, index: int = 0) -> TaskSpec:
    return load_suite(suite).tasks[index]


def _listing(builder: ImageBuilder, task: TaskSpec) -> dict[str, tuple[float, str, str]]:
    """path -> (mtime, mode, owner) of every file and directory of the tree but .git."""
    run = _docker.run_script(builder.ensure_task(task), LIST, timeout_s=120, user=SANDBOX_USER)
    entries = {}
    for line in run.log.splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            entries[parts[0]] = (float(parts[1]), parts[2], parts[3])
    return entries


def _gold_files(task: TaskSpec) -> list[str]:
    return [line[len("+++ b/"):] for line in task.patch.splitlines() if line.startswith("+++ b/")]


def _ref(entries: dict) -> str:
    """An sdist file every tree has, to compare times with (`find -newer`)."""
    return next(name for name in ("PKG-INFO", "setup.py", "pyproject.toml") if name in entries)


@pytest.mark.parametrize("suite", ["quickstart", "forged"])
def test_no_file_of_the_base_tree_stands_out_by_metadata(suite):
    task = _task(suite)
    entries = _listing(ImageBuilder(), task)
    assert entries, "listed nothing"
    times = {when for when, _, _ in entries.values()}
    assert times == {float(TREE_TIME)}, sorted(
        (name, when) for name, (when, _, _) in entries.items() if when != TREE_TIME)[:10]
    owners = {owner for _, _, owner in entries.values()}
    assert len(owners) == 1, owners
    modes = [mode for name, (_, mode, _) in entries.items()
             if name not in _gold_files(task) and not name.endswith("/")]
    for gold in _gold_files(task):
        assert gold in entries, gold
        assert entries[gold][1] in modes, (gold, entries[gold])
    run = _docker.run_script(ImageBuilder().ensure_task(task),
                             f"cd /testbed && find . -path ./.git -prune -o -newer {_ref(entries)} -print",
                             timeout_s=60, user=SANDBOX_USER)
    assert run.log.strip() == "", run.log


def test_without_the_normalisation_find_newer_points_at_the_fix():
    """The attack: with the build's own times, the gold patch's file is newer than the
    sdist's files, and an agent finds where the bug is without reading a line."""
    task = _task("quickstart")
    builder = ImageBuilder(same_times=False)
    entries = _listing(builder, task)
    run = _docker.run_script(builder.ensure_task(task),
                             f"cd /testbed && find . -path ./.git -prune -o -type f -newer {_ref(entries)}"
                             " -name '*.py' -print",
                             timeout_s=60, user=SANDBOX_USER)
    newer = {line.removeprefix("./") for line in run.log.split()}
    assert set(_gold_files(task)) <= newer, (newer, _gold_files(task))
