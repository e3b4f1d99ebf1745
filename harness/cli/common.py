"""What the commands of the ``ratchet`` command line share: the app, its consoles, the task
selection options, loading a suite, the grader and executor, prices, one clear error.

Start-up stays light: heavy imports (swebench, the Docker SDK) happen inside commands.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(help="ratchet: a coding agent that improves by rewriting its own source.",
                  no_args_is_help=True, add_completion=False)
bench = typer.Typer(help="Measure on a benchmark: validate a suite, grade predictions.",
                    no_args_is_help=True)
app.add_typer(bench, name="bench")

console = Console()
err = Console(stderr=True)


@app.callback()
def _every_command(ctx: typer.Context) -> None:
    """What every command gets: SIGTERM taken as Ctrl-C, and a temp dir of its own."""
    _on_sigterm()
    _own_temp_dir(ctx)


def _own_temp_dir(ctx: typer.Context) -> None:
    # Everything the command makes with `tempfile` (agent copies, gateway sockets, scratch
    # repos) goes in one dir named for the process, removed when the command ends, however
    # it ends; after a kill, `ratchet gc` and the next run's sweep remove it (its owner is
    # gone), so no command leaves its temp files behind.
    from harness.loop.scratch import Scratch

    scratch = Scratch.enter(f"cmd.{ctx.invoked_subcommand or 'ratchet'}")
    ctx.call_on_close(scratch.leave)


def _on_sigterm() -> None:
    # SIGTERM ends any command as Ctrl-C does: its `finally` blocks and exit handlers run,
    # so what it started (grading containers started ahead, finished ones waiting for their
    # removal) goes with it. A second SIGTERM removes every container this process made and
    # ends it at once. `ratchet run` and `resume` put their own handler over this one.
    import os
    import signal

    def at_once(signum, frame):
        from benchmark import docker_host
        from harness.loop.scratch import leave_all

        docker_host.remove_process_containers()
        leave_all()
        os._exit(143)

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, at_once)
        err.print("[yellow]stopping (SIGTERM): the work in flight finishes and what it started "
                  "is removed; SIGTERM again to stop at once[/]")
        raise SystemExit(143)

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, stop)

SUITE_HELP = ("A shipped suite name (e.g. quickstart), a task file (.json/.jsonl/.parquet, official "
              "SWE-bench rows as they are), a dataset directory, or a SWE-bench dataset name "
              "(e.g. SWE-bench/SWE-bench_Verified, or verified / lite).")
SELECT = "Selecting tasks"


def _split_option():
    return typer.Option(None, "--split", help="The dataset split (default: test); a file is one "
                        "split already.", rich_help_panel=SELECT)


def _slice_option():
    return typer.Option("", "--slice", help="A:B of the (filtered) rows, e.g. 0:5 for the first five.",
                        rich_help_panel=SELECT)


def _filter_option():
    return typer.Option("", "--filter", help="Take instances whose id matches this regular "
                        "expression (re.match).", rich_help_panel=SELECT)


def _ids_option():
    return typer.Option(None, "--instance-ids", "--instance_ids", help="Only these instances "
                        "(space- or comma-separated; repeatable).", rich_help_panel=SELECT)


def _selection(split: Optional[str], slice_: str, filter_: str, ids: Optional[list[str]]):
    from benchmark import Selection, parse_ids

    return Selection(split=split, slice=slice_, filter=filter_, instance_ids=parse_ids(ids))
EXECUTOR_HELP = escape("Where sandboxes run: local (this machine), ray (a Ray instance started here), "
                       "ray:auto (this machine's Ray cluster) or ray:HOST:PORT (a Ray head). Ray "
                       "needs `pip install 'ratchet[ray]'`; see docs/scaling.md.")
"""Escaped: help texts are rich markup, where `[ray]` would be read as a style and dropped."""
ALLOW_UNPRICED_HELP = ("Run a model with no known price: its calls count as unknown cost (never $0) "
                       "and no budget limits them. Better: give its price with RATCHET_PRICES.")


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def checked_run_id(value: Optional[str]) -> Optional[str]:
    """A typer callback for every run id a user gives (option or argument): refused at parse
    time, before any path is made of it (`harness.loop.workspace.check_run_id`)."""
    from harness.loop.workspace import WorkspaceError, check_run_id

    if value is None:
        return None
    try:
        return check_run_id(value)
    except WorkspaceError as exc:
        raise typer.BadParameter(str(exc)) from None


def _load(suite: str, selection=None):
    from benchmark import Selection, TaskFileError, load_suite

    selection = selection or Selection()
    try:
        loaded = load_suite(suite, selection)
    except TaskFileError as exc:
        raise _fail(escape(str(exc)))
    for problem in loaded.problems:
        err.print(f"[yellow]skipped:[/] {escape(str(problem))}")
    if not loaded.tasks:
        picked = selection.describe()
        raise _fail(escape(f"{loaded.path} holds no usable task"
                           + (f" for the selection ({picked})" if picked else "")))
    return loaded


def _run_dir(kind: str, run_id: Optional[str]) -> Path:
    from benchmark import runs_dir

    if run_id:
        path = runs_dir() / "bench" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path
    # A stamped folder is never shared: two commands started in the same second (two forges
    # side by side) would otherwise overwrite each other's report and baseline log.
    stamp = f"{kind}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    (runs_dir() / "bench").mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = runs_dir() / "bench" / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{runs_dir() / 'bench' / stamp}: 999 folders of that second exist; give --run-id")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def _builder(progress: Progress, executor: str = "local"):
    """The image builder; with the local executor, after checking this machine's Docker
    daemon (on a cluster the nodes' daemons do the work)."""
    from benchmark import DockerUnavailable, ImageBuilder
    from benchmark import connect

    try:
        if executor == "local":
            connect()
    except DockerUnavailable as exc:
        raise _fail(str(exc))
    return ImageBuilder(on_event=lambda message: progress.console.print(f"[dim]{message}[/]"))


def _grader(out: Path, progress: Progress, executor: str = "local"):
    from benchmark import Grader

    return Grader(_builder(progress, executor), out)


def _executor(spec: str, workers: int, progress: Progress):
    """The executor `spec` names, connected; a clear error when it cannot be used."""
    from harness.run.executors import ExecutorError, parse_executor

    try:
        return parse_executor(spec, workers=workers,
                              on_event=lambda message: progress.console.print(f"[dim]{message}[/]"))
    except ExecutorError as exc:
        raise _fail(str(exc))


def _prepare_images(grader, tasks, progress: Progress, executor: str = "local") -> None:
    """Build every missing image first, so the grading bar measures grading. On a cluster
    each node builds what it lacks from the same recipe (`harness.run.ray_executor`)."""
    from benchmark import InfraError

    if executor != "local":
        return

    bar = progress.add_task("images", total=len(tasks))
    for task in tasks:
        try:
            grader.builder.ensure_task(task)
        except InfraError as exc:  # recorded again per task by the grader
            progress.console.print(f"[red]image for {task.instance_id}:[/] {exc}")
        progress.advance(bar)




def _priced(models: dict[str, str], allow_unpriced: bool, *, extra: Optional[dict] = None,
            free: tuple[str, ...] = ()):
    """The price table for a run's models (role -> name), or one clear error before anything
    is written: a bad RATCHET_PRICES file, or a model with no price without --allow-unpriced.
    `free` names scripted models: no endpoint is paid, so they are priced at $0 explicitly."""
    from harness.models.prices import PriceTable, unpriced_refusal

    try:
        table = PriceTable.load(extra=extra)
    except (OSError, ValueError) as exc:
        raise _fail(escape(f"prices: {exc} (RATCHET_PRICES names a JSON file "
                           '{"model": [usd_per_million_input, usd_per_million_output]})'))
    if free:
        table.add({name: [0.0, 0.0] for name in free}, "a scripted model (no endpoint is paid)")
    refusal = unpriced_refusal(table, models)
    if refusal and not allow_unpriced:
        raise _fail(refusal)
    if refusal:
        err.print("[yellow]--allow-unpriced:[/] " + refusal.split(":")[0] + "; its calls are "
                  "counted as unknown cost, not $0, and no budget limits them")
    return table


def check_model_endpoint(base_url: Optional[str] = None, api_key: Optional[str] = None) -> None:
    """One clear error, before anything is written, when an endpoint (default: the
    environment's) does not answer (`harness.models.endpoint`)."""
    from harness.models.endpoint import EndpointError, check_endpoint

    try:
        check_endpoint(base_url, api_key)
    except EndpointError as exc:
        raise _fail(str(exc))
