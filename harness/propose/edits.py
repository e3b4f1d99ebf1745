"""The meta model's answer format, and applying its edits to a worktree.

An answer holds a ``<diagnosis>`` (its first line is the headline) and one or more edits:

search/replace blocks, aider style (the path on the line before; a block right after
another may leave it out and edits the same file)::

    agent_seed/config.yaml
    <<<<<<< SEARCH
    step_limit: 30
    =======
    step_limit: 40
    >>>>>>> REPLACE

and whole-file blocks, which create or replace a file::

    <file path="agent_seed/lessons.md">
    ...
    </file>

SEARCH text is matched as an exact substring and must occur exactly once; an empty SEARCH
creates a file that does not exist yet. A missing diagnosis is allowed: the edit is what
counts, and the headline then names the files changed (a valid edit is not thrown away for
missing prose). Exceptions::

    EditError(ValueError)
    ├── NotAnEdit       the answer holds no edit, or a broken block; the message says how to fix it
    └── EditRejected    an edit that cannot be applied: a path outside the agent dir, a SEARCH
                        found 0 or N>1 times, a file or agent past its size cap; nothing is
                        written then

Size caps (``MAX_FILE_BYTES`` per file, ``MAX_AGENT_BYTES`` for the whole agent dir): a meta
model once wrote a 14 MB ``lessons.md``, which every later prompt, sandbox and log carried.
The agent is source code and short notes; past a cap the edit goes back to the model as a
failed check, like any other.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from harness.errors import EditError, EditRejected, NotAnEdit

__all__ = [
    "EditError",
    "EditRejected",
    "NotAnEdit",
    "Proposal",
    "SearchReplace",
    "Snapshot",
    "WholeFile",
    "MAX_AGENT_BYTES",
    "MAX_FILE_BYTES",
    "apply_edits",
    "check_worktree",
    "parse_answer",
]

_DIAGNOSIS = re.compile(r"<diagnosis>(.*?)</diagnosis>", re.DOTALL | re.IGNORECASE)
_FILE_BLOCK = re.compile(r'<file\s+path\s*=\s*"([^"\n]*)"\s*>\n?(.*?)</file>', re.DOTALL)
_SEARCH = re.compile(r"^<{5,9} SEARCH\s*$")
_DIVIDER = re.compile(r"^={5,9}\s*$")
_REPLACE = re.compile(r"^>{5,9} REPLACE\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")

FORMAT_HELP = """\
Edit formats (use these exactly):

path/to/file.py
<<<<<<< SEARCH
exact lines from the current file
=======
the lines that replace them
>>>>>>> REPLACE

