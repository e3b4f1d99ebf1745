"""The ``ratchet bench`` commands (prepare, validate, grade, run, audit, suites) and ``ratchet forge``.

Start-up stays light: heavy imports (swebench, the Docker SDK) happen inside commands.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from harness.cli.common import (
    _builder, _executor, _fail, _filter_option, _grader, _ids_option, _load, _prepare_images,
    _priced, _progress, _run_dir, _selection, _slice_option, _split_option,
    ALLOW_UNPRICED_HELP, app, bench, check_model_endpoint, checked_run_id, console, err,
    EXECUTOR_HELP, SUITE_HELP,
)


def _verdict(resolved: bool, *, error: Optional[str] = None, tampered: bool = False,
             flags: list | None = None) -> str:
    """A table cell: a resolved task whose patch carries scan flags is listed apart."""
    if error:
        return "[yellow]error[/]"
    if tampered:
        return "[bold red]TAMPERED[/]"
    if resolved:
        return "[yellow]resolved, flagged[/]" if flags else "[green]yes[/]"
    return "[red]no[/]" + (" [dim](flagged)[/]" if flags else "")


def _print_integrity(rows: list[tuple[str, bool, bool, list, list]]) -> None:
    """(task, resolved, tampered, tamper reasons, flags) rows: what the user must see about
    tampering and scan flags, after the table, and the counts."""
    for task, _, tampered, reasons, flags in rows:
        if tampered:
            console.print(f"[bold red]tampered:[/] {task}: {'; '.join(reasons) or 'see its log'}",
                          highlight=False)
        for flag in flags[:10]:
            console.print(f"[yellow]flag:[/] {task}: {flag['path']}:{flag['line']}: "
                          f"{flag['signature']}: [dim]{flag['text']}[/]", highlight=False)
    flagged = sorted(task for task, resolved, _, _, flags in rows if resolved and flags)
    tampered = sum(1 for row in rows if row[2])
    if flagged or tampered:
        console.print(f"tampered: {tampered}; resolved, flagged ({len(flagged)}): "
                      f"{', '.join(flagged) or '-'}")


@bench.command()
def prepare(
    suite: str = typer.Option(..., "--suite", "-s", help=SUITE_HELP),
    split: Optional[str] = _split_option(),
    slice_: str = _slice_option(),
    filter_: str = _filter_option(),
    instance_ids: Optional[list[str]] = _ids_option(),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
) -> None:
    """Build every task image where task runs will go: here, or on every node of a cluster
    (each builds what it lacks from the same recipe), so a run does not wait on builds."""
    loaded = _load(suite, _selection(split, slice_, filter_, instance_ids))
    started = time.monotonic()
    with _progress() as progress:
        builder = _builder(progress, executor)
        pool = _executor(executor, 2, progress)
        try:
            rows = pool.prepare(builder, loaded.tasks)
        finally:
            pool.close()
    table = Table(title=f"{loaded.path.name}: {len(loaded.tasks)} task images")
    for column in ("node", "ready", "built now", "errors"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["node"], str(row["tasks"] - len(row["errors"])), str(len(row["built"])),
                      "; ".join(f"{task}: {why}" for task, why in row["errors"].items()))
    console.print(table)
    console.print(f"{len(rows)} place(s) prepared in {time.monotonic() - started:.1f}s")
    if any(row["errors"] for row in rows):
        raise typer.Exit(1)


@bench.command()
def validate(
    suite: str = typer.Option(..., "--suite", "-s", help=SUITE_HELP),
    split: Optional[str] = _split_option(),
    slice_: str = _slice_option(),
    filter_: str = _filter_option(),
    instance_ids: Optional[list[str]] = _ids_option(),
    workers: int = typer.Option(2, "--workers", "-w", min=1, help="Gradings run in parallel."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    run_id: Optional[str] = typer.Option(None, help="Name of the output directory under runs/bench/.",
                                  callback=checked_run_id),
) -> None:
    """Check every task: its gold patch resolves it and the empty patch does not."""
    from benchmark import validate_tasks

    loaded = _load(suite, _selection(split, slice_, filter_, instance_ids))
    out = _run_dir("validate", run_id)
    started = time.monotonic()
    with _progress() as progress:
        grader = _grader(out, progress, executor)
        _prepare_images(grader, loaded.tasks, progress, executor)
        pool = _executor(executor, workers, progress)
        bar = progress.add_task("grading gold and empty patches", total=2 * len(loaded.tasks))
        try:
            verdicts = validate_tasks(grader, loaded.tasks, executor=pool,
                                      on_done=lambda result: progress.advance(bar))
        finally:
            pool.close()
    table = Table(title=f"{loaded.path.name}: {len(loaded.tasks)} tasks")
    for column in ("task", "valid", "gold", "empty", "reason"):
        table.add_column(column, overflow="fold")
    for v in verdicts:
        table.add_row(v.instance_id, "[green]yes[/]" if v.valid else "[red]no[/]",
                      f"{v.gold.seconds:.1f}s" + (" [yellow]flagged[/]" if v.gold.flags else ""),
                      f"{v.empty.seconds:.1f}s", "; ".join(v.reasons))
    console.print(table)
    _print_integrity([(f"{v.instance_id} ({r.label})", r.resolved, r.tampered, r.tamper_reasons,
                       r.flags) for v in verdicts for r in (v.gold, v.empty)])
    valid = sum(v.valid for v in verdicts)
    built, pulled = grader.builder.built, grader.builder.pulled
    console.print(f"{valid}/{len(verdicts)} valid in {time.monotonic() - started:.1f}s; "
                  f"images built: {len(built)}{' (' + ', '.join(built) + ')' if built else ''}"
                  + (f"; pulled: {len(pulled)} ({', '.join(pulled)})" if pulled else ""))
    report = {v.instance_id: {"valid": v.valid, "reasons": v.reasons,
                              "gold": v.gold.swebench_report()[v.instance_id],
                              "empty": v.empty.swebench_report()[v.instance_id]} for v in verdicts}
    (out / "validation.json").write_text(json.dumps(report, indent=2))
    console.print(f"logs and reports: {out}")
    if valid != len(verdicts) or loaded.problems:
        raise typer.Exit(1)


def _load_predictions(path: Path) -> tuple[dict[str, Optional[str]], str]:
    """SWE-bench predictions (JSONL, a JSON list, or a JSON object keyed by instance id),
    and the model they name. One clear error for a file that is unreadable, not UTF-8, not
    JSON, empty, or names an instance twice (which of the two would count?)."""
    from benchmark import TaskFileError
    from benchmark import read_utf8

    try:
        text = read_utf8(path)
    except TaskFileError as exc:
        raise _fail(f"predictions file {exc}")
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
            if isinstance(data, dict) and "instance_id" in data:
                data = [data]  # one prediction, as an object
            rows = list(data.values()) if isinstance(data, dict) else data
    except json.JSONDecodeError as exc:
        raise _fail(f"{path} is not valid JSON{'L' if path.suffix == '.jsonl' else ''}: {exc}")
    if not isinstance(rows, list):
        raise _fail(f"{path} must hold a JSON list of predictions, an object keyed by instance "
                    "id, or one prediction per line (.jsonl)")
    if not rows:
        raise _fail(f"{path} holds no prediction: give one {{\"instance_id\": ..., \"model_patch\": "
                    "...}} per task")
    predictions: dict[str, Optional[str]] = {}
    model = "unknown"
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not isinstance(row.get("instance_id"), str):
            raise _fail(f"{path}, prediction {number}: needs an 'instance_id' string")
        patch = row.get("model_patch")
        if patch is not None and not isinstance(patch, str):
            raise _fail(f"{path}, instance {row['instance_id']}, field 'model_patch': must be a string or null")
        if row["instance_id"] in predictions:
            raise _fail(f"{path}, prediction {number}: instance {row['instance_id']} appears twice; "
                        "keep one prediction per instance")
        predictions[row["instance_id"]] = patch
        model = str(row.get("model_name_or_path") or model)
    return predictions, model


@bench.command()
def grade(
    suite: str = typer.Option(..., "--suite", "-s", help=SUITE_HELP),
    split: Optional[str] = _split_option(),
    slice_: str = _slice_option(),
    filter_: str = _filter_option(),
    instance_ids: Optional[list[str]] = _ids_option(),
    predictions: Path = typer.Option(..., "--predictions", "-p",
                                     help="SWE-bench predictions (JSONL or JSON)."),
    workers: int = typer.Option(2, "--workers", "-w", min=1),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    run_id: Optional[str] = typer.Option(None, help="Name of the output directory under runs/bench/.",
                                  callback=checked_run_id),
) -> None:
    """Grade a predictions file and write a report in SWE-bench's shape."""
    from benchmark import Job, run_jobs, run_report

    loaded = _load(suite, _selection(split, slice_, filter_, instance_ids))
    preds, model = _load_predictions(predictions)
    by_id = {t.instance_id: t for t in loaded.tasks}
    unknown = sorted(set(preds) - set(by_id))
    if len(unknown) == len(preds):
        raise _fail(f"none of the {len(preds)} prediction(s) in {predictions} is for a task of "
                    f"{loaded.path} (first: {unknown[0]}); grade them with the suite they were "
                    "made for (--suite)")
    for instance_id in unknown:
        err.print(f"[yellow]ignored:[/] prediction for {instance_id}, which is not in the suite")
    tasks = [by_id[i] for i in preds if i in by_id]
    out = _run_dir("grade", run_id)
    with _progress() as progress:
        grader = _grader(out, progress, executor)
        _prepare_images(grader, tasks, progress, executor)
        pool = _executor(executor, workers, progress)
        bar = progress.add_task("grading", total=len(tasks))
        try:
            results = run_jobs(grader, [Job(t, preds[t.instance_id], "model") for t in tasks],
                               executor=pool, on_done=lambda result: progress.advance(bar))
        finally:
            pool.close()
    table = Table(title=f"{predictions.name} on {loaded.path.name}")
    for column in ("task", "resolved", "set aside", "flags", "note"):
        table.add_column(column, overflow="fold")
    for r in sorted(results, key=lambda r: r.instance_id):
        state = _verdict(r.resolved, error=r.error, tampered=r.tampered, flags=r.flags)
        table.add_row(r.instance_id, state, ", ".join(i["path"] for i in r.set_aside),
                      str(len(r.flags)) if r.flags else "", r.error or "; ".join(r.problems))
    console.print(table)
    _print_integrity([(r.instance_id, r.resolved, r.tampered, r.tamper_reasons, r.flags)
                      for r in sorted(results, key=lambda r: r.instance_id)])
    report = run_report(loaded.tasks, {i: preds[i] for i in preds if i in by_id}, results, model=model)
    report_path = out / "report.json"
    report_path.write_text(json.dumps(report, indent=2))
    # and under the official harness's name, `<model>.<run_id>.json`, for tools that read it
    official_path = out / f"{model.replace('/', '__')}.{out.name}.json"
    official_path.write_text(json.dumps(report, indent=2))
    console.print(f"resolved {report['resolved_instances']}/{len(tasks)}; "
                  f"errors {report['error_instances']}. Report: {report_path} "
                  f"(also {official_path.name})")
    if report["error_instances"]:
        raise typer.Exit(1)


