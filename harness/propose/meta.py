"""The meta proposer: asks a model for a diagnosis and one change of the agent, and applies it.

One :meth:`MetaProposer.propose` call is one conversation with the meta model::

    render prompts/propose.md.j2 (agent source + evidence)
    └─ up to max_attempts times:
         call the model → parse_answer → apply_edits → check_worktree → extra_check
         on a failure: put the agent dir back byte for byte, send prompts/retry.md.j2
         with the error, try again

An answer that never becomes a valid edit ends in ``ProposalResult(valid=False)`` with
every attempt's reason recorded: the loop records an invalid proposal and goes on. A model
call that fails (HTTP error, budget refusal, no connection) is not the model's answer: it
raises :class:`ModelCallFailed`, after the worktree is put back. So does anything that
``extra_check`` raises (the sandbox failing is an infrastructure error, not a bad edit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import openai

from harness.propose.edits import (
    FORMAT_HELP,
    EditError,
    Proposal,
    Snapshot,
    apply_edits,
    parse_answer,
)
from harness.models.ledger import Usage
from harness.propose.checks import ProposerLimits
from harness.propose.evidence import Evidence
from harness.errors import AttemptFailed, ModelCallFailed, ProposerError
from harness.protocols import ModelClient

__all__ = [
    "AttemptRecord",
    "MetaProposer",
    "ModelCallFailed",
    "ProposalResult",
    "ProposerError",
    "read_agent_files",
    "render_prompt",
]

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
MAX_FILE_CHARS = 40_000
"""A source file longer than this is not shown to the meta model (only named)."""
MAX_TOTAL_CHARS = 160_000
"""All source files shown together stay under this; files past it are only named."""


@dataclass(frozen=True)
class AttemptRecord:
    """One answer of the meta model and what became of it."""

    number: int
    answer: str
    error: str | None
    """None: this attempt produced the valid proposal."""
    stage: str | None
    """Where it failed: ``parse``, ``apply``, ``check`` or ``extra_check``."""
    changed: tuple[str, ...]
    """Paths the edits changed (then put back, if the attempt failed)."""
    usage: Usage


@dataclass
class ProposalResult:
    valid: bool
    proposal: Proposal | None
    attempts: list[AttemptRecord]
    error: str | None
    """Why the last attempt failed, when ``valid`` is False."""
    usage: Usage
    changed: list[str] = field(default_factory=list)
    """Paths changed in the worktree by the valid proposal."""
    messages: list[dict[str, str]] = field(default_factory=list)
    """The whole conversation with the meta model, for the generation's record."""


def read_agent_files(worktree: Path, allowed_dir: str = "agent_seed") -> dict[str, str]:
    """The agent's text files, ``{"agent_seed/agent.py": source}``, sorted; bytecode and
    files that are not UTF-8 text are left out."""
    files: dict[str, str] = {}
    for path in sorted((worktree / allowed_dir).rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        try:
            files[path.relative_to(worktree).as_posix()] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
    return files


def _files_for_prompt(files: Mapping[str, str], max_file_chars: int,
                      max_total_chars: int) -> list[dict[str, Any]]:
    """Each file shown whole or, if it is too big, only named: a cut file would invite a
    whole-file rewrite that loses its end."""
    shown: list[dict[str, Any]] = []
    total = 0
    for path, text in sorted(files.items()):
        fits = len(text) <= max_file_chars and total + len(text) <= max_total_chars
        shown.append({"path": path, "text": text if fits else None, "chars": len(text)})
        total += len(text) if fits else 0
    return shown


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(PROMPTS_DIR),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True, autoescape=False)


def render_prompt(name: str, **variables: Any) -> str:
    """Render ``harness/propose/prompts/NAME`` strictly (an undefined variable is an error)."""
    return _environment().get_template(name).render(**variables)


