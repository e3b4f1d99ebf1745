"""Datasets as they are: official SWE-bench files and dataset names, and which rows to take.

``--suite`` names a shipped suite, a task file (.json/.jsonl), a parquet file (the official
Hugging Face files), a local dataset directory (``DIR/<split>.parquet`` or a saved dataset)
or a dataset name (``SWE-bench/SWE-bench_Verified``, or a short alias such as ``verified``),
loaded with swebench's own ``load_swebench_dataset``: from the Hugging Face cache when it is
there (offline), downloaded otherwise. Rows are validated like any task file (`_task`), so an
official row needs no ratchet field.

A :class:`Selection` then picks rows the way mini-swe-agent's ``swebench`` command and the
official harness name it: ``--split`` (of a dataset), ``--filter REGEX`` (``re.match`` on the
instance id), ``--slice A:B`` (after the filter) and ``--instance-ids``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark._errors import TaskFileError
from benchmark._task import LoadedTasks, tasks_from_records

__all__ = ["DATASET_ALIASES", "Selection", "load_dataset_rows", "select"]

DATASET_ALIASES = {
    "verified": "SWE-bench/SWE-bench_Verified",
    "swe-bench_verified": "SWE-bench/SWE-bench_Verified",
    "swe-bench-verified": "SWE-bench/SWE-bench_Verified",
    "lite": "SWE-bench/SWE-bench_Lite",
    "swe-bench_lite": "SWE-bench/SWE-bench_Lite",
    "swe-bench-lite": "SWE-bench/SWE-bench_Lite",
    "full": "SWE-bench/SWE-bench",
    "swe-bench": "SWE-bench/SWE-bench",
    "multilingual": "SWE-bench/SWE-bench_Multilingual",
}
"""Short names (mini-swe-agent's ``--subset`` values and the datasets' own names)."""
DEFAULT_SPLIT = "test"


@dataclass(frozen=True)
class Selection:
    """Which rows of a suite to take. Empty fields take everything."""

    split: str | None = None
    """The dataset split (``test``, ``dev``); a single file is one split already."""
    slice: str = ""
    """``A:B`` (Python slice bounds, either may be empty), applied after the filter."""
    filter: str = ""
    """A regular expression matched (``re.match``) against each instance id."""
    instance_ids: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"split {self.split}" if self.split else "",
                 f"filter {self.filter!r}" if self.filter else "",
                 f"slice {self.slice}" if self.slice else "",
                 f"{len(self.instance_ids)} instance ids" if self.instance_ids else ""]
        return ", ".join(p for p in parts if p)


def parse_ids(values: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Instance ids given once or many times, space- or comma-separated."""
    out: list[str] = []
    for value in values or ():
        out += [part for part in re.split(r"[\s,]+", value) if part]
    return tuple(dict.fromkeys(out))


def _slice(spec: str, where: Path) -> slice:
    match = re.fullmatch(r"\s*(-?\d*)\s*:\s*(-?\d*)\s*", spec)
    if not match:
        raise TaskFileError(where, None, None,
                            f"--slice {spec!r} is not A:B (e.g. 0:5 for the first five rows)")
    start, stop = (int(x) if x else None for x in match.groups())
    return slice(start, stop)


def select(loaded: LoadedTasks, selection: Selection) -> LoadedTasks:
    """The rows `selection` names, in the suite's order (ids: every one must exist)."""
    tasks = loaded.tasks
    if selection.instance_ids:
        known = {task.instance_id for task in tasks}
        missing = [i for i in selection.instance_ids if i not in known]
        if missing:
            raise TaskFileError(loaded.path, None, None,
                                f"holds no instance {', '.join(missing[:5])}"
                                f"{' ...' if len(missing) > 5 else ''} (--instance-ids)")
        wanted = set(selection.instance_ids)
        tasks = [task for task in tasks if task.instance_id in wanted]
    if selection.filter:
        try:
            pattern = re.compile(selection.filter)
        except re.error as exc:
            raise TaskFileError(loaded.path, None, None,
                                f"--filter {selection.filter!r} is not a regular expression ({exc})"
                                ) from None
        tasks = [task for task in tasks if pattern.match(task.instance_id)]
    if selection.slice:
        tasks = tasks[_slice(selection.slice, loaded.path)]
    return LoadedTasks(path=loaded.path, tasks=tasks, problems=loaded.problems)


def _plain(row: dict) -> dict:
    """A dataset row as plain JSON values (parquet gives numpy/arrow scalars at times)."""
    return {key: (value.tolist() if hasattr(value, "tolist") else value) for key, value in row.items()}


def load_parquet(path: Path) -> LoadedTasks:
    """An official parquet file (e.g. ``test-00000-of-00001.parquet`` of a dataset)."""
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds; one message
        raise TaskFileError(path, None, None, f"is not a readable parquet file ({exc})") from None
    return tasks_from_records(path, [(f"row {i}", _plain(row)) for i, row in enumerate(rows)])


def load_dataset_rows(name: str, split: str | None) -> LoadedTasks:
    """A dataset by name or local dataset directory, with swebench's ``load_swebench_dataset``
    (the official harness's loader): offline from the cache when the dataset is cached."""
    from swebench.harness.utils import load_swebench_dataset

    dataset = DATASET_ALIASES.get(name.lower(), name)
    split = split or DEFAULT_SPLIT
    where = Path(dataset)
    try:
        rows: list[Any] = list(load_swebench_dataset(dataset, split))
    except Exception as exc:  # noqa: BLE001 - datasets/hub raise many kinds; one message
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TaskFileError(
            where, None, None,
            f"split {split!r} could not be loaded: it is not in the Hugging Face cache and was "
            f"not downloaded ({detail}). Fix: run once with network access (it is cached then and "
            f"loads offline after), or download the dataset's {split} parquet file and pass "
            "--suite FILE.parquet") from None
    return tasks_from_records(where, [(f"row {i}", _plain(dict(row))) for i, row in enumerate(rows)])
