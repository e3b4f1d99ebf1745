"""The run file: every setting of ``ratchet run`` in one YAML file, validated before anything runs.

Why: an overnight run has two endpoints, model settings and a dozen limits; a file can be
kept, reviewed and re-run, where a long command line cannot. Sources, lowest first:

1. the defaults of :class:`RunConfig`;
2. each ``-c`` in the order given: a YAML file, or a dotted ``KEY=VALUE`` override whose value
   is read as YAML (``-c models.meta.kwargs.temperature=0.2``, ``-c budget_usd=null``);
3. the flags given on the command line (a flag left out sets nothing).

The merged mapping is validated by :class:`RunConfig` (pydantic, strict types, unknown keys
refused): each bad field is one line naming where it came from (the file, the ``-c`` or the
flag), the key, and what is allowed. :func:`harness.loop.settings.to_settings` turns it into the run's
`harness.loop.settings.LoopSettings` (saved as ``settings.json``); :func:`from_settings` is the way
back, used to show a run's settings as a run file and to check a resumed run's changes.

No key is ever part of a run file or a run's settings: a model names the environment
variable holding its key (``api_key_env``), read only when the endpoint is called.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from benchmark import TaskFileError, read_utf8
from harness.errors import RunFileError
from harness.loop.attempts import MAX_ATTEMPTS, MAX_PROPOSALS

if TYPE_CHECKING:
    from harness.loop.settings import LoopSettings

__all__ = ["DEFAULT_MODEL", "FLAGS", "ModelConfig", "RunConfig", "RunFileError",
           "from_settings", "load_sources", "resolve", "validate"]

DEFAULT_MODEL = "gpt-4o-mini"
"""The agent's model when neither ``--model`` nor ``models.agent.name`` names one."""

RESERVED_KWARGS = frozenset({"model", "messages", "stream", "stream_options", "n", "api_key",
                             "base_url", "extra_headers", "extra_query", "extra_body", "timeout"})
"""Request fields the gateway or the proposer set themselves (or that would leak a key,
multiply the cost, or reach past the endpoint): not settable as a model's ``kwargs``."""

FLAGS = {
    "suite": "--suite", "run_id": "--run-id", "generations": "--generations",
    "budget_usd": "--budget-usd", "task_budget_usd": "--task-budget-usd",
    "acceptance": "--acceptance", "selector": "--selector", "attempts": "--attempts",
    "proposals": "--proposals", "holdout": "--holdout", "study": "--study", "decide": "--decide",
    "report_split": "--report-split", "proposer": "--proposer", "workers": "--workers",
    "executor": "--executor", "seed": "--seed", "max_proposal_attempts": "--max-proposal-attempts",
    "evidence_tokens": "--evidence-tokens", "agent_timeout_s": "--agent-timeout-s",
    "scripted": "--scripted", "models.agent.name": "--model", "models.meta.name": "--meta-model",
    "allow_unpriced": "--allow-unpriced", "max_output_tokens": "--max-output-tokens",
    "dataset_split": "--split", "slice": "--slice", "filter": "--filter",
    "instance_ids": "--instance-ids",
}
"""Run-file key -> the ``ratchet run`` flag that sets it (messages name the flag)."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OVERRIDE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)=(.*)", re.DOTALL)


class ModelConfig(BaseModel):
    """One model and its endpoint. Unset fields fall back: the agent's to ``OPENAI_BASE_URL``
    and ``OPENAI_API_KEY``; the meta model's to the agent's (one endpoint for both)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = Field(None, min_length=1)
    """The model name sent to the endpoint."""
    base_url: str | None = None
    """The OpenAI-compatible endpoint, e.g. ``http://localhost:8000/v1`` (vLLM)."""
    api_key_env: str | None = None
    """The NAME of the environment variable that holds the key (never the key itself)."""
    kwargs: dict[str, Any] = {}
    """Request settings sent with every call (temperature, reasoning_effort, top_k, ...); for
    the agent, defaults its own requests can override."""

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL, e.g. http://localhost:8000/v1")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError("must be the name of an environment variable (letters, digits, _), "
                             "e.g. OPENAI_API_KEY: the key itself never goes in a run file")
        return value

    @field_validator("kwargs")
    @classmethod
    def _kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(RESERVED_KWARGS & set(value))
        if reserved:
            raise ValueError(f"{', '.join(reserved)} cannot be set here (the gateway or the "
                             "proposer sets it, or it would reach past the endpoint)")
        return value


