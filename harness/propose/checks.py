"""What every proposer shares: how often it may try, which directory it may edit, and the
checks an edited worktree must pass before the edit counts.

Both proposers (`harness.propose.meta`, `harness.propose.self`) hold one of these, so a
limit is checked, and an edited agent judged, in one place whatever made the edit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import AttemptFailed
from harness.propose.edits import check_worktree

__all__ = ["ProposerLimits"]


@dataclass(frozen=True)
class ProposerLimits:
    max_attempts: int = 1
    """Answers (or agent runs) a proposal may take; a failed one goes back with its error."""
    allowed_dir: str = "agent_seed"
    """The only directory of the worktree an edit may change."""
    extra_check: Callable[[Path], list[str]] | None = None
    """Run after the host checks pass (the loop's sandboxed selfcheck); returns problems,
    ``[]`` when the edited agent is fine."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def check_edited(self, worktree: Path, changed: Sequence[str]) -> None:
        """The host checks, then ``extra_check``; the first that finds problems raises
        AttemptFailed (stage ``check`` or ``extra_check``), which goes back to the model."""
        problems = check_worktree(worktree, self.allowed_dir)
        if problems:
            raise AttemptFailed("check", "\n".join(problems), tuple(changed))
        problems = self.extra_check(worktree) if self.extra_check else []
        if problems:
            raise AttemptFailed("extra_check", "\n".join(problems), tuple(changed))
