"""A noisy world for checking the loop's statistics end to end, with real sandboxes.

The agent model is a `StochasticScript`: it solves each task with a probability, like a
sampling model, and that probability depends on the agent's own config (its lessons file,
rendered into the system prompt). The meta model proposes, in turn:

1. a **real improvement**: a lesson whose text raises every task's success rate by ``effect``;
2. a **no-op**: a lesson the agent model ignores, so the candidate is exactly as good as the
   best; only noise can make it look better.

Used by the short check in tests/harness/test_loop_noise.py and the long one in
perf/loop_noise.py: the improvement must be accepted and the no-op rejected.
"""

from __future__ import annotations

from benchmark import TaskSpec
from harness.models.scripted_model import Effect, Rule, Script, StochasticScript, StochasticTask

__all__ = ["IMPROVING_LESSON", "NO_OP_LESSON", "stochastic_agent_script", "stochastic_meta_script"]

IMPROVING_LESSON = "- Run the failing test first, then fix exactly what it shows."
NO_OP_LESSON = "- Prefer short variable names in scratch scripts."
_LAST_SEED_LESSON = "- Check `git diff` before submitting: it is exactly what will be graded."
_EOF = "RATCHET_NOISE_PATCH"


def _solve(task: TaskSpec) -> list[str]:
    patch = task.patch if task.patch.endswith("\n") else task.patch + "\n"
    return [f"Applying the fix.\n\n```bash\ncd /testbed && git apply <<'{_EOF}'\n{patch}{_EOF}\n```",
            "Done.\n\n```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"]


def stochastic_agent_script(tasks: list[TaskSpec], rates: list[float], *, effect: float,
                            seed: int = 0) -> StochasticScript:
    """Task i solved with probability rates[i]; with IMPROVING_LESSON in the agent's lessons,
    the mean rate moves by ``effect``. NO_OP_LESSON changes nothing."""
    return StochasticScript(
        seed=seed, effects=[Effect(system_contains=IMPROVING_LESSON, effect=effect)],
        tasks=[StochasticTask(anchor=t.problem_statement.strip().splitlines()[0], rate=rate,
                              solve=_solve(t)) for t, rate in zip(tasks, rates, strict=True)])


def _add_lesson(lesson: str, after: str, why: str) -> str:
    return (f"<diagnosis>\n{why}\n</diagnosis>\n\nagent_seed/lessons.md\n<<<<<<< SEARCH\n"
            f"{after}\n=======\n{after}\n{lesson}\n>>>>>>> REPLACE\n")


def stochastic_meta_script() -> Script:
    """First the improving lesson; shown an agent that has it, the no-op lesson."""
    return Script(rules=[
        Rule(any_contains=IMPROVING_LESSON, reply=_add_lesson(
            NO_OP_LESSON, IMPROVING_LESSON, "Scratch scripts are long; shorter names read faster.")),
    ], default=_add_lesson(IMPROVING_LESSON, _LAST_SEED_LESSON,
                           "The agent edits before it knows what fails; running the failing "
                           "test first points it at the bug."))