def _upstream(model: Optional[str], scripted: Optional[str], tasks):
    """(upstream, model name, label, server to stop): a real endpoint or a scripted one."""

    from harness.models.gateway import OpenAIUpstream

    if scripted:
        from harness.models.oracle import oracle_script
        from harness.models.scripted_model import Script, ScriptError, ScriptedModelServer

        try:
            script = oracle_script(tasks) if scripted == "oracle" else Script.load(scripted)
        except ScriptError as exc:
            raise _fail(str(exc))
        server = ScriptedModelServer(script).start()
        console.print(f"[bold magenta]SCRIPTED MODEL[/] ({scripted}): canned answers from a local "
                      f"server at {server.base_url}, not a real model.")
        name = model or "scripted"
        return OpenAIUpstream(server.base_url, "scripted"), name, f"scripted:{scripted}", server
    if not model:
        raise _fail("no model given. Point ratchet at an OpenAI-compatible endpoint with "
                    "OPENAI_BASE_URL and OPENAI_API_KEY and pass --model NAME, or run the "
                    "built-in scripted demo model with --scripted oracle.")
    upstream = OpenAIUpstream.from_environment()
    if upstream is None:
        raise _fail(f"--model {model} needs an endpoint: set OPENAI_API_KEY (and OPENAI_BASE_URL "
                    "for anything but OpenAI itself).")
    check_model_endpoint()
    return upstream, model, model, None


