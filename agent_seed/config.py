"""Load config.yaml into an ``AgentConfig`` and render its jinja2 templates strictly.

Prompts and limits live in config.yaml, not in code, so the agent's behaviour can be
changed by editing text. An unknown key, a missing template or an undefined template
variable fails loudly (``ConfigError`` / jinja2's ``UndefinedError``), which the
self-check turns into a failed check.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

__all__ = ["PACKAGE_DIR", "TEMPLATE_NAMES", "AgentConfig", "ConfigError", "load_config", "render"]

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = PACKAGE_DIR / "config.yaml"
TEMPLATE_NAMES = ("system", "instance", "observation", "format_error", "timeout")

_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                            trim_blocks=True, lstrip_blocks=True)


class ConfigError(ValueError):
    """config.yaml is malformed: unknown or missing keys, wrong types, missing templates."""


@dataclass(frozen=True)
class AgentConfig:
    model: str
    """Model name, used when env RATCHET_MODEL is not set."""
    step_limit: int
    """Most model calls in one run; 0 means no limit."""
    command_timeout_s: float
    """Wall-clock limit of one bash command."""
    output_max_chars: int
    """Longer command output is cut to this many characters, keeping head and tail."""
    templates: dict[str, str]
    """jinja2 templates: system, instance, observation, format_error, timeout."""
    model_timeout_s: float = 600.0
    """Timeout of one model call."""
    model_max_retries: int = 2
    """Retries of a failed model call (connection errors, 429, 5xx) by the openai client."""
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra arguments of chat.completions.create, e.g. temperature."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables set for every command (pagers off, progress bars off)."""
    lessons_file: str = "lessons.md"
    """Notes read into the system prompt, relative to the package directory."""
    submit_marker: str = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
    """A command whose output's first line is this submits the run."""

    def lessons(self) -> str:
        path = PACKAGE_DIR / self.lessons_file
        return path.read_text(encoding="utf-8").strip() if path.is_file() else ""

    def replace(self, **changes: Any) -> AgentConfig:
        return dataclasses.replace(self, **changes)


def load_config(path: str | Path | None = None) -> AgentConfig:
    path = Path(path) if path else DEFAULT_CONFIG
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    known = {f.name for f in dataclasses.fields(AgentConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; known keys: {sorted(known)}")
    try:
        config = AgentConfig(**data)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    missing = [name for name in TEMPLATE_NAMES if name not in (config.templates or {})]
    if missing:
        raise ConfigError(f"{path}: templates missing: {missing}")
    for name in ("step_limit", "output_max_chars"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) < 0:
            raise ConfigError(f"{path}: {name} must be a non-negative integer")
    if not isinstance(config.command_timeout_s, (int, float)) or config.command_timeout_s <= 0:
        raise ConfigError(f"{path}: command_timeout_s must be a positive number")
    return config


def render(template: str, **variables: Any) -> str:
    """Render one template; an undefined variable raises jinja2.UndefinedError."""
    return _JINJA.from_string(template).render(**variables)
