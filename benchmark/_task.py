"""The task schema: a superset of the SWE-bench instance.

A task file is SWE-bench JSON (a list of instances) or JSONL (one per line). Official
SWE-bench files load as they are, including list fields given as JSON strings. ratchet adds
where the repository comes from (``source``) and how its environment is built and its tests
run (``environment``). A row with neither is an *official* row: its image is the official
SWE-bench eval image (``benchmark._official``), and its tests run by its own
``eval_script`` and ``log_parser`` (swebench 5.x rows carry both) or, for a row of the
classic twelve fields, by the default the official images support (pytest in the
``testbed`` conda env).

Specs are data: nothing here touches Docker or the network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmark._errors import TaskFileError

__all__ = [
    "GitSource",
    "LocalSource",
    "PypiSource",
    "TaskEnvironment",
    "TaskSpec",
    "LoadedTasks",
    "load_tasks",
    "patch_paths",
    "tasks_from_records",
    "read_utf8",
]

_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")


class _Source(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    setup_patch: str = ""
    """A diff applied to the pristine source before the task's one commit is made: how a task
    with an injected bug (quickstart, forged) defines its base. Never shown to the agent as a
    diff: it is part of the base tree."""


class PypiSource(_Source):
    """The sdist of a pinned PyPI release, e.g. ``isodate==0.7.2``."""

    kind: Literal["pypi"] = "pypi"
    requirement: str

    @field_validator("requirement")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if not _REQUIREMENT.match(value):
            raise ValueError(f"must pin one release as NAME==VERSION, got {value!r}")
        return value


class GitSource(_Source):
    """A git repository (URL or path); the task's ``base_commit`` is checked out."""

    kind: Literal["git"] = "git"
    url: str


class LocalSource(_Source):
    """A directory on the host, relative to the task file; its ``.git`` is never copied."""

    kind: Literal["local"] = "local"
    path: str


Source = Annotated[Union[PypiSource, GitSource, LocalSource], Field(discriminator="kind")]


def check_parser(value: str) -> str:
    """A log parser name, checked at load, not after the first paid pass over the tasks.
    swebench is imported (~1.5 s) only for a name other than the default."""
    if value in ("pytest", "parse_log_pytest"):
        return value
    from swebench.harness.log_parsers import PARSER_REGISTRY

    key = value if value.startswith("parse_log_") else f"parse_log_{value}"
    if key not in PARSER_REGISTRY:
        known = list(PARSER_REGISTRY)
        raise ValueError(f"unknown log parser {value!r}; use pytest or one of swebench's "
                         f"PARSER_REGISTRY: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''}")
    return value


class TaskEnvironment(BaseModel):
    """How the task's Python environment is built and its tests are run.

    Commands run in ``/testbed`` with the task venv (``/opt/venv``) first on PATH and pip
    pointed at the host-built wheelhouse, with the network off.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    python_deps: tuple[str, ...] = ()
    """Requirements installed into the venv (pin them: the image key hashes this list)."""
    install: str = "pip install -e ."
    """Installs the repository itself (editable, so a patch takes effect)."""
    test_cmd: str = "python -m pytest -rA -p no:cacheprovider"
    """The test command; the test patch's files are appended, as in SWE-bench."""
    log_parser: str = "pytest"
    """A swebench log parser: ``pytest`` or any key of swebench's ``PARSER_REGISTRY``."""
    timeout_s: int = Field(default=900, gt=0)
    """Wall-clock limit for one grading run."""
    pytest_plugins: tuple[str, ...] = ()
    """pytest plugins the tests need, by module name. Grading turns entry-point autoload off
    (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``: a patch's packaging metadata could load one) and
    loads these with ``-p``."""

    @field_validator("log_parser")
    @classmethod
    def _known_parser(cls, value: str) -> str:
        return check_parser(value)

    @field_validator("pytest_plugins")
    @classmethod
    def _module_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", name):
                raise ValueError(f"{name!r} is not a module name (e.g. pytest_asyncio)")
        return value


