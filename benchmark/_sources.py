"""Fetch a task's source tree on the host, as a tar rooted at ``testbed/``.

Only the tree travels, never history: a git source is exported with ``git archive`` at the
base commit, an sdist is unpacked with its top directory stripped, a local directory is
copied without its ``.git``. Ownership is reset to root (files from an sdist keep their
author's uid, which makes git in the container refuse the repo as "dubious ownership").
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

import git

from benchmark._errors import InfraError
from benchmark._settings import cache_dir
from benchmark._task import GitSource, LocalSource, PypiSource, TaskSpec

__all__ = ["source_tree_tar", "build_requires"]

_ROOT = "testbed"
TREE_TIME = 946684800
"""2000-01-01: the time of every file and directory of a task's tree, in its tar and, after
the build, in its image (a file the build rewrote must not stand out)."""


def _add(archive: tarfile.TarFile, name: str, data: bytes | None, mode: int, *, link: str = ""):
    info = tarfile.TarInfo(f"{_ROOT}/{name}")
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = TREE_TIME  # fixed: the tree's tar is the same bytes every time
    if link:
        info.type, info.linkname = tarfile.SYMTYPE, link
        archive.addfile(info)
    elif data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(info)
    else:
        info.size, info.mode = len(data), (0o755 if mode & 0o111 else 0o644)
        archive.addfile(info, io.BytesIO(data))


def download_sdist(requirement: str) -> Path:
    """The sdist of a pinned release, downloaded once into the cache."""
    target = cache_dir() / "sdists" / requirement.replace("==", "-")
    found = [p for p in target.glob("*") if p.suffix in (".gz", ".zip", ".bz2")] if target.exists() else []
    if found:
        return found[0]
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", str(target), requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    found = [p for p in target.glob("*") if p.suffix in (".gz", ".zip", ".bz2")]
    if result.returncode != 0 or not found:
        raise InfraError(_sdist_missing(requirement, result.stderr))
    return found[0]


def _sdist_missing(requirement: str, stderr: str) -> str:
    """Why pip found no sdist, in words that name the fix."""
    name = requirement.split("==")[0]
    versions = re.search(r"\(from versions: ([^)]*)\)", stderr)
    if versions and versions.group(1).strip() == "none":
        return (f"PyPI has no sdist of {name!r}: the name is unknown, or the project publishes "
                "wheels only. Check the spelling; the forge needs a release with an sdist.")
    if versions:
        recent = [v.strip() for v in versions.group(1).split(",")][-5:]
        return (f"{name} has no release {requirement.partition('==')[2]!r} with an sdist; "
                f"recent releases with one: {', '.join(recent)}. Pin one of them.")
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "no sdist"
    return (f"could not download the sdist of {requirement} from PyPI ({last}). "
            "Check the network and that the release ships an sdist.")


def _sdist_members(path: Path):
    """(relative path, bytes or None for dirs, mode, symlink target) with the top dir cut."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                parts = PurePosixPath(info.filename).parts[1:]
                if parts and not info.is_dir():
                    yield "/".join(parts), archive.read(info), (info.external_attr >> 16), ""
        return
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts[1:]
            if not parts:
                continue
            name = "/".join(parts)
            if member.isdir():
                yield name, None, member.mode, ""
            elif member.issym():
                yield name, b"", member.mode, member.linkname
            elif member.isfile():
                yield name, archive.extractfile(member).read(), member.mode, ""


def _git_members(url: str, commit: str):
    clone = cache_dir() / "git" / hashlib.sha256(url.encode()).hexdigest()[:16]
    try:
        repo = git.Repo(clone) if clone.exists() else git.Repo.clone_from(url, clone, bare=True)
        try:
            repo.commit(commit)
        except (ValueError, git.BadName):
            repo.remote().fetch()
        buffer = io.BytesIO()
        repo.archive(buffer, treeish=commit, format="tar")
    except git.GitCommandError as exc:
        raise InfraError(f"could not export {url} at {commit}: {exc.stderr.strip()}") from exc
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as archive:
        for member in archive.getmembers():
            if member.isdir():
                yield member.name, None, member.mode, ""
            elif member.issym():
                yield member.name, b"", member.mode, member.linkname
            elif member.isfile():
                yield member.name, archive.extractfile(member).read(), member.mode, ""


def _local_members(root: Path):
    if not root.is_dir():
        raise InfraError(f"local task source {root} is not a directory")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        rel_dir = Path(dirpath).relative_to(root)
        for filename in sorted(filenames):
            full = Path(dirpath) / filename
            name = (rel_dir / filename).as_posix()
            if full.is_symlink():
                yield name, b"", 0o777, os.readlink(full)
            else:
                yield name, full.read_bytes(), full.stat().st_mode, ""


def _members(task: TaskSpec):
    source = task.source
    if isinstance(source, PypiSource):
        return _sdist_members(download_sdist(source.requirement))
    if isinstance(source, GitSource):
        return _git_members(source.url, task.base_commit)
    if isinstance(source, LocalSource):
        root = Path(source.path)
        if (root / ".git").exists() and task.base_commit:
            return _git_members(str(root), task.base_commit)
        return _local_members(root)
    raise InfraError(f"task {task.instance_id} has no source to build from")


def source_tree_tar(task: TaskSpec) -> tuple[bytes, dict[str, bytes]]:
    """The source tree as a tar under ``testbed/``, plus the files needed on the host to
    read its build requirements (``pyproject.toml``)."""
    buffer = io.BytesIO()
    meta: dict[str, bytes] = {}
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        _add(archive, "", None, 0o755)
        for name, data, mode, link in _members(task):
            if name == "pyproject.toml" and data is not None:
                meta[name] = data
            _add(archive, name, data, mode, link=link)
    return buffer.getvalue(), meta


# What a backend asks for on top of its ``requires`` to build an *editable* wheel (PEP 660
# ``get_requires_for_build_editable``): pip fetches it into the isolated build environment,
# which offline means it must already be in the wheelhouse.
EDITABLE_REQUIRES = (("hatchling", "editables"), ("pdm.backend", "editables"),
                     ("setuptools", "wheel"))


def build_requires(meta: dict[str, bytes]) -> list[str]:
    """What building the package needs (PEP 518) and what its backend asks for an editable
    install, so the wheelhouse carries them: the install runs with the network off."""
    default = ["setuptools>=40.8.0", "wheel"]
    raw = meta.get("pyproject.toml")
    if raw is None:
        return default
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return default
    system = data.get("build-system", {})
    requires = system.get("requires")
    if not isinstance(requires, list):
        return default
    backend = str(system.get("build-backend", ""))
    extra = [req for prefix, req in EDITABLE_REQUIRES if backend.startswith(prefix)]
    return [*requires, *(r for r in extra if r not in requires)]