<file path="path/to/file.md">
the complete new content of the file
</file>"""


MAX_FILE_BYTES = 256 * 1024
"""The largest file an edit may leave in the agent dir (the seed's largest is ~11 KB)."""
MAX_AGENT_BYTES = 2 * 1024 * 1024
"""The most the whole agent dir may hold after an edit (the seed holds ~41 KB)."""


@dataclass(frozen=True)
class SearchReplace:
    path: str
    search: str
    replace: str


@dataclass(frozen=True)
class WholeFile:
    path: str
    content: str


Edit = SearchReplace | WholeFile


@dataclass(frozen=True)
class Proposal:
    diagnosis: str
    headline: str
    edits: tuple[Edit, ...]


def _clean_path(line: str) -> str:
    return line.strip().strip("`*").strip()


def _parse_search_blocks(text: str) -> list[tuple[int, SearchReplace]]:
    lines = text.splitlines()
    blocks: list[tuple[int, SearchReplace]] = []
    previous_path: str | None = None
    i = 0
    while i < len(lines):
        if not _SEARCH.match(lines[i]):
            if _REPLACE.match(lines[i]):
                raise NotAnEdit(f"line {i + 1}: {lines[i].strip()!r} without its "
                                "`<<<<<<< SEARCH` and `=======`: every block starts with a "
                                "path line, then `<<<<<<< SEARCH`")
            i += 1
            continue
        j = i - 1
        while j >= 0 and (not lines[j].strip() or _FENCE.match(lines[j])):
            j -= 1
        if j >= 0 and _REPLACE.match(lines[j]) and previous_path:
            path = previous_path
        elif j >= 0 and _clean_path(lines[j]) and " " not in _clean_path(lines[j]):
            path = _clean_path(lines[j])
        else:
            raise NotAnEdit(f"line {i + 1}: a `<<<<<<< SEARCH` block must follow a line holding "
                            "only the file's path, e.g. `agent_seed/config.yaml`")
        divider = next((k for k in range(i + 1, len(lines)) if _DIVIDER.match(lines[k])), None)
        end = next((k for k in range(i + 1, len(lines)) if _REPLACE.match(lines[k])), None)
        if divider is None or end is None or end < divider:
            raise NotAnEdit(f"the SEARCH block for {path} (line {i + 1}) is not closed: it needs "
                            "a `=======` line and then a `>>>>>>> REPLACE` line")
        if any(_SEARCH.match(x) for x in lines[i + 1:end]):
            raise NotAnEdit(f"the SEARCH block for {path} (line {i + 1}) holds another "
                            "`<<<<<<< SEARCH` before its `>>>>>>> REPLACE`")
        search = "\n".join(lines[i + 1:divider])
        replace = "\n".join(lines[divider + 1:end])
        blocks.append((i, SearchReplace(path, search, replace)))
        previous_path = path
        i = end + 1
    return blocks


def parse_answer(text: str) -> Proposal:
    """The proposal in a meta model's answer; raises NotAnEdit."""
    diagnosis_match = _DIAGNOSIS.search(text)
    if diagnosis_match is None and re.search(r"<diagnosis>", text, re.IGNORECASE):
        raise NotAnEdit("the <diagnosis> is not closed: end it with </diagnosis> before the edits")
    diagnosis = diagnosis_match.group(1).strip() if diagnosis_match else ""
    rest = _DIAGNOSIS.sub("", text)
    # whole-file blocks first, blanked out (newlines kept) so their content is not parsed
    located: list[tuple[int, Edit]] = []
    for match in _FILE_BLOCK.finditer(rest):
        path = match.group(1).strip()
        if not path:
            raise NotAnEdit('a <file> block has an empty path: write <file path="agent_seed/...">')
        located.append((rest.count("\n", 0, match.start()), WholeFile(path, match.group(2))))
    remainder = _FILE_BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), rest)
    if re.search(r"<file\b", remainder):
        raise NotAnEdit('a <file path="..."> block is not closed with </file> '
                        "(or its opening tag is malformed)")
    located += _parse_search_blocks(remainder)
    if not located:
        raise NotAnEdit("the answer holds no edit. Give a <diagnosis>...</diagnosis> and at "
                        "least one edit.\n\n" + FORMAT_HELP)
    edits = tuple(edit for _, edit in sorted(located, key=lambda pair: pair[0]))
    headline = diagnosis.splitlines()[0].strip() if diagnosis else (
        "change " + ", ".join(dict.fromkeys(e.path for e in edits)))
    return Proposal(diagnosis, headline, edits)


def _target(root: Path, path: str, allowed_dir: str) -> Path:
    """The file ``path`` names under ``root``, checked to resolve inside ``allowed_dir``."""
    if "\0" in path:
        raise EditRejected(f"{path!r}: a path may not contain a NUL character")
    pure = PurePosixPath(path.replace("\\", "/"))
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", path):
        raise EditRejected(f"{path}: absolute paths are not allowed; write "
                           f"{allowed_dir}/... relative to the repository root")
    if ".." in pure.parts:
        raise EditRejected(f"{path}: `..` is not allowed in a path")
    if not pure.parts or pure.parts[0] != allowed_dir or len(pure.parts) < 2:
        raise EditRejected(f"{path}: only files under {allowed_dir}/ may be edited")
    base = (root / allowed_dir).resolve()
    if not base.is_relative_to(root.resolve()):
        raise EditRejected(f"{path}: {allowed_dir}/ itself resolves outside the repository")
    target = (root / pure).resolve()
    if not target.is_relative_to(base) or target == base:
        raise EditRejected(f"{path}: resolves (through a symlink) to {target}, outside "
                           f"{allowed_dir}/")
    if target.is_dir():
        raise EditRejected(f"{path}: is a directory, not a file")
    return target


