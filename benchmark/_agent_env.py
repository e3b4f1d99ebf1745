"""Run an agent on a task in a fresh sandbox and collect its patch.

The agent is code a model wrote: it only ever runs here, in a container of the task image
with the network off, as the non-root sandbox user, all capabilities dropped, under memory,
pids and wall-clock limits. It sees:

- ``/testbed``: the task repo, a one-commit git repo (no history, no hidden tests);
- ``/agent``: its own source, bind-mounted read-only;
- ``/opt/ratchet/venv``: its runtime, an image layer;
- ``/run/ratchet/llm.sock``: the gateway, its only way out; no credential is passed in;
- ``/run/ratchet/task/problem.md``: the problem statement.

The patch leaves the sandbox only through the harness: once the agent's process exits (or
is killed at its time limit), every process of the sandbox user is killed, and the harness
takes ``git diff`` itself, as root, through the Docker API, reading git's output straight
from the exec: no path the agent could have pre-created (read-only, a symlink, a FIFO) is
ever read or written. Git runs on a git directory of the harness's own, made before the
agent started in a root-only directory (only the objects are shared), with hooks, fsmonitor,
external diff and textconv off and no system or global config, so nothing the agent wrote
into ``.git/`` (config, hooks, HEAD, the index, info/exclude) steers the diff. What the
harness cannot read back (an unreadable file, a patch past its size limit) is the agent's
failure, with the reason, never an internal error.
"""

from __future__ import annotations

import io
import json
import secrets
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from benchmark import _docker
from benchmark._errors import InfraError
from benchmark._exec_relay import EXEC_SOCKET_ENV, ExecRelay
from benchmark._images import AGENT_VENV, SANDBOX_UID, SANDBOX_USER, ImageBuilder
from benchmark._official import official_spec
from benchmark._task import TaskSpec

__all__ = ["REPO_IN_SANDBOX", "SOCKET_IN_SANDBOX", "AgentRun", "DockerEnvironment", "Environment"]

SOCKET_IN_SANDBOX = "/run/ratchet/llm.sock"
EXEC_SOCKET_IN_SANDBOX = "/run/ratchet/exec.sock"
"""The exec relay's socket in the agent's container, when the task image is not ratchet's."""
REPO_IN_SANDBOX = "/work/agent-repo"
"""Where a ``repo_archive`` given to :meth:`DockerEnvironment.run_agent` is unpacked."""
_PROBLEM = "/run/ratchet/task/problem.md"
_SCRIPT = "/run/ratchet/task/run.sh"
_AGENT_OUT = "/tmp/agent-out"
_TRAJECTORY_OUT = f"{_AGENT_OUT}/trajectory.json"
_AGENT_LOG = f"{_AGENT_OUT}/agent.log"
PATCH_LIMIT = 32 * 1024 * 1024
"""The largest patch the harness takes (bytes); a larger one is the agent's failure."""
OUTPUT_LIMIT = 8 * 1024 * 1024
"""The most of the agent's own log and trajectory file read back (bytes)."""
_GIT = ("git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c 'safe.directory=*' "
        "-c core.quotepath=off -c diff.external= -c core.attributesFile=/dev/null")
_GIT_ENV = "export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_OPTIONAL_LOCKS=0 GIT_PAGER=cat"


def prepare_script(repo: str, state: str) -> str:
    """Root, before the agent starts: the base tree and a git dir of the harness's own in
    `state` (mode 700), sharing only the repo's objects; the repo's excludes are copied
    while they are still the image's."""
    return f"""set -eu
umask 077
{_GIT_ENV} HOME={state}
mkdir -m 700 {state}
{_GIT} --git-dir={repo}/.git rev-parse --verify 'HEAD^{{tree}}' > {state}/base
{_GIT} init -q --bare {state}/git
{_GIT} --git-dir={state}/git config core.bare false
echo {repo}/.git/objects > {state}/git/objects/info/alternates
cp {repo}/.git/info/exclude {state}/git/info/exclude 2>/dev/null || true
"""


