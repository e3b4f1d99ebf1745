"""Which tasks the proposer studies, which decide acceptance, which only report.

A search overfits whatever it is scored on, so a claim that a generation is better should be
made on tasks the proposer never saw. A suite says which tasks belong together with each
task's ``split`` field (``forged`` has ``train`` and ``heldout``); a run picks:

- ``study``: the tasks whose failures the proposer is shown (evidence);
- ``decide``: the tasks the acceptance rule compares candidate and best on;
- ``report``: an optional split evaluated only for the best (generation 0 and each accepted
  generation), shown in the report as the held-out curve and never used to decide.

:func:`plan_splits` is a pure function of the suite's tasks and the run's options; every bad
value is one :class:`SplitError` naming the value and the choices. With no option at all the
run studies and decides on the same tasks (the quickstart default): the evidence then carries
test ids and pass/fail but never the grader's log (``SplitPlan.studies_deciding``).

``--holdout N`` is a shorthand for a split the suite does not have: N tasks drawn by a seeded
shuffle of the sorted task ids (the same N for the same seed and suite, whatever the file
order) decide; the others are studied.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import SplitError

__all__ = ["SplitError", "SplitPlan", "check_unchanged", "parse_split_names", "plan_splits", "sign_test_power",
           "split_of", "start_of_run_power"]


def split_of(task: Any) -> str | None:
    """The task's ``split`` field (a suite's extra field), or None."""
    value = (getattr(task, "model_extra", None) or {}).get("split")
    return value if isinstance(value, str) and value else None


def parse_split_names(value: str | None, option: str) -> tuple[str, ...]:
    """``"train,dev"`` -> ``("train", "dev")``; None -> ``()``; an empty name is an error."""
    if value is None:
        return ()
    names = tuple(part.strip() for part in value.split(","))
    if not value.strip() or any(not name for name in names):
        raise SplitError(f"{option} {value!r} names an empty split; give one or more split names "
                         "separated by commas, e.g. train or train,dev")
    return names


@dataclass(frozen=True)
class SplitPlan:
    study: list[Any]
    decide: list[Any]
    report: list[Any]
    how: str
    """One line: how the tasks were split, for the log header and ``ratchet status``."""

    @property
    def studies_deciding(self) -> bool:
        """The proposer studies tasks that decide: its evidence must hold no grader log."""
        decide = {t.instance_id for t in self.decide}
        return any(t.instance_id in decide for t in self.study)

    @property
    def run_each_generation(self) -> list[Any]:
        """Every candidate runs these: the deciding tasks and the study tasks (a candidate
        may become a parent, whose study results are the next proposal's evidence)."""
        wanted = {t.instance_id for t in self.study} | {t.instance_id for t in self.decide}
        seen: set[str] = set()
        out = []
        for task in [*self.decide, *self.study]:
            if task.instance_id in wanted and task.instance_id not in seen:
                seen.add(task.instance_id)
                out.append(task)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"how": self.how, "study": [t.instance_id for t in self.study],
                "decide": [t.instance_id for t in self.decide],
                "report": [t.instance_id for t in self.report]}


