"""Set aside what a candidate patch may not change before the tests run.

A patch can win a verdict without fixing anything by changing how the tests run: a
``conftest.py`` hook that rewrites reports, pytest configuration that deselects a test, an
interpreter start-up hook (``sitecustomize.py``, a ``.pth`` file), or an edited test file.
Such files are restored to the base commit (or deleted when the patch created them) and
named in the report, so an honest fix that also adds a test of its own still resolves.

This module is standard library only: the grader copies it into the task container and runs
it there with the system interpreter in isolated mode (``python3 -I``), after the patch is
applied and before the hidden tests are. The host imports it too, for the same rules.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import PurePosixPath

__all__ = ["SET_ASIDE_MARKER", "protected_reason", "paths_named_in_patch", "main"]

_CONFIG_FILES = {"pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml"}
_STARTUP_HOOKS = {"sitecustomize.py", "usercustomize.py"}
_TEST_DIRS = {"test", "tests", "testing"}
_TEST_NAME = re.compile(r"^(test_.*|.*_test)\.py$")


def protected_reason(path: str, hidden_test_files: frozenset[str] | set[str] = frozenset()) -> str | None:
    """Why a patch may not change `path`, or None when it may."""
    parts = PurePosixPath(path).parts
    if not parts:
        return None
    name = parts[-1]
    if path in hidden_test_files:
        return "hidden test file"
    if name == "conftest.py":
        return "pytest conftest"
    if name in _CONFIG_FILES:
        return "test configuration"
    if name in _STARTUP_HOOKS or name.endswith(".pth"):
        return "interpreter start-up hook"
    if name.endswith(".pyc"):
        return "compiled bytecode"
    if _TEST_NAME.match(name) or any(part in _TEST_DIRS for part in parts[:-1]):
        return "test file"
    return None


_HEADER_PATHS = re.compile(
    r"^(?:diff --git a/(?P<a>\S+) b/(?P<b>\S+)"
    r"|(?:---|\+\+\+) (?P<side>\S+)"
    r"|(?:rename|copy) (?:from|to) (?P<rc>.+)"
    r"|Index: (?P<idx>.+))$",
    re.MULTILINE,
)


def _strip_side(path: str) -> str | None:
    path = path.strip().strip('"')
    if path == "/dev/null":
        return None
    if path.startswith(("a/", "b/")):
        path = path[2:]
    return path


def paths_named_in_patch(patch: str) -> list[str]:
    """Every path any patch tool could write for this diff: git headers, ---/+++ lines,
    rename/copy lines and ``Index:`` lines (GNU patch reads those too)."""
    seen: dict[str, None] = {}
    for match in _HEADER_PATHS.finditer(patch):
        for key in ("a", "b", "side", "rc", "idx"):
            value = match.group(key)
            if value:
                path = _strip_side(value) if key in ("side",) else value.strip()
                if path:
                    seen.setdefault(path)
    return list(seen)


def _changed_in_worktree(repo: str) -> list[str]:
    """Paths git sees as changed or new (untracked, including ignored ones)."""
    out = subprocess.run(
        ["git", "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching",
         "--no-renames"],
        cwd=repo, capture_output=True, check=True,
    ).stdout.decode("utf-8", "surrogateescape")
    return [entry[3:] for entry in out.split("\0") if len(entry) > 3]


def _tracked(repo: str, path: str) -> bool:
    return subprocess.run(
        ["git", "cat-file", "-e", f"HEAD:{path}"], cwd=repo, capture_output=True
    ).returncode == 0


def _restore(repo: str, path: str) -> str:
    if _tracked(repo, path):
        subprocess.run(["git", "checkout", "-q", "HEAD", "--", path], cwd=repo, check=True)
        return "restored"
    full = os.path.join(repo, path)
    if os.path.islink(full) or os.path.isfile(full):
        os.remove(full)
        return "deleted"
    if os.path.isdir(full):
        subprocess.run(["rm", "-rf", "--", full], check=True)
        return "deleted"
    return "absent"


def main(argv: list[str]) -> int:
    """Two steps around the patch:

    ``guard.py snapshot REPO OUT.json`` before it: record untracked and ignored paths that
    the image already holds (build artifacts), so they are never mistaken for the patch's.

    ``guard.py restore REPO SPEC.json`` after it: SPEC holds ``hidden_test_files``,
    ``patch_paths`` and ``snapshot`` (the first step's file). Prints one line
    ``RATCHET-SET-ASIDE: <json list>``.
    """
    command, repo, path = argv
    if command == "snapshot":
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(_changed_in_worktree(repo), handle)
        return 0
    with open(path, encoding="utf-8") as handle:
        spec = json.load(handle)
    with open(spec["snapshot"], encoding="utf-8") as handle:
        preexisting = set(json.load(handle))
    hidden = frozenset(spec["hidden_test_files"])
    candidates = dict.fromkeys(spec["patch_paths"])
    for changed in _changed_in_worktree(repo):
        if changed not in preexisting:
            candidates.setdefault(changed)
    set_aside = []
    for candidate in candidates:
        reason = protected_reason(candidate, hidden)
        if reason is None:
            continue
        action = _restore(repo, candidate)
        set_aside.append({"path": candidate, "reason": reason, "action": action})
    print(SET_ASIDE_MARKER + " " + json.dumps(set_aside), flush=True)
    return 0


SET_ASIDE_MARKER = "RATCHET-SET-ASIDE:"

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
