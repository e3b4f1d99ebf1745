"""Admit a candidate patch, apply it, then set aside what it may not change, before the tests run.

A patch can win a verdict without fixing anything by changing how the tests run. Two kinds
of rule stop that:

- **Refused** (the patch is the agent's failure, with the reason): a path with a ``.git``
  component (a planted hook or config runs on the next git command), an absolute or
  escaping path, a symlink, packaging metadata (``*.dist-info`` / ``*.egg-info``: a
  ``pytest11`` entry point loads a plugin), a new top-level module at a ``sys.path`` root
  the tests use (the repo root, ``src/``) named like a standard-library module or a part of
  the test runner (a root ``pytest.py`` or ``pprint.py`` is imported in place of the real
  one), and any written path the patch's headers do not name. Paths are checked on the
  patch's own headers before any apply tool runs (GNU ``patch`` writes under ``.git/``
  where ``git apply`` refuses), and the tree is checked again after.
- **Set aside** (restored to the base commit, or deleted when the patch created them, and
  named in the report, so an honest fix that also adds a test of its own still resolves):
  a ``conftest.py``, every file pytest reads as configuration (pytest's own list), an
  interpreter start-up hook (``sitecustomize.py``, a ``.pth`` file), bytecode, test files.

This module is standard library only: the grading wrapper runs it in the task container with
the system interpreter in isolated mode (``python3 -I``), as the unprivileged sandbox user,
after the patch is copied in and before the hidden tests are applied. The host imports it
too, for the same rules.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import PurePosixPath

__all__ = [
    "APPLIED_MARKER", "APPLY_FAILED_MARKER", "CONFIG_FILES", "GUARD_RESULT_MARKER",
    "REFUSED_MARKER", "SET_ASIDE_MARKER", "SHADOW_ROOTS", "header_problems",
    "paths_named_in_patch", "protected_reason", "refused_reason", "shadowed_module", "main",
]

# pytest 9's CONFIG_LOADERS_BY_NAME (_pytest/config/findpaths.py), in its precedence order;
# a test keeps this equal to the installed pytest's list.
CONFIG_FILES = ("pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini", "pyproject.toml",
                "tox.ini", "setup.cfg")
_STARTUP_HOOKS = {"sitecustomize.py", "usercustomize.py"}
_TEST_DIRS = {"test", "tests", "testing"}
_TEST_NAME = re.compile(r"^(test_.*|.*_test)\.py$")
SHADOW_ROOTS = ("", "src")
"""Directories whose top-level modules the tests import: the repo root (the working
directory, first on ``sys.path`` under ``python -m pytest`` unless ``PYTHONSAFEPATH``) and
``src/`` (a src layout's editable install)."""
TEST_RUNNER_MODULES = ("pytest", "_pytest", "pluggy", "py", "iniconfig", "packaging", "pygments",
                       "tomli", "exceptiongroup", "colorama", "conftest")
"""Modules pytest itself imports (pygments for highlighting, tomli and exceptiongroup on
older Pythons): a copy of one at a ``sys.path`` root replaces the runner."""
_SYMLINK_MODE = re.compile(r"^(?:new file|new|old|deleted file) mode 120000\s*$", re.MULTILINE)


def protected_reason(path: str, hidden_test_files: frozenset[str] | set[str] = frozenset(),
                     config_files: tuple[str, ...] | frozenset[str] = CONFIG_FILES) -> str | None:
    """Why a patch may not change `path` (it is set aside), or None when it may."""
    parts = PurePosixPath(path).parts
    if not parts:
        return None
    name = parts[-1]
    if path in hidden_test_files:
        return "hidden test file"
    if name == "conftest.py":
        return "pytest conftest"
    if name in config_files:
        return "test configuration"
    if name in _STARTUP_HOOKS or name.endswith(".pth"):
        return "interpreter start-up hook"
    if name.endswith(".pyc"):
        return "compiled bytecode"
    if _TEST_NAME.match(name) or any(part in _TEST_DIRS for part in parts[:-1]):
        return "test file"
    return None


def refused_reason(path: str, *, git: bool = True, metadata: bool = True) -> str | None:
    """Why no patch may write `path` at all (the patch is refused), or None. `git` and
    `metadata` switch rules off for the tests that show each rule's attack."""
    if not path or path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return "absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "path escapes the repository"
    if git and ".git" in parts:
        return "path inside .git (hooks and config run on the next git command)"
    if metadata and any(p.endswith((".dist-info", ".egg-info", ".egg-link")) for p in parts):
        return "packaging metadata (its entry points load pytest plugins)"
    return None


def shadowed_module(path: str, names: frozenset[str] | set[str]) -> str | None:
    """The module name `path` would shadow (a new top-level module or package at one of
    `SHADOW_ROOTS` named in `names`), or None."""
    parts = PurePosixPath(path).parts
    for root in SHADOW_ROOTS:
        rest = parts[1:] if root else parts
        if root and (not parts or parts[0] != root):
            continue
        if not rest:
            continue
        top = rest[0]
        module = top.split(".", 1)[0] if len(rest) == 1 else top
        if len(rest) == 1 and not top.endswith((".py", ".pyc", ".pyw", ".so", ".pyd")):
            continue
        if module in names:
            return module
    return None


_HEADER_PATHS = re.compile(
    r"^(?:diff --git (?P<git>.+)"
    r"|(?:---|\+\+\+|\*\*\*) (?P<side>.+)"
    r"|(?:rename|copy) (?:from|to) (?P<rc>.+)"
    r"|Index: (?P<idx>.+))$",
    re.MULTILINE,
)
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def _unquote(name: str) -> str:
    """A C-style quoted name (git and GNU patch both write and read them: ``"\\056git"`` is
    ``.git``), decoded; an unquoted name as it is."""
    name = name.strip()
    if not (len(name) >= 2 and name[0] == name[-1] == '"'):
        return name
    out, i, body = bytearray(), 0, name[1:-1]
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "01234567":
                digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group(0)
                out.append(int(digits, 8) & 0xFF)
                i += 1 + len(digits)
                continue
            out.append(_ESCAPES.get(nxt, ord(nxt)))
            i += 2
            continue
        out += char.encode("utf-8", "surrogateescape")
        i += 1
    return out.decode("utf-8", "surrogateescape")


def _names(value: str, key: str) -> list[str]:
    """Every name a tool could read from one header value (whole value, up to a tab, first
    word; for ``diff --git``, both sides), quoted names decoded."""
    value = value.rstrip("\r")
    if key == "git":
        quoted = re.findall(r'"(?:[^"\\]|\\.)*"', value)
        if quoted:
            return [_unquote(q) for q in quoted]
        match = re.match(r"^(\S+) (\S+)$", value)
        return list(match.groups()) if match else value.split(" ")
    candidates = [value, value.split("\t", 1)[0]]
    if not value.startswith('"'):
        candidates.append(value.split()[0] if value.split() else value)
    return [_unquote(c) for c in candidates]


def _variants(name: str, key: str) -> list[str]:
    """The name as written, and with its first component stripped (``-p1``, what both
    git apply and GNU patch write for a/ b/ prefixed names)."""
    name = name.strip()
    if not name or name == "/dev/null":
        return []
    if key in ("rc",):  # rename/copy lines carry no a/ b/ prefix
        return [name]
    out = [name]
    stripped = name.lstrip("/")
    if "/" in stripped:
        out.append(stripped.split("/", 1)[1])
    return out


def paths_named_in_patch(patch: str) -> list[str]:
    """Every path any patch tool could write for this diff: git headers, ---/+++/***
    lines, rename/copy lines and ``Index:`` lines (GNU patch reads those too), quoted names
    decoded, each with its a/ b/ prefix stripped (and as written, when it has none)."""
    seen: dict[str, None] = {}
    for key, name, variants in _header_names(patch):
        if key in ("git", "side") and len(variants) == 2 and re.match(r"^[ab]/", name):
            variants = variants[1:]  # the usual a/ b/ prefix: only the stripped name
        for path in variants:
            seen.setdefault(path)
    return list(seen)


def _header_names(patch: str):
    """(header kind, name as written, the paths a patch tool may read it as) for every path
    in the patch's headers: what both the admission check and the path list walk."""
    for match in _HEADER_PATHS.finditer(patch):
        for key in ("git", "side", "rc", "idx"):
            value = match.group(key)
            if value:
                for name in _names(value, key):
                    yield key, name, _variants(name, key)


_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_OTHER_FORMATS = re.compile(
    r"^(?:\*\*\* |\*{15}|\d+(?:,\d+)?[acd]\d*(?:,\d+)?\s*$|[<>] )")


def other_format_lines(patch: str) -> list[str]:
    """Lines outside the unified hunks that GNU ``patch`` (the grader's last fallback) would
    read as a context diff, a normal diff or an ed script: such a patch is applied without
    ever being seen as unified (the static scan reads only unified hunks)."""
    found = []
    old = new = 0
    for line in patch.splitlines():
        if old > 0 or new > 0:  # inside a hunk, counted exactly
            tag = line[:1]
            if tag in (" ", ""):
                old, new = old - 1, new - 1
            elif tag == "-":
                old -= 1
            elif tag == "+":
                new -= 1
            elif tag != "\\":
                old = new = 0  # a short hunk: read on as headers
            if old > 0 or new > 0 or tag in (" ", "", "-", "+", "\\"):
                continue
        hunk = _HUNK.match(line)
        if hunk:
            old = int(hunk[1]) if hunk[1] is not None else 1
            new = int(hunk[2]) if hunk[2] is not None else 1
        elif _OTHER_FORMATS.match(line):
            found.append(line[:80])
    return found


def header_problems(patch: str, *, git: bool = True, metadata: bool = True,
                    unified: bool = True) -> list[str]:
    """Why the patch's own headers refuse it, before any tool reads it: one message per
    bad path, one for symlinks, one for a patch that is not a unified diff."""
    problems = []
    other = other_format_lines(patch) if unified else []
    if other:
        problems.append(f"not a unified diff: {len(other)} lines read as a context diff, a "
                        f"normal diff or an ed script (first: {other[0]!r}); send `git diff` output")
    for _, _, variants in _header_names(patch):
        for path in variants:
            reason = refused_reason(path, git=git, metadata=metadata)
            message = f"{path}: {reason}"
            if reason and message not in problems:
                problems.append(message)
    if _SYMLINK_MODE.search(patch):
        problems.append("the patch creates or changes a symlink")
    return problems


def _changed_in_worktree(repo: str) -> list[str]:
    """Paths git sees as changed or new (untracked, including ignored ones)."""
    out = subprocess.run(
        ["git", "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching",
         "--no-renames"],
        cwd=repo, capture_output=True, check=True,
    ).stdout.decode("utf-8", "surrogateescape")
    return [entry[3:] for entry in out.split("\0") if len(entry) > 3]


def _stamp(path: str) -> tuple | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)


