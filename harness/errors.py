"""The harness's exceptions, one tree (as `benchmark._errors` is the benchmark's).

::

    HarnessError
     ├── BadInput (ValueError)            a bad input; the message names it and the fix
     │    ├── RunFileError                a run file or override (one problem per line)
     │    ├── WorkspaceError              no workspace, or a bad run id
     │    ├── AgentSourceError            an agent that cannot be resolved
     │    ├── SplitError                  a split option
     │    ├── EndpointSettingError        a model with no endpoint or key
     │    ├── TargetError                 a run `forge --target` cannot use
     │    ├── ReportError                 no such run, or generations that cannot be diffed
     │    ├── JournalError                a journal line that is not a record
     │    ├── ScriptError                 a scripted-model script
     │    └── UnknownImplementation       a name no seam's registry knows (`harness.protocols`)
     ├── EditError (ValueError)           a model's answer that cannot become a change
     │    ├── NotAnEdit                   no edit, or a broken block (told to the model)
     │    └── EditRejected                an edit that cannot be applied
     ├── AttemptFailed                    one proposal attempt failed at a stage (parse,
     │                                    apply, check, ...); its message goes back to the model
     ├── ProposerError (RuntimeError)     the proposer could not run (not: a bad answer)
     │    └── ModelCallFailed             the meta model could not be called
     ├── LineageError (RuntimeError)      a git lineage operation that cannot be done
     │    ├── NothingToCommit             no change under the agent dir
     │    └── ChangesOutsideAgent         changes outside the agent dir
     ├── EndpointError (RuntimeError)     a model endpoint that does not answer
     ├── ExecutorError (RuntimeError)     an executor that cannot be used (Ray missing, ...)
     ├── ExportError (RuntimeError)       a run that cannot be exported as asked
     ├── RunLocked (RuntimeError)         the run is live in another process
     ├── Rejected                         a request the gateway refuses (an HTTP status)
     ├── NoRuleMatched (LookupError)      the scripted model has no answer for a request
     └── StopRequested                    control flow: Ctrl-C or a spent budget; the loop
                                          stops between journaled steps (resumable)

Each keeps the builtin base it always had (``ValueError``, ``RuntimeError``, ...), so an
``except`` that caught it before still does. Failures of the benchmark (an image, the
daemon) are `benchmark.InfraError`, never one of these: an infrastructure error is not a
candidate's failure.
"""

from __future__ import annotations

__all__ = [
    "AgentSourceError", "AttemptFailed", "BadInput", "ChangesOutsideAgent", "EditError",
    "EditRejected", "EndpointError", "EndpointSettingError", "ExecutorError", "ExportError",
    "HarnessError", "JournalError", "LineageError", "ModelCallFailed", "NoRuleMatched", "NotAnEdit",
    "NothingToCommit", "ProposerError", "Rejected", "ReportError", "RunFileError", "RunLocked",
    "ScriptError", "SplitError", "StopRequested", "TargetError", "UnknownImplementation",
    "WorkspaceError",
]


class HarnessError(Exception):
    """The root: anything the harness raises on purpose."""


class BadInput(HarnessError, ValueError):
    """A bad input from the user; the message names the thing and the fix."""


class RunFileError(BadInput):
    """A run file or override that cannot be read or is invalid; one problem per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class WorkspaceError(BadInput):
    """No workspace where one is needed, or a directory that cannot become one."""


class AgentSourceError(BadInput):
    """An agent (a directory, a ref) that cannot be resolved."""


class SplitError(BadInput):
    """A split option that cannot be used; the message names the value and the choices."""


class EndpointSettingError(BadInput):
    """A model has no endpoint, or the variable named for its key is not set."""


class TargetError(BadInput):
    """A run that cannot be targeted; the message names what is missing and the fix."""


class ReportError(BadInput):
    """No such run, or two generations that cannot be diffed; the message says which."""


class JournalError(BadInput):
    """A journal line that is not a record, where a crash cannot explain it; or a bad event."""


class ScriptError(BadInput):
    """A script file that cannot be read or is not a valid script."""


class UnknownImplementation(BadInput):
    """A name that no seam's registry knows; the message lists the known ones."""


class EditError(HarnessError, ValueError):
    """An answer that cannot become a change of the agent."""


class NotAnEdit(EditError):
    """The answer holds no edit, or a block is broken; the message tells the model why."""


class EditRejected(EditError):
    """An edit that cannot be applied; nothing was written."""


class AttemptFailed(HarnessError):
    """One proposal attempt failed at `stage`; `changed`: the files it had changed."""

    def __init__(self, stage: str, message: str, changed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.stage, self.changed = stage, changed


class ProposerError(HarnessError, RuntimeError):
    """The proposer could not run (not: the model's answer was bad)."""


class ModelCallFailed(ProposerError):
    """The meta model could not be called: the endpoint or the gateway refused or failed."""


class LineageError(HarnessError, RuntimeError):
    """A lineage operation that cannot be done; the message says which ref or path."""


class NothingToCommit(LineageError):
    """The worktree holds no change under ``agent_seed/`` (pass ``allow_empty`` to commit anyway)."""


class ChangesOutsideAgent(LineageError):
    """The worktree changed files outside ``agent_seed/``: the loop may only edit the agent."""


class EndpointError(HarnessError, RuntimeError):
    """The configured model endpoint cannot be used; the message names the URL and the fix."""


class ExecutorError(HarnessError, RuntimeError):
    """The executor cannot be used as asked (Ray missing, no cluster at the address...)."""


class ExportError(HarnessError, RuntimeError):
    """The run cannot be exported as asked: no such run, generation or kind of export."""


class RunLocked(HarnessError, RuntimeError):
    """The run is live: another process holds its lock. The message says which."""


class Rejected(HarnessError):
    """A request the gateway refuses before accounting: ``status`` and a message for the agent."""

    def __init__(self, status: int, message: str, code: str = "invalid_request"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class NoRuleMatched(HarnessError, LookupError):
    """No recording, rule or default answers a request; the message says which request."""


class StopRequested(HarnessError):
    """Ctrl-C or a spent budget: the loop stops between journaled steps."""