def _closest_line(search: str, content: str) -> str:
    needle = next((line.strip() for line in search.splitlines() if line.strip()), "")
    best, best_ratio = None, 0.0
    for number, line in enumerate(content.splitlines(), 1):
        # how much of the needle the line holds, then overall likeness: a long line with
        # the needle's words in it beats a short line that shares a few letters
        matcher = difflib.SequenceMatcher(None, needle, line.strip(), autojunk=False)
        held = sum(block.size for block in matcher.get_matching_blocks()) / max(len(needle), 1)
        ratio = held + matcher.ratio() / 100
        if ratio > best_ratio:
            best, best_ratio = (number, line), ratio
    if best is None or best_ratio < 0.5:
        return "no line of the file resembles its first line"
    return f"the closest line is {best[0]}: {best[1]!r}"


def _replace_once(path: str, content: str, edit: SearchReplace) -> str:
    count = content.count(edit.search)
    if count == 1:
        return content.replace(edit.search, edit.replace, 1)
    if count == 0:
        raise EditRejected(f"{path}: SEARCH text not found ({_closest_line(edit.search, content)}); "
                           "copy the lines exactly from the current file, whitespace included")
    starts, at = [], content.find(edit.search)
    while at != -1:
        starts.append(content.count("\n", 0, at) + 1)
        at = content.find(edit.search, at + 1)
    raise EditRejected(f"{path}: SEARCH text found {count} times (lines "
                       f"{', '.join(map(str, starts))}); include more surrounding lines so "
                       "that it occurs exactly once")


def apply_edits(root: Path, edits: tuple[Edit, ...] | list[Edit],
                allowed_dir: str = "agent_seed") -> list[str]:
    """Apply ``edits`` in order to the worktree at ``root``; the paths whose content changed.

    All edits are checked and computed before anything is written, so an EditRejected
    leaves the worktree as it was.
    """
    new: dict[Path, str] = {}
    names: dict[Path, str] = {}
    for edit in edits:
        target = _target(root, edit.path, allowed_dir)
        names.setdefault(target, PurePosixPath(edit.path.replace("\\", "/")).as_posix())
        if target in new:
            current: str | None = new[target]
        elif target.exists():
            try:
                current = target.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise EditRejected(f"{edit.path}: not a UTF-8 text file") from None
        else:
            current = None
        if isinstance(edit, WholeFile):
            new[target] = edit.content
        elif current is None:
            if edit.search.strip():
                raise EditRejected(f"{edit.path}: no such file; to create it, use a whole-file "
                                   f'<file path="{edit.path}"> block')
            new[target] = edit.replace + ("\n" if edit.replace and not edit.replace.endswith("\n")
                                          else "")
        elif not edit.search.strip():
            raise EditRejected(f"{edit.path}: the SEARCH text is empty; copy the lines to "
                               "replace, or use a whole-file block")
        else:
            new[target] = _replace_once(edit.path, current, edit)
    problems = size_problems(root, allowed_dir, {target: len(content.encode("utf-8"))
                                                 for target, content in new.items()})
    if problems:
        raise EditRejected("\n".join(problems))
    changed = []
    for target, content in new.items():
        data = content.encode("utf-8")
        if target.exists() and target.read_bytes() == data:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        changed.append(names[target])
    return changed


def size_problems(root: Path, allowed_dir: str = "agent_seed",
                  pending: dict[Path, int] | None = None) -> list[str]:
    """Files of the agent dir past ``MAX_FILE_BYTES``, and the dir past ``MAX_AGENT_BYTES``,
    with ``pending`` (resolved path -> size) standing for files about to be written."""
    agent = (root / allowed_dir).resolve()
    sizes = {path.resolve(): path.stat().st_size for path in agent.rglob("*")
             if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts}
    sizes.update(pending or {})
    problems = [f"{path.relative_to(root.resolve()).as_posix()}: {size:,} bytes, more than a "
                f"file of the agent may hold ({MAX_FILE_BYTES:,}); keep it short (lessons: the "
                "few that matter, summarized; code: split or trim it)"
                for path, size in sorted(sizes.items()) if size > MAX_FILE_BYTES]
    total = sum(sizes.values())
    if total > MAX_AGENT_BYTES:
        problems.append(f"{allowed_dir}/ would hold {total:,} bytes, more than an agent may "
                        f"({MAX_AGENT_BYTES:,}); remove or shorten files")
    return problems


