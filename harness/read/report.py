"""A run as one self-contained HTML page: ``ratchet report RUN`` and ``ratchet diff --html``.

Data apart from drawing, as in the rest of ratchet:

- ``load_run`` is the only function here that reads anything: the journal (replayed with
  ``harness.loop.journal.replay``, the same reading as ``ratchet log``), ``gens/NNNN/metrics.json``,
  ``settings.json``, the meta model's gateway logs (its tokens) and the git lineage (each
  accepted change's diff). It returns a ``RunReport``, plain data.
- ``rate_chart``, ``spend_chart``, ``lineage_tree`` and ``outcome_grid`` are pure: they lay a
  ``RunReport`` out as numbers (coordinates, ticks, classes), no markup.
- ``templates/report.html.j2`` turns those into HTML with inline CSS and SVG, autoescaped
  (diagnoses and diffs are model-written text). No script, no font, no URL: the file opens
  offline, attached to an issue or mailed, and shows the same thing everywhere.

A generation's *status* is its verdict, except that a proposal that never became an edit
is ``invalid`` (rejected without an evaluation) and a generation not decided yet is
``pending``. "Best so far" is what the run's ``best`` ref pointed at after each generation:
the last accepted generation, as ``replay`` counts it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import jinja2

from harness.loop.journal import GenerationState, Journal, replay
from harness.loop.tamper import run_tampering
from harness.errors import ReportError

__all__ = ["Change", "DiffLine", "GenerationSummary", "ReportError", "RunReport", "diff_lines",
           "lineage_tree", "load_run", "outcome_grid", "rate_chart", "render_diff", "render_report",
           "spend_chart", "write_diff", "write_report"]

_TEMPLATE = "report.html.j2"


# -- data -------------------------------------------------------------------------------------


class DiffLine(NamedTuple):
    kind: str
    """"file" (headers), "hunk" (``@@``), "add", "del" or "ctx"."""
    text: str


@dataclass(frozen=True)
class GenerationSummary:
    number: int
    parent: int | None
    status: str
    """"accepted", "rejected", "invalid" or "pending"."""
    headline: str = ""
    reason: str = ""
    """Why it was decided so (the acceptance rule's words, or why the proposal was invalid)."""
    resolved: int | None = None
    tasks: int | None = None
    """Runs planned: deciding tasks x attempts (the score's ``planned``)."""
    evaluated: int | None = None
    """Runs made; fewer than ``tasks`` when a futility look stopped the evaluation."""
    outcomes: dict[str, bool] = field(default_factory=dict)
    """Task id → resolved, for every task this generation's agent was graded on."""
    agent_cost_usd: float = 0.0
    meta_cost_usd: float = 0.0
    agent_tokens: int = 0
    """Tokens of the agent's task runs made in this generation (cached runs cost nothing)."""
    meta_tokens: int = 0
    """Tokens the meta model spent proposing this generation."""
    diagnosis: str = ""
    sha: str | None = None
    held_out: tuple[int, int] | None = None
    """(resolved, tasks) on the report-only split: run for the best only (generation 0 and
    each accepted generation), never used to decide."""
    tampered: list[str] = field(default_factory=list)
    """Tasks the grader caught this generation's agent tampering on (never accepted)."""
    flagged: list[str] = field(default_factory=list)
    """Tasks whose patch carries static-scan flags (`benchmark._scan`)."""
    proposal_flags: list[dict] = field(default_factory=list)
    """Flags on the proposal's own diff of the agent."""

    @property
    def rate(self) -> float | None:
        """Resolved over the runs made: a run never made is not a failure."""
        runs = self.evaluated if self.evaluated is not None else self.tasks
        return None if self.resolved is None or not runs else self.resolved / runs

    @property
    def stopped_early(self) -> bool:
        return self.evaluated is not None and self.tasks is not None and self.evaluated < self.tasks

    @property
    def score_text(self) -> str:
        if self.resolved is None:
            return ""
        text = f"{self.resolved}/{self.tasks}"
        return f"{text} ({self.evaluated} run)" if self.stopped_early else text


@dataclass(frozen=True)
class Change:
    """An accepted generation's change: what the meta model saw, and what it edited."""

    generation: int
    parent: int
    headline: str
    diagnosis: str
    diff: list[DiffLine]
    note: str = ""
    """Why the diff is missing, when it is."""


@dataclass
class RunReport:
    run: str
    settings: dict[str, Any]
    generations: list[GenerationSummary]
    tasks: list[str]
    """Every task id any generation was graded on, sorted."""
    changes: list[Change] = field(default_factory=list)
    best: int | None = None
    spent_usd: float = 0.0
    unpriced_calls: int = 0
    """Calls of a model with no known price: the run's spend is then unknown, not $0."""
    end_reason: str | None = None
    created: str = ""

    @property
    def tampered_runs(self) -> int:
        """Task runs graded tampered, over all generations: the run's summary counts them."""
        return sum(len(gen.tampered) for gen in self.generations)

    @property
    def scripted(self) -> str | None:
        """The scripted mode ("demo") when both models were canned answers, not real models."""
        return self.settings.get("scripted") or None


# -- reading a run ----------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _meta_tokens(log: Path) -> int:
    """Tokens in one gateway log (``trajectories/meta/gen-NNNN.meta.jsonl``); a torn line is skipped."""
    if not log.is_file():
        return 0
    total = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            usage = json.loads(line).get("usage") or {}
        except (json.JSONDecodeError, AttributeError):
            continue
        total += int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
    return total


def _held_out(metrics: dict[str, Any]) -> tuple[int, int] | None:
    split = metrics.get("report_split")
    if not isinstance(split, dict) or not split.get("tasks"):
        return None
    return int(split.get("resolved") or 0), int(split["tasks"])


def _status(gen: GenerationState, metrics: dict[str, Any]) -> str:
    if gen.proposal_valid is False or metrics.get("verdict") == "invalid":
        return "invalid"
    return gen.verdict or "pending"


def diff_lines(text: str) -> list[DiffLine]:
    """A unified diff split into lines, each with its kind (for colour)."""
    out = []
    for line in text.splitlines():
        if line.startswith(("diff --git", "index ", "--- ", "+++ ", "new file", "deleted file",
                            "similarity", "rename ", "old mode", "new mode", "Binary files")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append(DiffLine(kind, line))
    return out


class _Git:
    """The lineage's diffs, or the reason there are none (a run directory copied out of its
    workspace still reports, without diffs)."""

    def __init__(self, workspace: Path, run: str):
        from harness.loop.lineage import Lineage, LineageError

        self.problem = ""
        try:
            self.lineage: Lineage | None = Lineage(workspace, run)
        except (LineageError, ValueError) as exc:  # not a git repository: said on the page
            self.lineage, self.problem = None, f"no git lineage: {exc}"

    def diff(self, a: int, b: int, sha: str | None = None) -> tuple[str, str]:
        """(diff text, why it is missing): ``Lineage.diff(a, b)``, else the commit itself."""
        if self.lineage is None:
            return "", self.problem
        import git

        from harness.loop.lineage import LineageError

        try:
            return self.lineage.diff(a, b), ""
        except (LineageError, git.GitCommandError) as exc:
            if sha is None:
                return "", f"no diff of generations {a} and {b}: {str(exc).strip()[:300]}"
            try:  # the branches are gone (deleted by hand); the commit may still be there
                return str(self.lineage.repo.git.diff(f"{sha}^", sha, "--", "agent_seed/",
                                                      strip_newline_in_stdout=False)), ""
            except git.GitCommandError as again:
                return "", f"no diff of generation {b} ({sha[:12]}): {str(again).strip()[:300]}"


def load_run(workspace: Path, run: str, *, with_diffs: bool = True) -> RunReport:
    """Everything the report shows about ``run`` in ``workspace``; see the module docstring."""
    run_dir = Path(workspace) / "runs" / run
    journal = run_dir / "journal.jsonl"
    if not journal.is_file():
        raise ReportError(f"no run {run} in {run_dir.parent} (no {journal.name}; see `ratchet runs`)")
    events = Journal.read(journal)
    state = replay(events)
    settings = _read_json(run_dir / "settings.json")
    if not settings:  # the journal keeps them too
        started = [e for e in events if e.get("event") == "run_started"]
        settings = dict(started[-1].get("settings") or {}) if started else {}

    agent_cost: dict[int, float] = {}
    agent_tokens: dict[int, int] = {}
    meta_cost: dict[int, float] = {}
    diagnoses: dict[int, str] = {}
    proposal_flags: dict[int, list[dict]] = {}
    flagged: dict[int, set[str]] = {}
    by_tree: dict[str, dict[str, bool]] = {}
    for event in events:
        number = event.get("generation")
        if event.get("event") == "task_evaluated":
            result = event.get("result") or {}
            by_tree.setdefault(str(event.get("tree_hash")), {})[str(event.get("task_id"))] = bool(
                result.get("resolved"))
            if isinstance(number, int):
                agent_cost[number] = agent_cost.get(number, 0.0) + float(event.get("cost_usd") or 0.0)
                agent_tokens[number] = agent_tokens.get(number, 0) + int(
                    result.get("prompt_tokens") or 0) + int(result.get("completion_tokens") or 0)
                if result.get("flags"):
                    flagged.setdefault(number, set()).add(str(event.get("task_id")))
        elif event.get("event") == "proposal" and isinstance(number, int):
            meta_cost[number] = meta_cost.get(number, 0.0) + float(event.get("cost_usd") or 0.0)
            if event.get("diagnosis"):
                diagnoses[number] = str(event["diagnosis"])
            proposal_flags[number] = list(event.get("flags") or [])

    tampering = run_tampering(events)
    generations = []
    for number, gen in sorted(state.generations.items()):
        metrics = _read_json(run_dir / "gens" / f"{number:04d}" / "metrics.json")
        score = gen.score if isinstance(gen.score, dict) and gen.score else metrics.get("score") or {}
        outcomes = metrics.get("tasks")
        if not isinstance(outcomes, dict):  # not recorded yet: what the journal has for its tree
            outcomes = by_tree.get(str(metrics.get("tree") or ""), {})
        status = _status(gen, metrics)
        generations.append(GenerationSummary(
            number=number, parent=gen.parent, status=status,
            headline=str(metrics.get("headline") or gen.proposal_reason or ""),
            reason=str(gen.reason or ""),
            resolved=score.get("resolved"), tasks=score.get("planned", score.get("tasks")),
            evaluated=score.get("runs", score.get("evaluated", score.get("tasks"))),
            outcomes={str(k): bool(v) for k, v in outcomes.items()},
            agent_cost_usd=agent_cost.get(number, 0.0), meta_cost_usd=meta_cost.get(number, 0.0),
            agent_tokens=agent_tokens.get(number, 0),
            meta_tokens=_meta_tokens(run_dir / "trajectories" / "meta" / f"gen-{number:04d}.meta.jsonl"),
            diagnosis=diagnoses.get(number, ""), sha=gen.sha or metrics.get("sha"),
            held_out=_held_out(metrics),
            tampered=sorted(set(tampering.get(number, [])) | set(metrics.get("tampered") or [])),
            flagged=sorted(flagged.get(number, set()) | set(metrics.get("flagged") or [])),
            proposal_flags=proposal_flags.get(number, [])))

    changes = []
    if with_diffs:
        repo = _Git(Path(workspace), run)
        for summary in generations:
            if summary.status != "accepted" or summary.number == 0 or summary.parent is None:
                continue
            text, note = repo.diff(summary.parent, summary.number, summary.sha)
            changes.append(Change(summary.number, summary.parent, summary.headline, summary.diagnosis,
                                  diff_lines(text), note or ("" if text.strip() else "(no difference)")))
    tasks = sorted({task for gen in generations for task in gen.outcomes})
    return RunReport(run=run, settings=settings, generations=generations, tasks=tasks,
                     changes=changes, best=state.best, spent_usd=state.spent_usd,
                     unpriced_calls=state.unpriced_calls,
                     end_reason=state.end_reason,
                     created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))


# -- layout: numbers, no markup ---------------------------------------------------------------


class Tick(NamedTuple):
    at: float
    label: str


class Mark(NamedTuple):
    """One drawn thing: a point (``x``, ``y``) or a bar (``x``, ``y``, ``w``, ``h``)."""

    kind: str
    x: float
    y: float
    w: float = 0.0
    h: float = 0.0
    title: str = ""


@dataclass(frozen=True)
class Plot:
    """A chart's frame and marks, in SVG user units."""

    width: float
    height: float
    left: float
    top: float
    right: float
    bottom: float
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    marks: list[Mark]
    line: str = ""
    """An SVG ``points`` list (the best-so-far line), or ''."""
    note: str = ""
    heldout_line: str = ""
    """The best's rate on the report-only split, as ``points`` (a step at each acceptance)."""
    heldout_marks: list[Mark] = field(default_factory=list)


_W, _H, _L, _T, _R, _B = 1180.0, 260.0, 64.0, 22.0, 16.0, 34.0
_SPEND_W = 580.0
"""Cost and tokens sit side by side."""


def _x_ticks(numbers: list[int], x_of, most: int = 30) -> list[Tick]:
    step = max(1, math.ceil(len(numbers) / most))
    return [Tick(x_of(n), str(n)) for i, n in enumerate(numbers) if i % step == 0]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * power:
            return factor * power
    return 10 * power


def _slots(report: RunReport, width: float = _W):
    """The x of each generation: evenly spaced slots, the generation in a slot's middle."""
    numbers = [g.number for g in report.generations]
    slot = (width - _L - _R) / max(1, len(numbers))
    index = {n: i for i, n in enumerate(numbers)}
    return numbers, slot, (lambda n: _L + slot * (index[n] + 0.5))


def rate_chart(report: RunReport) -> Plot:
    """The resolved rate of each generation (a mark per generation, by status) and the best so far."""
    numbers, slot, x_of = _slots(report)
    base = _H - _B

    def y_of(rate: float) -> float:
        return _T + (1.0 - rate) * (base - _T)

    marks, line, best_rate = [], [], None
    for gen in report.generations:
        x = x_of(gen.number)
        if gen.rate is None:
            marks.append(Mark("invalid" if gen.status == "invalid" else "pending", x, base,
                              title=f"gen {gen.number}: {gen.status}, not evaluated"))
        else:
            kind = gen.status + (" early" if gen.stopped_early else "")
            early = f", stopped after {gen.evaluated} of {gen.tasks} runs" if gen.stopped_early else ""
            marks.append(Mark(kind, x, y_of(gen.rate),
                              title=f"gen {gen.number}: {gen.status}, {gen.resolved}/{gen.tasks} "
                                    f"resolved ({gen.rate:.0%}){early}"))
        if gen.status == "accepted" and gen.rate is not None:
            if best_rate is not None:  # a step: the best moves only at an acceptance
                line.append((x, y_of(best_rate)))
            best_rate = gen.rate
        if best_rate is not None:
            line.append((x, y_of(best_rate)))
    if line:  # on to the end of the last generation's slot
        line.append((line[-1][0] + slot / 2, line[-1][1]))
    held, held_marks, held_rate = [], [], None
    for gen in report.generations:  # the held-out curve: the best's report-split rate
        x = x_of(gen.number)
        if gen.held_out is not None and gen.status == "accepted":
            resolved, total = gen.held_out
            if held_rate is not None:
                held.append((x, y_of(held_rate)))
            held_rate = resolved / total
            held_marks.append(Mark("heldout", x, y_of(held_rate),
                                   title=f"gen {gen.number} on the report-only split: "
                                         f"{resolved}/{total} resolved ({held_rate:.0%})"))
        if held_rate is not None:
            held.append((x, y_of(held_rate)))
    if held:
        held.append((held[-1][0] + slot / 2, held[-1][1]))
    return Plot(_W, _H, _L, _T, _R, _B, _x_ticks(numbers, x_of),
                [Tick(y_of(r), f"{r:.0%}") for r in (0, 0.25, 0.5, 0.75, 1.0)], marks,
                " ".join(f"{x:.1f},{y:.1f}" for x, y in line),
                heldout_line=" ".join(f"{x:.1f},{y:.1f}" for x, y in held), heldout_marks=held_marks)


def spend_chart(report: RunReport, what: str) -> Plot:
    """Stacked bars per generation, agent below and meta model above: ``what`` is "cost" or "tokens"."""
    if what not in ("cost", "tokens"):
        raise ValueError(f"spend_chart draws cost or tokens, not {what!r}")
    numbers, slot, x_of = _slots(report, _SPEND_W)
    height, base = 180.0, 180.0 - _B

    def parts(gen: GenerationSummary) -> tuple[float, float]:
        if what == "cost":
            return gen.agent_cost_usd, gen.meta_cost_usd
        return float(gen.agent_tokens), float(gen.meta_tokens)

    def text(value: float) -> str:
        return f"${value:.4f}" if what == "cost" else f"{int(value):,} tokens"

    top = _nice_max(max((sum(parts(g)) for g in report.generations), default=0.0))
    scale = (base - _T) / top
    width = max(2.0, min(40.0, slot * 0.6))
    marks = []
    for gen in report.generations:
        agent, meta = parts(gen)
        x = x_of(gen.number) - width / 2
        marks.append(Mark("agent", x, base - agent * scale, width, agent * scale,
                          f"gen {gen.number}: agent {text(agent)}"))
        marks.append(Mark("meta", x, base - (agent + meta) * scale, width, meta * scale,
                          f"gen {gen.number}: meta model {text(meta)}"))
    label = (lambda v: f"${v:g}") if what == "cost" else (lambda v: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}")
    note = ""
    if all(sum(parts(g)) == 0 for g in report.generations):
        note = ("no money spent: " + ("scripted models are free" if report.scripted
                                      else "the models' prices are unknown (see RATCHET_PRICES)")
                if what == "cost" else "no tokens counted")
    return Plot(_SPEND_W, height, _L, _T, _R, _B, _x_ticks(numbers, x_of, 15),
                [Tick(base - f * (base - _T), label(f * top)) for f in (0, 0.5, 1.0)], marks, note=note)


@dataclass(frozen=True)
class Tree:
    width: float
    height: float
    label_x: float
    nodes: list[Mark]
    """One per generation: ``x``, ``y`` and its status as ``kind``; ``title`` is its label."""
    edges: list[str]
    """SVG path data, parent → child."""
    numbers: list[int]


_ROW, _INDENT = 24.0, 22.0


def lineage_tree(report: RunReport) -> Tree:
    """The lineage as an indented tree: each generation on a row under its parent, children
    in order of birth; a parent's line runs down its own column, so edges never cross nodes."""
    by_number = {g.number: g for g in report.generations}
    children: dict[int | None, list[int]] = {}
    for gen in report.generations:
        parent = gen.parent if gen.parent in by_number else None
        children.setdefault(parent, []).append(gen.number)
    order: list[tuple[int, int]] = []  # (generation, depth) in preorder

    def visit(number: int, depth: int) -> None:
        order.append((number, depth))
        for child in sorted(children.get(number, [])):
            visit(child, depth + 1)

    for root in sorted(children.get(None, [])):
        visit(root, 0)
    where: dict[int, tuple[float, float]] = {}
    nodes = []
    for row, (number, depth) in enumerate(order):
        gen = by_number[number]
        x, y = 16.0 + depth * _INDENT, 16.0 + row * _ROW
        where[number] = (x, y)
        label = " · ".join(part for part in (f"gen {number}", gen.status, gen.score_text,
                                              gen.headline[:90]) if part)
        nodes.append(Mark(gen.status, x, y, title=label))
    edges = []
    for gen in report.generations:
        if gen.parent in where and gen.number in where:
            (px, py), (cx, cy) = where[gen.parent], where[gen.number]
            edges.append(f"M{px:.1f},{py:.1f} V{cy:.1f} H{cx:.1f}")
    depth = max((d for _, d in order), default=0)
    label_x = 16.0 + depth * _INDENT + 24.0
    return Tree(_W, 16.0 + len(order) * _ROW, label_x, nodes, edges, [n for n, _ in order])


@dataclass(frozen=True)
class Grid:
    width: float
    height: float
    left: float
    top: float
    cell: float
    rows: list[Tick]
    """Task ids, ``at`` their row's middle."""
    columns: list[Tick]
    cells: list[Mark]
    """``kind`` "resolved", "unresolved" or "notrun"."""


def outcome_grid(report: RunReport) -> Grid:
    """Tasks down, generations across: resolved, unresolved, or not run (stopped early, cached
    elsewhere, invalid proposal)."""
    longest = max((len(t) for t in report.tasks), default=10)
    left = min(460.0, 12.0 + 6.6 * longest)
    cell = max(8.0, min(28.0, (_W - left - 16.0) / max(1, len(report.generations))))
    top = 28.0
    cells, columns = [], []
    for column, gen in enumerate(report.generations):
        x = left + column * cell
        columns.append(Tick(x + cell / 2, str(gen.number)))
        for row, task in enumerate(report.tasks):
            outcome = gen.outcomes.get(task)
            kind = "notrun" if outcome is None else ("resolved" if outcome else "unresolved")
            cells.append(Mark(kind, x + 1, top + row * cell + 1, cell - 2, cell - 2,
                              f"gen {gen.number} · {task}: {'not run' if kind == 'notrun' else kind}"))
    rows = [Tick(top + row * cell + cell / 2, task) for row, task in enumerate(report.tasks)]
    width = max(_W, left + len(report.generations) * cell + 16.0)
    return Grid(width, top + len(report.tasks) * cell + 8.0, left, top, cell, rows, columns, cells)


# -- rendering --------------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("harness", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_report(report: RunReport) -> str:
    """The whole report, one HTML document."""
    return _environment().get_template(_TEMPLATE).render(
        view="report", report=report, rate=rate_chart(report), cost=spend_chart(report, "cost"),
        tokens=spend_chart(report, "tokens"), tree=lineage_tree(report), grid=outcome_grid(report),
        by_number={g.number: g for g in report.generations})


def render_diff(report: RunReport, change: Change) -> str:
    """The report's diff view of one change, as a page of its own."""
    return _environment().get_template(_TEMPLATE).render(view="diff", report=report, change=change)


def write_report(workspace: Path, run: str, output: Path | None = None) -> Path:
    """Render ``run``'s report to ``output`` (default ``runs/RUN/report.html``); returns the path."""
    report = load_run(workspace, run)
    path = Path(output) if output else Path(workspace) / "runs" / run / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(report), encoding="utf-8")
    return path


def write_diff(workspace: Path, run: str, a: int, b: int, output: Path | None = None) -> Path:
    """Render the diff of generations ``a`` → ``b`` (default ``runs/RUN/diff-A-B.html``)."""
    report = load_run(workspace, run, with_diffs=False)
    known = {g.number: g for g in report.generations}
    for number in (a, b):
        if number not in known:
            raise ReportError(f"run {run} has no generation {number} (it has "
                              f"{', '.join(map(str, sorted(known))) or 'none'})")
    text, note = _Git(Path(workspace), run).diff(a, b)
    if note:
        raise ReportError(note)
    gen = known[b]
    change = Change(b, a, gen.headline if gen.parent == a else "",
                    gen.diagnosis if gen.parent == a else "", diff_lines(text),
                    "" if text.strip() else "(no difference)")
    path = Path(output) if output else Path(workspace) / "runs" / run / f"diff-{a}-{b}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_diff(report, change), encoding="utf-8")
    return path
