"""The agent's one exception tree. Control flow is by exceptions that carry data
(mini-swe-agent style): the loop catches them, never a bare ``except``.

    AgentError
    ├── NonTerminating          its message goes back to the model as a user message
    │   ├── FormatError         the reply did not hold exactly one ```bash block
    │   └── CommandTimeout      the command ran past command_timeout_s
    └── Terminating             ends the run; ``status`` is the trajectory's exit status
        ├── Submitted           the command's output began with the submit marker
        ├── LimitsExceeded      step_limit model calls were made
        └── ModelError          the model call failed (HTTP error, budget refusal, ...)
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "CommandTimeout",
    "FormatError",
    "LimitsExceeded",
    "ModelError",
    "NonTerminating",
    "Submitted",
    "Terminating",
]


class AgentError(Exception):
    """Base of every exception the agent raises on purpose."""


class NonTerminating(AgentError):
    """The run goes on; ``str(exc)`` is shown to the model."""


class FormatError(NonTerminating):
    pass


class CommandTimeout(NonTerminating):
    pass


class Terminating(AgentError):
    """The run ends; ``str(exc)`` is recorded as the run's result."""

    status = "error"


class Submitted(Terminating):
    status = "submitted"


class LimitsExceeded(Terminating):
    status = "limits_exceeded"


class ModelError(Terminating):
    status = "model_error"
