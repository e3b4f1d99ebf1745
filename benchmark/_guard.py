"""Apply a candidate patch, then set aside what it may not change, before the tests run.

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

__all__ = [
    "APPLIED_MARKER", "APPLY_FAILED_MARKER", "SET_ASIDE_MARKER", "paths_named_in_patch",
    "protected_reason", "main",
]

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


APPLIED_MARKER = ">>>>> Applied Patch"
APPLY_FAILED_MARKER = ">>>>> Patch Apply Failed"
SET_ASIDE_MARKER = "RATCHET-SET-ASIDE:"


def _apply(repo: str, patch_file: str, commands: list[list[str]]) -> bool:
    """The official harness's chain of apply commands, from a clean tree each time."""
    for command in commands:
        done = subprocess.run([*command, patch_file], cwd=repo, stdout=sys.stdout,
                              stderr=subprocess.STDOUT)
        if done.returncode == 0:
            return True
        subprocess.run(["git", "checkout", "-q", "--", "."], cwd=repo)
        subprocess.run(["git", "clean", "-fdq"], cwd=repo)
    return False


def main(argv: list[str]) -> int:
    """``guard.py REPO SPEC.json``, one process for the whole step (it runs once per grading).

    SPEC holds ``patch_file``, ``apply_commands``, ``hidden_test_files`` and
    ``patch_paths``. Untracked and ignored paths the image already holds (build artifacts)
    are recorded first so they are never mistaken for the patch's; the patch is applied
    (an empty one is a no-op); then protected paths are set aside. Prints the official
    harness's apply marker and one line ``RATCHET-SET-ASIDE: <json list>``; exits 1 when
    the patch does not apply.
    """
    repo, spec_path = argv
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    preexisting = set(_changed_in_worktree(repo))
    sys.stdout.flush()
    if os.path.getsize(spec["patch_file"]) and not _apply(
            repo, spec["patch_file"], spec["apply_commands"]):
        print(APPLY_FAILED_MARKER, flush=True)
        return 1
    print(APPLIED_MARKER, flush=True)
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