def _agent_image(builder) -> None:
    """ratchet's agent image, built before the first task run where some task's image is not
    ratchet's (the agent runs beside it: `benchmark._exec_relay`); one clear error if not."""
    from benchmark import InfraError

    try:
        builder.ensure_agent()
    except InfraError as exc:
        raise _fail(escape(f"the agent's own image (it runs beside an official task image) "
                           f"could not be made: {exc}"))


@bench.command("run")
def run_agent(
    suite: str = typer.Option(..., "--suite", "-s", help=SUITE_HELP),
    split: Optional[str] = _split_option(),
    slice_: str = _slice_option(),
    filter_: str = _filter_option(),
    instance_ids: Optional[list[str]] = _ids_option(),
    agent: str = typer.Option("agent_seed", "--agent", "-a",
                              help="The agent: a directory holding agent_seed/, or a git ref."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name at the endpoint."),
    scripted: Optional[str] = typer.Option(
        None, help="Use a scripted model instead: a script file, or 'oracle' (knows every fix; demo only)."),
    workers: int = typer.Option(2, "--workers", "-w", min=1),
    budget_usd: Optional[float] = typer.Option(None, help="Stop model calls past this spend for the run."),
    task_budget_usd: Optional[float] = typer.Option(None, help="... and past this spend per task."),
    allow_unpriced: bool = typer.Option(False, "--allow-unpriced", help=ALLOW_UNPRICED_HELP),
    timeout_s: float = typer.Option(1800, help="Wall-clock limit of one agent run."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    run_id: Optional[str] = typer.Option(None, help="Output directory under runs/bench/; "
                                         "the same id again resumes, skipping finished tasks.",
                                         callback=checked_run_id),
) -> None:
    """Run an agent on every task in a fresh sandbox, grade each patch, summarize."""
    from benchmark import DockerEnvironment
    from harness.run.agent_source import AgentSourceError, resolve_agent
    from harness.run.bench_run import BenchRun
    from harness.run.executors import ExecutorError
    from harness.models.gateway import Budget, Gateway
    from harness.models.ledger import Ledger

    loaded = _load(suite, _selection(split, slice_, filter_, instance_ids))
    try:
        source = resolve_agent(agent)
    except AgentSourceError as exc:
        raise _fail(str(exc))
    if not scripted and model:
        prices = _priced({"agent": model}, allow_unpriced)
    upstream, model_name, label, server = _upstream(model, scripted, loaded.tasks)
    if scripted:
        prices = _priced({"agent": model_name}, allow_unpriced, free=(model_name,))
    out = _run_dir("run", run_id)
    (out / "prices.json").write_text(json.dumps(prices.snapshot([model_name]), indent=2))
    try:
        with _progress() as progress:
            grader = _grader(out / "grades", progress, executor)
            _prepare_images(grader, loaded.tasks, progress, executor)
            if executor == "local" and any(task.is_official for task in loaded.tasks):
                _agent_image(grader.builder)
            pool = _executor(executor, workers, progress)
            gateway = Gateway(upstream, model=model_name, log_dir=out / "trajectories",
                              budget=Budget(per_task=task_budget_usd, per_run=budget_usd),
                              prices=prices, ledger=Ledger.open(out / "spend.jsonl"))
            bench_run = BenchRun(agent=source, gateway=gateway, grader=grader, out_dir=out,
                                 environment=DockerEnvironment(grader.builder, timeout_s=timeout_s),
                                 model_label=label)
            bar = progress.add_task("agent runs", total=len(loaded.tasks))

            def done(outcome, cached: bool) -> None:
                progress.advance(bar)
                if cached:
                    progress.console.print(f"[dim]{outcome.instance_id}: finished earlier, skipped[/]")

            try:
                outcomes = bench_run.run(loaded.tasks, executor=pool, on_done=done)
            except ExecutorError as exc:
                raise _fail(str(exc))
            finally:
                pool.close()
    finally:
        if server is not None:
            server.stop()
    table = Table(title=f"{source.spec} ({source.tree_hash}) on {loaded.path.name}, model {label}")
    for column in ("task", "resolved", "steps", "tokens in/out", "cost $", "time s", "note"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        table.add_row(o.instance_id, _verdict(o.resolved, tampered=o.tampered, flags=o.flags),
                      str(o.steps),
                      f"{o.prompt_tokens}/{o.completion_tokens}",
                      "unknown" if o.unpriced_calls else f"{o.cost_usd:.4f}",
                      f"{o.seconds:.1f}", o.error or ("" if o.submitted else "did not submit"))
    console.print(table)
    _print_integrity([(o.instance_id, o.resolved, o.tampered, o.tamper_reasons, o.flags)
                      for o in outcomes])
    resolved = sum(o.resolved for o in outcomes)
    console.print(f"resolved {resolved}/{len(outcomes)}; tokens "
                  f"{sum(o.prompt_tokens for o in outcomes)} in / "
                  f"{sum(o.completion_tokens for o in outcomes)} out; "
                  + ("cost unknown (an unpriced model)" if any(o.unpriced_calls for o in outcomes)
                     else f"${sum(o.cost_usd for o in outcomes):.4f}") + ". Predictions, trajectories and "
                  f"summary: {out}")
    errors = [o for o in outcomes if o.error]
    if errors:
        from harness.models.endpoint import configured_url

        endpoint = not scripted and any("model endpoint" in o.error for o in errors)
        err.print(f"[bold red]error:[/] {len(errors)} task(s) have no verdict (left out of "
                  "predictions.jsonl)"
                  + (f"; the model endpoint {configured_url()} (OPENAI_BASE_URL) failed" if endpoint
                     else "") + f". Once fixed, `--run-id {out.name}` again redoes only them",
                  highlight=False)
        raise typer.Exit(1)


@bench.command()
def audit(
    suite: str = typer.Option(..., "--suite", "-s", help=SUITE_HELP),
    workers: int = typer.Option(2, "--workers", "-w", min=1),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    fork_bomb: bool = typer.Option(False, "--fork-bomb",
                                   help="Also try a fork bomb at import (slow: it runs to the grading's time limit)."),
    run_id: Optional[str] = typer.Option(None, help="Name of the output directory under runs/bench/.",
                                  callback=checked_run_id),
    resume: bool = typer.Option(False, "--resume",
                                help="Go on with the audit in --run-id's folder: keep the gradings the same grader code finished there on the same patches."),
) -> None:
    """Attack the grader on every task: known grader-fooling patches must all come out
    unresolved, and the gold patch resolved."""
    from benchmark import AuditResumeError, InfraError, runs_dir
    from benchmark import audit as run_audit
    from harness.run.executors import ExecutorError

    if resume and not (run_id and (runs_dir() / "bench" / run_id).is_dir()):
        raise _fail("--resume goes on with an earlier audit: name its folder under runs/bench/ "
                    "with --run-id")
    loaded = _load(suite)
    out = _run_dir("audit", run_id)
    started = time.monotonic()
    with _progress() as progress:
        grader = _grader(out, progress, executor)
        _prepare_images(grader, loaded.tasks, progress, executor)
        pool = _executor(executor, workers, progress)
        bar = progress.add_task("gold and attack patches", total=None)
        try:
            rows = run_audit(grader, loaded.tasks, fork_bomb=fork_bomb, executor=pool,
                             on_done=lambda result: progress.advance(bar), resume=resume)
        except AuditResumeError as exc:
            raise _fail(str(exc))
        except (InfraError, ExecutorError) as exc:
            raise _fail(f"the audit could not run: {exc}")
        finally:
            pool.close()
    tasks = list(dict.fromkeys(row.instance_id for row in rows))
    attacks = list(dict.fromkeys(row.attack for row in rows))
    cell = {(r.instance_id, r.attack): r for r in rows}
    style = {"blocked": "green", "caught": "green", "resolved": "green", "RESOLVED": "bold red",
             "FAILED": "bold red", "error": "yellow"}
    table = Table(title=f"audit of {loaded.path.name}: {len(tasks)} task(s) x {len(attacks) - 1} attack(s)")
    table.add_column("attack", overflow="fold")
    for number, _ in enumerate(tasks, start=1):
        table.add_column(f"task {number}", overflow="fold")
    for attack in attacks:
        cells = []
        for task in tasks:
            row = cell.get((task, attack))
            if row is None:
                cells.append("[dim]n/a[/]")
                continue
            flags = f" [yellow]⚑{row.flags}[/]" if row.flags else ""
            cells.append(f"[{style[row.verdict]}]{row.verdict}[/]{flags}")
        table.add_row(attack, *cells)
    console.print(table)
    for number, task in enumerate(tasks, start=1):
        console.print(f"[dim]task {number}: {task}[/]", highlight=False)
    through = [r for r in rows if r.verdict == "RESOLVED"]
    gold_failed = [r for r in rows if r.attack == "gold" and r.verdict != "resolved"]
    errors = [r for r in rows if r.error]
    for r in [*through, *gold_failed, *errors]:
        console.print(f"[red]{r.verdict}:[/] {r.instance_id}: {r.attack}: "
                      f"{r.error or r.note or 'graded resolved without a fix'}",
                      highlight=False)
    summary = {
        "suite": suite, "tasks": len(tasks), "attacks": len(rows) - len(tasks),
        "attacks_resolved": len(through),
        "attacks_caught_tampering": sum(1 for r in rows if r.verdict == "caught"),
        "attacks_flagged": sum(1 for r in rows if r.attack != "gold" and r.flags),
        "gold_resolved": sum(1 for r in rows if r.attack == "gold" and r.verdict == "resolved"),
        "errors": len(errors), "seconds": round(time.monotonic() - started, 1),
    }
    report_path = out / "audit.json"
    report_path.write_text(json.dumps({"summary": summary, "rows": [r.as_dict() for r in rows]},
                                      indent=2))
    console.print(f"{summary['attacks_resolved']}/{summary['attacks']} attacks resolved "
                  f"({summary['attacks_caught_tampering']} caught tampering, "
                  f"{summary['attacks_flagged']} flagged by the scan); gold resolved "
                  f"{summary['gold_resolved']}/{len(tasks)}; errors {len(errors)}; "
                  f"{summary['seconds']}s. Report: {report_path}")
    if through or gold_failed or errors:
        raise typer.Exit(1)


@bench.command("suites")
def list_suites() -> None:
    """List the shipped suites and their task counts."""
    from benchmark import known_suites, load_suite

    for name in known_suites():
        loaded = load_suite(name)
        console.print(f"{name}: {len(loaded.tasks)} tasks ({loaded.path})")


def _forge_target(run: str):
    """The curriculum of run `run` (`harness.read.forge_target`), or one clear error."""
    from harness.read.forge_target import TargetError, read_target
    from harness.loop.workspace import WorkspaceError, find_workspace

    try:
        return read_target(find_workspace(Path.cwd()), run)
    except (TargetError, WorkspaceError) as exc:
        raise _fail(str(exc))


def _statement_model(choice: str):
    """The model that writes forged tasks' statements (None: the deterministic writer)."""
    if choice not in ("auto", "model", "plain"):
        raise _fail(f"--statements must be auto, model or plain, not {choice!r}")
    endpoint = os.environ.get("OPENAI_BASE_URL")
    if choice == "model" and not endpoint:
        raise _fail("--statements model needs a model: set OPENAI_BASE_URL and OPENAI_API_KEY "
                    "(and RATCHET_FORGE_MODEL), or use --statements plain")
    if choice == "plain" or not endpoint:
        return None
    from benchmark.forge.lm import openai_complete

    return openai_complete()


@app.command("forge")
def forge_tasks(
    package: Optional[str] = typer.Option(None, "--package", "-p", help="A pinned PyPI release, "
                                          "NAME==VERSION (with --target: default, the package "
                                          "the run's best agent fails most)."),
    out: Path = typer.Option(..., "--out", "-o", help="JSONL task file to write (same ids are replaced)."),
    count: int = typer.Option(10, "--count", "-n", min=1, help="Validated tasks wanted."),
    strategy: str = typer.Option("ast", help="ast (procedural mutations), lm (a model rewrites one function; needs OPENAI_BASE_URL), or all."),
    deps: Optional[str] = typer.Option(None, help="More pinned deps, comma-separated, on top of "
                                       "those resolved from the package's metadata."),
    test_opts: Optional[str] = typer.Option(None, help="pytest options every run needs, e.g. "
                                            "'-o addopts=' (default: found from its pytest config)."),
    test_paths: Optional[str] = typer.Option(None, help="Where the suite is, e.g. 'tests' "
                                             "(default: found in the sdist)."),
    pytest_version: Optional[str] = typer.Option(
        None, help="The pytest release to test with (default 9.2.0, falling back to 8.4.2 "
        "when the package's conftest needs an older one)."),
    seed: int = typer.Option(0, help="Seed of the candidate order."),
    max_screened: Optional[int] = typer.Option(None, help="Stop after screening this many candidates."),
    workers: int = typer.Option(2, "--workers", "-w", min=1, help="Sandboxes run in parallel."),
    statements: str = typer.Option("auto", help="Who writes problem statements: model (the "
                                   "OpenAI endpoint), plain (deterministic, no model), or auto "
                                   "(model when OPENAI_BASE_URL is set)."),
    statement_calls: int = typer.Option(60, min=0, help="Budget: model calls for statements; "
                                        "past it, statements are plain."),
    target: Optional[str] = typer.Option(None, help="A run (RUN): forge more of the bug kinds "
                                         "(and package) its best generation fails most.",
                                         callback=checked_run_id),
) -> None:
    """Forge validated tasks: inject bugs into a package, keep those its tests catch."""
    import re
    from dataclasses import replace

    from benchmark import InfraError
    from benchmark.forge import RECIPES, Forge, PackageRecipe, merge_tasks

    if strategy not in ("ast", "lm", "all"):
        raise _fail(f"--strategy must be ast, lm or all, not {strategy!r}")
    curriculum = _forge_target(target) if target else None
    if package is None and curriculum is not None:
        package = curriculum.package()
        if package is None:
            raise _fail(f"run {target} has no task from a PyPI package to pick one from; "
                        "name one with --package NAME==VERSION")
        console.print(f"--target {target}: forging {package} ({curriculum.why()})")
    if package is None:
        raise _fail("--package NAME==VERSION is required (or --target RUN to pick it from a run)")
    if "==" not in package:
        raise _fail(f"--package must pin one release as NAME==VERSION, got {package!r}")
    if pytest_version is not None and not re.fullmatch(r"\d+(\.\d+){1,2}", pytest_version):
        raise _fail(f"--pytest-version must be a release number such as 8.4.2, not {pytest_version!r}")
    statement_model = _statement_model(statements)
    known = RECIPES.get(package, PackageRecipe(package))
    recipe = replace(
        known,
        deps=tuple(d.strip() for d in deps.split(",") if d.strip()) if deps is not None else known.deps,
        test_opts=test_opts if test_opts is not None else known.test_opts,
        test_paths=test_paths if test_paths is not None else known.test_paths,
        pytest_version=pytest_version or known.pytest_version,
    )
    run_dir = _run_dir("forge", None)
    started = time.monotonic()
    with _progress() as progress:
        grader = _grader(run_dir, progress)
        say = lambda message: progress.console.print(f"[dim]{message}[/]")
        try:
            forge = Forge(recipe, grader, workers=workers, on_event=say,
                          statement_model=statement_model, statement_calls=statement_calls,
                          curriculum=curriculum)
            tasks, reports = forge.run(count, strategy, seed=seed, max_screened=max_screened)
        except InfraError as exc:
            raise _fail(str(exc))
    total = merge_tasks(out, tasks) if tasks else None
    table = Table(title=f"forge report: {package}")
    for column in ("strategy", "sites", "stable tests", "screened", "broke tests", "dupes",
                   "validated", "kept", "s total", "s per kept", "note"):
        table.add_column(column, overflow="fold")
    for r in reports:
        table.add_row(r.strategy, str(r.sites), f"{r.stable_tests} (-{r.flaky_excluded} flaky)",
                      str(r.screened), str(r.broke_tests), str(r.duplicates), str(r.validated),
                      str(r.kept), f"{r.seconds:.1f}",
                      f"{r.seconds_per_kept:.1f}" if r.kept else "-",
                      "; ".join(r.notes + ([f"{r.too_big} skipped: test patch too big to grade"]
                                           if r.too_big else [])))
    console.print(table)
    for r in reports:
        for line in r.invalid:
            console.print(f"[yellow]rejected by validation:[/] {line}")
    (run_dir / "forge_report.json").write_text(json.dumps([r.as_dict() for r in reports], indent=2))
    console.print(f"{len(tasks)} validated task(s) in {time.monotonic() - started:.1f}s"
                  + (f"; {out} now holds {total}" if total is not None else "")
                  + f". Logs and report: {run_dir}")
    if not tasks:
        raise typer.Exit(1)