def _git_dir_stamps(repo: str) -> dict[str, tuple | None]:
    """What of ``.git`` runs code or steers git: hooks, config, info/ (attributes)."""
    git_dir = os.path.join(repo, ".git")
    stamps = {}
    for sub in ("config", "hooks", "info", "modules"):
        top = os.path.join(git_dir, sub)
        stamps[sub] = _stamp(top)
        if os.path.isdir(top) and not os.path.islink(top):
            for base, dirs, files in os.walk(top):
                for name in dirs + files:
                    full = os.path.join(base, name)
                    stamps[os.path.relpath(full, git_dir)] = _stamp(full)
    # other entries by name only: --3way writes objects and the index, honestly
    stamps["entries"] = tuple(sorted(set(os.listdir(git_dir) if os.path.isdir(git_dir) else ())
                                     - {"index", "index.lock", "ORIG_HEAD", "AUTO_MERGE"}))
    return stamps


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
REFUSED_MARKER = ">>>>> Patch Refused"
SET_ASIDE_MARKER = "RATCHET-SET-ASIDE:"
GUARD_RESULT_MARKER = "RATCHET-GUARD:"


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


def _written_paths(repo: str, before: dict[str, tuple | None]) -> list[str]:
    """Paths the apply step wrote: new or changed to git, and untracked or ignored files
    that were there before and changed (git status names them either way)."""
    out = []
    for path in _changed_in_worktree(repo):
        if path not in before or _stamp(os.path.join(repo, path)) != before[path]:
            out.append(path)
    for path, stamp in before.items():
        if path not in out and _stamp(os.path.join(repo, path)) != stamp:
            out.append(path)
    return out


