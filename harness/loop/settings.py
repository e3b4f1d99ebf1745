"""A run's settings (``runs/RUN/settings.json``): every choice the loop is driven by, as
plain values, so a resumed run is driven exactly as it started. They are made from a run
file (`harness.loop.runfile`, by :func:`to_settings`) and checked by its rules."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.loop.acceptance import DEFAULT_RULE
from harness.models.ledger import DEFAULT_MAX_OUTPUT_TOKENS
from harness.loop.runfile import DEFAULT_MODEL, RunConfig, from_settings, validate

__all__ = ["LoopSettings", "to_settings"]


def _plain(value) -> bool:
    """A value settings.json can hold and read back as it was."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain(item) for key, item in value.items())
    return False


@dataclass
class LoopSettings:
    run: str
    suite: str
    generations: int
    agent_model: str
    meta_model: str
    budget_usd: float | None = None
    task_budget_usd: float | None = None
    acceptance: str = DEFAULT_RULE
    selector: str = "best"
    stage_size: int = 3
    """Deprecated and ignored: futility looks after 1/3 and 2/3 of the deciding pairs replaced
    the staged evaluation. Kept so settings.json of older runs still load."""
    attempts: int = 1
    """Runs of each deciding task per candidate (and per fresh baseline of an accepted one)."""
    proposals: int = 1
    """Candidates made from the parent per generation; >1 screens them and tests the winner."""
    horizon: int | None = None
    """The generations the run's error budget is split over (`harness.loop.acceptance.level`): the
    planned ``generations`` when the run started; kept when a resume extends the run."""
    holdout: int = 0
    """N tasks, drawn by a shuffle seeded with ``seed``, decide acceptance and are never
    shown to the proposer (`harness.loop.splits`); 0: off."""
    study: str | None = None
    """Split name(s), comma-separated, the proposer studies (the suite's ``split`` field)."""
    decide: str | None = None
    """Split name(s) acceptance is decided on; never shown to the proposer."""
    report_split: str | None = None
    """A split run only for the best (gen 0, each accepted generation): the report's
    held-out curve; it never decides."""
    dataset_split: str | None = None
    """Which rows of the suite the run takes (`benchmark.Selection`): a dataset's split, a
    slice, an id regex and instance ids; empty: every row."""
    slice: str = ""
    filter: str = ""
    instance_ids: list[str] = field(default_factory=list)
    workers: int = 2
    seed: int = 0
    scripted: str | None = None
    """None: a real endpoint; "demo": the built-in scripted demo models."""
    max_proposal_attempts: int = 3
    proposer: str = "meta"
    """"meta": a meta model edits the agent; "self": the parent agent edits itself (DGM)."""
    evidence_tokens: int = 6000
    agent_timeout_s: float = 900.0
    base: str = "HEAD"
    executor: str = "local"
    """Where task runs go: local, ray, ray:auto or ray:HOST:PORT (`harness.run.executors`)."""
    allow_unpriced: bool = False
    """Run with a model that has no known price: its calls count as unknown cost (never $0)
    and no budget limits them. Without it such a run is refused before it starts."""
    prices: dict[str, list[float]] | None = None
    """USD per million (input, output) tokens by model name, over genai-prices' database
    and RATCHET_PRICES (`harness.models.prices`)."""
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    """The most output tokens a model call may ask for; the gateway forces it on every call
    so the call's worst case is known and reserved before it is sent (`harness.models.ledger`)."""
    agent_base_url: str | None = None
    """The agent model's endpoint (None: ``OPENAI_BASE_URL``); `harness.models.upstreams`."""
    agent_api_key_env: str | None = None
    """The NAME of the variable holding the agent endpoint's key (None: ``OPENAI_API_KEY``)."""
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    """Request settings the gateway adds to the agent's calls where the agent set none."""
    meta_base_url: str | None = None
    """The meta model's endpoint (None: the agent's)."""
    meta_api_key_env: str | None = None
    """The NAME of the variable holding the meta endpoint's key (None: the agent's)."""
    meta_kwargs: dict[str, Any] = field(default_factory=dict)
    """Request settings sent with every proposer call (temperature, reasoning_effort, ...)."""

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not _plain(value):
                raise TypeError(f"LoopSettings.{name} is {value!r} ({type(value).__name__}), not a "
                                "plain value: a caller passed something that is not a setting "
                                "(e.g. a typer option object left as a default)")

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> "LoopSettings":
        data = json.loads(path.read_text())
        if data.get("horizon") is None:  # a run from before the run-wide correction
            data["horizon"] = data.get("generations")
        return cls(**data)

    def check(self) -> None:
        """Raise ValueError naming each bad setting and what is allowed (`harness.loop.runfile`)."""
        validate(from_settings(self), {})


def to_settings(config: RunConfig, run: str) -> LoopSettings:
    """The LoopSettings of a new run made from `config`."""
    agent, meta = config.models.agent, config.models.meta
    agent_name = "scripted" if config.scripted else (agent.name or DEFAULT_MODEL)
    meta_name = "scripted" if config.scripted else (meta.name or agent_name)
    fields = config.model_dump(exclude={"models", "run_id"})
    return LoopSettings(
        run=run, agent_model=agent_name, meta_model=meta_name, horizon=config.generations,
        agent_base_url=agent.base_url, agent_api_key_env=agent.api_key_env,
        agent_kwargs=dict(agent.kwargs), meta_base_url=meta.base_url,
        meta_api_key_env=meta.api_key_env, meta_kwargs=dict(meta.kwargs), **fields)
