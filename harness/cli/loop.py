"""CLI commands of the loop: init, run, resume, demo, runs, log, diff, report, status."""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from harness.cli.common import (ALLOW_UNPRICED_HELP, EXECUTOR_HELP, SELECT, _fail, _ids_option,
                                _load, _priced, _split_option, app,
                                check_model_endpoint, checked_run_id, console, err)


def run_selection(settings):
    """The rows of the suite a run takes (its `--split`, `--slice`, `--filter`, `--instance-ids`)."""
    from benchmark import Selection

    return Selection(split=getattr(settings, "dataset_split", None),
                     slice=getattr(settings, "slice", "") or "",
                     filter=getattr(settings, "filter", "") or "",
                     instance_ids=tuple(getattr(settings, "instance_ids", None) or ()))

WORKSPACE_HELP = "The workspace: a git repository holding agent_seed/ (default: the one around the current directory)."


def _workspace(path: Optional[Path]) -> Path:
    from harness.loop.workspace import WorkspaceError, find_workspace

    try:
        return find_workspace(path or Path.cwd())
    except WorkspaceError as exc:
        raise _fail(f"{exc} (make one with `ratchet init DIR`)")


@app.command()
def init(directory: Path = typer.Argument(Path("."), help="Where to make the workspace.")) -> None:
    """Make a git workspace holding the seed agent and a commented example run file (run.yaml)."""
    import agent_seed
    from harness.loop.workspace import WorkspaceError, init_workspace, is_workspace

    if is_workspace(directory):
        console.print(f"{directory.resolve()} is already a ratchet workspace; nothing changed.")
        return
    try:
        root = init_workspace(directory, seed=Path(agent_seed.__file__).parent,
                              files={"run.yaml": example_run_file()})
    except WorkspaceError as exc:
        raise _fail(str(exc))
    console.print(f"workspace ready at {root}: agent_seed/ and run.yaml committed. Next: "
                  f"`cd {root} && ratchet run -c run.yaml` (the scripted demo; edit run.yaml for "
                  "your endpoints)")


def example_run_file() -> str:
    """The commented example run file (also shipped as examples/run.yaml)."""
    from importlib.resources import files

    return files("harness").joinpath("templates/run.yaml").read_text(encoding="utf-8")


def _models(settings, tasks):
    """(agent upstream, meta upstream, servers to stop): the scripted demo's servers, or each
    model's own endpoint from the settings (`harness.models.upstreams`)."""

    from harness.models.gateway import OpenAIUpstream

    if settings.scripted == "demo":
        from harness.cli.demo import demo_agent_script, demo_meta_script
        from harness.models.scripted_model import ScriptedModelServer

        agent = ScriptedModelServer(demo_agent_script(tasks)).start()
        meta = ScriptedModelServer(demo_meta_script()).start()
        console.print("[bold magenta]SCRIPTED DEMO[/]: both the agent model and the meta model are "
                      "canned answers from local servers, not real models.")
        return (OpenAIUpstream(agent.base_url, "scripted"), OpenAIUpstream(meta.base_url, "scripted"),
                [agent, meta])
    if settings.scripted:
        raise _fail(f"unknown scripted mode {settings.scripted!r} (known: demo)")
    from harness.models.upstreams import EndpointSettingError, build_upstreams

    try:
        agent, meta, endpoints = build_upstreams(settings)
    except EndpointSettingError as exc:
        raise _fail(str(exc))
    for endpoint in endpoints:
        console.print(endpoint.describe(), markup=False, highlight=False)
        check_model_endpoint(endpoint.base_url, endpoint.key(os.environ))
    return agent, meta, []