def _json_list(value: Any) -> Any:
    """SWE-bench files store list fields as JSON strings; accept both forms."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is a string but not a JSON list: {exc.msg}") from None
    return value


class TaskSpec(BaseModel):
    """One task. Unknown fields of official files are kept, not rejected."""

    model_config = ConfigDict(frozen=True, extra="allow")

    instance_id: str = Field(min_length=1)
    repo: str
    base_commit: str = ""
    problem_statement: str
    patch: str
    test_patch: str
    FAIL_TO_PASS: tuple[str, ...]
    PASS_TO_PASS: tuple[str, ...] = ()
    version: str = ""
    environment_setup_commit: str = ""
    hints_text: str = ""
    created_at: str = ""
    source: Source | None = None
    environment: TaskEnvironment | None = None
    image: str | None = None
    """A prebuilt image holding the repo at /testbed; skips ratchet's image build."""
    eval_script: str = ""
    """swebench 5.x: the row's own eval script (official rows); its environment lines and
    test command are run by ratchet's grading wrapper (`benchmark._official`)."""
    log_parser: str = ""
    """swebench 5.x: the row's log parser, a key of swebench's ``PARSER_REGISTRY``."""

    @field_validator("log_parser")
    @classmethod
    def _row_parser(cls, value: str) -> str:
        return check_parser(value) if value else value

    @field_validator("FAIL_TO_PASS", "PASS_TO_PASS", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _json_list(value)

    @field_validator("FAIL_TO_PASS")
    @classmethod
    def _some_failing_test(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one test the fix makes pass")
        return value

    @field_validator("test_patch")
    @classmethod
    def _test_patch_is_diff(cls, value: str) -> str:
        if not patch_paths(value):
            raise ValueError("is not a git diff (no 'diff --git' header)")
        return value

    @model_validator(mode="after")
    def _buildable(self) -> "TaskSpec":
        if (self.source is None) != (self.environment is None) and self.image is None:
            raise ValueError(
                "needs either 'image' (a prebuilt image) or both 'source' and 'environment' "
                "(or neither: an official SWE-bench row, run in its official image)"
            )
        if self.is_official:
            from benchmark._official import official_problem

            problem = official_problem(self)
            if problem:
                raise ValueError(problem)
        if isinstance(self.source, GitSource) and not self.base_commit:
            raise ValueError("a git source needs 'base_commit'")
        if isinstance(self.source, PypiSource) and self.base_commit:
            raise ValueError(
                f"base_commit {self.base_commit!r} cannot exist: a pypi source becomes a fresh "
                "one-commit repository (the release is the base). Remove 'base_commit', or use a "
                "git source ('kind': 'git', 'url') to start from an upstream commit")
        return self

    @property
    def is_official(self) -> bool:
        """An official SWE-bench row: no ratchet recipe, graded by the official spec."""
        return self.source is None and self.environment is None

    @property
    def test_files(self) -> list[str]:
        """Files the hidden test patch touches: restored to base, then patched, then run."""
        return patch_paths(self.test_patch)


_DIFF_HEADER = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)


def patch_paths(diff: str) -> list[str]:
    """Paths a git diff touches (both sides of a rename), in order, without duplicates."""
    seen: dict[str, None] = {}
    for old, new in _DIFF_HEADER.findall(diff):
        seen.setdefault(old)
        seen.setdefault(new)
    return list(seen)


class LoadedTasks(BaseModel):
    """What a task file yielded: the good tasks, and one message per bad one."""

    path: Path
    tasks: list[TaskSpec]
    problems: list[TaskFileError]

    model_config = ConfigDict(arbitrary_types_allowed=True)


def _records(path: Path, text: str) -> list[tuple[str, Any]]:
    """(where, raw record) pairs; `where` names the line for JSONL."""
    if path.suffix == ".jsonl":
        out = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                out.append((f"line {number}", TaskFileError(
                    path, f"line {number}", None,
                    f"is not JSON ({exc.msg} at column {exc.colno})")))
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskFileError(path, None, None,
                            f"is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
                            ) from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise TaskFileError(path, None, None, "must hold a JSON list of task objects")
    return [(f"item {index}", item) for index, item in enumerate(data)]


def read_utf8(path: Path) -> str:
    """The text of a file a user gave (a task or predictions file), or a TaskFileError that
    names it and the fix: unreadable, or not UTF-8 (a byte order mark is allowed)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TaskFileError(path, None, None, f"cannot be read ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TaskFileError(path, None, None,
                            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                            "save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 FILE > NEW`") from None


def load_tasks(path: str | Path) -> LoadedTasks:
    """Load a task file. A bad instance costs only itself: it becomes a problem naming the
    file, the instance and the field, and the rest of the file still loads."""
    path = Path(path)
    return tasks_from_records(path, _records(path, read_utf8(path)))


def tasks_from_records(path: Path, records: list[tuple[str, Any]]) -> LoadedTasks:
    """Validate (where, raw record) pairs from any reader (a task file, a parquet file, a
    dataset): each bad one becomes a problem naming `path`, the instance and the field."""
    tasks: list[TaskSpec] = []
    problems: list[TaskFileError] = []
    seen: set[str] = set()
    for where, raw in records:
        if isinstance(raw, TaskFileError):
            problems.append(raw)
            continue
        if not isinstance(raw, dict):
            problems.append(TaskFileError(path, where, None, "is not a JSON object"))
            continue
        name = raw.get("instance_id") if isinstance(raw.get("instance_id"), str) else where
        if raw.get("source") is not None and isinstance(raw["source"], dict):
            raw = _resolve_local(path, raw)
        try:
            task = TaskSpec.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or None
                problems.append(TaskFileError(path, name, field, err["msg"]))
            continue
        if task.instance_id in seen:
            problems.append(TaskFileError(path, name, "instance_id", "is a duplicate"))
            continue
        seen.add(task.instance_id)
        tasks.append(task)
    return LoadedTasks(path=path, tasks=tasks, problems=problems)


def _resolve_local(path: Path, raw: dict) -> dict:
    """Make a local source's path absolute, relative to the task file it came from."""
    source = raw["source"]
    if source.get("kind") == "local" and isinstance(source.get("path"), str):
        resolved = (path.parent / source["path"]).resolve()
        raw = {**raw, "source": {**source, "path": str(resolved)}}
    return raw
