"""The self proposer: the parent agent improves itself (the Darwin Gödel Machine's
self-referential mode).

One :meth:`SelfProposer.propose` call::

    a fresh one-commit git repo: agent_seed/ (the parent's source), .ratchet/evidence.md
    (its failures), .ratchet/TASK.md (the task), as a tar
    └─ up to max_attempts times:
         run the parent agent itself in a sandbox (DockerEnvironment.run_agent with
         repo_archive=...) on "improve this coding agent" → its git diff
         → apply it to a scratch copy of the repo on the host (git apply: data only)
         → keep changes under agent_seed/, drop .ratchet/ and bytecode, reject the rest
         → copy them into the worktree → check_worktree → extra_check
         on a failure: put the agent dir back byte for byte; the next attempt's task says
         why the last one was rejected

It has :class:`~harness.propose.meta.MetaProposer`'s interface: ``propose(worktree, evidence,
agent_files) -> ProposalResult``. Everything model-written (the agent and whatever it runs)
runs in the sandbox; the host only applies the resulting patch as data, and never runs
anything of the agent. As with the meta proposer, a patch that never becomes a valid change
is ``ProposalResult(valid=False)``, while a model the agent could not reach (the gateway
refused, or no call got an answer) raises :class:`~harness.propose.meta.ModelCallFailed`, and
an infrastructure failure (Docker) raises what the environment raised; the worktree is put
back either way.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from benchmark import AGENT_VENV, REPO_IN_SANDBOX, AgentRun, DockerEnvironment, TaskSpec
from harness.run.agent_source import resolve_agent
from harness.propose.checks import ProposerLimits
from harness.propose.edits import Proposal, Snapshot, WholeFile
from harness.propose.evidence import Evidence, load_gateway_trajectory, message_text
from harness.models.gateway import Gateway
from harness.models.ledger import Usage
from harness.propose.meta import AttemptRecord, ModelCallFailed, ProposalResult
from harness.errors import AttemptFailed

__all__ = ["DEFAULT_DIAGNOSIS", "SelfProposer", "diagnosis_of", "render_evidence", "task_text"]

DEFAULT_DIAGNOSIS = "self-proposed change"
"""The diagnosis when the agent's last replies hold no prose."""
EVIDENCE_FILE = ".ratchet/evidence.md"
TASK_FILE = ".ratchet/TASK.md"
MAX_DIAGNOSIS_CHARS = 4000
_FENCED = re.compile(r"(```|~~~)[^\n]*\n.*?(?:\n\1|\Z)", re.DOTALL)
_GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_AUTHOR_NAME": "ratchet", "GIT_AUTHOR_EMAIL": "ratchet@localhost",
            "GIT_COMMITTER_NAME": "ratchet", "GIT_COMMITTER_EMAIL": "ratchet@localhost",
            "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"}


def _fence(text: str) -> str:
    """``text`` in a code fence longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text.rstrip()}\n{fence}"


def render_evidence(evidence: Evidence) -> str:
    """The evidence pack as markdown: the summary, then each shown failure's problem
    statement, the tail of the agent's conversation and the tail of the grader's log."""
    lines = ["# Evidence: how this agent did on its last evaluation", "", evidence.summary + ".", ""]
    if evidence.failed_ids:
        lines += ["Failed tasks: " + ", ".join(evidence.failed_ids), ""]
    if not evidence.failures:
        lines += ["No failed task is shown: look for a general improvement.", ""]
    for number, failure in enumerate(evidence.failures, 1):
        lines += [f"## Failure {number}: {failure.instance_id}", "", "### Problem statement", "",
                  _fence(failure.problem_statement), "",
                  "### The end of the agent's conversation"
                  + (f" ({failure.omitted_messages} earlier messages, the system prompt "
                     "included, left out)" if failure.omitted_messages else ""), ""]
        for message in failure.messages:
            lines += [f"#### {message['role']}", "", _fence(message["content"]), ""]
        lines += ["### The grader's test output (its end)", "",
                  _fence(failure.test_output or "(empty)"), ""]
    return "\n".join(lines)


def task_text(allowed_dir: str = "agent_seed", repo: str = REPO_IN_SANDBOX,
              rejected: str | None = None) -> str:
    """The problem statement of the "improve this agent" run (also ``.ratchet/TASK.md``)."""
    text = f"""Improve this coding agent.

