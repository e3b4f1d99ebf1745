"""Run an agent on a task in a fresh sandbox and collect its patch.

The agent is code a model wrote: it only ever runs here, in a container of the task image
with the network off, as the non-root sandbox user, all capabilities dropped, under memory,
pids and wall-clock limits. It sees:

- ``/testbed``: the task repo, a one-commit git repo (no history, no hidden tests);
- ``/agent``: its own source, bind-mounted read-only;
- ``/opt/ratchet/venv``: its runtime, an image layer;
- ``/run/ratchet/llm.sock``: the gateway, its only way out; no credential is passed in;
- ``/run/ratchet/task/problem.md``: the problem statement.

The patch is ``git diff`` of /testbed (new files included), taken in the same container
after the agent exits, and read back with the agent's own trajectory file.
"""

from __future__ import annotations

import io
import json
import secrets
import shlex
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from benchmark import _docker
from benchmark._images import AGENT_VENV, SANDBOX_UID, SANDBOX_USER, ImageBuilder
from benchmark._task import TaskSpec

__all__ = ["REPO_IN_SANDBOX", "SOCKET_IN_SANDBOX", "AgentRun", "DockerEnvironment", "Environment"]

SOCKET_IN_SANDBOX = "/run/ratchet/llm.sock"
REPO_IN_SANDBOX = "/work/agent-repo"
"""Where a ``repo_archive`` given to :meth:`DockerEnvironment.run_agent` is unpacked."""
_PROBLEM = "/run/ratchet/task/problem.md"
_PATCH_OUT = "/tmp/ratchet-patch.diff"
_TRAJECTORY_OUT = "/tmp/agent-out/trajectory.json"


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
        image = self.builder.ensure_task(task)
        repo = "/testbed" if repo_archive is None else REPO_IN_SANDBOX
        archives = [("/", _docker.make_tar({_PROBLEM: task.problem_statement}))]
        if repo_archive is not None:
            archives.append(("/", _rehome_repo(repo_archive, REPO_IN_SANDBOX)))
        marker = f"RATCHET-AGENT-EXIT-{secrets.token_hex(6)}"
        inner = max(10, int(self.timeout_s) - 30)  # leave time to collect the patch
        script = f"""set -u
cd /agent
timeout -k 5 {inner} {AGENT_VENV}/bin/python -m agent_seed run --problem {_PROBLEM} \\
    --repo {repo} --out {shlex.quote(str(Path(_TRAJECTORY_OUT).parent))}
echo "{marker}: $?"
cd {repo}
git add -A >/dev/null 2>&1
git -c core.quotepath=off diff --cached --no-color --no-ext-diff --no-textconv --binary HEAD > {_PATCH_OUT}
"""
        run = _docker.run_script(
            image, script,
            archives=archives,
            timeout_s=self.timeout_s, limits=self.limits, user=SANDBOX_USER,
            volumes={str(agent_dir.resolve()): {"bind": "/agent", "mode": "ro"},
                     str(socket_path): {"bind": SOCKET_IN_SANDBOX, "mode": "rw"}},
            environment={"RATCHET_LLM_SOCKET": SOCKET_IN_SANDBOX, "RATCHET_MODEL": model,
                         "HOME": "/home/sandbox", "PYTHONDONTWRITEBYTECODE": "1"},
            fetch=[_PATCH_OUT, _TRAJECTORY_OUT],
        )
        exit_code = -1
        for line in run.log.splitlines():
            if line.startswith(marker + ":"):
                exit_code = int(line.split(":", 1)[1])
        trajectory = None
        raw = run.files.get(_TRAJECTORY_OUT)
        if raw:
            try:
                trajectory = json.loads(raw)
            except json.JSONDecodeError:
                trajectory = None
        patch = (run.files.get(_PATCH_OUT) or b"").decode("utf-8", "replace")
        return AgentRun(task.instance_id, patch, exit_code, run.timed_out or exit_code == 124,
                        run.seconds, run.log, trajectory)
