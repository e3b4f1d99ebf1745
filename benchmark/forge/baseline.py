"""When a package's own suite cannot be a baseline: say why, before any mutation is screened.

A forge whose pristine suite does not run to the end, or runs but passes no test, would
screen every candidate for nothing (no test can break). Instead it stops, keeps the
baseline's pytest output as ``baseline.log`` in the run folder, and names the likely
cause and its fix (pure functions of the log here; ``Forge.baseline`` calls them).
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmark.forge.packages import ForgeInputError

__all__ = ["BaselineError", "baseline_error", "likely_cause", "needs_older_pytest"]

_TAIL_LINES = 25


class BaselineError(ForgeInputError):
    """The pristine suite is no baseline; the message carries the cause and the log's tail."""

    def __init__(self, message: str, log: Path | None, output: str):
        self.log, self.output = log, output
        super().__init__(message)


def likely_cause(output: str, test_paths: str, timeout_s: int) -> str:
    """One sentence: what in a failed or empty baseline run is the likely cause, and the fix."""
    missing = re.search(r"ModuleNotFoundError: No module named '([^']+)'", output)
    if missing:
        return (f"a test imports {missing.group(1).split('.')[0]!r}, which is not installed: "
                "add its distribution pinned with --deps NAME==VERSION")
    if re.search(r"(?m)^ERROR: usage:|error: unrecognized arguments|no such option", output):
        return ("pytest refused its options (often addopts for a plugin that is not "
                "installed): pass --test-opts \"-o addopts=\" or --deps with the plugin")
    missing_path = re.search(r"file or directory not found: (\S+)", output)
    if missing_path:
        return (f"the test path {missing_path.group(1)!r} is not in the sdist: pass "
                "--test-paths with where its tests are")
    if needs_older_pytest(output):
        return ("a conftest.py or plugin fails under this pytest: try --pytest-version "
                "with an older pytest, or --deps with what it imports")
    if re.search(r"(?m)^(no tests ran|collected 0 items)", output) or "no tests ran" in output:
        where = test_paths or "the package's own testpaths"
        return f"pytest collected no tests from {where}: pass --test-paths with where they are"
    if re.search(r"(?m)^ERROR collecting|^_+ ERROR collecting", output):
        return ("a test module failed to import or collect: see the first ERROR collecting "
                "block; a missing test dependency goes in --deps")
    if not output.strip() or ">>>>> FORGE EXIT" not in output and "passed" not in output \
            and "failed" not in output:
        return (f"the suite did not finish within the {timeout_s} s limit per run (or crashed "
                "before its summary): narrow it with --test-paths")
    if re.search(r"(?m)^=+ .*\b(passed|failed)\b", output):
        return ("no test passed both baseline runs: the suite fails as released here; pick "
                "another release, or --deps with what its tests need")
    return "pytest did not print its closing summary: see the log"


def needs_older_pytest(output: str) -> bool:
    """Whether a failed baseline looks like the default pytest rejecting the package's own
    pytest code (a conftest, a plugin hook, an API removed in pytest 9): worth one retry
    with FALLBACK_PYTEST."""
    return bool(re.search(
        r"ImportError while loading conftest|PytestRemovedIn\d+|PluginValidationError|"
        r"INTERNALERROR|AttributeError: module 'pytest' has no attribute|"
        r"pytest\.PytestRemoved|TypeError: .*(hookimpl|fixture)|unknown hook", output))


def baseline_error(requirement: str, output: str, why: str, log: Path | None,
                   test_paths: str, timeout_s: int) -> BaselineError:
    """The error that stops a forge, with the log's tail and the likely cause."""
    tail = "\n".join(output.rstrip().splitlines()[-_TAIL_LINES:]) or "(no output)"
    message = (f"the pristine suite of {requirement} is no baseline ({why}); nothing was "
               f"screened.\nlikely cause: {likely_cause(output, test_paths, timeout_s)}\n"
               f"last lines of the baseline run"
               + (f" (whole log: {log})" if log else "") + f":\n{tail}")
    return BaselineError(message, log, output)