def _after_apply_problems(repo: str, written: list[str], listed: set[str],
                          git_before: dict, spec: dict) -> list[str]:
    rules = spec.get("rules", {})
    problems = []
    if rules.get("git", True) and _git_dir_stamps(repo) != git_before:
        problems.append(".git: the patch wrote into the repository's git directory")
    shadow = frozenset(spec.get("shadow_names", ()))
    for path in written:
        full = os.path.join(repo, path)
        reason = refused_reason(path, git=rules.get("git", True),
                                metadata=rules.get("metadata", True))
        if reason:
            problems.append(f"{path}: {reason}")
        elif os.path.islink(full):
            problems.append(f"{path}: symlink")
        elif rules.get("unlisted", True) and path not in listed and not any(
                path.startswith(p.rstrip("/") + "/") or p.startswith(path.rstrip("/") + "/")
                for p in listed):  # git names a wholly new or ignored directory as dir/
            problems.append(f"{path}: written but named in no header of the patch")
    for path in written:
        if protected_reason(path, frozenset(spec["hidden_test_files"]),
                            tuple(spec.get("config_files", CONFIG_FILES))) is not None:
            continue  # set aside below: it cannot shadow anything at test time
        if not rules.get("shadow", True) or _tracked(repo, path):
            continue
        module = shadowed_module(path, shadow)
        if module:
            problems.append(f"{path}: a new top-level module {module!r} shadows the standard "
                            "library or the test runner")
    return problems


