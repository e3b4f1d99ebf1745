"""The scripted demo: both models of a run, played by the scripted model server.

A new user with no endpoint sees the whole loop work in minutes, clearly labelled as
scripted. The story is small but real:

- The **agent model** answers every quickstart task with its fix in three steps (apply,
  test, submit), like `harness.models.oracle`, but for some tasks it fences its commands as
  ```` ```sh ```` instead of ```` ```bash ```` (real models do this). The seed agent only
  accepts ``bash`` fences: those replies are format errors until its step limit, and the
  tasks stay unresolved. That is a real weakness of the seed agent.
- The **meta model**, shown the seed's source and the failed trajectories, diagnoses it and
  proposes a one-line edit to ``agent_seed/agent.py`` accepting ``sh``/``shell`` fences: the
  candidate resolves more tasks and is accepted.
- Shown the improved agent, it then proposes to "tighten" the fence back to ``bash`` only:
  the candidate resolves fewer tasks and is rejected; ``best`` stays where it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark import TaskSpec
from harness.models.scripted_model import Rule, Script, Usage

if TYPE_CHECKING:
    from harness.loop.settings import LoopSettings

__all__ = ["DEMO_META_USAGE", "demo_agent_script", "demo_meta_script", "demo_settings", "SH_FENCED_REPOS"]

SH_FENCED_REPOS = ("toolz", "inflection")
"""Tasks of these repos get ```sh fences from the demo's agent model: 6 of the 9 quickstart
tasks, so the fix wins 6 pairs and loses none, which the default rule (the sign test at a
run budget of 0.05 over 2 generations, p = 1/64 <= 0.025) accepts on one attempt."""
DEMO_AGENT_USAGE = Usage(prompt_tokens=1000, completion_tokens=100)
DEMO_META_USAGE = Usage(prompt_tokens=6000, completion_tokens=400)

SEED_FENCE = 'BASH_BLOCK = re.compile(r"```bash[ \\t]*\\n(.*?)\\n?```", re.DOTALL)'
WIDE_FENCE = 'BASH_BLOCK = re.compile(r"```(?:bash|sh|shell)[ \\t]*\\n(.*?)\\n?```", re.DOTALL)'
_EOF = "RATCHET_DEMO_PATCH"


def demo_settings(run: str, generations: int = 2) -> "LoopSettings":
    """Every setting of the demo, given here in full: the demo never inherits a CLI default."""
    from harness.loop.settings import LoopSettings

    return LoopSettings(run=run, suite="quickstart", generations=generations,
                        agent_model="scripted", meta_model="scripted", scripted="demo",
                        budget_usd=None, acceptance="sign", attempts=1, proposals=1,
                        horizon=generations, selector="best", holdout=0, workers=2,
                        proposer="meta", executor="local")


def _step(fence: str, command: str, thought: str) -> str:
    return f"{thought}\n\n```{fence}\n{command}\n```"


def demo_agent_script(tasks: list[TaskSpec]) -> Script:
    rules = []
    for task in tasks:
        fence = "sh" if task.repo in SH_FENCED_REPOS or task.instance_id.split("__")[0] in SH_FENCED_REPOS else "bash"
        anchor = task.problem_statement.strip().splitlines()[0]
        patch = task.patch if task.patch.endswith("\n") else task.patch + "\n"
        rules.append(Rule(any_contains=anchor, usage=DEMO_AGENT_USAGE, replies=[
            _step(fence, f"cd /testbed && git apply <<'{_EOF}'\n{patch}{_EOF}\ngit status --short",
                  "Reproduced it; applying the fix."),
            _step(fence, "cd /testbed && python -m pytest -q -x -p no:cacheprovider 2>&1 | tail -3",
                  "Running the tests."),
            _step(fence, "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", "Done."),
        ]))
    return Script(rules=rules)


_WIDEN = f"""<diagnosis>
The agent rejects replies whose command block is fenced as ```sh instead of ```bash.
In the failed runs the model answered with correct commands fenced as ```sh; the agent
replied with a format error every time until the step limit, and never ran them. Accepting
the common shell fence names (bash, sh, shell) fixes every one of those runs.
</diagnosis>

agent_seed/agent.py
<<<<<<< SEARCH
{SEED_FENCE}
=======
{WIDE_FENCE}
>>>>>>> REPLACE
"""

_NARROW = f"""<diagnosis>
Tighten the command format: accept only ```bash blocks so that replies are uniform.
Other fence names are ambiguous and may hide non-bash code.
</diagnosis>

agent_seed/agent.py
<<<<<<< SEARCH
{WIDE_FENCE}
=======
{SEED_FENCE}
>>>>>>> REPLACE
"""


def demo_meta_script() -> Script:
    """First the real fix (shown the seed's fence), then the harmful "tightening"."""
    return Script(rules=[
        Rule(any_contains=SEED_FENCE, reply=_WIDEN, usage=DEMO_META_USAGE),
        Rule(any_contains=WIDE_FENCE, reply=_NARROW, usage=DEMO_META_USAGE),
    ])