The repository at {repo} holds the source of a coding agent, the very agent you are: its
package is under {allowed_dir}/ (its code, config.yaml with its prompt templates, and
lessons.md, whose text is added to its system prompt). It was evaluated on coding tasks.
The evidence of its failures (each task's problem statement, the end of the agent's
conversation and the grader's test output) is in {EVIDENCE_FILE}; this task is also in
{TASK_FILE}.

Your task: read the evidence, find one cause of failure, and make ONE concrete, minimal
improvement to the files under {allowed_dir}/ that would make the agent resolve more tasks
(a clearer prompt, a lesson, a fix of its code, a better limit).

Rules:
- Change only files under {allowed_dir}/. Do not touch .ratchet/ (changes there are
  discarded); a change anywhere else rejects the whole proposal.
- Keep the agent working: its Python files must compile, config.yaml must stay valid
  YAML, its templates valid jinja2, and its self-check must pass. Run it after your change:
  cd {repo} && {AGENT_VENV}/bin/python -m {allowed_dir} selfcheck
- Remove any scratch files you created; add no tests.
- In the reply that submits, write a short diagnosis before the command: its first line
  is a one-line summary of your change, then say why it should help.
"""
    if rejected:
        text += ("\nAn earlier attempt at this task was rejected; the repository is fresh "
                 f"again. Why it was rejected:\n\n{_fence(rejected)}\n")
    return text


def diagnosis_of(messages: list[dict[str, Any]]) -> str:
    """The prose of the agent's last assistant message that has any (the submitting reply,
    else the one before it...), fenced blocks removed; :data:`DEFAULT_DIAGNOSIS` if none."""
    for message in reversed(messages):
        if message.get("role") != "assistant":
            continue
        prose = _FENCED.sub("", message_text(message)).strip()
        if prose:
            return prose[:MAX_DIAGNOSIS_CHARS]
    return DEFAULT_DIAGNOSIS


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """git on the host, with no user or system config (no hooks, filters or aliases)."""
    return subprocess.run(["git", "-c", "core.hooksPath=" + os.devnull, "-c", "core.autocrlf=false",
                           "-c", "core.symlinks=true", *args],
                          cwd=repo, env={**os.environ, **_GIT_ENV}, capture_output=True,
                          check=check, timeout=120)


class SelfProposer:
    """Proposes one change of the agent by running the agent itself on "improve this agent"."""

    def __init__(self, environment: DockerEnvironment, gateway: Gateway, image_task: TaskSpec, *,
                 max_attempts: int = 1,
                 extra_check: Callable[[Path], list[str]] | None = None,
                 allowed_dir: str = "agent_seed",
                 channel_key: str = "self-propose",
                 generation: str = "self") -> None:
        self.limits = ProposerLimits(max_attempts, allowed_dir, extra_check)
        self.environment, self.gateway, self.image_task = environment, gateway, image_task
        """The agent runs in a container of ``image_task``'s image (its repo is not used)."""
        self.channel_key, self.generation = channel_key, generation
        """The gateway channel of the agent's runs: its ledger key and generation (the loop
        would pass e.g. ``gen-0007.self`` and ``gen-0007``)."""

    # -- the repo the agent works on ---------------------------------------------------

    def build_repo(self, worktree: Path, evidence: Evidence, into: Path) -> Path:
        """A fresh one-commit git repo at ``into``: the worktree's agent dir, the evidence and
        the task."""
        source = worktree / self.limits.allowed_dir
        if not source.is_dir():
            raise ValueError(f"{worktree} has no {self.limits.allowed_dir}/ directory")
        into.mkdir(parents=True)
        shutil.copytree(source, into / self.limits.allowed_dir, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
        (into / ".ratchet").mkdir()
        (into / EVIDENCE_FILE).write_text(render_evidence(evidence), encoding="utf-8")
        (into / TASK_FILE).write_text(task_text(self.limits.allowed_dir), encoding="utf-8")
        _git(into, "init", "-q")
        with (into / ".git" / "info" / "exclude").open("a", encoding="utf-8") as exclude:
            exclude.write("__pycache__/\n*.py[cod]\n")
        _git(into, "add", "-A")
        _git(into, "commit", "-q", "--no-verify", "-m", "the agent's source and its evidence")
        return into

    @staticmethod
    def archive(repo: Path) -> bytes:
        """A tar of ``repo`` whose top directory is the repo (``repo/...``)."""
        path = repo.parent / "repo.tar"
        with tarfile.open(path, "w") as tar:
            tar.add(repo, arcname="repo")
        return path.read_bytes()

    # -- proposing ---------------------------------------------------------------------

    def propose(self, worktree: Path, evidence: Evidence,
                agent_files: Mapping[str, str] | None = None) -> ProposalResult:
        """Run the parent agent on its own source, apply its patch and check it; the
        worktree's agent dir holds the valid proposal's changes afterwards, or is exactly
        as before. ``agent_files`` is unused: the agent reads its own source in the repo."""
        del agent_files
        snapshot = Snapshot.take(worktree / self.limits.allowed_dir)
        scratch = Path(tempfile.mkdtemp(prefix="ratchet-self-"))
        parent = resolve_agent(str(worktree))  # the parent as it is now: a private copy
        attempts: list[AttemptRecord] = []
        messages: list[dict[str, str]] = []
        usage = Usage()
        succeeded = False
        try:
            repo = self.build_repo(worktree, evidence, scratch / "repo")
            archive = self.archive(repo)
            rejected: str | None = None
            for number in range(1, self.limits.max_attempts + 1):
                run, conversation, call_usage = self._run(parent.directory, archive, rejected)
                usage.add(call_usage)
                messages += [{"role": "ratchet", "content": f"attempt {number}"}, *conversation]
                diagnosis = diagnosis_of(conversation or list((run.trajectory or {}).get(
                    "messages") or []))
                try:
                    changed, edits = self._attempt(worktree, repo, run.patch)
                except AttemptFailed as failed:
                    snapshot.restore()
                    attempts.append(AttemptRecord(number, run.patch, str(failed), failed.stage,
                                                  failed.changed, call_usage))
                    messages.append({"role": "ratchet",
                                     "content": f"rejected ({failed.stage}): {failed}"})
                    rejected = f"{failed.stage}: {failed}"
                    continue
                attempts.append(AttemptRecord(number, run.patch, None, None, tuple(changed),
                                              call_usage))
                headline = next((line.strip() for line in diagnosis.splitlines() if line.strip()),
                                DEFAULT_DIAGNOSIS)[:200]
                succeeded = True
                return ProposalResult(True, Proposal(diagnosis, headline, edits), attempts, None,
                                      usage, changed, messages)
        finally:
            if not succeeded:
                snapshot.restore()
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.rmtree(parent.directory, ignore_errors=True)
        last = attempts[-1]
        return ProposalResult(False, None, attempts,
                              f"no valid change in {len(attempts)} attempts; last ({last.stage}): "
                              f"{last.error}", usage, [], messages)

    def _run(self, agent_dir: Path, archive: bytes,
             rejected: str | None) -> tuple[AgentRun, list[dict[str, str]], Usage]:
        """One sandboxed run of the agent on the task; its run, its conversation (from the
        gateway's log) and the tokens it used."""
        key = self.channel_key
        before = self.gateway.ledger.task(key)
        channel = self.gateway.open_channel(key, self.generation)
        assert channel.socket_path is not None  # a unix socket channel, for the bind mount
        offset = channel.trajectory.stat().st_size if channel.trajectory.is_file() else 0
        try:
            task = self.image_task.model_copy(update={"problem_statement": task_text(
                self.limits.allowed_dir, REPO_IN_SANDBOX, rejected)})
            run = self.environment.run_agent(task, agent_dir, socket_path=channel.socket_path,
                                             model=self.gateway.model, repo_archive=archive)
        finally:
            self.gateway.close_channel(channel)
        after = self.gateway.ledger.task(key)
        call_usage = Usage(after.calls - before.calls, after.prompt_tokens - before.prompt_tokens,
                           after.completion_tokens - before.completion_tokens)
        conversation = _conversation(channel.trajectory, offset)
        if self.gateway.ledger.was_refused(key):
            raise ModelCallFailed(f"the gateway refused a model call of the self proposer "
                                  f"({key}): the budget is spent")
        if call_usage.calls == 0:
            tail = "\n".join(run.log.strip().splitlines()[-20:])
            raise ModelCallFailed(f"the agent got no answer from the model {self.gateway.model!r} "
                                  f"(exit {run.exit_code}); the end of its log:\n{tail}")
        return run, conversation, call_usage

    def _attempt(self, worktree: Path, repo: Path, patch: str) -> tuple[list[str], tuple[WholeFile, ...]]:
        """Apply the agent's patch to the worktree and check it; the paths changed and the
        new text files as whole-file edits (for the record)."""
        _git(repo, "reset", "-q", "--hard", "HEAD")
        _git(repo, "clean", "-q", "-fdx")
        if not patch.strip():
            raise AttemptFailed("apply", "no change: the agent's patch is empty")
        patch_file = repo.parent / "agent.patch"
        patch_file.write_text(patch if patch.endswith("\n") else patch + "\n", encoding="utf-8")
        applied = _git(repo, "apply", "--binary", "--whitespace=nowarn", str(patch_file), check=False)
        if applied.returncode != 0:
            raise AttemptFailed("apply", "the agent's patch does not apply to its own repo: "
                                 + applied.stderr.decode("utf-8", "replace").strip()[-2000:])
        _git(repo, "add", "-A")
        raw = _git(repo, "diff", "--cached", "--raw", "-z", "--no-renames", "HEAD").stdout
        fields = raw.decode("utf-8", "surrogateescape").split("\0")
        kept: list[tuple[str, str, str]] = []  # (status, new mode, path)
        dropped: list[str] = []
        outside: list[str] = []
        for meta, path in zip(fields[0::2], fields[1::2]):
            _, new_mode, _, _, status = meta.lstrip(":").split(" ")
            parts = PurePosixPath(path).parts
            if parts[0] == ".ratchet" or "__pycache__" in parts or path.endswith((".pyc", ".pyo")):
                dropped.append(path)
            elif parts[0] != self.limits.allowed_dir or len(parts) < 2:
                outside.append(path)
            elif status != "D" and new_mode not in ("100644", "100755"):
                outside.append(f"{path} (mode {new_mode}: only regular files are allowed)")
            else:
                kept.append((status, new_mode, path))
        if outside:
            raise AttemptFailed("apply", f"the patch changes files outside {self.limits.allowed_dir}/ "
                                 f"(only files under it may change): {', '.join(outside)}")
        if not kept:
            raise AttemptFailed("apply", f"no change: the patch changes nothing under "
                                 f"{self.limits.allowed_dir}/" + (f" (only {', '.join(dropped)}, which "
                                                           "are discarded)" if dropped else ""))
        changed = [path for _, _, path in kept]
        self._copy_into(worktree, repo, kept)
        edits = []
        for status, _, path in kept:
            if status != "D":
                try:
                    edits.append(WholeFile(path, (repo / path).read_text(encoding="utf-8")))
                except UnicodeDecodeError:
                    pass
        self.limits.check_edited(worktree, changed)
        return changed, tuple(edits)

    def _copy_into(self, worktree: Path, repo: Path, kept: list[tuple[str, str, str]]) -> None:
        """Make the worktree's agent dir hold the kept changes of the scratch repo."""
        base = (worktree / self.limits.allowed_dir).resolve()
        for status, mode, path in kept:
            target = worktree / path
            if not target.parent.resolve().is_relative_to(base):
                raise AttemptFailed("apply", f"{path}: resolves outside {self.limits.allowed_dir}/ in "
                                     "the worktree (through a symlink)")
            if target.is_symlink():
                target.unlink()
            if status == "D":
                target.unlink(missing_ok=True)
                parent = target.parent
                while parent.resolve() != base and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((repo / path).read_bytes())
            target.chmod(0o755 if mode == "100755" else 0o644)


def _conversation(log: Path, offset: int) -> list[dict[str, str]]:
    """The conversation in the gateway's log past ``offset`` (this run's records), as
    ``{"role", "content"}`` messages."""
    if not log.is_file():
        return []
    with log.open("rb") as handle:
        handle.seek(offset)
        tail = handle.read()
    with tempfile.TemporaryDirectory(prefix="ratchet-self-log-") as tmp:
        part = Path(tmp) / "run.jsonl"
        part.write_bytes(tail)
        messages = load_gateway_trajectory(part)
    return [{"role": str(m.get("role", "?")), "content": message_text(m)} for m in messages]
