"""Images without a registry: base → environment → task, each tagged by a hash of its recipe.

- **base**: Debian bootstrapped with ``mmdebstrap --variant=minbase`` and ``docker import``
  (no registry needed). ``RATCHET_BASE_IMAGE`` names an existing image instead, on a machine
  that has one (it needs python3 with venv, git and patch).
- **environment**: a venv at ``/opt/venv`` with the task's Python deps, installed from a
  wheelhouse downloaded on the host, with the network off.
- **task**: the repository at ``/testbed`` as a fresh one-commit git repo (no history to
  mine, no file of the hidden test patch), installed into the venv.

A tag is a hash of everything that built it, so a changed recipe rebuilds by itself and a
second build of the same suite builds nothing. Build logs go to the cache's ``logs/``.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Protocol

from benchmark import _docker
from benchmark._errors import ImageBuildError, ImageMissing, InfraError, OfficialImageMissing
from benchmark._official import official_image
from benchmark._settings import cache_dir
from benchmark._sources import TREE_TIME, build_requires, source_tree_tar
from benchmark._task import TaskEnvironment, TaskSpec

__all__ = ["FetchedInputs", "ImageBuilder", "ImageInputs", "base_image_tag", "env_image_tag",
           "task_image_tag", "wheel_key"]

# Bump a layer's version when its recipe below changes: its tag (and those above) change.
BASE_RECIPE, ENV_RECIPE, TASK_RECIPE = "1", "3", "4"
BASE_SUITE = "bookworm"
BASE_PYTHON = "3.11"  # python3 of BASE_SUITE: wheels are downloaded for it
BASE_PACKAGES = ("python3", "python3-venv", "git", "ca-certificates", "patch")
VENV = "/opt/venv"
AGENT_VENV = "/opt/ratchet/venv"
# The agent's runtime, pinned by the trusted harness (an evolved agent cannot add packages:
# resolving them would run code from PyPI on the host). Installed once per environment image.
AGENT_RUNTIME = ("openai==3.54.0", "jinja2==3.1.6", "pyyaml==6.0.3")
SANDBOX_UID = 1000  # the non-root user that runs agents and tests; owns /testbed
SANDBOX_USER = f"{SANDBOX_UID}:{SANDBOX_UID}"
_PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Fixed identity and dates: the base commit of a tree is the same hash on every machine.
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "ratchet", "GIT_AUTHOR_EMAIL": "ratchet@localhost",
    "GIT_COMMITTER_NAME": "ratchet", "GIT_COMMITTER_EMAIL": "ratchet@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+0000",
}


_SAME_TIME = (f"find /testbed -path /testbed/.git -prune -o -print0 "
              f"| xargs -0 touch -h -d @{TREE_TIME}")


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _namespace() -> str:
    """Image repository prefix; ``RATCHET_IMAGE_NAMESPACE`` keeps a second set of images
    apart (a cold-build check on a machine that has the usual ones)."""
    return os.environ.get("RATCHET_IMAGE_NAMESPACE") or "ratchet"


def base_image_tag() -> str:
    override = os.environ.get("RATCHET_BASE_IMAGE")
    return override or f"{_namespace()}/base:{_key(BASE_RECIPE, BASE_SUITE, BASE_PACKAGES)}"


def env_image_tag(env: TaskEnvironment) -> str:
    return f"{_namespace()}/env:{_key(ENV_RECIPE, base_image_tag(), sorted(env.python_deps), AGENT_RUNTIME)}"


def task_image_tag(task: TaskSpec, *, same_times: bool = True) -> str:
    if task.image:
        return task.image
    if task.is_official:
        return official_image(task)
    assert task.source is not None and task.environment is not None
    key = _key(TASK_RECIPE, env_image_tag(task.environment), task.source.model_dump(), task.base_commit,
               task.environment.install, task.test_files)
    name = re.sub(r"[^a-z0-9_.-]+", "-", task.instance_id.lower())[:100].strip(".-")
    return f"{_namespace()}/task:{name}-{key}" + ("" if same_times else "-rawtimes")


def wheel_key(requirements: list[str]) -> str:
    return _key(sorted(requirements), BASE_PYTHON)


RECIPE_LABEL = "org.ratchet.recipe"
"""Each image says which recipe versions made it, so `ratchet gc` can tell stale images."""
RECIPES = {"base": BASE_RECIPE, "env": f"{BASE_RECIPE}.{ENV_RECIPE}",
           "task": f"{BASE_RECIPE}.{ENV_RECIPE}.{TASK_RECIPE}"}


class ImageInputs(Protocol):
    """Where a build gets what comes from the network: a task's source tree (with the
    requirements to build it) and wheelhouses. The default fetches them on this machine; a
    cluster node gets them from the controller instead (`harness.ray_executor`), so every
    node builds the same recipe from the same bytes and arrives at the same tag."""

    def source(self, task: TaskSpec) -> tuple[bytes, list[str]]: ...

    def wheels(self, requirements: list[str], target: Path) -> None:
        """Fill `target` with the wheels for `requirements`."""


class FetchedInputs:
    """Sources from PyPI, git or a local path and wheels from PyPI, fetched here."""

    def __init__(self, on_event: Callable[[str], None] = lambda message: None):
        self._on_event = on_event

    def source(self, task: TaskSpec) -> tuple[bytes, list[str]]:
        tree, meta = source_tree_tar(task)
        return tree, build_requires(meta)

    def wheels(self, requirements: list[str], target: Path) -> None:
        command = [sys.executable, "-m", "pip", "download", "-q",
                   "--disable-pip-version-check", "-d", str(target), *requirements]
        if f"{sys.version_info.major}.{sys.version_info.minor}" != BASE_PYTHON:
            command[4:4] = ["--python-version", BASE_PYTHON, "--only-binary", ":all:"]
        self._on_event(f"downloading wheels: {' '.join(requirements)}")
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            log = cache_dir() / "logs" / "wheelhouse" / f"{target.name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(result.stdout + result.stderr)
            raise ImageBuildError(f"the wheelhouse for {requirements}", log,
                                  "pip download failed; check the requirement pins")


def pack_directory(directory: Path) -> bytes:
    """A directory's files as a tar (names relative to it), to ship a wheelhouse."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for path in sorted(directory.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                archive.add(path, arcname=path.name)
    return out.getvalue()