def _drive(workspace: Path, settings, before_start=None) -> None:
    """Run (or resume) the loop with a live line of status; Ctrl-C stops cleanly.
    ``before_start`` runs once every check passed, before anything of the run is written
    (``--commit-agent``: nothing is committed for a run refused by a check)."""
    from harness.cli.common import _executor, _grader, _prepare_images, _progress
    from harness.run.executors import ExecutorError
    from harness.loop.compose import build_controller

    loaded = _load(settings.suite, run_selection(settings))
    _check_splits(settings, loaded.tasks, workspace / "runs" / settings.run / "splits.json")
    _priced({"agent": settings.agent_model, "meta": settings.meta_model}, settings.allow_unpriced,
            extra=settings.prices)  # a model with no price: one clear error, nothing written
    run_dir = workspace / "runs" / settings.run
    owned = _own_run(workspace, settings.run)
    try:
        agent_up, meta_up, servers = _models(settings, loaded.tasks)
        if before_start is not None:
            before_start()
    except BaseException:
        owned.close()
        raise
    settings.save(run_dir / "settings.json")
    controller = None
    signals: list[int] = []

    def interrupt(signum, frame):
        """SIGINT and SIGTERM alike. First: finish the tasks in flight, then stop. Second:
        stop them at once (their containers removed), keep what finished. Third: abandon."""
        signals.append(signum)
        if controller is not None and len(signals) > 2:
            controller.stop_now()  # nothing in flight is waited for
        if controller is None or len(signals) > 2:
            raise KeyboardInterrupt
        if len(signals) == 1:
            err.print("[yellow]stopping after the tasks in flight (Ctrl-C or SIGTERM again to "
                      "stop them at once)[/]")
            controller.stop_flag.set()
        else:
            err.print("[yellow]stopping the tasks in flight now; what finished is kept (once "
                      "more to abandon at once)[/]")
            controller.stop_now()

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _progress() as progress:
            grader = _grader(run_dir / "grades", progress)
            _prepare_images(grader, loaded.tasks, progress, settings.executor)
            pool = _executor(settings.executor, settings.workers, progress)

            def event(message: str) -> None:
                spent = controller.spend.ledger.run.cost_usd if controller else 0.0
                progress.console.print(f"[dim]{datetime.now():%H:%M:%S}[/] {message} "
                                       f"[dim](${spent:.4f})[/]")

            controller = build_controller(workspace, settings, loaded.tasks, grader, agent_up,
                                          meta_up, on_event=event, executor=pool)
            try:
                state = controller.run()
            finally:
                controller.close()
    except KeyboardInterrupt:
        err.print(f"abandoned. Nothing half-done was recorded. Resume: `ratchet resume {settings.run}`")
        raise typer.Exit(128 + (signals[0] if signals else signal.SIGINT))
    except ExecutorError as exc:
        err.print(f"[bold red]error:[/] {exc}. Nothing half-done was recorded. Resume: "
                  f"`ratchet resume {settings.run}`")
        raise typer.Exit(2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for server in servers:
            server.stop()
        owned.close()
    _print_log(workspace, settings.run)
    if state.ended and state.end_reason and not state.end_reason.startswith("run_finished"):
        console.print(f"[yellow]{state.end_reason}[/]. Resume: `ratchet resume {settings.run}`"
                      + (" --budget-usd MORE" if "budget" in state.end_reason else ""))
    console.print(closing_hint(settings.run, state))
    if signals:  # stopped by a signal: the conventional code (130 for Ctrl-C, 143 for SIGTERM)
        raise typer.Exit(128 + signals[0])
    failure = stop_failure(state, settings)
    if failure:
        err.print(f"[bold red]error:[/] {failure}", highlight=False)
        raise typer.Exit(1)


def _own_run(workspace: Path, run: str):
    """Take the run's lock (one writer per run) and its temp dir, label its containers, and
    sweep what dead processes left; a live run is one clear error. The returned object's
    ``close`` gives it all back at the end (`harness.loop.run_ownership`)."""
    from harness.loop.run_ownership import RunOwnership
    from harness.loop.runlock import RunLocked

    try:
        return RunOwnership.take(workspace, run, say=lambda message: err.print(f"[dim]{message}[/]"))
    except RunLocked as exc:
        raise _fail(str(exc))


def stop_failure(state, settings) -> str | None:
    """Why a run that stopped on a failure (not done, not a budget, not Ctrl-C) stopped,
    naming the model endpoint when it was the cause; None for the other endings."""
    reason = state.end_reason or ""
    if not reason.startswith("run_stopped") or reason.endswith("interrupted"):
        return None
    if ("model endpoint" in reason or "model call" in reason) and not settings.scripted:
        from harness.models.endpoint import configured_url

        return (f"the run stopped on a model endpoint failure; the endpoint is "
                f"{configured_url()} (OPENAI_BASE_URL). Check it answers, then "
                f"`ratchet resume {settings.run}`")
    return f"the run stopped on a failure; fix its cause, then `ratchet resume {settings.run}`"


def closing_hint(run: str, state) -> str:
    """Where to look after a run: a diff only between generations that exist (the best
    against the seed, else the last against the seed; none when only the seed ran)."""
    recorded = sorted(n for n, g in state.generations.items() if g.recorded)
    last = state.best if state.best else (recorded[-1] if recorded else 0)
    diff = f"`ratchet diff {run} 0 {last}`, " if last else ""
    return f"Look: `git log --graph ratchet/{run}/best`, {diff}`ratchet log {run}`"


CONFIG_HELP = ("A run file (YAML: `ratchet init` writes a commented one; examples/run.yaml) or "
               "a dotted KEY=VALUE (e.g. models.meta.kwargs.temperature=0.2). Repeatable: later "
               "ones win; flags win over all.")


@app.command()
def run(
    config: Optional[list[str]] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="A suite name, task file "
                                        "(.json/.jsonl/.parquet) or SWE-bench dataset name."),
    dataset_split: Optional[str] = _split_option(),
    slice_: Optional[str] = typer.Option(None, "--slice", help="A:B of the (filtered) rows.",
                                         rich_help_panel=SELECT),
    filter_: Optional[str] = typer.Option(None, "--filter", help="Instances whose id matches "
                                          "this regular expression (re.match).",
                                          rich_help_panel=SELECT),
    instance_ids: Optional[list[str]] = _ids_option(),
    generations: Optional[int] = typer.Option(None, "--generations", "-g",
                                              help="Generations after the seed (default 3)."),
    budget_usd: Optional[float] = typer.Option(None, help="Stop cleanly when the run has spent this."),
    task_budget_usd: Optional[float] = typer.Option(None, help="Refuse one task run's model calls "
                                                    "past this."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The agent's model (default "
                                        "gpt-4o-mini; models.agent in a run file)."),
    meta_model: Optional[str] = typer.Option(None, help="The proposer's model (default: --model)."),
    scripted: Optional[str] = typer.Option(None, help="'demo': scripted agent and meta models."),
    acceptance: Optional[str] = typer.Option(None, help="sign[:ALPHA[:run|open|each]] (default: the "
                                             "exact sign test at a run error budget of 0.05, split "
                                             "over the generations) | mcnemar[:ALPHA...] | margin:K | "
                                             "strict (both noisy: docs/acceptance.md)"),
    selector: Optional[str] = typer.Option(None, help="best (the ratchet, default) | archive "
                                           "(DGM-style) | clade (HGM-style: Thompson sampling on "
                                           "each clade's results)"),
    attempts: Optional[int] = typer.Option(None, "--attempts", "-k", help="Runs of each deciding "
                                           "task per candidate (and fresh runs of an accepted one; "
                                           "default 1). Small suites need 3-5 to detect anything: "
                                           "docs/acceptance.md."),
    proposals: Optional[int] = typer.Option(None, "--proposals", "-p", help="Candidates per "
                                            "generation (default 1): each screened on one run per "
                                            "deciding task; the best is tested on fresh runs."),
    stage_size: Optional[int] = typer.Option(None, hidden=True, help="Deprecated: ignored."),
    holdout: Optional[int] = typer.Option(None, help="N tasks, drawn by a shuffle seeded with the "
                                          "run's seed, decide acceptance and are never studied "
                                          "(default 0: off)."),
    study: Optional[str] = typer.Option(None, "--study", help="SPLIT[,SPLIT]: the tasks of these "
                                        "splits (the suite's `split` field) are studied by the "
                                        "proposer (default: all but --decide)."),
    decide: Optional[str] = typer.Option(None, "--decide", help="SPLIT[,SPLIT]: acceptance is "
                                         "decided on these splits, never shown to the proposer "
                                         "(default: all but --study)."),
    report_split: Optional[str] = typer.Option(None, "--report-split", help="SPLIT: run only for "
                                               "the best (gen 0, each acceptance), shown as the "
                                               "report's held-out curve; never decides."),
    proposer: Optional[str] = typer.Option(None, help="meta (default: a meta model edits the agent) "
                                           "| self (the parent agent edits its own source in a "
                                           "sandbox, DGM-style)"),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", help="Task runs at once (default 2)."),
    executor: Optional[str] = typer.Option(None, "--executor", help=EXECUTOR_HELP),
    seed: Optional[int] = typer.Option(None, help="Seeds the holdout draw, parent selection and "
                                       "the deciding order (default 0)."),
    max_proposal_attempts: Optional[int] = typer.Option(None, help="Tries of one proposal, each "
                                                        "failed check sent back (default 3)."),
    evidence_tokens: Optional[int] = typer.Option(None, help="About how much failure evidence the "
                                                  "proposer sees (default 6000)."),
    agent_timeout_s: Optional[float] = typer.Option(None, help="Wall-clock limit of one agent run "
                                                    "(default 900)."),
    allow_unpriced: Optional[bool] = typer.Option(None, "--allow-unpriced", help=ALLOW_UNPRICED_HELP),
    max_output_tokens: Optional[int] = typer.Option(None, "--max-output-tokens", help="The most "
                                                    "output tokens one model call may ask for "
                                                    "(default 8192); forced on every call, so its "
                                                    "worst case is reserved from the budget before "
                                                    "it is sent."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Default: a timestamp.",
                                         callback=checked_run_id),
    workspace: Optional[Path] = typer.Option(None, help=WORKSPACE_HELP),
    commit_agent: bool = typer.Option(False, "--commit-agent", help="Commit agent_seed/ as it is "
                                      "on disk before the run starts (default: refuse an agent "
                                      "dir with uncommitted changes)."),
) -> None:
    """Start a run: generation 0 is the seed, then propose, evaluate, decide, record.

    Settings come from the defaults, then each -c (run file or KEY=VALUE), then the flags."""
    from benchmark import parse_ids
    from harness.loop.runfile import RunFileError, resolve
    from harness.loop.settings import to_settings

    if stage_size is not None:
        err.print("[yellow]--stage-size is deprecated and ignored:[/] futility looks after 1/3 and "
                  "2/3 of the deciding runs replaced the staged evaluation (docs/acceptance.md).")
    given = {"suite": suite, "generations": generations, "budget_usd": budget_usd,
             "task_budget_usd": task_budget_usd, "models.agent.name": model,
             "models.meta.name": meta_model, "scripted": scripted, "acceptance": acceptance,
             "selector": selector, "attempts": attempts, "proposals": proposals,
             "holdout": holdout, "study": study, "decide": decide, "report_split": report_split,
             "proposer": proposer, "workers": workers, "executor": executor, "seed": seed,
             "max_proposal_attempts": max_proposal_attempts, "evidence_tokens": evidence_tokens,
             "agent_timeout_s": agent_timeout_s, "allow_unpriced": allow_unpriced,
             "max_output_tokens": max_output_tokens, "run_id": run_id,
             "dataset_split": dataset_split, "slice": slice_, "filter": filter_,
             "instance_ids": list(parse_ids(instance_ids)) if instance_ids else None}
    try:
        resolved = resolve(list(config or []), {k: v for k, v in given.items() if v is not None})
    except RunFileError as exc:
        raise _fail_all(exc.problems)
    run_name = resolved.run_id or f"r{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    start_run(_workspace(workspace), to_settings(resolved, run_name), commit_agent=commit_agent)


