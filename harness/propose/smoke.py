"""The harness's own smoke test of a candidate agent, run before it is evaluated.

The agent's self-check (``python -m agent_seed selfcheck``) lives inside the agent, so a
proposal that rewrites ``selfcheck.py`` switches off the check meant to catch it: an edit
that crashed at import once passed that way and was caught only by a paid evaluation. This
test lives in ``harness/``, which a proposal cannot edit, and asks the one thing every
evaluation needs, the same way an evaluation does: the candidate in a task sandbox
(`benchmark._agent_env.DockerEnvironment`, the task path) talks to a scripted model through a
gateway channel on a task of one step, and must

1. start (``python -m agent_seed run`` imports the candidate and exits 0, "submitted"),
2. take a step (a model call reaches the gateway),
3. write its trajectory (``trajectory.json``, read back by the harness), and
4. submit a patch holding the change the model asked for (a file with a fresh nonce, so
   only running the model's command makes it).

The model's replies follow the seed's protocol (one fenced bash block a reply; the submit
marker read from the candidate's ``config.yaml``, as the agent itself reads it). A failure is a
list of problems for the proposer to send back to the model, like any failed check; an
infrastructure failure (no image, Docker down) raises ``InfraError`` as the sandbox always
does. ``check_candidate`` is what the loop runs on each candidate: this test, then the
agent's own self-check as one more check.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import yaml

from benchmark import ImageBuilder, TaskSpec
from benchmark import docker_host as _docker
from benchmark import AGENT_VENV, SANDBOX_USER, DockerEnvironment
from harness.run.agent_source import AGENT_PACKAGE, resolve_agent
from harness.models.gateway import Gateway, OpenAIUpstream
from harness.models.scripted_model import Rule, Script, ScriptedModelServer

__all__ = ["SMOKE_FILE", "agent_selfcheck", "check_candidate", "smoke_script", "smoke_test"]

SMOKE_FILE = "RATCHET_SMOKE.txt"
DEFAULT_MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
_WHAT = ("the harness's smoke test (the candidate agent in a task sandbox, a scripted model, "
         "a task of one step)")


def _marker(agent_dir: Path) -> str:
    """The submit marker the candidate's config names (the seed's when it names none)."""
    try:
        config = yaml.safe_load((agent_dir / AGENT_PACKAGE / "config.yaml").read_text("utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return DEFAULT_MARKER
    marker = config.get("submit_marker") if isinstance(config, dict) else None
    return marker if isinstance(marker, str) and marker.strip() else DEFAULT_MARKER


def smoke_script(nonce: str, marker: str) -> Script:
    """Two turns: write the nonce to SMOKE_FILE, then submit."""
    return Script(rules=[Rule(replies=[
        f"I will write the file the task asks for.\n\n```bash\nprintf '%s\\n' '{nonce}' > "
        f"{SMOKE_FILE} && cat {SMOKE_FILE}\n```",
        f"The file is written; submitting.\n\n```bash\necho {marker}\n```",
    ])])


def smoke_test(agent_dir: Path, task: TaskSpec, builder: ImageBuilder, *,
               timeout_s: float = 180.0) -> list[str]:
    """Run the agent in ``agent_dir`` (holding ``agent_seed/``) in a sandbox of ``task``'s
    image on a one-step task; the problems found (``[]``: it works)."""
    nonce = f"ratchet-smoke-{secrets.token_hex(8)}"
    problem = (f"Create the file {SMOKE_FILE} at the repository root holding the single line "
               f"{nonce}, then submit. (A smoke test of the harness.)")
    smoke_task = task.model_copy(update={"problem_statement": problem})
    with tempfile.TemporaryDirectory(prefix="ratchet-smoke-") as logs, \
            ScriptedModelServer(smoke_script(nonce, _marker(agent_dir))) as server:
        gateway = Gateway(OpenAIUpstream(server.base_url, "scripted"), model="scripted",
                          log_dir=Path(logs))
        channel = gateway.open_channel("smoke", "smoke")
        try:
            run = DockerEnvironment(builder, timeout_s=timeout_s).run_agent(
                smoke_task, agent_dir, socket_path=channel.socket_path, model="scripted")
        finally:
            gateway.close_channel(channel)
        calls = len(channel.trajectory.read_text("utf-8").splitlines()) \
            if channel.trajectory.is_file() else 0
    tail = "\n".join(run.log.strip().splitlines()[-30:])
    problems = []
    if run.timed_out or run.exit_code != 0:
        problems.append(f"`python -m agent_seed run` exited {run.exit_code}"
                        f"{' (timed out)' if run.timed_out else ''} where a submitted run exits 0")
    if calls == 0:
        problems.append("the agent made no model call (it must take a step)")
    if run.trajectory is None:
        problems.append("the agent wrote no trajectory (trajectory.json in its --out directory)")
    if nonce not in run.patch:
        problems.append(f"the agent's patch does not hold the {SMOKE_FILE} the model asked for "
                        "(it must run the model's command and submit)")
    if not problems:
        return []
    return [f"{_WHAT} failed: " + "; ".join(problems) + (f"\nthe end of its log:\n{tail}" if tail else "")]


def agent_selfcheck(agent_dir: Path, task: TaskSpec, builder: ImageBuilder) -> list[str]:
    """The agent's own checks (``python -m agent_seed selfcheck``), in a sandbox of
    ``task``'s image, or ratchet's agent image where the task's is not ratchet's (it is
    model-written code)."""
    run = _docker.run_script(
        builder.ensure_agent() if task.is_official else builder.ensure_task(task), f"cd /agent && {AGENT_VENV}/bin/python -m agent_seed selfcheck",
        timeout_s=300, user=SANDBOX_USER,
        volumes={str(agent_dir): {"bind": "/agent", "mode": "ro"}},
        environment={"HOME": "/home/sandbox"})
    if run.exit_code == 0:
        return []
    return [f"`python -m agent_seed selfcheck` failed (exit {run.exit_code}):\n"
            + "\n".join(run.log.strip().splitlines()[-30:])]


def check_candidate(worktree: Path, task: TaskSpec, builder: ImageBuilder, *,
                    smoke: bool = True) -> list[str]:
    """What the loop checks a candidate with before evaluating it: the harness's smoke test
    (``smoke``; off only to show what it catches), then the agent's own self-check."""
    copy = resolve_agent(str(worktree))
    try:
        problems = smoke_test(copy.directory, task, builder) if smoke else []
        return problems or agent_selfcheck(copy.directory, task, builder)
    finally:
        shutil.rmtree(copy.directory, ignore_errors=True)