class MetaProposer:
    """Proposes one change of the agent with a meta model through a model client
    (`harness.protocols.ModelClient`: on a run, the gateway's channel)."""

    def __init__(self, client: ModelClient, model: str, *, max_attempts: int = 3,
                 allowed_dir: str = "agent_seed",
                 extra_check: Callable[[Path], list[str]] | None = None,
                 completion_kwargs: Mapping[str, Any] | None = None,
                 max_file_chars: int = MAX_FILE_CHARS,
                 max_total_chars: int = MAX_TOTAL_CHARS) -> None:
        self.limits = ProposerLimits(max_attempts, allowed_dir, extra_check)
        self.client, self.model = client, model
        self.completion_kwargs = dict(completion_kwargs or {})
        self.max_file_chars, self.max_total_chars = max_file_chars, max_total_chars

    def first_prompt(self, evidence: Evidence, agent_files: Mapping[str, str]) -> str:
        return render_prompt(
            "propose.md.j2", agent_dir=self.limits.allowed_dir, evidence=evidence,
            files=_files_for_prompt(agent_files, self.max_file_chars, self.max_total_chars))

    def propose(self, worktree: Path, evidence: Evidence,
                agent_files: Mapping[str, str]) -> ProposalResult:
        """Ask, apply and check, retrying with the error; the worktree's agent dir holds the
        valid proposal's edits afterwards, or is exactly as before."""
        snapshot = Snapshot.take(worktree / self.limits.allowed_dir)
        messages = [{"role": "user", "content": self.first_prompt(evidence, agent_files)}]
        attempts: list[AttemptRecord] = []
        usage = Usage()
        succeeded = False
        try:
            for number in range(1, self.limits.max_attempts + 1):
                answer, call_usage = self._ask(messages)
                usage.add(call_usage)
                messages.append({"role": "assistant", "content": answer})
                try:
                    proposal, changed = self._attempt(worktree, answer)
                except AttemptFailed as failed:
                    snapshot.restore()
                    attempts.append(AttemptRecord(number, answer, str(failed), failed.stage,
                                                  failed.changed, call_usage))
                    if number < self.limits.max_attempts:
                        messages.append({"role": "user", "content": render_prompt(
                            "retry.md.j2", stage=failed.stage, error=str(failed),
                            attempt=number, max_attempts=self.limits.max_attempts,
                            agent_dir=self.limits.allowed_dir, format_help=FORMAT_HELP)})
                    continue
                attempts.append(AttemptRecord(number, answer, None, None, tuple(changed),
                                              call_usage))
                succeeded = True
                return ProposalResult(True, proposal, attempts, None, usage, changed, messages)
        finally:
            if not succeeded:
                snapshot.restore()
        last = attempts[-1]
        return ProposalResult(False, None, attempts,
                              f"no valid edit in {len(attempts)} attempts; last ({last.stage}): "
                              f"{last.error}", usage, [], messages)

    def _ask(self, messages: list[dict[str, str]]) -> tuple[str, Usage]:
        try:
            response = self.client.complete(
                {"model": self.model, "messages": list(messages), **self.completion_kwargs})
        except openai.OpenAIError as exc:
            raise ModelCallFailed(f"the meta model {self.model!r} could not be called: "
                                  f"{type(exc).__name__}: {exc}") from exc
        choices = response.get("choices") or []
        message = (choices[0] or {}).get("message") if choices else None
        return ((message or {}).get("content") or ""), Usage.of_reply(response)

    def _attempt(self, worktree: Path, answer: str) -> tuple[Proposal, list[str]]:
        try:
            proposal = parse_answer(answer)
        except EditError as exc:
            raise AttemptFailed("parse", str(exc)) from exc
        try:
            changed = apply_edits(worktree, proposal.edits, self.limits.allowed_dir)
        except EditError as exc:
            raise AttemptFailed("apply", str(exc)) from exc
        if not changed:
            raise AttemptFailed("apply", "the edits change nothing: every file already has "
                                          "the content they give")
        self.limits.check_edited(worktree, changed)
        return proposal, changed