class Models(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    agent: ModelConfig = ModelConfig()
    """The model the agent calls, through the gateway."""
    meta: ModelConfig = ModelConfig()
    """The proposer's model (through the same accounting)."""


class RunConfig(BaseModel):
    """Every setting of a run. Field docs are the run file's documentation."""

    model_config = ConfigDict(extra="forbid", strict=True)
    suite: str = Field(min_length=1)
    """A suite name (`ratchet bench suites`), a task file (.json/.jsonl/.parquet), a dataset
    directory or a SWE-bench dataset name (e.g. SWE-bench/SWE-bench_Verified)."""
    dataset_split: str | None = None
    """The dataset's split (--split; default test); a file is one split already. Not the
    tasks' own `split` field, which --study/--decide read."""
    slice: str = ""
    """A:B of the (filtered) rows (--slice)."""
    filter: str = ""
    """Instances whose id matches this regular expression (--filter, re.match)."""
    instance_ids: list[str] = []
    """Only these instances (--instance-ids)."""
    run_id: str | None = None
    """Default: a timestamp."""
    generations: int = Field(3, ge=0)
    """Generations after the seed (0: evaluate the seed only)."""
    budget_usd: float | None = Field(None, gt=0)
    """Stop cleanly when the run has spent this (null: no limit)."""
    task_budget_usd: float | None = Field(None, gt=0)
    """Refuse a task run's model calls past this (null: no limit)."""
    acceptance: str = "sign"
    selector: str = "best"
    attempts: int = Field(1, ge=1, le=MAX_ATTEMPTS)
    proposals: int = Field(1, ge=1, le=MAX_PROPOSALS)
    holdout: int = Field(0, ge=0)
    study: str | None = None
    decide: str | None = None
    report_split: str | None = None
    proposer: Literal["meta", "self"] = "meta"
    workers: int = Field(2, ge=1, le=256)
    executor: str = "local"
    seed: int = 0
    max_proposal_attempts: int = Field(3, ge=1, le=20)
    """Tries of one proposal (each failed check goes back to the model with the error)."""
    evidence_tokens: int = Field(6000, ge=500, le=1_000_000)
    """About how much failure evidence the proposer is shown per generation."""
    agent_timeout_s: float = Field(900.0, gt=0, le=86_400)
    """Wall-clock limit of one agent run in its sandbox."""
    allow_unpriced: bool = False
    """Run with a model that has no known price: its calls count as unknown cost (never $0)
    and no budget limits them. Without it such a run is refused before it starts."""
    max_output_tokens: int = Field(8192, ge=1, le=1_000_000)
    """The most output tokens one model call may ask for; forced on every call, so its worst
    case is reserved from the budget before it is sent."""
    scripted: Literal["demo"] | None = None
    """"demo": both models are the built-in scripted demo (no endpoint needed)."""
    models: Models = Models()
    prices: dict[str, list[float]] | None = None
    """USD per million input and output tokens by model name, e.g. ``{my-vllm-model: [0, 0]}``:
    for models genai-prices does not know (and over it and RATCHET_PRICES where it does)."""

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
        from harness.models.prices import PriceTable

        if value:
            PriceTable().add(value, "prices")  # a ValueError naming the bad entry
        return value

    @field_validator("acceptance")
    @classmethod
    def _rule(cls, value: str) -> str:
        from harness.loop.acceptance import parse_rule

        parse_rule(value)
        return value

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        from harness.loop.selection import parse_selector

        parse_selector(value)
        return value

    @field_validator("executor")
    @classmethod
    def _executor(cls, value: str) -> str:
        if value != "local" and not re.fullmatch(r"ray(:\S+)?", value):
            raise ValueError("must be local, ray, ray:auto or ray:HOST:PORT")
        return value


# -- reading sources ----------------------------------------------------------------------


def _merge(into: dict, new: dict, origin: str, origins: dict[str, str], prefix: str = "") -> None:
    """Deep-merge `new` into `into`; every key set is noted in `origins` (dotted -> source)."""
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, origin, origins, dotted + ".")
            continue
        into[key] = value
        for known in [k for k in origins if k.startswith(dotted + ".")]:
            del origins[known]
        origins[dotted] = origin
        if isinstance(value, dict):
            _note(value, origin, origins, dotted + ".")


def _note(value: dict, origin: str, origins: dict[str, str], prefix: str) -> None:
    for key, item in value.items():
        origins[f"{prefix}{key}"] = origin
        if isinstance(item, dict):
            _note(item, origin, origins, f"{prefix}{key}.")