@contextmanager
def _machine_lock(name: str) -> Iterator[None]:
    """Held across processes on this machine: two cluster workers on one node that need
    the same image build it once."""
    path = cache_dir() / "locks" / (re.sub(r"[^A-Za-z0-9_.-]", "_", name)[-150:] + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ImageBuilder:
    """Builds what is missing, once, even when many workers ask for the same image."""

    def __init__(self, on_event: Callable[[str], None] = lambda message: None,
                 inputs: ImageInputs | None = None, *, same_times: bool = True):
        """`same_times=False` leaves file times as the build made them (a separate tag):
        only the test that shows what they would give away uses it."""
        self._on_event = on_event
        self.same_times = same_times
        self.inputs = inputs or FetchedInputs(on_event)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._failed: dict[str, InfraError] = {}
        self.built: list[str] = []
        self.pulled: list[str] = []

    def _lock(self, tag: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(tag, threading.Lock())

    def _log_path(self, tag: str) -> Path:
        return cache_dir() / "logs" / "build" / (re.sub(r"[/:]", "_", tag) + ".log")

    def _ensure(self, tag: str, build: Callable[[], None], *, pull: bool = False) -> str:
        """`tag`, made by `build` (a build, or a pull) when absent: once, even when many
        workers ask; a failure is reported once, not retried per task."""
        doing, done, made = ("pulling", "pulled", self.pulled) if pull else ("building", "built", self.built)
        with self._lock(tag), _machine_lock(tag):
            if tag in self._failed:
                raise self._failed[tag]
            if _docker.image_exists(tag):
                return tag
            started = time.monotonic()
            self._on_event(f"{doing} {tag}")
            try:
                build()
            except (ImageBuildError, OfficialImageMissing) as exc:
                self._failed[tag] = exc
                raise
            made.append(tag)
            self._on_event(f"{done} {tag} in {time.monotonic() - started:.1f}s")
        return tag

    # base ---------------------------------------------------------------------------

    def ensure_base(self) -> str:
        tag = base_image_tag()
        if os.environ.get("RATCHET_BASE_IMAGE"):
            if not _docker.image_exists(tag):
                raise InfraError(
                    f"RATCHET_BASE_IMAGE={tag} is not present; pull or load it, or unset the "
                    "variable to bootstrap a base image with mmdebstrap."
                )
            return tag
        return self._ensure(tag, lambda: self._bootstrap_base(tag))

    def _bootstrap_base(self, tag: str) -> None:
        log = self._log_path(tag)
        self._on_event(f"bootstrapping Debian {BASE_SUITE} with mmdebstrap (about a minute, "
                       f"once per machine; log: {log})")
        log.parent.mkdir(parents=True, exist_ok=True)
        if shutil.which("mmdebstrap") is None:
            raise ImageBuildError(
                tag, log, "mmdebstrap is not installed: `apt-get install -y mmdebstrap`, or set "
                "RATCHET_BASE_IMAGE to an image that has python3, python3-venv, git and patch")
        tarball = cache_dir() / f"base-{tag.rpartition(':')[2]}.tar"
        command = ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                   BASE_SUITE, str(tarball)]
        with log.open("w") as handle:
            handle.write("$ " + shlex.join(command) + "\n")
            handle.flush()
            result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            tarball.unlink(missing_ok=True)
            raise ImageBuildError(tag, log, f"mmdebstrap exited with {result.returncode}")
        try:
            _docker.import_rootfs(tarball, tag, [f"ENV PATH={_PATH}", 'CMD ["bash"]',
                                                 f"LABEL {RECIPE_LABEL}={RECIPES['base']}"])
        finally:
            tarball.unlink(missing_ok=True)

    # wheelhouse -----------------------------------------------------------------------

    def wheelhouse(self, requirements: list[str]) -> Path:
        """Wheels for `requirements` and their dependencies, gathered once per machine."""
        target = cache_dir() / "wheelhouse" / wheel_key(requirements)
        done = target / ".complete"
        with self._lock(str(target)), _machine_lock(str(target)):
            if done.exists():
                return target
            target.mkdir(parents=True, exist_ok=True)
            if requirements:
                self.inputs.wheels(list(requirements), target)
            done.touch()
        return target

    # environment ----------------------------------------------------------------------

    def ensure_env(self, env: TaskEnvironment) -> str:
        base = self.ensure_base()
        tag = env_image_tag(env)

        def build() -> None:
            deps = list(env.python_deps)
            wheels = self.wheelhouse(deps)
            agent_wheels = self.wheelhouse(list(AGENT_RUNTIME))
            pip = "bin/pip install -q --no-index --disable-pip-version-check --find-links"
            script = f"""set -euo pipefail
python3 -m venv {VENV}
{f"{VENV}/{pip} /wheels {shlex.join(deps)}" if deps else ":"}
python3 -m venv {AGENT_VENV}
{AGENT_VENV}/{pip} /agent-wheels {shlex.join(AGENT_RUNTIME)}
echo 'sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:ratchet sandbox:/home/sandbox:/bin/bash' >> /etc/passwd
echo 'sandbox:x:{SANDBOX_UID}:' >> /etc/group
mkdir -p /home/sandbox && chown {SANDBOX_UID}:{SANDBOX_UID} /home/sandbox
# /testbed belongs to the sandbox user; root (the official harness) may use it too
git config --system --add safe.directory '*'
"""
            _docker.commit_script(
                base, script, tag=tag, log_path=self._log_path(tag),
                volumes={str(wheels): {"bind": "/wheels", "mode": "ro"},
                         str(agent_wheels): {"bind": "/agent-wheels", "mode": "ro"}},
                changes=[f"ENV PATH={_PATH}", f"ENV VIRTUAL_ENV={VENV}",
                         f"LABEL {RECIPE_LABEL}={RECIPES['env']}"],
            )

        return self._ensure(tag, build)

    def ensure_agent(self) -> str:
        """ratchet's own agent image (the environment layer with no task dependencies: the
        agent runtime and the sandbox user), where the agent runs when the task image is
        not ratchet's (`benchmark._agent_env`, the exec relay)."""
        return self.ensure_env(TaskEnvironment())

    # task -------------------------------------------------------------------------------

    def ensure_task(self, task: TaskSpec) -> str:
        """The task's image, built if missing; a prebuilt image that is absent is an error."""
        if task.is_official:  # the row's own image (5.x rows name one) or the official name
            return self.ensure_official(task)
        if task.image:
            if not _docker.image_exists(task.image):
                raise ImageMissing(task.image, task.instance_id)
            return task.image
        assert task.environment is not None and task.source is not None
        env_tag = self.ensure_env(task.environment)
        tag = task_image_tag(task, same_times=self.same_times)
        return self._ensure(tag, lambda: self._build_task(task, env_tag, tag))

    def ensure_official(self, task: TaskSpec) -> str:
        """An official row's eval image (its own ``image``, or the official name): present,
        or pulled (with progress) from the registry its name points at (`benchmark._official`)."""
        name = task.image or official_image(task)

        def pull() -> None:
            try:
                _docker.pull_image(name, self._on_event)
            except _docker.PullFailed as exc:
                raise OfficialImageMissing(name, task.instance_id, exc.reason) from None

        return self._ensure(name, pull, pull=True)

    def _build_task(self, task: TaskSpec, env_tag: str, tag: str) -> None:
        tree, requires = self.inputs.source(task)
        wheels = self.wheelhouse(requires)
        created = [p for p in task.test_files if f"--- a/{p}\n" not in task.test_patch]
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in _GIT_ENV.items())
        same_time = _SAME_TIME if self.same_times else ":"
        script = f"""set -euo pipefail
cd /testbed
if [ -s /ratchet-build/setup.patch ]; then git apply --whitespace=nowarn /ratchet-build/setup.patch; fi
for f in {shlex.join(created) if created else '""'}; do
  if [ -n "$f" ] && [ -e "$f" ]; then echo "a file the hidden test patch creates exists at base: $f"; exit 3; fi
done
rm -rf /ratchet-build
export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels PIP_DISABLE_PIP_VERSION_CHECK=1
{task.environment.install}
export {exports}
git init -q
# build leftovers (some sdists even ship bytecode) stay out of the base commit, or a diff
# of the tree would carry binary hunks that `git apply` rejects
printf '__pycache__/\\n*.py[cod]\\n*.egg-info/\\n' >> .git/info/exclude
find . -name __pycache__ -prune -exec rm -rf {{}} +
# one time for every file and directory: the file the setup patch rewrote, the directories
# it took test files from and what the install wrote must not stand out (`find -newer`)
{same_time}
git add -A
git commit -q --no-verify -m "base"
# warm bytecode (ignored by git): the first test run need not compile the package
python -m compileall -q -j 0 . >/dev/null 2>&1 || true
chown -R {SANDBOX_UID}:{SANDBOX_UID} /testbed
{same_time}
"""
        _docker.commit_script(
            env_tag, script, tag=tag, log_path=self._log_path(tag),
            archives=[("/", tree),
                      ("/", _docker.make_tar({"ratchet-build/setup.patch": task.source.setup_patch}))],
            volumes={str(wheels): {"bind": "/wheels", "mode": "ro"}},
            changes=["WORKDIR /testbed", f"LABEL ratchet.instance_id={task.instance_id}",
                     f"LABEL {RECIPE_LABEL}={RECIPES['task']}"],
        )
