"""Suites by name: the task files shipped in ``benchmark/suites/``, or any task file path."""

from __future__ import annotations

from pathlib import Path

from benchmark._errors import TaskFileError
from benchmark._task import LoadedTasks, load_tasks

__all__ = ["SUITES_DIR", "known_suites", "load_suite", "suite_path"]

SUITES_DIR = Path(__file__).parent / "suites"


def known_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.json*"))


def suite_path(name: str) -> Path:
    """A shipped suite's file, or `name` itself when it is a path to a task file."""
    candidate = Path(name)
    if candidate.suffix in (".json", ".jsonl") or candidate.exists():
        if not candidate.exists():
            raise TaskFileError(candidate, None, None, "does not exist")
        return candidate
    for suffix in (".jsonl", ".json"):
        shipped = SUITES_DIR / f"{name}{suffix}"
        if shipped.exists():
            return shipped
    raise TaskFileError(
        candidate, None, None,
        f"is neither a task file nor a known suite (known: {', '.join(known_suites()) or 'none'})",
    )


def load_suite(name: str) -> LoadedTasks:
    return load_tasks(suite_path(name))
