"""The workspace: a git repository that holds the agent package at ``agent_seed/``.

Every run of ratchet records its generations as branches of one repository, so there has
to be one: either a fresh one made by ``ratchet init DIR`` (this module copies the seed
agent into it and makes the initial commit) or any existing repository that already has
``agent_seed/`` at its root, this very repository included.

``init_workspace`` never mixes ratchet's files with someone else's: it only writes into a
directory that does not exist, is empty, or holds an empty repository (``git init`` and
nothing else). A directory that is already a workspace is left as it is.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import git

from harness.errors import WorkspaceError

__all__ = ["AGENT_DIR", "RATCHET_IDENTITY", "WorkspaceError", "agent_changes", "changed_paths",
           "check_agent_committed", "check_run_id", "commit_agent", "find_workspace", "init_workspace", "is_workspace"]

AGENT_DIR = "agent_seed"
"""The agent package, at the root of the workspace; the only path the loop ever edits."""

RATCHET_IDENTITY = {
    "GIT_AUTHOR_NAME": "ratchet", "GIT_AUTHOR_EMAIL": "ratchet@localhost",
    "GIT_COMMITTER_NAME": "ratchet", "GIT_COMMITTER_EMAIL": "ratchet@localhost",
}
"""Who ratchet's commits are by: set explicitly so a machine without a git identity works,
and so ratchet's commits are told apart from a person's at a glance."""

GITIGNORE = """\
# ratchet: run artifacts (worktrees, journals, logs) stay out of git, except the README.
runs/*
!runs/README.md
__pycache__/
*.py[co]
"""

README = """\
# ratchet workspace

`agent_seed/` is the coding agent that ratchet evolves. Each run records its generations
as branches `ratchet/RUN/gen-NNNN`; `ratchet/RUN/best` is the best agent of the run so far
and `refs/notes/ratchet` holds the metrics of each generation:

    git log --graph ratchet/RUN/best
    git log --notes=ratchet ratchet/RUN/best
    git diff ratchet/RUN/gen-0003 ratchet/RUN/gen-0007 -- agent_seed/

Run artifacts (worktrees, journals, logs) land in `runs/`, which git ignores.
"""

RUNS_README = "# runs/\n\nRun artifacts of ratchet land here; nothing here is committed but this file.\n"

log = logging.getLogger(__name__)


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_run_id(run: str) -> str:
    """``run`` if it can name a run: a folder under ``runs/`` and a branch ``ratchet/RUN/...``.

    Every run id that comes from a user passes here before any path is made of it, so
    ``../../x`` or ``/tmp/x`` can never write outside ``runs/``. The rule is git's for a ref
    component, narrowed: letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit,
    no ``..``, not ending in ``.`` or ``.lock``; at most 100 characters (a branched run adds
    ``.from-NNNN``).
    """
    if not isinstance(run, str) or not _RUN_ID.fullmatch(run) or ".." in run \
            or run.endswith((".lock", ".")):
        raise WorkspaceError(
            f"run id {run!r} is not allowed: use up to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..' and not ending in '.' or '.lock' "
            "(e.g. r1 or nightly-2026-12-04)")
    return run


def _ignored(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))]


def _repo_at(directory: Path) -> git.Repo | None:
    """The repository whose working tree root is exactly ``directory``, if any."""
    if not (directory / ".git").exists():
        return None
    try:
        return git.Repo(directory)
    except git.InvalidGitRepositoryError:
        return None


def _has_commits(repo: git.Repo) -> bool:
    try:
        _ = repo.head.commit
    except ValueError:  # an unborn branch: `git init` and no commit yet
        return False
    return True


def is_workspace(directory: Path) -> bool:
    """Whether ``directory`` is the root of a repository with a committed ``agent_seed/``."""
    repo = _repo_at(directory)
    if repo is None or not _has_commits(repo):
        return False
    try:
        return repo.head.commit.tree[AGENT_DIR].type == "tree"
    except KeyError:
        return False


def init_workspace(directory: Path, *, seed: Path, files: dict[str, str] | None = None) -> Path:
    """Make ``directory`` a workspace holding a copy of the agent package ``seed``.

    Returns the workspace root. A directory that already is a workspace is returned as it
    is (nothing is copied or committed: its agent may have moved on from the seed); check
    ``is_workspace`` first to tell the user so. Raises ``WorkspaceError`` for a directory
    that holds anything else, since copying into it would mix ratchet's files with its.
    ``files`` (relative path -> text) are written and committed with it (the example run file).
    """
    directory = directory.expanduser().resolve()
    seed = seed.expanduser().resolve()
    if is_workspace(directory):
        log.info("%s is already a ratchet workspace; left as it is", directory)
        return directory
    repo = _repo_at(directory)
    if repo is not None and _has_commits(repo):
        raise WorkspaceError(
            f"{directory} is a git repository with commits but no {AGENT_DIR}/ at its root; "
            f"ratchet will not add an agent to it. Pick a new directory, or commit an agent "
            f"package at {directory / AGENT_DIR} yourself to use this repository as a workspace.")
    if directory.exists() and not directory.is_dir():
        raise WorkspaceError(f"{directory} exists and is not a directory")
    leftovers = sorted(p.name for p in directory.iterdir() if p.name != ".git") if directory.exists() else []
    if leftovers:
        raise WorkspaceError(
            f"{directory} is not empty ({', '.join(leftovers[:5])}{', ...' if len(leftovers) > 5 else ''}); "
            "ratchet initialises a workspace only in a new or empty directory")
    if not (seed / "__init__.py").is_file() or not (seed / "__main__.py").is_file():
        raise WorkspaceError(f"{seed} is not an agent package (it needs __init__.py and __main__.py)")

    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(seed, directory / AGENT_DIR, ignore=_ignored)
    (directory / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    (directory / "README.md").write_text(README, encoding="utf-8")
    (directory / "runs").mkdir(exist_ok=True)
    (directory / "runs" / "README.md").write_text(RUNS_README, encoding="utf-8")
    for name, text in (files or {}).items():
        (directory / name).write_text(text, encoding="utf-8")

    repo = repo or git.Repo.init(directory, initial_branch="main")
    gitcmd = repo.git
    gitcmd.update_environment(**RATCHET_IDENTITY)
    gitcmd.add("--", AGENT_DIR, ".gitignore", "README.md", "runs/README.md", *(files or {}))
    gitcmd.commit("--no-verify", "--no-gpg-sign", "-q", "-m", "ratchet: seed agent")
    log.info("initialised a ratchet workspace at %s from %s", directory, seed)
    return directory


def find_workspace(start: Path) -> Path:
    """The root of the workspace enclosing ``start``.

    Walks up through nested repositories until one has ``agent_seed/`` at its root. From
    inside a run's worktree (``runs/RUN/worktrees/gen-NNNN``, itself a checkout with an
    agent) it answers the main workspace, which owns the run, not the worktree.
    """
    here = start.expanduser().resolve()
    while True:
        try:
            repo = git.Repo(here, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            break
        if repo.working_tree_dir is None:  # a bare repository has no agent to evolve
            break
        root = Path(repo.working_tree_dir)
        common = Path(repo.common_dir).resolve()
        if common != Path(repo.git_dir).resolve() and common.name == ".git":
            root = common.parent  # a linked worktree: the workspace is the main checkout
        if (root / AGENT_DIR).is_dir():
            return root
        if root.parent == root:
            break
        here = root.parent
    raise WorkspaceError(
        f"no ratchet workspace at or above {start}: no git repository there has {AGENT_DIR}/ "
        f"at its root. Run `ratchet init DIR` to make one, or run from inside one.")



def changed_paths(command: git.Git, *pathspec: str) -> list[str]:
    """Paths ``git status`` reports in ``command``'s work tree (both sides of a rename),
    ignored files left out; limited to ``pathspec`` when given."""
    out = command.status("--porcelain=v1", "-z", "--untracked-files=all",
                         *(("--", *pathspec) if pathspec else ()), strip_newline_in_stdout=False)
    entries, paths = out.split("\x00"), []
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # a rename or copy: the source path follows
            paths.append(entries[index])
            index += 1
    return paths


def agent_changes(root: Path) -> list[str]:
    """What a run starting from HEAD would silently leave out: paths under ``agent_seed/``
    that differ from HEAD (modified, staged, deleted, untracked; ignored files do not count).

    Raises WorkspaceError, with the fix, when HEAD has no committed ``agent_seed/`` at all.
    """
    repo = _repo_at(root)
    if repo is None or not _has_commits(repo) or not is_workspace(root):
        raise WorkspaceError(
            f"{root / AGENT_DIR} is not committed (HEAD has no {AGENT_DIR}/): a run evolves the "
            f"committed agent. Commit it (`git -C {root} add {AGENT_DIR} && git -C {root} commit "
            f"-m 'agent'`), or pass --commit-agent to have ratchet commit it.")
    # bytecode is never part of an agent (`harness.run.agent_source` leaves it out too)
    return [path for path in changed_paths(repo.git, AGENT_DIR)
            if "__pycache__" not in path and not _ignored("", [Path(path).name])]


def check_agent_committed(root: Path) -> None:
    """Refuse, with the fix, an agent dir a run would not see as it is on disk."""
    changed = agent_changes(root)
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise WorkspaceError(
            f"{AGENT_DIR}/ has uncommitted changes ({shown}): a run evolves the committed agent "
            f"(HEAD), so they would be ignored. Commit them (`git -C {root} add {AGENT_DIR} && "
            f"git -C {root} commit`), stash them, or pass --commit-agent to have ratchet commit them.")


def commit_agent(root: Path, run: str) -> str | None:
    """Commit ``agent_seed/`` as it is on disk (and nothing else the user may have staged),
    as ratchet; the new commit's sha, or None when there was nothing to commit."""
    repo = _repo_at(root)
    if repo is None:
        raise WorkspaceError(f"{root} is not the root of a git repository")
    if _has_commits(repo) and is_workspace(root) and not agent_changes(root):
        return None
    gitcmd = repo.git
    gitcmd.update_environment(**RATCHET_IDENTITY)
    gitcmd.add("-A", "--", AGENT_DIR)
    gitcmd.commit("--no-verify", "--no-gpg-sign", "-q", "-m",
                  f"ratchet: commit {AGENT_DIR}/ as it is on disk, for run {run}", "--", AGENT_DIR)
    log.info("committed %s/ in %s for run %s", AGENT_DIR, root, run)
    return repo.head.commit.hexsha
