"""Resolve ``--agent PATH|GIT-REF`` to a directory holding the agent package, and the hash
of its tree (the key under which task results are cached, so a rerun redoes nothing)."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import git

from harness.errors import AgentSourceError

__all__ = ["AGENT_PACKAGE", "AgentSource", "pack_agent", "resolve_agent", "unpack_agent"]

AGENT_PACKAGE = "agent_seed"


@dataclass(frozen=True)
class AgentSource:
    spec: str
    directory: Path
    """Holds ``agent_seed/``; mounted read-only at /agent in the sandbox."""
    tree_hash: str


def _ignored(name: str) -> bool:
    return name == "__pycache__" or name.endswith((".pyc", ".pyo"))


def _from_directory(path: Path, into: Path) -> str:
    package = path if (path / "__main__.py").exists() else path / AGENT_PACKAGE
    if not (package / "__main__.py").exists():
        raise AgentSourceError(f"{path} is not an agent: no {AGENT_PACKAGE}/__main__.py in it")
    target = into / AGENT_PACKAGE
    shutil.copytree(package, target, ignore=lambda d, names: [n for n in names if _ignored(n)])
    return _content_hash(target)


def _content_hash(package: Path) -> str:
    """One hash of the agent's files, however they were obtained (a directory or a git
    ref), so one agent has one cache key."""
    digest = hashlib.sha256()
    for file in sorted(p for p in package.rglob("*") if p.is_file()):
        digest.update(file.relative_to(package).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return "agent-" + digest.hexdigest()[:16]


def _from_git(ref: str, repo_dir: Path, into: Path) -> str:
    try:
        repo = git.Repo(repo_dir, search_parent_directories=True)
        tree = repo.commit(ref).tree / AGENT_PACKAGE
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise AgentSourceError(f"{ref!r} is not a directory, and {repo_dir} is not in a git "
                               "repository to look it up as a ref") from None
    except (git.BadName, ValueError):
        raise AgentSourceError(f"{ref!r} is neither a directory nor a git ref in {repo_dir}") from None
    except KeyError:
        raise AgentSourceError(f"{ref} has no {AGENT_PACKAGE}/ directory") from None
    for blob in tree.traverse():
        if blob.type != "blob" or _ignored(Path(blob.path).name):
            continue
        target = into / blob.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob.data_stream.read())
    return _content_hash(into / AGENT_PACKAGE)


def resolve_agent(spec: str, *, repo_dir: Path = Path(".")) -> AgentSource:
    """A private copy of the agent (a later edit of the checkout cannot change a run)."""
    into = Path(tempfile.mkdtemp(prefix="ratchet-agent-"))
    into.chmod(0o755)
    path = Path(spec)
    tree_hash = _from_directory(path, into) if path.is_dir() else _from_git(spec, repo_dir, into)
    for item in into.rglob("*"):  # readable by the sandbox user through the bind mount
        item.chmod(0o755 if item.is_dir() else 0o644)
    return AgentSource(spec, into, tree_hash)


def pack_agent(agent: AgentSource) -> bytes:
    """The agent's files as a tar, to send to a cluster node (see `unpack_agent`)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        archive.add(agent.directory / AGENT_PACKAGE, arcname=AGENT_PACKAGE,
                    filter=lambda info: None if _ignored(Path(info.name).name) else info)
    return out.getvalue()


def unpack_agent(data: bytes, tree_hash: str, into: Path) -> Path:
    """The directory holding the agent `data` packs, unpacked once under `into`; its content
    hash must be `tree_hash`, so a node runs exactly the controller's agent."""
    target = into / tree_hash
    if (target / AGENT_PACKAGE / "__main__.py").exists():
        return target
    into.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=into))
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            archive.extractall(staging, filter="data")
        got = _content_hash(staging / AGENT_PACKAGE)
        if got != tree_hash:
            raise AgentSourceError(f"the agent received is {got}, not {tree_hash}")
        for item in [staging, *staging.rglob("*")]:  # readable by the sandbox user
            item.chmod(0o755 if item.is_dir() else 0o644)
        try:
            staging.rename(target)
        except OSError:  # another worker on this node got there first: same content
            pass
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