def _fail_all(problems: list[str]) -> typer.Exit:
    """One line per problem (exit 2); the messages are shown as written, never as markup."""
    from rich.markup import escape

    if len(problems) == 1:
        return _fail(escape(problems[0]))
    return _fail(f"{len(problems)} problems in the run's settings:\n"
                 + "\n".join(f"  {escape(problem)}" for problem in problems))


def start_run(root: Path, settings, commit_agent: bool = False) -> None:
    """What `ratchet run` and `ratchet demo` share: refuse an existing run, check the
    settings, splits and agent dir, drive the loop. A plain function, so no command ever calls
    another command's function and inherits typer's option objects as values."""
    from harness.loop.workspace import WorkspaceError, check_agent_committed
    from harness.loop.workspace import commit_agent as commit

    _refuse_live(root, settings.run)
    if (root / "runs" / settings.run / "journal.jsonl").exists():
        raise _fail(f"run {settings.run} exists; continue it with `ratchet resume {settings.run}`")
    _check_settings(settings)
    tasks = _load(settings.suite, run_selection(settings)).tasks
    _check_splits(settings, tasks)
    before_start = None
    if settings.base == "HEAD" and commit_agent:
        def before_start() -> None:
            sha = commit(root, settings.run)
            if sha:
                console.print(f"committed agent_seed/ as it is on disk: {sha[:12]}")
    elif settings.base == "HEAD":
        try:
            check_agent_committed(root)
        except WorkspaceError as exc:
            raise _fail(str(exc))
    console.print(f"run [bold]{settings.run}[/] in {root}")
    _drive(root, settings, before_start)