def collect_script(repo: str, state: str, limit: int = PATCH_LIMIT) -> str:
    """Root, after every agent process is gone: ``git diff`` of `repo` against the base,
    new files included, on stdout (at most `limit` + 1 bytes); a failure says why on stderr."""
    fail = lambda code, what: (f'|| {{ echo "{what} failed: $(head -c 2000 {state}/err)" >&2; '
                               f"exit {code}; }}")
    return f"""set -u -o pipefail
{_GIT_ENV} HOME={state} GIT_DIR={state}/git GIT_INDEX_FILE={state}/index GIT_WORK_TREE={repo}
cd {repo} || {{ echo "the repository {repo} is gone" >&2; exit 3; }}
{_GIT} read-tree "$(cat {state}/base)" 2>{state}/err {fail(4, "git read-tree")}
{_GIT} add -A >/dev/null 2>{state}/err {fail(5, "git add")}
{_GIT} diff --cached --no-color --no-ext-diff --no-textconv --binary "$(cat {state}/base)" \
    2>{state}/err | head -c {limit + 1}
[ "${{PIPESTATUS[0]}}" = 0 ] {fail(6, "git diff")}
"""


def _rehome_repo(archive: bytes, target: str) -> bytes:
    """`archive` (a tar whose top directory is a repo) re-rooted at `target` and owned by the
    sandbox user, for put_archive at ``/``; only files, directories and symlinks are kept,
    and a member naming an absolute path or ``..`` is an error."""
    parts = PurePosixPath(target.strip("/")).parts
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as source, \
            tarfile.open(fileobj=out, mode="w") as sink:
        for depth in range(1, len(parts) + 1):  # the parents, root's; the repo dir, the sandbox's
            info = tarfile.TarInfo("/".join(parts[:depth]))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            info.uid = info.gid = SANDBOX_UID if depth == len(parts) else 0
            sink.addfile(info)
        for member in source.getmembers():
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts:
                raise ValueError(f"repo archive member {member.name!r} leaves its directory")
            if len(name.parts) < 2 or not (member.isfile() or member.isdir() or member.issym()):
                continue  # the top directory itself (added above), devices, hard links
            member.name = "/".join(parts + name.parts[1:])
            member.uid = member.gid = SANDBOX_UID
            member.uname = member.gname = ""
            sink.addfile(member, source.extractfile(member) if member.isfile() else None)
    return out.getvalue()


def finish_command(limit: int = OUTPUT_LIMIT) -> list[str]:
    """Run as the sandbox user once the agent is done: kill every other process of that
    user (``kill -1`` spares the caller, PID 1 and the root keeper; twice, for what was
    forking), then print the trajectory file on stdout and the tail of the agent's log on
    stderr, at most `limit` bytes each, and only when they are regular files (a FIFO, a
    dangling symlink or a directory gives nothing)."""
    return ["sh", "-c", 'kill -9 -1 2>/dev/null; kill -9 -1 2>/dev/null; '
            f'[ -f "$1" ] && head -c {limit} "$1"; [ -f "$2" ] && tail -c {limit} "$2" >&2; exit 0',
            "-", _TRAJECTORY_OUT, _AGENT_LOG]


@dataclass
class AgentRun:
    """What one agent run left behind. `trajectory` is the agent's own (untrusted) record;
    the trajectory of record is the gateway's log."""

    instance_id: str
    patch: str
    exit_code: int
    timed_out: bool
    seconds: float
    log: str
    trajectory: dict[str, Any] | None = None
    error: str | None = None
    problems: list[str] = field(default_factory=list)
    """Why the patch could not be taken (the agent's failure: it is graded as no change)."""
    relayed_commands: int | None = None
    """Commands run through the exec relay (None: the agent ran in the task's container)."""

    @property
    def steps(self) -> int:
        if not self.trajectory:
            return 0
        return int(self.trajectory.get("steps") or sum(
            1 for m in self.trajectory.get("messages", []) if m.get("role") == "assistant"))


class Environment(Protocol):
    """Where an agent runs on a task: a Docker sandbox on this machine (on a cluster, the
    node's machine; `harness.ray_executor`)."""

    def run_agent(self, task: TaskSpec, agent_dir: Path, *, socket_path: Path,
                  model: str) -> AgentRun: ...


