"""Git as the ledger of a run: one branch per generation, a ``best`` ref, notes for metrics.

A run named RUN owns these refs in the workspace, and writes nothing else:

- ``refs/heads/ratchet/RUN/gen-NNNN``: generation N. ``gen-0000`` is the commit the run
  started from (no new commit); every later one is one commit on top of its parent's
  commit, made in a worktree ``runs/RUN/worktrees/gen-NNNN``, changing ``agent_seed/``
  only, with the trailers ``Ratchet-Run``, ``Ratchet-Generation``, ``Ratchet-Parent`` and
  whatever the caller adds (score, verdict, ...).
- ``refs/heads/ratchet/RUN/best``: the last accepted generation. Its reflog is the
  history of acceptances.
- ``refs/notes/ratchet``: one JSON note per commit, ``{RUN: {...metrics...}}``. Keyed by
  run because one commit can belong to several runs (two runs started from the same HEAD
  share ``gen-0000``; ``RUN.from-0012`` starts at RUN's generation 12), and metrics found
  after a commit was made must not rewrite it: commits are immutable, notes are not.
  ``git notes add`` rewrites the whole notes ref without checking what it replaces, so two
  runs of one workspace writing notes at once lose each other's entries (measured: 16 of
  200); every write here holds a workspace-wide ``flock`` on ``.git/ratchet-notes.lock``
  around the read-modify-write of the note and the ref (``LOCK_NOTES``).

The user's checkout is never touched: no command here changes HEAD, the index or the
working tree of the workspace. Ratchet's commits are made as ``ratchet
<ratchet@localhost>``, without the repository's hooks or signing (a pre-commit linter or
a GPG prompt of the user's must not stall an overnight run).

Resuming is the normal case, so every step is idempotent: ``start`` finds an existing
run, ``worktree`` reuses its directory, ``commit`` of an already committed generation
returns its commit.

Branching off (``ratchet resume RUN --from 12``) makes a new run, named
``RUN.from-0012`` by ``branched_run_id``, whose ``gen-0000`` is RUN's generation 12; the
old run's refs stay as they were.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import git
from git.db import IStream  # GitPython's re-export of gitdb's

from harness.loop.runlock import flocked, git_common_dir
from harness.loop.workspace import AGENT_DIR, RATCHET_IDENTITY, changed_paths, check_run_id
from harness.errors import ChangesOutsideAgent, LineageError, NothingToCommit

__all__ = ["NOTES_REF", "TRAILER_GENERATION", "TRAILER_PARENT", "TRAILER_RUN", "ChangesOutsideAgent",
           "Generation", "Lineage", "LineageError", "NothingToCommit", "branched_run_id"]

NOTES_REF = "refs/notes/ratchet"
TRAILER_RUN = "Ratchet-Run"
TRAILER_GENERATION = "Ratchet-Generation"
TRAILER_PARENT = "Ratchet-Parent"

_TRAILER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_NO_HOOKS_NO_SIGNING = ["core.hooksPath=/dev/null", "commit.gpgSign=false"]
NOTES_LOCK_NAME = "ratchet-notes.lock"
LOCK_NOTES = True
"""Hold the workspace-wide notes lock around each notes write. Only the test that shows
notes being lost without it turns this off."""


class Generation(NamedTuple):
    number: int
    sha: str
    parent: int | None
    """Parent generation from the ``Ratchet-Parent`` trailer; None for generation 0."""


def branched_run_id(run: str, gen: int) -> str:
    """The run id of a new line of descent from ``run``'s generation ``gen``: ``r1.from-0012``."""
    return f"{run}.from-{gen:04d}"


def _parse_trailers(text: str) -> dict[str, str]:
    trailers: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and _TRAILER_KEY.fullmatch(key.strip()):
            trailers[key.strip()] = value.strip()
    return trailers