def _refuse_live(root: Path, run: str) -> None:
    """One writer per run: a run whose lock is held is refused, naming its holder."""
    from harness.loop.runlock import RunLock, RunLocked

    try:
        RunLock.refuse_if_live(root / "runs" / run, run)
    except RunLocked as exc:
        raise _fail(str(exc))


def _check_settings(settings, origins: Optional[dict[str, str]] = None) -> None:
    """Every setting valid (`harness.loop.runfile`, one line per bad one) and each model's endpoint
    set up (`harness.models.upstreams`), before anything of the run is written. `origins`: run-file
    key -> the flag that changed it, so a message names what the user typed."""
    from harness.models.upstreams import EndpointSettingError, resolve_endpoints
    from harness.loop.runfile import RunFileError, from_settings, validate

    try:
        validate(from_settings(settings), origins or {})
        if not settings.scripted:
            resolve_endpoints(settings)
    except RunFileError as exc:
        raise _fail_all(exc.problems)
    except EndpointSettingError as exc:
        raise _fail(str(exc))


def _check_splits(settings, tasks, recorded: Optional[Path] = None) -> None:
    """One clear error (exit 2) for a bad --study/--decide/--report-split/--holdout, before
    anything of the run is written; on resume, also for tasks split otherwise than the run's
    ``recorded`` splits.json says."""
    from harness.loop.splits import SplitError, check_unchanged, plan_splits

    try:
        plan = plan_splits(tasks, study=settings.study, decide=settings.decide,
                           report=settings.report_split, holdout=settings.holdout, seed=settings.seed)
        if recorded is not None and recorded.is_file():
            check_unchanged(plan, json.loads(recorded.read_text()))
    except SplitError as exc:
        raise _fail(f"{exc} (suite {settings.suite})")