@dataclass
class DockerEnvironment:
    builder: ImageBuilder
    limits: _docker.SandboxLimits = field(default_factory=_docker.SandboxLimits)
    timeout_s: float = 1800.0
    """Wall-clock limit for one agent run, model time included."""

    def run_agent(self, task: TaskSpec, agent_dir: Path, *, socket_path: Path,
                  model: str, repo_archive: bytes | None = None) -> AgentRun:
        """`agent_dir` holds the agent package (``agent_dir/agent_seed/``).

        `repo_archive`, a tar whose top directory is a git repo, gives the agent that repo
        instead of /testbed: it is unpacked at ``/work/agent-repo``, owned by the sandbox
        user, and the patch is the ``git diff`` there (the self proposer's "improve this
        agent" run). None (the default) is the task repo at /testbed.
        """
        if task.is_official and repo_archive is None:  # the task image is not ratchet's
            return self._run_relayed(task, agent_dir, socket_path=socket_path, model=model)
        started = time.monotonic()
        # an archive's repo needs no task image: an official one lacks the agent's runtime
        image = (self.builder.ensure_agent() if task.is_official
                 else self.builder.ensure_task(task))
        repo = "/testbed" if repo_archive is None else REPO_IN_SANDBOX
        state = f"/run/ratchet-harness-{secrets.token_hex(8)}"
        inner = max(10, int(self.timeout_s) - 30)  # leave time to collect the patch
        script = _agent_script(inner, repo)
        archives = [("/", _docker.make_tar({_PROBLEM: task.problem_statement,
                                            _SCRIPT: script}))]
        if repo_archive is not None:
            archives.append(("/", _rehome_repo(repo_archive, REPO_IN_SANDBOX)))
        with _docker.sandbox(
            image, archives=archives, limits=self.limits,
            volumes={str(agent_dir.resolve()): {"bind": "/agent", "mode": "ro"},
                     str(socket_path): {"bind": SOCKET_IN_SANDBOX, "mode": "rw"}},
            environment={"RATCHET_LLM_SOCKET": SOCKET_IN_SANDBOX, "RATCHET_MODEL": model,
                         "HOME": "/home/sandbox", "PYTHONDONTWRITEBYTECODE": "1"},
        ) as box:
            prepared = box.capture(["bash", "-c", prepare_script(repo, state)])
            if prepared.exit_code != 0:
                raise InfraError(f"could not prepare the sandbox's repository {repo} in "
                                 f"{image}: {prepared.stderr.decode(errors='replace')[-500:]}")
            exit_code, timed_out = box.run(["bash", _SCRIPT], user=SANDBOX_USER,
                                           timeout_s=inner + 15)
            # nothing of the agent's runs any more while its patch is taken
            finished = box.capture(finish_command(), user=SANDBOX_USER)
            collected = box.capture(["bash", "-c", collect_script(repo, state)])
        return _agent_run(task, started, exit_code, timed_out, finished, collected)

    def _run_relayed(self, task: TaskSpec, agent_dir: Path, *, socket_path: Path,
                     model: str) -> AgentRun:
        """Two containers, both locked: the task's own image (network none, every capability
        dropped but root's CHOWN to give /testbed to the sandbox user, nothing of the agent
        in it) and ratchet's agent image (also a read-only root, ``/agent`` read-only, the
        gateway socket and the exec relay's), whose commands the relay runs in the first."""
        started = time.monotonic()
        image, agent_image = self.builder.ensure_task(task), self.builder.ensure_agent()
        repo, state = "/testbed", f"/run/ratchet-harness-{secrets.token_hex(8)}"
        inner = max(10, int(self.timeout_s) - 30)
        script = _agent_script(inner, repo)
        give = (f"chown -R {SANDBOX_USER} {repo} && mkdir -p /home/sandbox && "
                f"chown {SANDBOX_USER} /home/sandbox\n")
        with tempfile.TemporaryDirectory(prefix="ratchet-task-") as shared, \
                _docker.sandbox(image, limits=self.limits, cap_add=["CHOWN"]) as task_box:
            Path(shared).chmod(0o755)
            problem = Path(shared, "problem.md")
            problem.write_text(task.problem_statement, encoding="utf-8")
            problem.chmod(0o644)
            prepared = task_box.capture(["bash", "-c", give + prepare_script(repo, state)])
            if prepared.exit_code != 0:
                raise InfraError(f"could not prepare the repository {repo} in {image}: "
                                 f"{prepared.stderr.decode(errors='replace')[-500:]}")
            relay = ExecRelay(task_box, user=SANDBOX_USER, environment={"HOME": "/home/sandbox"},
                              setup="\n".join(official_spec(task).setup), max_timeout_s=inner)
            with relay, _docker.sandbox(
                agent_image, limits=self.limits, read_only=True,
                tmpfs={"/tmp": "rw,nosuid,nodev,size=512m"},
                volumes={str(agent_dir.resolve()): {"bind": "/agent", "mode": "ro"},
                         str(socket_path): {"bind": SOCKET_IN_SANDBOX, "mode": "rw"},
                         str(relay.socket_path): {"bind": EXEC_SOCKET_IN_SANDBOX, "mode": "rw"},
                         shared: {"bind": str(PurePosixPath(_PROBLEM).parent), "mode": "ro"}},
                environment={"RATCHET_LLM_SOCKET": SOCKET_IN_SANDBOX, "RATCHET_MODEL": model,
                             EXEC_SOCKET_ENV: EXEC_SOCKET_IN_SANDBOX, "HOME": "/tmp",
                             "PYTHONDONTWRITEBYTECODE": "1"},
            ) as agent_box:
                exit_code, timed_out = agent_box.run(["bash", "-c", script], user=SANDBOX_USER,
                                                     timeout_s=inner + 15)
                finished = agent_box.capture(finish_command(), user=SANDBOX_USER)
            # the relay is closed: nothing of the agent's runs in the task container any more
            task_box.kill_user(SANDBOX_USER)
            collected = task_box.capture(["bash", "-c", collect_script(repo, state)])
        if relay.infra_error:
            raise InfraError(f"the exec relay could not run the agent's command in {image}: "
                             f"{relay.infra_error}")
        run = _agent_run(task, started, exit_code, timed_out, finished, collected)
        run.relayed_commands = relay.commands
        return run


