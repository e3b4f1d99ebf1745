"""``ratchet forge --target RUN``: read where a run's best agent fails, for the forge's
curriculum (`benchmark.forge.curriculum`).

The run's journal says which generation is best; that generation's ``metrics.json`` holds
its per-task outcomes; the run's settings name the suite, whose tasks carry the bug kind
and package of each forged task. Only reading: the run is not touched.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.forge.curriculum import Curriculum, weak_spots

from harness.errors import TargetError

__all__ = ["TargetError", "read_target"]


def read_target(root: Path, run: str) -> Curriculum:
    """The curriculum of run `run` in the workspace at `root`."""
    from benchmark import load_suite
    from harness.loop.journal import Journal, replay

    run_dir = root / "runs" / run
    journal = run_dir / "journal.jsonl"
    if not journal.is_file():
        raise TargetError(f"no run {run} in {root / 'runs'} (see `ratchet runs`)")
    state = replay(Journal.read(journal))
    best = state.best if state.best is not None else 0
    metrics_path = run_dir / "gens" / f"{best:04d}" / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        settings = json.loads((run_dir / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TargetError(f"run {run} has no readable outcomes of its best generation {best} "
                          f"({exc}); let it finish a generation, or `ratchet resume {run}`") from exc
    outcomes = metrics.get("tasks")
    if not isinstance(outcomes, dict) or not outcomes:
        raise TargetError(f"run {run}: generation {best} was scored on no task; nothing to target")
    curriculum = weak_spots({k: bool(v) for k, v in outcomes.items()},
                            load_suite(settings["suite"]).tasks, run=run, generation=best)
    if not curriculum.kinds and not curriculum.packages:
        raise TargetError(f"run {run}: none of its tasks came from a PyPI package or the forge; "
                          "target a run on a forged suite (e.g. --suite forged)")
    return curriculum