def _nested(dotted: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _read_file(path: Path) -> dict:
    if not path.exists():
        raise RunFileError([f"{path}: no such run file (give a YAML file, or KEY=VALUE)"])
    try:
        text = read_utf8(path)
    except TaskFileError as exc:
        raise RunFileError([f"{path}: cannot read the run file: {exc.message}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RunFileError([f"{path}: not valid YAML: {exc}"]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise RunFileError([f"{path}: a run file is a mapping of settings (key: value), "
                            f"not a {type(data).__name__}"])
    return data


def load_sources(sources: list[str], flags: dict[str, Any] | None = None
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge `sources` (the ``-c`` values, in order) and then `flags` (dotted run-file key
    -> value, only the flags given). Returns the mapping and each dotted key's origin."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for source in sources:
        match = _OVERRIDE.fullmatch(source)
        if match and not Path(source).is_file():
            key, text = match.groups()
            try:
                value = yaml.safe_load(text) if text.strip() else None
            except yaml.YAMLError as exc:
                raise RunFileError([f"-c {source}: the value is not valid YAML: {exc}"]) from exc
            _merge(merged, _nested(key, value), "-c", origins)
        else:
            _merge(merged, _read_file(Path(source)), str(source), origins)
    for key, value in (flags or {}).items():
        _merge(merged, _nested(key, value), FLAGS.get(key, key), origins)
    return merged, origins


# -- validating ----------------------------------------------------------------------------


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        keys.append(prefix + name)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            keys += _known_keys(info.annotation, f"{prefix}{name}.")
    return keys


def _field(loc: list[str]):
    """The FieldInfo at a location of RunConfig, or None (inside a dict, or unknown)."""
    model: Any = RunConfig
    info = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) \
                or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        model = info.annotation
    return info


def _allowed(info) -> str | None:
    """What a numeric field allows, in words: 'an integer in 1..99', 'a number > 0'."""
    bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in info.metadata
              if type(m).__name__ in ("Ge", "Gt", "Le", "Lt")}
    kind = {"int": "an integer", "float": "a number"}.get(
        next((a.__name__ for a in getattr(info.annotation, "__args__", (info.annotation,))
              if a in (int, float)), ""))
    if kind is None:
        return None
    if "Ge" in bounds and "Le" in bounds:
        text = f"{kind} in {bounds['Ge']}..{bounds['Le']}"
    else:
        parts = [f"{op} {bounds[name]}" for name, op in
                 (("Ge", ">="), ("Gt", ">"), ("Le", "<="), ("Lt", "<")) if name in bounds]
        text = " and ".join([f"{kind} {parts[0]}", *parts[1:]]) if parts else kind
    return text + (" (or null)" if type(None) in getattr(info.annotation, "__args__", ()) else "")


def _problem(error: dict, origins: dict[str, str]) -> str:
    """One line: where the value came from, the key, what is allowed, what was given."""
    loc = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
    dotted = ".".join(loc)
    origin = next((origins[".".join(loc[:n])] for n in range(len(loc), 0, -1)
                   if ".".join(loc[:n]) in origins), None)
    # the thing the user wrote: --flag, -c KEY, FILE: KEY (or the bare key, from no source)
    name = (origin if origin and origin.startswith("--") else f"-c {dotted}" if origin == "-c"
            else f"{origin}: {dotted}" if origin else dotted)
    if error["type"] == "missing":
        flag = FLAGS.get(dotted)
        return f"{dotted} is required: give `{dotted}:` in the run file" + (f" or {flag}" if flag else "")
    if error["type"] == "extra_forbidden":
        parent = ".".join(loc[:-1])
        siblings = [k.rsplit(".", 1)[-1] for k in _known_keys(RunConfig)
                    if k.rpartition(".")[0] == parent]
        close = difflib.get_close_matches(loc[-1], siblings, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{name} is not a setting; {hint}known here: {', '.join(siblings)}"
    info = _field(loc)
    allowed = _allowed(info) if info is not None and error["type"] not in ("value_error",
                                                                            "literal_error") else None
    value = error.get("input")
    given = "(not shown: it may be a key)" if loc[-1:] == ["api_key_env"] else repr(value)
    if origin and origin.startswith("--"):  # as typed: `--holdout -1: holdout must be ...`
        name, given = f"{origin} {value}: {dotted}", None
    if allowed:
        return f"{name} must be {allowed}" + (f", got {given}" if given else "")
    if error["type"] == "value_error":  # our validators' messages say what was given
        return f"{name}: {error['msg'].removeprefix('Value error, ')}"
    return (f"{name}: {error['msg'].replace('Input should be', 'must be')}"
            + (f", got {given}" if given else ""))


def validate(merged: dict[str, Any], origins: dict[str, str] | None = None) -> RunConfig:
    """The run's config, or RunFileError with one line per bad field."""
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as exc:
        raise RunFileError([_problem(e, origins or {}) for e in exc.errors()]) from None


def resolve(sources: list[str], flags: dict[str, Any] | None = None) -> RunConfig:
    """Defaults < each ``-c`` in order < flags, validated."""
    merged, origins = load_sources(sources, flags)
    return validate(merged, origins)


# -- to and from the run's settings ----------------------------------------------------------


def from_settings(settings: "LoopSettings") -> dict[str, Any]:
    """A run's settings as a run file (what `ratchet status` shows; feed it back with -c)."""
    keys = [k for k in RunConfig.model_fields if k not in ("models", "run_id")]
    out: dict[str, Any] = {"run_id": settings.run, **{k: getattr(settings, k) for k in keys}}
    out["models"] = {role: {"name": getattr(settings, f"{role}_model"),
                            "base_url": getattr(settings, f"{role}_base_url", None),
                            "api_key_env": getattr(settings, f"{role}_api_key_env", None),
                            "kwargs": dict(getattr(settings, f"{role}_kwargs", None) or {})}
                     for role in ("agent", "meta")}
    return out