def _agent_script(inner: int, repo: str) -> str:
    """The agent's command line, its output in its log, under the run's time limit."""
    return f"""set -u
mkdir -p {_AGENT_OUT}
exec > {_AGENT_LOG} 2>&1
cd /agent
exec timeout -k 5 {inner} {AGENT_VENV}/bin/python -m agent_seed run --problem {_PROBLEM} \
    --repo {repo} --out {_AGENT_OUT}
"""


def _agent_run(task: TaskSpec, started: float, exit_code: int, timed_out: bool,
               finished: "_docker.ExecResult", collected: "_docker.ExecResult") -> AgentRun:
    """The run's record: the agent's log and trajectory (`finish_command`'s output) and the
    patch the harness collected."""
    raw, log = finished.stdout, finished.stderr.decode("utf-8", "replace")
    patch, problems = _patch_of(collected)
    for problem in problems:
        log += f"\n[ratchet] {problem}\n"
    trajectory = None
    if raw:
        try:
            trajectory = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            trajectory = None
    return AgentRun(task.instance_id, patch, exit_code, timed_out or exit_code == 124,
                    time.monotonic() - started, log, trajectory
                    if isinstance(trajectory, dict) else None, problems=problems)


def _patch_of(collected: "_docker.ExecResult") -> tuple[str, list[str]]:
    """The patch from the collecting exec's output, or "" and why not (the agent's doing)."""
    if len(collected.stdout) > PATCH_LIMIT:
        return "", [f"the patch could not be taken: it is larger than {PATCH_LIMIT} bytes"]
    if collected.exit_code != 0:
        why = collected.stderr.decode("utf-8", "replace").strip()[-1000:] or f"exit {collected.exit_code}"
        return "", [f"the patch could not be taken: {why}"]
    return collected.stdout.decode("utf-8", "replace"), []