class Lineage:
    """The refs of one run in one workspace. Thread-safe within a process."""

    def __init__(self, workspace: Path, run: str):
        check_run_id(run)  # a WorkspaceError (ValueError) naming the rule
        self.workspace = Path(workspace).expanduser().resolve()
        self.run = run
        try:
            self.repo = git.Repo(self.workspace)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise LineageError(f"{self.workspace} is not a git repository") from exc
        self._git = self._git_in(self.workspace)
        self._lock = threading.RLock()

    # names -------------------------------------------------------------------------------

    def branch(self, gen: int) -> str:
        """Short branch name of generation ``gen``, as plain git takes it."""
        return f"ratchet/{self.run}/gen-{gen:04d}"

    @property
    def best_branch(self) -> str:
        return f"ratchet/{self.run}/best"

    def worktree_path(self, gen: int) -> Path:
        return self.workspace / "runs" / self.run / "worktrees" / f"gen-{gen:04d}"

    @property
    def notes_lock(self) -> Path:
        """The workspace-wide lock every ratchet notes write holds (one per git directory)."""
        return git_common_dir(self.workspace) / NOTES_LOCK_NAME

    @staticmethod
    def list_runs(workspace: Path) -> list[str]:
        """Runs recorded in ``workspace``: those with a ``best`` ref."""
        out = git.Repo(workspace).git.for_each_ref("--format=%(refname)", "refs/heads/ratchet/")
        prefix, suffix = "refs/heads/ratchet/", "/best"
        return sorted(r[len(prefix):-len(suffix)] for r in out.splitlines() if r.endswith(suffix))

    # plumbing ----------------------------------------------------------------------------

    @staticmethod
    def _git_in(path: Path) -> git.Git:
        command = git.Git(path)
        command.update_environment(**RATCHET_IDENTITY)
        command.set_persistent_git_options(c=_NO_HOOKS_NO_SIGNING)
        return command

    def _ref_sha(self, ref: str) -> str | None:
        try:
            return str(self._git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}"))
        except git.GitCommandError:
            return None

    def _commit_sha(self, rev: str) -> str:
        sha = self._ref_sha(rev)
        if sha is None:
            raise LineageError(f"{rev!r} is not a commit in {self.workspace}")
        return sha

    def _create_ref(self, ref: str, sha: str, reason: str) -> None:
        """Create ``ref`` only if it does not exist (an empty old value makes git check that)."""
        self._git.update_ref("-m", reason, ref, sha, "")

    def _registered_worktrees(self) -> dict[Path, str | None]:
        """Linked worktrees of the workspace: path -> checked-out branch (full ref)."""
        found: dict[Path, str | None] = {}
        current: Path | None = None
        for line in self._git.worktree("list", "--porcelain").splitlines():
            if line.startswith("worktree "):
                current = Path(line[len("worktree "):]).resolve()
                found[current] = None
            elif line.startswith("branch ") and current is not None:
                found[current] = line[len("branch "):]
        return found

    def _tip_trailers(self, sha: str) -> dict[str, str]:
        return _parse_trailers(self._git.log("-1", "--format=%(trailers:only,unfold)", sha))

    def _is_committed(self, gen: int, sha: str) -> bool:
        trailers = self._tip_trailers(sha)
        return trailers.get(TRAILER_RUN) == self.run and trailers.get(TRAILER_GENERATION) == str(gen)

    # the run -----------------------------------------------------------------------------

    def start(self, base: str = "HEAD") -> Generation:
        """Generation 0 at ``base``, and ``best`` on it; on an existing run, its generation 0.

        A resumed run keeps its generation 0 even though HEAD has moved on since; an explicit
        ``base`` that disagrees with it is an error rather than silently ignored.
        """
        with self._lock:
            existing = self._ref_sha(f"refs/heads/{self.branch(0)}")
            if existing is None:
                sha = self._commit_sha(base)
                self.tree_hash(sha)  # raises if the base has no agent
                self._create_ref(f"refs/heads/{self.branch(0)}", sha, f"ratchet: start run {self.run} at {base}")
                existing = sha
            elif base != "HEAD" and self._commit_sha(base) != existing:
                raise LineageError(f"run {self.run} already started at {existing[:12]}, not at {base}; "
                                   "pick a new run id to start elsewhere")
            if self._ref_sha(f"refs/heads/{self.best_branch}") is None:
                self._create_ref(f"refs/heads/{self.best_branch}", existing, "ratchet: generation 0 is best")
            return Generation(0, existing, None)

    def head(self, gen: int) -> str:
        """The commit of generation ``gen``'s branch (its parent's, until it is committed)."""
        return self._commit_sha(f"refs/heads/{self.branch(gen)}")

    def generations(self) -> list[Generation]:
        """Committed generations of the run, by number, read from the refs.

        A branch made by ``worktree`` and not committed yet still points at its parent's
        commit; it is left out until ``commit`` gives it a commit of its own.
        """
        out = self._git.for_each_ref(
            "--format=%(refname)%00%(objectname)%00%(trailers:only,unfold)%01",
            f"refs/heads/ratchet/{self.run}/")
        pattern = re.compile(rf"refs/heads/ratchet/{re.escape(self.run)}/gen-(\d{{4,}})")
        found = []
        for record in out.split("\x01"):
            fields = record.strip("\n").split("\x00")
            match = pattern.fullmatch(fields[0])
            if len(fields) != 3 or not match:
                continue
            number, sha, trailers = int(match.group(1)), fields[1], _parse_trailers(fields[2])
            if number == 0:
                found.append(Generation(0, sha, None))
            elif trailers.get(TRAILER_RUN) == self.run and trailers.get(TRAILER_GENERATION) == str(number):
                parent = trailers.get(TRAILER_PARENT, "")
                found.append(Generation(number, sha, int(parent) if parent.isdigit() else None))
        return sorted(found)

    def best(self) -> str:
        sha = self._ref_sha(f"refs/heads/{self.best_branch}")
        if sha is None:
            raise LineageError(f"run {self.run} has no {self.best_branch}: it was never started")
        return sha

    def move_best(self, sha: str) -> None:
        """Point ``best`` at an accepted generation (and only at a generation of this run)."""
        with self._lock:
            sha = self._commit_sha(sha)
            numbers = [g.number for g in self.generations() if g.sha == sha]
            if not numbers:
                raise LineageError(f"{sha[:12]} is not a committed generation of run {self.run}; "
                                   "best can only move to one")
            self._git.update_ref("-m", f"ratchet: accept gen-{numbers[0]:04d}",
                                 f"refs/heads/{self.best_branch}", sha)

    def diff(self, a: int, b: int) -> str:
        """``git diff gen-a gen-b -- agent_seed/``: what the loop changed between two generations."""
        return str(self._git.diff(self.branch(a), self.branch(b), "--", f"{AGENT_DIR}/",
                                  strip_newline_in_stdout=False))

    def tree_hash(self, rev: str) -> str:
        """The git tree id of ``agent_seed/`` at ``rev``: the key evaluations are cached under,
        equal for any two commits whose agent is byte for byte the same."""
        sha = self._commit_sha(rev)
        try:
            return str(self._git.rev_parse("--verify", "--quiet", f"{sha}:{AGENT_DIR}"))
        except git.GitCommandError:
            raise LineageError(f"{rev} ({sha[:12]}) has no {AGENT_DIR}/ directory") from None

    def branch_from(self, gen: int, new_run: str | None = None) -> Lineage:
        """A new run whose generation 0 is this run's generation ``gen`` (idempotent).

        The new run id defaults to ``branched_run_id(run, gen)``, e.g. ``r1.from-0012``.
        """
        source = self.head(gen)
        if gen != 0 and not self._is_committed(gen, source):
            raise LineageError(f"generation {gen} of run {self.run} has no commit yet")
        child = Lineage(self.workspace, new_run or branched_run_id(self.run, gen))
        child.start(source)
        return child

    # worktrees and commits ---------------------------------------------------------------

    def worktree(self, gen: int, parent_ref: str) -> Path:
        """A checkout of generation ``gen`` on its branch, made at ``parent_ref``'s commit.

        On resume the existing worktree is returned as it is (edits and all; ``reset``
        discards them), and an existing branch is reused: at its commit if it was already
        committed on that parent, else moved back to the parent.
        """
        if gen < 1:
            raise ValueError("generation 0 is the run's base commit: it has no worktree")
        path, branch = self.worktree_path(gen), self.branch(gen)
        with self._lock:
            parent = self._commit_sha(parent_ref)
            registered = self._registered_worktrees()
            if path in registered:
                if registered[path] != f"refs/heads/{branch}":
                    raise LineageError(f"{path} is a worktree of {registered[path]}, not of {branch}")
                if path.is_dir():
                    return path
            self._discard_worktree(path, registered)
            path.parent.mkdir(parents=True, exist_ok=True)
            tip = self._ref_sha(f"refs/heads/{branch}")
            if tip is None:
                self._git.worktree("add", "-q", "-b", branch, str(path), parent)
                return path
            if self._is_committed(gen, tip):
                first_parent = self._commit_sha(f"{tip}^")
                if first_parent != parent:
                    raise LineageError(f"generation {gen} of run {self.run} is already committed on "
                                       f"{first_parent[:12]}, not on {parent_ref} ({parent[:12]})")
            elif tip != parent:
                self._git.update_ref("-m", "ratchet: restart generation", f"refs/heads/{branch}", parent, tip)
            self._git.worktree("add", "-q", str(path), branch)
            return path

    def _discard_worktree(self, path: Path, registered: Mapping[Path, str | None]) -> None:
        """Drop this one worktree (never ``git worktree prune``, which would also drop other
        people's stale worktrees, e.g. on an unmounted disk)."""
        if path in registered:
            self._git.worktree("remove", "--force", "--force", str(path))
        if path.exists():
            shutil.rmtree(path)

    def remove_worktree(self, gen: int) -> None:
        """Remove generation ``gen``'s worktree, changes and all; its branch stays."""
        with self._lock:
            self._discard_worktree(self.worktree_path(gen), self._registered_worktrees())

    def reset(self, gen: int) -> None:
        """Discard uncommitted edits in generation ``gen``'s worktree (a proposal cut off by a crash)."""
        command = self._git_in(self._checked_worktree(gen))
        command.reset("-q", "--hard")
        command.clean("-q", "-f", "-d")

    def _checked_worktree(self, gen: int) -> Path:
        path = self.worktree_path(gen)
        if self._registered_worktrees().get(path) != f"refs/heads/{self.branch(gen)}" or not path.is_dir():
            raise LineageError(f"generation {gen} of run {self.run} has no worktree at {path}; "
                               "make it with worktree() first")
        return path

    def _changed_paths(self, command: git.Git) -> list[str]:
        return changed_paths(command)

    def _full_trailers(self, gen: int, parent_sha: str, trailers: Mapping[str, Any]) -> dict[str, str]:
        given = {str(k): str(v) for k, v in trailers.items()}
        for key, value in given.items():
            if not _TRAILER_KEY.fullmatch(key) or "\n" in value or "\r" in value:
                raise ValueError(f"trailer {key!r}: {value!r} is not a one-line git trailer")
        for key, expected in ((TRAILER_RUN, self.run), (TRAILER_GENERATION, str(gen))):
            if given.get(key, expected) != expected:
                raise ValueError(f"trailer {key}: {given[key]} contradicts {expected}")
        if TRAILER_PARENT not in given:
            parents = [g.number for g in self.generations() if g.sha == parent_sha and g.number != gen]
            if not parents:
                raise LineageError(f"the parent commit {parent_sha[:12]} of generation {gen} is no "
                                   f"generation of run {self.run}; pass {TRAILER_PARENT} explicitly")
            given[TRAILER_PARENT] = str(parents[0])
        first = {TRAILER_RUN: self.run, TRAILER_GENERATION: str(gen), TRAILER_PARENT: given.pop(TRAILER_PARENT)}
        given.pop(TRAILER_RUN, None)
        given.pop(TRAILER_GENERATION, None)
        return {**first, **given}

    def commit(self, gen: int, *, message: str, trailers: Mapping[str, Any],
               allow_empty: bool = False) -> str:
        """Commit every change under ``agent_seed/`` in generation ``gen``'s worktree.

        ``Ratchet-Run`` and ``Ratchet-Generation`` are filled in, and ``Ratchet-Parent``
        when not given. Raises ``ChangesOutsideAgent`` if anything else changed (nothing is
        committed then), ``NothingToCommit`` for no change unless ``allow_empty``. Committing
        a generation that a crash already committed with the same message and trailers
        returns that commit. Returns the new commit's sha.
        """
        with self._lock:
            path = self._checked_worktree(gen)
            command = self._git_in(path)
            changed = self._changed_paths(command)
            outside = sorted(p for p in changed if p != AGENT_DIR and not p.startswith(f"{AGENT_DIR}/"))
            if outside:
                shown = ", ".join(outside[:10]) + (", ..." if len(outside) > 10 else "")
                raise ChangesOutsideAgent(f"generation {gen} changed files outside {AGENT_DIR}/ in "
                                          f"{path}: {shown}; nothing was committed")
            tip = self.head(gen)
            if self._is_committed(gen, tip):  # committed before: only a replay of the same commit
                recorded = self._git.log("-1", "--format=%B", tip).strip()
                trailers_now = self._full_trailers(gen, self._commit_sha(f"{tip}^"), trailers)
                if not changed and recorded == self._message(message, trailers_now).strip():
                    return tip
                raise LineageError(f"generation {gen} of run {self.run} is already committed "
                                   f"({tip[:12]}); commits are immutable, record later facts with set_note")
            full = self._full_trailers(gen, tip, trailers)
            if changed:
                command.add("-A", "--", AGENT_DIR)
            staged = bool(command.diff("--cached", "--name-only"))
            if not staged and not allow_empty:
                raise NothingToCommit(f"generation {gen}: no change under {AGENT_DIR}/ in {path}")
            command.commit("-q", "--no-verify", "--allow-empty", "--cleanup=whitespace",
                           "-m", self._message(message, full))
            return self.head(gen)

    def candidate_branch(self, gen: int, index: int) -> str:
        """Branch of proposal ``index`` (1..P) of generation ``gen`` (``--proposals P``)."""
        return f"ratchet/{self.run}/candidates/gen-{gen:04d}-p{index}"

    def save_candidate(self, gen: int, index: int, message: str) -> str:
        """Commit the worktree's edits under ``agent_seed/`` as candidate ``index`` of ``gen``
        (a commit on the parent, on its own branch), then put the worktree back at the parent
        for the next proposal. The generation's own branch does not move. Returns the sha."""
        with self._lock:
            path = self._checked_worktree(gen)
            command = self._git_in(path)
            outside = sorted(p for p in self._changed_paths(command)
                             if p != AGENT_DIR and not p.startswith(f"{AGENT_DIR}/"))
            if outside:
                raise ChangesOutsideAgent(f"candidate {index} of generation {gen} changed files "
                                          f"outside {AGENT_DIR}/: {', '.join(outside[:10])}")
            command.add("-A", "--", AGENT_DIR)
            tree = command.write_tree()
            parent = command.rev_parse("HEAD")
            sha = command.commit_tree(tree, "-p", parent, "-m", message)
            self._git.update_ref("-m", "ratchet: candidate", f"refs/heads/{self.candidate_branch(gen, index)}", sha)
            command.reset("-q", "--hard")
            command.clean("-q", "-f", "-d")
            return sha

    def restore_candidate(self, gen: int, sha: str) -> None:
        """Make generation ``gen``'s worktree hold candidate ``sha``'s files (uncommitted, on
        the parent), so that ``commit`` records the chosen candidate as the generation."""
        with self._lock:
            command = self._git_in(self._checked_worktree(gen))
            command.reset("-q", "--hard")
            command.clean("-q", "-f", "-d")
            command.read_tree("-u", "--reset", sha)
            command.reset("-q")  # the index back at HEAD: the files stay, as edits

    @staticmethod
    def _message(message: str, trailers: Mapping[str, str]) -> str:
        body = message.strip() or "ratchet generation"
        return body + "\n\n" + "\n".join(f"{k}: {v}" for k, v in trailers.items()) + "\n"

    # notes -------------------------------------------------------------------------------

    def _all_notes(self, sha: str) -> dict[str, Any]:
        try:
            text = self._git.notes("--ref=ratchet", "show", sha)
        except git.GitCommandError as exc:
            if exc.status == 1:  # no note on this commit
                return {}
            raise LineageError(f"cannot read the ratchet note of {sha[:12]}: {exc.stderr.strip()}") from exc
        try:
            notes = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LineageError(f"the ratchet note of {sha[:12]} is not JSON ({exc}); "
                               f"see `git notes --ref=ratchet show {sha[:12]}`") from exc
        if not isinstance(notes, dict):
            raise LineageError(f"the ratchet note of {sha[:12]} is not a JSON object")
        return notes

    def set_note(self, sha: str, data: Mapping[str, Any]) -> None:
        """Replace this run's entry in the JSON note of ``sha``, keeping other runs' entries."""
        with self._lock, (flocked(self.notes_lock) if LOCK_NOTES else nullcontext()):
            sha = self._commit_sha(sha)
            notes = self._all_notes(sha)
            notes[self.run] = dict(data)
            blob = (json.dumps(notes, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
            # the note's blob is stored as is: no size limit of a command line, no reformatting
            stored = self.repo.odb.store(IStream("blob", len(blob), io.BytesIO(blob)))
            self._git.notes("--ref=ratchet", "add", "-f", "-C", stored.hexsha.decode(), sha)

    def get_note(self, sha: str) -> dict[str, Any] | None:
        """This run's entry in the note of ``sha``; None if there is none."""
        entry = self._all_notes(self._commit_sha(sha)).get(self.run)
        return entry if isinstance(entry, dict) else None
