"""Official SWE-bench rows: their image name and how their tests are run.

An official row (no ratchet ``source``/``environment``) runs in the official eval image:
``swebench/sweb.eval.x86_64.<instance id, __ as _1776_>:latest``, named by swebench's own
``ImageSpec`` (namespace and tag from ``RATCHET_SWEBENCH_NAMESPACE`` / ``RATCHET_SWEBENCH_TAG``:
a mirror, a local registry ``localhost:5000/swebench``, or ``none`` for locally built images).

Its tests are run as the row says. A swebench 5.x row carries its ``eval_script`` and
``log_parser`` (swebench 5.0.2 no longer makes eval scripts: ``make_test_spec`` reads them
from the row). ratchet does not run that script as it is (as root, git hooks on, trusting
what it prints): it takes the script's *environment lines* (conda activation, exports,
anything before the hidden test patch that is not git) and its *test command* (between the
output markers), and hands both to the hardened grading wrapper (`_wrapper`), which restores
the test files, applies the test patch itself (hooks off), plants trip-wires where the parser
is pytest's, and runs them as the sandbox user. A row of the classic twelve fields has no
script; for a repository whose official parser is pytest's, the default is what the official
images support (``pytest -rA`` on the test patch's files in the ``testbed`` conda env); for
any other (Django's runtests, SymPy's bin/test) ratchet knows no safe default and says so.

Specs are data: nothing here touches Docker.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmark._task import TaskSpec

__all__ = ["OfficialSpec", "official_image", "official_problem", "official_spec",
           "split_eval_script"]

NAMESPACE_ENV = "RATCHET_SWEBENCH_NAMESPACE"
TAG_ENV = "RATCHET_SWEBENCH_TAG"
DEFAULT_NAMESPACE = "swebench"
ACTIVATE = ("source /opt/miniconda3/bin/activate", "conda activate testbed")
"""How the official images' eval scripts enter the task environment."""
_PYTEST_FAMILY = ("parse_log_pytest", "parse_log_pytest_options", "parse_log_pytest_v2")
_HEREDOC = re.compile(r"<<-?\s*'?\"?([A-Za-z0-9_]+)'?\"?")
_START = ">>>>> Start Test Output"
_END = ">>>>> End Test Output"


def official_image(task: "TaskSpec") -> str:
    """The official eval image of `task`, by swebench's own naming (``ImageSpec.name``)."""
    from swebench.image_builder.image_spec import ImageSpec

    namespace = os.environ.get(NAMESPACE_ENV, DEFAULT_NAMESPACE).strip().rstrip("/")
    tag = os.environ.get(TAG_ENV, "").strip() or "latest"
    spec = ImageSpec(instance_id=task.instance_id, dockerfile="(pulled, not built)",
                     namespace=None if namespace.lower() in ("", "none") else namespace, tag=tag)
    return spec.name


@dataclass(frozen=True)
class OfficialSpec:
    """What the grading wrapper needs of an official row: the environment lines to run
    before the tests, the test command, and the swebench parser that reads its output."""

    setup: tuple[str, ...]
    test_command: str
    log_parser: str

    @property
    def script(self) -> str:
        """One bash text for the wrapper's test step: setup, then the tests (whose exit
        status is the script's)."""
        return "\n".join(["set -o pipefail", *self.setup, self.test_command])


def split_eval_script(script: str) -> tuple[list[str], str]:
    """(environment lines, test command) of a SWE-bench eval script: the lines before the
    output markers that are neither git, a heredoc's body, the shebang nor ``set``; and the
    lines between the markers. Raises ValueError when the markers are missing."""
    lines = script.splitlines()
    starts = [i for i, line in enumerate(lines) if _START in line]
    ends = [i for i, line in enumerate(lines) if _END in line]
    if not starts or not ends or ends[-1] <= starts[0]:
        raise ValueError(f"has no '{_START}' ... '{_END}' markers around its test command")
    setup: list[str] = []
    heredoc_end = None
    for line in lines[: starts[0]]:
        stripped = line.strip()
        if heredoc_end is not None:
            if stripped == heredoc_end:
                heredoc_end = None
            continue
        match = _HEREDOC.search(line)
        if match:  # the test patch (or a file) written by the script: the wrapper does it
            heredoc_end = match.group(1)
            continue
        if (not stripped or stripped.startswith("#") or stripped.startswith("set ")
                or stripped == "git" or stripped.startswith("git ")):
            continue
        setup.append(line)
    command = "\n".join(lines[starts[0] + 1: ends[-1]]).strip()
    if not command:
        raise ValueError("runs no command between its test output markers")
    return setup, command


def _default_parser(repo: str) -> str:
    from swebench.harness.log_parsers.python import MAP_REPO_TO_PARSER_PY

    parser = MAP_REPO_TO_PARSER_PY.get(repo)
    return parser.__name__ if parser is not None else "parse_log_pytest"


def official_spec(task: "TaskSpec") -> OfficialSpec:
    """The row's own spec (its eval script and parser), or the pytest default."""
    parser = task.log_parser or _default_parser(task.repo)
    if not parser.startswith("parse_log_"):
        parser = f"parse_log_{parser}"
    if task.eval_script:
        setup, command = split_eval_script(task.eval_script)
        return OfficialSpec(tuple(setup), command, parser)
    return OfficialSpec(ACTIVATE, f"pytest -rA {shlex.join(task.test_files)}", parser)


def official_problem(task: "TaskSpec") -> str | None:
    """Why an official row cannot be graded (None when it can), said at load time."""
    if task.eval_script:
        try:
            split_eval_script(task.eval_script)
        except ValueError as exc:
            return f"eval_script {exc}"
        return None
    parser = task.log_parser or _default_parser(task.repo)
    name = parser if parser.startswith("parse_log_") else f"parse_log_{parser}"
    if name not in _PYTEST_FAMILY:
        return (f"carries no 'eval_script', and {task.repo} is not run by pytest (its official "
                f"parser is {name}); swebench 5.0.2 no longer makes eval scripts, so ratchet has "
                "no command for it. Use the swebench 5.x dataset rows (they carry 'eval_script' "
                "and 'log_parser'), or add both fields to the row")
    return None