def _splits_line(root: Path, run: str) -> str:
    """How the run's tasks are split (``runs/RUN/splits.json``), or ''."""
    path = root / "runs" / run / "splits.json"
    try:
        return f"tasks: {json.loads(path.read_text())['how']}" if path.is_file() else ""
    except (ValueError, KeyError, TypeError):
        return ""


@app.command()
def resume(
    run: str = typer.Argument(..., metavar="RUN", callback=checked_run_id),
    from_generation: Optional[int] = typer.Option(None, "--from", help="Start a new line of descent "
                                                  "from this generation, as run RUN.from-NNNN."),
    budget_usd: Optional[float] = typer.Option(None, help="A new budget for the run."),
    generations: Optional[int] = typer.Option(None, help="A new number of generations."),
    executor: Optional[str] = typer.Option(None, "--executor", help="Run the rest elsewhere "
                                           "(default: where it ran). " + EXECUTOR_HELP),
    allow_unpriced: bool = typer.Option(False, "--allow-unpriced", help=ALLOW_UNPRICED_HELP),
    workspace: Optional[Path] = typer.Option(None, help=WORKSPACE_HELP),
) -> None:
    """Continue a run after a crash, a Ctrl-C or a spent budget; or branch off a generation."""
    from harness.loop.acceptance import parse_rule
    from harness.loop.lineage import Lineage, LineageError, branched_run_id
    from harness.loop.settings import LoopSettings

    root = _workspace(workspace)
    path = root / "runs" / run / "settings.json"
    if not path.exists():
        raise _fail(f"no run {run} in {root / 'runs'} (see `ratchet runs`)")
    if from_generation is None:  # branching off only reads the run's refs
        _refuse_live(root, run)
    try:
        settings = LoopSettings.load(path)
    except (ValueError, TypeError) as exc:
        raise _fail(f"{path} is not the settings of a run ({str(exc)[:200]}); restore it (the "
                    f"journal's run_started event keeps a copy) before `ratchet resume {run}`")
    if from_generation is not None:  # a generation that does not exist, before anything else
        try:
            _check_generations(Lineage(root, run), root, (from_generation,))
        except LineageError as exc:
            raise _fail(str(exc))
    if budget_usd is not None:
        settings.budget_usd = budget_usd
    if generations is not None:
        settings.generations = generations
        if settings.horizon and generations > settings.horizon and \
                getattr(parse_rule(settings.acceptance), "spending", None) == "run":
            err.print(f"[yellow]note:[/] the run's error budget was split over {settings.horizon} "
                      f"generations; generations past {settings.horizon} are tested at the "
                      "open-ended level 6*alpha/(pi^2 g^2) (docs/acceptance.md)")
    if executor is not None:
        settings.executor = executor
    if allow_unpriced:
        settings.allow_unpriced = True
    _check_settings(settings, {key: flag for key, flag, value in (
        ("budget_usd", "--budget-usd", budget_usd), ("generations", "--generations", generations),
        ("executor", "--executor", executor)) if value is not None})
    if from_generation is not None:
        new_run = branched_run_id(run, from_generation)
        try:
            Lineage(root, run).branch_from(from_generation, new_run)
        except LineageError as exc:
            raise _fail(str(exc))
        settings.run, settings.base = new_run, f"ratchet/{new_run}/gen-0000"
        console.print(f"new line of descent [bold]{new_run}[/]: its generation 0 is {run}'s "
                      f"generation {from_generation}")
    _drive(root, settings)


