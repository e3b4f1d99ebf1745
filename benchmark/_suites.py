"""Suites by name: the task files shipped in ``benchmark/suites/``, any task file (.json,
.jsonl, .parquet) or dataset directory, or a SWE-bench dataset name (`_datasets`)."""

from __future__ import annotations

import re
from pathlib import Path

from benchmark._datasets import DATASET_ALIASES, DEFAULT_SPLIT, Selection, load_dataset_rows, load_parquet, select
from benchmark._errors import TaskFileError
from benchmark._task import LoadedTasks, load_tasks

__all__ = ["SUITES_DIR", "known_suites", "load_suite", "suite_path"]

SUITES_DIR = Path(__file__).parent / "suites"
_FILE_SUFFIXES = (".json", ".jsonl", ".parquet")


def known_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.json*"))


def _is_dataset_name(name: str) -> bool:
    """``OWNER/NAME`` (a Hugging Face dataset) or a known alias, and not a local path."""
    return name.lower() in DATASET_ALIASES or (
        re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None and not Path(name).exists())


def suite_path(name: str) -> Path:
    """A shipped suite's file, or `name` itself when it is a path to a task file."""
    candidate = Path(name)
    if candidate.suffix in _FILE_SUFFIXES or candidate.exists():
        if not candidate.exists():
            raise TaskFileError(candidate, None, None, "does not exist")
        return candidate
    for suffix in (".jsonl", ".json"):
        shipped = SUITES_DIR / f"{name}{suffix}"
        if shipped.exists():
            return shipped
    raise TaskFileError(
        candidate, None, None,
        f"is neither a task file nor a known suite (known: {', '.join(known_suites()) or 'none'}) "
        "nor a SWE-bench dataset name (e.g. SWE-bench/SWE-bench_Verified, or verified / lite)",
    )


def load_suite(name: str, selection: Selection = Selection()) -> LoadedTasks:
    """The suite's tasks, then the rows `selection` picks."""
    if _is_dataset_name(name) and not (SUITES_DIR / f"{name}.jsonl").exists():
        return select(load_dataset_rows(name, selection.split), selection)
    path = suite_path(name)
    if path.is_dir():  # a dataset saved locally: DIR/<split>.parquet or save_to_disk's layout
        split = selection.split or DEFAULT_SPLIT
        if not ((path / f"{split}.parquet").is_file() or (path / split / "dataset_info.json").is_file()):
            raise TaskFileError(path, None, None,
                                f"is a directory with no dataset split {split!r} to read (neither "
                                f"{split}.parquet nor a saved dataset {split}/); pass a task file "
                                "(.json/.jsonl/.parquet), or the directory of a dataset")
        return select(load_dataset_rows(str(path), split), selection)
    if selection.split:
        raise TaskFileError(path, None, None,
                            f"is one split already: --split {selection.split!r} picks a split of "
                            "a dataset (name or directory). Drop --split, or pick rows with "
                            "--filter, --slice or --instance-ids")
    loaded = load_parquet(path) if path.suffix == ".parquet" else load_tasks(path)
    return select(loaded, selection)