def main(argv: list[str]) -> int:
    """``guard.py REPO SPEC.json``, one process for the whole step (it runs once per grading).

    SPEC holds ``patch_file``, ``apply_commands``, ``hidden_test_files``, ``patch_paths``
    and optionally ``config_files``, ``shadow_names`` and ``rules`` (switches for tests).
    The headers are checked first; untracked and ignored paths the image already holds
    (build artifacts) are recorded so they are never mistaken for the patch's; the patch is
    applied (an empty one is a no-op) and the written paths checked; then protected paths
    are set aside. Prints one line ``RATCHET-GUARD: <json>`` (``applied``, ``refused``,
    ``set_aside``) after the official harness's markers; exits 1 when the patch does not
    apply or is refused.
    """
    repo, spec_path = argv
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    rules = spec.get("rules", {})
    result: dict = {"applied": False, "refused": [], "set_aside": []}

    def finish(code: int) -> int:
        print(GUARD_RESULT_MARKER + " " + json.dumps(result), flush=True)
        return code

    with open(spec["patch_file"], encoding="utf-8", errors="surrogateescape") as handle:
        patch_text = handle.read()
    result["refused"] = header_problems(patch_text, git=rules.get("git", True),
                                        metadata=rules.get("metadata", True),
                                        unified=rules.get("unified", True))
    if rules.get("symlinks") is False:
        result["refused"] = [p for p in result["refused"] if "symlink" not in p]
    if result["refused"]:
        print(REFUSED_MARKER, flush=True)
        return finish(1)
    before = {path: _stamp(os.path.join(repo, path)) for path in _changed_in_worktree(repo)}
    git_before = _git_dir_stamps(repo)
    sys.stdout.flush()
    if patch_text and not _apply(repo, spec["patch_file"], spec["apply_commands"]):
        print(APPLY_FAILED_MARKER, flush=True)
        return finish(1)
    written = _written_paths(repo, before)
    listed = set(spec["patch_paths"]) | set(paths_named_in_patch(patch_text))
    result["refused"] = _after_apply_problems(repo, written, listed, git_before, spec)
    if result["refused"]:
        print(REFUSED_MARKER, flush=True)
        return finish(1)
    result["applied"] = True
    print(APPLIED_MARKER, flush=True)
    hidden = frozenset(spec["hidden_test_files"])
    config_files = tuple(spec.get("config_files", CONFIG_FILES))
    candidates = dict.fromkeys(spec["patch_paths"])
    for changed in written:
        candidates.setdefault(changed)
    for candidate in candidates:
        reason = protected_reason(candidate, hidden, config_files)
        if reason is None:
            continue
        action = _restore(repo, candidate)
        result["set_aside"].append({"path": candidate, "reason": reason, "action": action})
    print(SET_ASIDE_MARKER + " " + json.dumps(result["set_aside"]), flush=True)
    return finish(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