def _spent_text(state, root: Optional[Path] = None, run: str = "") -> str:
    """The run's spend as the journal says, "unknown" when an unpriced model was called; with
    `root`, also what the spend log holds that the journal does not yet (calls of tasks in
    flight, or of a killed process before its resume)."""
    text = (f"unknown ({state.unpriced_calls} call(s) of an unpriced model; ${state.spent_usd:.4f} "
            "priced)" if state.unpriced_calls else f"${state.spent_usd:.4f}")
    log = root / "runs" / run / "spend.jsonl" if root is not None else None
    if log is not None and log.is_file():
        from harness.models.ledger import Ledger

        ahead = Ledger.open(log).run.cost_usd - state.spent_usd
        if ahead >= 0.00005:
            text += f" (+${ahead:.4f} in the spend log, not yet journaled)"
    return text


def _rows(root: Path, run: str):
    from harness.loop.journal import Journal, replay

    path = root / "runs" / run / "journal.jsonl"
    if not path.exists():
        raise _fail(f"no run {run} in {root / 'runs'} (see `ratchet runs`)")
    state = replay(Journal.read(path))
    rows = []
    for number, gen in sorted(state.generations.items()):
        metrics_path = root / "runs" / run / "gens" / f"{number:04d}" / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        rows.append((number, gen, metrics))
    return state, rows


def _score_text(score: dict) -> str:
    """Resolved runs of the planned runs; "stopped early" when a futility look cut it short."""
    if not score:
        return ""
    planned = score.get("planned", score["tasks"])
    runs = score.get("runs", score.get("evaluated", planned))
    text = f"{score['resolved']}/{planned}"
    if score.get("attempts", 1) > 1:
        text += f" ({score['tasks']} tasks x {score['attempts']})"
    return text if runs == planned else f"{score['resolved']}/{runs} ({runs} of {planned} run, stopped early)"


def _integrity(gen_number: int, metrics: dict, tampering: dict[int, list[str]]) -> tuple[str, list[str]]:
    """The log's integrity cell for one generation, and lines detailing its flags."""

    tampered = sorted(set(tampering.get(gen_number, [])) | set(metrics.get("tampered") or []))
    flagged = metrics.get("flagged") or []
    proposal = metrics.get("proposal_flags") or []
    cell = []
    if tampered:
        cell.append(f"[bold red]TAMPERED on {len(tampered)}[/]")
    if flagged:
        cell.append(f"[yellow]{len(flagged)} patch(es) flagged[/]")
    if proposal:
        cell.append(f"[yellow]diff flagged {len(proposal)}x[/]")
    details = [f"gen {gen_number}: tampered on {', '.join(tampered)}"] if tampered else []
    details += [f"gen {gen_number}: proposal diff {f['path']}:{f['line']}: {f['signature']}: {f['text']}"
                for f in proposal[:5]]
    return " ".join(cell), details


