"""A difficulty estimate per forged task, from what is known when it is forged and, later,
from how the seed agent did on it.

SWE-smith rates difficulty with a model trained on SWE-bench; here it is a transparent rule
a reader can check: the size of the fix (lines the gold patch changes, files it touches,
sites of a combined bug) and the breadth of the symptom (how many tests break: one broken
test gives little to go on, many point at a common path). Once a bench run of the seed agent
has graded the task, its resolve rate decides instead (`with_resolve_rate`), since that is
what "hard for the agent" means.
"""

from __future__ import annotations

import re

__all__ = ["LEVELS", "estimate_difficulty", "patch_size", "with_resolve_rate"]

LEVELS = ("easy", "medium", "hard")


def patch_size(patch: str) -> tuple[int, int]:
    """(lines removed + added, files touched) of a git diff."""
    lines = sum(1 for line in patch.splitlines()
                if line[:1] in "+-" and not line.startswith(("+++", "---")))
    files = len(re.findall(r"^diff --git ", patch, re.MULTILINE))
    return lines, files


def _level(lines: int, files: int, tests_broken: int, combined: bool) -> str:
    points = (lines > 2) + (lines > 8) + (files > 1) + combined + (tests_broken <= 1) \
        - (tests_broken >= 10)
    return "easy" if points <= 0 else "medium" if points <= 2 else "hard"


def estimate_difficulty(gold_patch: str, fail_to_pass: list[str], kind: str) -> dict:
    """{lines_changed, files_changed, tests_broken, level, rated_by} for a new task."""
    lines, files = patch_size(gold_patch)
    return {"lines_changed": lines, "files_changed": files, "tests_broken": len(fail_to_pass),
            "level": _level(lines, files, len(fail_to_pass), kind == "combined"),
            "rated_by": "patch"}


def with_resolve_rate(difficulty: dict, resolved: int, attempts: int) -> dict:
    """The estimate with the seed agent's resolve rate, which then sets the level."""
    if attempts <= 0:
        return dict(difficulty)
    rate = resolved / attempts
    level = "easy" if rate >= 2 / 3 else "medium" if rate >= 1 / 3 else "hard"
    return {**difficulty, "seed_resolve_rate": round(rate, 3), "seed_attempts": attempts,
            "level": level, "rated_by": "seed agent"}