def _counts(tasks: Sequence[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in tasks:
        name = split_of(task)
        if name is not None:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _choices(counts: dict[str, int]) -> str:
    if not counts:
        return "the suite has no `split` field (use --holdout N for a seeded held-out draw)"
    return "the suite's splits: " + ", ".join(f"{n} ({c} tasks)" for n, c in sorted(counts.items()))


def _pick(tasks: Sequence[Any], names: tuple[str, ...], option: str,
          counts: dict[str, int]) -> list[Any]:
    for name in names:
        if name not in counts:
            raise SplitError(f"{option} {name!r} is not a split of this suite; {_choices(counts)}")
    return [t for t in tasks if split_of(t) in names]


def _label(tasks: Sequence[Any]) -> str:
    """``train (69 tasks)``: the split names the tasks carry (``-`` for none)."""
    names = sorted({split_of(t) or "-" for t in tasks})
    return f"{','.join(names)} ({len(tasks)} tasks)"


def plan_splits(tasks: Sequence[Any], *, study: str | None = None, decide: str | None = None,
                report: str | None = None, holdout: int = 0, seed: int = 0) -> SplitPlan:
    """The run's split of ``tasks`` (in file order within each part); see the module doc.

    ``study``/``decide`` are comma-separated split names; either alone takes the other as
    every remaining task (the report split excepted). ``holdout`` excludes both.
    """
    tasks = list(tasks)
    if not tasks:
        raise SplitError("the suite holds no task to split")
    counts = _counts(tasks)
    study_names = parse_split_names(study, "--study")
    decide_names = parse_split_names(decide, "--decide")
    report_names = parse_split_names(report, "--report-split")
    if len(report_names) > 1:
        raise SplitError(f"--report-split {report!r}: give one split name; {_choices(counts)}")
    if isinstance(holdout, bool) or not isinstance(holdout, int):
        raise SplitError(f"--holdout {holdout!r} must be a whole number of tasks")
    reported = _pick(tasks, report_names, "--report-split", counts)
    report_ids = {t.instance_id for t in reported}
    pool = [t for t in tasks if t.instance_id not in report_ids]
    for option, names in (("--study", study_names), ("--decide", decide_names)):
        clash = set(names) & set(report_names)
        if clash:
            raise SplitError(f"{option} and --report-split both name {', '.join(sorted(clash))}: "
                             "the report split is never studied and never decides")
    if holdout and (study_names or decide_names):
        raise SplitError(f"--holdout {holdout} and --study/--decide both say which tasks decide; "
                         "give one of them")
    if holdout:
        if holdout < 0 or holdout >= len(pool):
            raise SplitError(f"--holdout {holdout} is out of range: give 0 (off) or 1 to "
                             f"{len(pool) - 1}, fewer than the {len(pool)} tasks it draws from, so "
                             "that some are left to study")
        ids = sorted(t.instance_id for t in pool)
        drawn = set(random.Random(f"ratchet-holdout:{seed}").sample(ids, holdout))
        held = [t for t in pool if t.instance_id in drawn]
        studied = [t for t in pool if t.instance_id not in drawn]
        how = (f"study {len(studied)} tasks, decide on {holdout} held out by a seeded draw "
               f"(seed {seed})")
    elif study_names or decide_names:
        overlap = set(study_names) & set(decide_names)
        if overlap:
            raise SplitError(f"--study {study!r} and --decide {decide!r} overlap ({', '.join(sorted(overlap))}): "
                             "the proposer must never study the tasks that decide; "
                             f"{_choices(counts)}")
        studied = _pick(pool, study_names, "--study", counts) if study_names else None
        held = _pick(pool, decide_names, "--decide", counts) if decide_names else None
        if studied is None:
            held_ids = {t.instance_id for t in held}
            studied = [t for t in pool if t.instance_id not in held_ids]
        if held is None:
            studied_ids = {t.instance_id for t in studied}
            held = [t for t in pool if t.instance_id not in studied_ids]
        for given, value, part, role in (("--decide", decide, studied, "study"),
                                         ("--study", study, held, "decide on")):
            if not part:
                raise SplitError(f"{given} {value!r} takes every task, which leaves none to "
                                 f"{role}; {_choices(counts)}")
        how = f"study {_label(studied)}, decide on {_label(held)}"
        unused = len(pool) - len(studied) - len(held)
        if unused:
            how += f"; {unused} tasks in neither, not run"
    else:
        studied = held = pool
        how = f"study and decide on the same {len(pool)} tasks (no held-out split)"
    if report_names:
        if not reported:
            raise SplitError(f"--report-split {report!r} holds no task; {_choices(counts)}")
        how += f"; report-only: {_label(reported)}"
    return SplitPlan(list(studied), list(held), reported, how)


def check_unchanged(plan: SplitPlan, previous: dict[str, Any]) -> None:
    """A resumed run must split its tasks as it did when it started (``runs/RUN/splits.json``):
    otherwise a generation could be decided on tasks an earlier proposal studied."""
    now = plan.as_dict()
    changed = [part for part in ("study", "decide", "report")
               if sorted(previous.get(part) or []) != sorted(now[part])]
    if changed:
        raise SplitError(f"the run's {', '.join(changed)} tasks differ from those it started with "
                         f"(it started as: {previous.get('how', '?')}; now: {plan.how}): the suite "
                         "or the split options changed. Resume with the same suite file, or start "
                         "a new run")


def _binom_pmf(n: int, p: float) -> list[float]:
    """P(Binomial(n, p) = i) for i in 0..n, in log space (no overflow for large n)."""
    if p <= 0 or p >= 1:
        return [1.0 if i == (n if p >= 1 else 0) else 0.0 for i in range(n + 1)]
    lp, lq, ln = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    return [math.exp(ln - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)
            for i in range(n + 1)]


def _tail(pmf: list[float], k: int) -> float:
    """P(X >= k) from a pmf."""
    return math.fsum(pmf[k:]) if k < len(pmf) else 0.0


def sign_test_power(n_pairs: int, effect: float, *, alpha: float, base_rate: float = 0.4) -> float:
    """Power of the one-sided exact sign test at ``alpha`` on ``n_pairs`` (task, attempt)
    pairs, when candidate and best succeed independently with rates ``base_rate + effect``
    and ``base_rate``. Exact under that model (a simplification: real tasks differ in
    difficulty); a stand-in until the project's simulated ``harness.loop.power`` is available."""
    if n_pairs < 1 or not 0 < alpha < 1:
        return 0.0
    p_best, p_cand = base_rate, min(1.0, base_rate + effect)
    win, loss = p_cand * (1 - p_best), p_best * (1 - p_cand)
    discord = win + loss
    if discord <= 0:
        return 0.0
    q = win / discord
    discordant = _binom_pmf(n_pairs, discord)
    total = 0.0
    for d in range(1, n_pairs + 1):
        null = _binom_pmf(d, 0.5)
        tail, critical = 0.0, None  # the smallest w with P(W >= w | d, 1/2) <= alpha
        for w in range(d, -1, -1):
            tail += null[w]
            if tail > alpha:
                critical = w + 1
                break
        if critical is None or critical > d:
            continue
        total += discordant[d] * _tail(_binom_pmf(d, q), critical)
    return min(1.0, total)


def start_of_run_power(settings: Any, n_decide: int) -> str:
    """The line printed at the start of a run: power for a true +0.05 and +0.10 change on the
    deciding tasks. Uses ``harness.loop.power.power`` (the simulated power of the run's own rule)
    where it exists; otherwise the exact sign test at 0.05 / generations (Bonferroni)."""
    attempts = int(getattr(settings, "attempts", 1) or 1)
    generations = int(getattr(settings, "generations", 1) or 1)
    try:
        from harness.loop.power import power  # type: ignore[import-not-found]
    except ImportError:
        power = None
    values: list[float] = []
    if power is not None:
        try:
            values = [power(settings.acceptance, n_decide, attempts, effect, generations=generations)
                      for effect in (0.05, 0.10)]
            how = f"rule {settings.acceptance}, simulated"
        except ValueError:  # a rule the simulation does not know: the stand-in below
            values = []
    if not values:
        alpha = 0.05 / max(1, generations)
        values = [sign_test_power(n_decide * attempts, effect, alpha=alpha) for effect in (0.05, 0.10)]
        how = f"exact sign test at alpha 0.05/{generations}, base rate 0.4"
    return (f"power to accept a true +0.05 / +0.10 change: {values[0]:.2f} / {values[1]:.2f} "
            f"({n_decide} deciding tasks x {attempts} attempt(s); {how})")