def _scripted(root: Path, run: str) -> bool:
    """Whether the run used scripted models: its settings' ``scripted`` value, not the key
    (every settings.json has the key, null for a real endpoint)."""
    try:
        settings = json.loads((root / "runs" / run / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(settings, dict) and bool(settings.get("scripted"))


def _print_log(root: Path, run: str) -> None:
    from harness.loop.journal import Journal
    from harness.loop.tamper import run_tampering

    state, rows = _rows(root, run)
    tampering = run_tampering(Journal.read(root / "runs" / run / "journal.jsonl"))
    table = Table(title=f"run {run}" + (" (scripted)" if _scripted(root, run) else ""))
    for column in ("gen", "parent", "verdict", "score", "delta", "cost $", "integrity", "diagnosis"):
        table.add_column(column, overflow="fold")
    best_rate = None
    details: list[str] = []
    for number, gen, metrics in rows:
        score = gen.score if isinstance(gen.score, dict) else {}
        rate = score.get("resolved")
        complete = (score.get("runs", score.get("evaluated", score.get("tasks")))
                    == score.get("planned", score.get("tasks")))
        delta = "" if rate is None or best_rate is None or not complete else f"{rate - best_rate:+d}"
        verdict = gen.verdict or ("…" if not gen.recorded else "")
        if gen.proposal_valid is False:
            verdict = "invalid"
        colour = {"accepted": "green", "rejected": "red", "invalid": "yellow"}.get(verdict, "white")
        integrity, more = _integrity(number, metrics, tampering)
        details += more
        table.add_row(str(number), "" if gen.parent is None else str(gen.parent),
                      f"[{colour}]{verdict}[/]", _score_text(score),
                      delta, f"{score.get('cost_usd', 0):.4f}" if score else "", integrity,
                      (metrics.get("headline") or gen.proposal_reason or "")[:80])
        if gen.verdict == "accepted" and rate is not None:
            best_rate = rate
    splits = _splits_line(root, run)
    if splits:
        console.print(splits, markup=False, highlight=False)
    console.print(table)
    for line in details:
        console.print(line, markup=False, highlight=False)
    runs_tampered = sum(len(tasks) for tasks in tampering.values())
    console.print(f"best: generation {state.best}; spent {_spent_text(state)}"
                  + (f"; tampering caught in {runs_tampered} task run(s) of {len(tampering)} "
                     "generation(s)" if runs_tampered else "; no tampering caught")
                  + (f"; {state.end_reason}" if state.end_reason else ""))


@app.command("log")
def log_command(run: str = typer.Argument(..., metavar="RUN", callback=checked_run_id),
                workspace: Optional[Path] = typer.Option(None, help=WORKSPACE_HELP)) -> None:
    """The lineage of a run: generation, parent, verdict, score, delta, cost, diagnosis."""
    _print_log(_workspace(workspace), run)


@app.command()
def runs(workspace: Optional[Path] = typer.Option(None, help=WORKSPACE_HELP)) -> None:
    """The runs in this workspace; a live one with the pid and host driving it."""
    from harness.loop.journal import Journal, replay
    from harness.loop.runlock import RunLock

    root = _workspace(workspace)
    table = Table()
    for column in ("run", "generations", "best", "spent $", "state"):
        table.add_column(column)
    for journal in sorted((root / "runs").glob("*/journal.jsonl")):
        state = replay(Journal.read(journal))
        holder = RunLock.holder(journal.parent)
        table.add_row(journal.parent.name, str(len(state.generations)), str(state.best),
                      "unknown" if state.unpriced_calls else f"{state.spent_usd:.4f}",
                      f"live: pid {holder.pid} on {holder.host}"
                      if holder else state.end_reason or "killed (resume it)")
    console.print(table)


@app.command()
def diff(run: str = typer.Argument(..., metavar="RUN", callback=checked_run_id),
         a: int = typer.Argument(..., metavar="A"), b: int = typer.Argument(..., metavar="B"),
         html: bool = typer.Option(False, "--html", help="Write the report's diff view, one HTML file."),
         output: Optional[Path] = typer.Option(None, "--output", "-o",
                                               help="With --html: where (default runs/RUN/diff-A-B.html)."),
         workspace: Optional[Path] = typer.Option(None, help=WORKSPACE_HELP)) -> None:
    """The agent's source between two generations (plain `git diff` of their branches)."""
    from harness.loop.lineage import Lineage, LineageError

    if html:
        from harness.loop.journal import JournalError
        from harness.read.report import ReportError, write_diff

        try:
            path = write_diff(_workspace(workspace), run, a, b, output)
        except (ReportError, JournalError) as exc:
            raise _fail(str(exc))
        console.print(f"wrote {path}")
        return
    if output is not None:
        raise _fail("-o/--output goes with --html (the plain diff goes to stdout)")
    root = _workspace(workspace)
    lineage = Lineage(root, run)
    _check_generations(lineage, root, (a, b))
    try:
        console.print(lineage.diff(a, b) or "(no difference)", markup=False, highlight=False)
    except LineageError as exc:
        raise _fail(str(exc))


def _check_generations(lineage, root: Path, numbers) -> None:
    """One clear error for a run, or a generation of it, that has no commit."""
    known = [g.number for g in lineage.generations()]
    run = lineage.run
    if not known:
        raise _fail(f"no run {run} in {root} (no branch ratchet/{run}/gen-0000; see `ratchet runs`)")
    for number in numbers:
        if number not in known:
            raise _fail(f"run {run} has no generation {number} (it has {_span(known)})"
                        + (f"; e.g. `ratchet diff {run} {known[0]} {known[-1]}`" if len(known) > 1 else ""))


def _span(numbers: list[int]) -> str:
    """Generation numbers, short: ``0-7`` when they run without a gap."""
    if numbers == list(range(numbers[0], numbers[-1] + 1)) and len(numbers) > 2:
        return f"{numbers[0]}-{numbers[-1]}"
    return ", ".join(map(str, numbers))


@app.command()
def report(run: str = typer.Argument(..., metavar="RUN", callback=checked_run_id),
           output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                 help="Where (default runs/RUN/report.html)."),
           workspace: Optional[Path] = typer.Option(None, help=WORKSPACE_HELP)) -> None:
    """One self-contained HTML page of a run: rates, spend, lineage, task outcomes, accepted diffs."""
    from harness.loop.journal import JournalError
    from harness.read.report import ReportError, write_report

    try:
        path = write_report(_workspace(workspace), run, output)
    except (ReportError, JournalError) as exc:
        raise _fail(str(exc))
    except OSError as exc:
        raise _fail(f"cannot write {output or 'the report'}: {exc.strerror or exc}")
    console.print(f"wrote {path}")


@app.command()
def status(run: str = typer.Argument(..., metavar="RUN", callback=checked_run_id),
           workspace: Optional[Path] = typer.Option(None, help=WORKSPACE_HELP)) -> None:
    """Where a run is now; safe to call from another shell while it runs."""
    from harness.loop.journal import Journal

    root = _workspace(workspace)
    state, rows = _rows(root, run)
    events = Journal.read(root / "runs" / run / "journal.jsonl")
    last = events[-1] if events else {}
    current = max(state.generations, default=0)
    evaluated = sum(1 for e in events if e["event"] == "task_evaluated" and e.get("generation") == current)
    from harness.loop.tamper import run_tampering

    tampering = run_tampering(events)
    tampered = sum(len(tasks) for tasks in tampering.values())
    console.print(f"run {run}: generation {current}, {evaluated} task(s) evaluated in it; best "
                  f"generation {state.best}; spent {_spent_text(state, root, run)}; last event "
                  f"{last.get('event')} at {last.get('ts')}"
                  + (f"; TAMPERING caught in {tampered} task run(s) (generations "
                     f"{', '.join(map(str, tampering))})" if tampered else "")
                  + (f"; ended: {state.end_reason}" if state.ended else ""))
    splits = _splits_line(root, run)
    if splits:
        console.print(splits, markup=False, highlight=False)
    _print_settings(root / "runs" / run / "settings.json")


def _print_settings(path: Path) -> None:
    """The run's resolved settings, as a run file (keys only name where keys are read)."""
    import yaml

    from harness.loop.settings import LoopSettings
    from harness.loop.runfile import from_settings

    try:
        settings = LoopSettings.load(path)
    except (OSError, ValueError, TypeError) as exc:
        console.print(f"settings: cannot read {path}: {exc}", markup=False, highlight=False)
        return
    text = yaml.safe_dump(from_settings(settings), sort_keys=False, default_flow_style=False)
    console.print("settings (a run file: `ratchet run -c FILE` takes it):\n"
                  + "\n".join(f"  {line}" for line in text.splitlines()),
                  markup=False, highlight=False)


@app.command()
def demo(generations: int = typer.Option(2, "--generations", "-g", min=1),
         workspace: Optional[Path] = typer.Option(None, help=WORKSPACE_HELP)) -> None:
    """The scripted demo on the quickstart suite: one real fix accepted, one bad change rejected."""
    from harness.cli.demo import demo_settings

    start_run(_workspace(workspace),
              demo_settings(f"demo-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}", generations))


@app.command("export")
def export_command(
    run: str = typer.Argument(..., metavar="RUN", callback=checked_run_id),
    what: str = typer.Option(..., "--what", help="predictions | trajectories | preferences | lessons"),
    gen: Optional[int] = typer.Option(None, "--gen", min=0, help="predictions: this generation "
                                      "(default: the best); trajectories: only this generation."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="JSONL file (default: stdout)."),
    workspace: Optional[Path] = typer.Option(None, help=WORKSPACE_HELP),
) -> None:
    """A run as JSONL: SWE-bench predictions, trajectories, DPO pairs, or lessons (schemas:
    harness/read/export.py). Records with text aimed at the grader are flagged, never dropped."""
    import sys

    from rich.markup import escape

    from harness.read.export import ExportError, export_run, write_jsonl
    from harness.loop.journal import JournalError

    try:
        result = export_run(_workspace(workspace), run, what, gen)
    except (ExportError, JournalError) as exc:
        raise _fail(str(exc))
    if output is None:
        count = write_jsonl(result.records, sys.stdout)
    else:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)  # as `ratchet report -o` does
            with output.open("w", encoding="utf-8") as handle:
                count = write_jsonl(result.records, handle)
        except OSError as exc:
            raise _fail(f"cannot write {output}: {exc.strerror or exc}")
    for problem in result.problems:
        err.print(f"[yellow]left out:[/] {escape(problem)}", highlight=False)
    if result.flagged:
        err.print(f"[bold yellow]warning:[/] {result.flagged} of {count} record(s) flagged for text "
                  "aimed at the grader or harness; see their 'flags' field")
    err.print(f"{count} {what} record(s){f' written to {output}' if output else ''}")
    if result.problems:
        raise typer.Exit(1)
