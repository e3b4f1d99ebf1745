"""``ratchet gc``: report and remove what stopped runs left behind (`harness.loop.leftovers`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from harness.cli.common import app, console, err

KINDS = ("container", "volume", "worktree", "dir", "image")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@app.command("gc")
def gc_command(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report; remove nothing."),
    images: bool = typer.Option(True, "--images/--no-images",
                                help="Also stale images of old recipes (they rebuild when needed)."),
    workspace: Optional[Path] = typer.Option(None, help="The workspace whose recorded worktrees "
                                             "to remove (default: the one around the current "
                                             "directory, if any)."),
) -> None:
    """Remove what stopped runs left: containers, empty dangling volumes, worktrees of recorded
    generations, temp and socket dirs, stale images. Live runs' things are never touched."""
    from harness.loop import leftovers
    from harness.loop.workspace import WorkspaceError, find_workspace

    try:
        root: Optional[Path] = find_workspace(workspace or Path.cwd())
    except WorkspaceError as exc:
        if workspace is not None:
            err.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2)
        root = None
    found = leftovers.find(root, with_images=images)
    table = Table(title="left behind" + (" (dry run: nothing removed)" if dry_run else ""))
    for column in ("kind", "name", "size", "why"):
        table.add_column(column, overflow="fold")
    for item in sorted(found, key=lambda i: (KINDS.index(i.kind), i.name)):
        table.add_row(item.kind, item.name, _size(item.size),
                      item.why if item.removable else f"[yellow]{item.why}[/]")
    if found:
        console.print(table)
    removable = [i for i in found if i.removable]
    totals = {k: [i for i in removable if i.kind == k] for k in KINDS}
    summary = ", ".join(f"{len(v)} {k}(s) {_size(sum(i.size for i in v))}" for k, v in totals.items())
    if root is None:
        summary += "; no workspace here, worktrees not looked at"
    if dry_run:
        console.print(f"would remove: {summary}. Run `ratchet gc` to remove them.")
        return
    problems = leftovers.remove(removable, root)
    for problem in problems:
        err.print(f"[yellow]not removed:[/] {problem}")
    console.print(f"removed: {summary}" + (f"; {len(problems)} could not be removed" if problems else ""))
    if problems:
        raise typer.Exit(1)
