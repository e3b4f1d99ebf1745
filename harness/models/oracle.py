"""The oracle script: a scripted model that knows every task's fix.

For demos and tests only, and labelled so: it shows the whole path (agent loop in a real
sandbox → gateway → scripted upstream → patch → grader) resolving tasks without a real
model. It reads the gold patches on the host, in the trusted harness; they never enter a
sandbox except as the model's reply, exactly as a real model's answer would.
"""

from __future__ import annotations

from benchmark import TaskSpec
from harness.models.scripted_model import Rule, Script, Usage

__all__ = ["ORACLE_USAGE", "oracle_script"]

ORACLE_USAGE = Usage(prompt_tokens=1000, completion_tokens=100)
"""Every oracle reply reports these counts, so a run's token totals are known in advance."""
_EOF = "RATCHET_ORACLE_PATCH"


def _bash(command: str, thought: str) -> str:
    return f"{thought}\n\n```bash\n{command}\n```"


def oracle_script(tasks: list[TaskSpec]) -> Script:
    """Three turns per task: apply the gold patch, run the tests, submit."""
    rules = []
    for task in tasks:
        anchor = task.problem_statement.strip().splitlines()[0]
        patch = task.patch if task.patch.endswith("\n") else task.patch + "\n"
        rules.append(Rule(any_contains=anchor, usage=ORACLE_USAGE, replies=[
            _bash(f"cd /testbed && git apply <<'{_EOF}'\n{patch}{_EOF}\ngit status --short",
                  "I know this bug; applying the fix."),
            _bash("cd /testbed && python -m pytest -q -x -p no:cacheprovider 2>&1 | tail -3",
                  "Checking the test suite."),
            _bash("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", "Done."),
        ]))
    return Script(rules=rules)