def check_worktree(root: Path, allowed_dir: str = "agent_seed") -> list[str]:
    """Cheap host-side checks of the agent dir; the problems found (``[]``: none).

    No file or the whole dir is past its size cap (the self proposer's route writes files
    without ``apply_edits``). Every ``.py`` file compiles (with ``compile()``, which is what
    ``py_compile`` does, without writing bytecode into the worktree), ``config.yaml`` loads with
    ``yaml.safe_load`` into a mapping, and its ``templates`` and any ``*.j2`` file parse as
    jinja2. Nothing of the agent is imported or run here: that is the sandboxed selfcheck.
    """
    import jinja2

    agent = root / allowed_dir
    problems: list[str] = []
    for file in sorted(agent.rglob("*.py")):
        if "__pycache__" in file.parts or not file.is_file():
            continue
        name = file.relative_to(root).as_posix()
        try:
            compile(file.read_bytes(), name, "exec", dont_inherit=True)
        except SyntaxError as exc:
            problems.append(f"{name}:{exc.lineno}: SyntaxError: {exc.msg}"
                            + (f": {exc.text.strip()!r}" if exc.text else ""))
        except ValueError as exc:  # null bytes, undecodable source
            problems.append(f"{name}: cannot compile: {exc}")
    environment = jinja2.Environment()
    config = agent / "config.yaml"
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{allowed_dir}/config.yaml: missing")
        data = None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(f"{allowed_dir}/config.yaml: not valid YAML: {exc}")
        data = None
    else:
        if not isinstance(data, dict):
            problems.append(f"{allowed_dir}/config.yaml: must be a mapping, got "
                            f"{type(data).__name__}")
    templates = data.get("templates") if isinstance(data, dict) else None
    for key, source in (templates.items() if isinstance(templates, dict) else []):
        try:
            environment.parse(str(source))
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{allowed_dir}/config.yaml: template {key!r} line {exc.lineno}: "
                            f"{exc.message}")
    for file in sorted(agent.rglob("*.j2")):
        try:
            environment.parse(file.read_text(encoding="utf-8"))
        except (jinja2.TemplateSyntaxError, UnicodeDecodeError) as exc:
            line = getattr(exc, "lineno", "?")
            problems.append(f"{file.relative_to(root).as_posix()}:{line}: template error: {exc}")
    return problems + size_problems(root, allowed_dir)


@dataclass(frozen=True)
class Snapshot:
    """A byte-for-byte copy of a directory tree (files, modes, symlinks, empty dirs), to
    put it back after a rejected attempt. Agent dirs are small, so it is held in memory."""

    root: Path
    files: dict[str, tuple[bytes, int]]
    links: dict[str, str]
    dirs: frozenset[str]

    @classmethod
    def take(cls, root: Path) -> Snapshot:
        files: dict[str, tuple[bytes, int]] = {}
        links: dict[str, str] = {}
        dirs: set[str] = set()
        for current, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(current, name)
                rel = path.relative_to(root).as_posix()
                if path.is_symlink():
                    links[rel] = os.readlink(path)
                elif path.is_dir():
                    dirs.add(rel)
                else:
                    files[rel] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        return cls(root, files, links, frozenset(dirs))

    def restore(self) -> None:
        """Make the tree equal to the snapshot again: remove what is new, rewrite what changed."""
        self.root.mkdir(parents=True, exist_ok=True)
        for current, dirnames, filenames in os.walk(self.root, topdown=False):
            for name in filenames + dirnames:
                path = Path(current, name)
                rel = path.relative_to(self.root).as_posix()
                if path.is_symlink():
                    if self.links.get(rel) != os.readlink(path):
                        path.unlink()
                elif path.is_dir():
                    if rel not in self.dirs:
                        path.rmdir()  # bottom-up: its contents are gone already
                elif rel not in self.files:
                    path.unlink()
        for rel in sorted(self.dirs):
            (self.root / rel).mkdir(parents=True, exist_ok=True)
        for rel, target in self.links.items():
            if not (self.root / rel).is_symlink():
                (self.root / rel).symlink_to(target)
        for rel, (data, mode) in self.files.items():
            path = self.root / rel
            if not path.is_file() or path.read_bytes() != data:
                path.write_bytes(data)
            if stat.S_IMODE(path.stat().st_mode) != mode:
                path.chmod(mode)
