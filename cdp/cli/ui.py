"""What every command shares: the console, the --home option, progress bars, tables, user errors."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cdp.workspace import Workspace, private

T = TypeVar("T")
console = Console()
HomeOption = typer.Option(
    None,
    "--home",
    envvar="CDP_HOME",
    help="Workspace folder (raw/, staged/, identity/, features/, mlflow.db). Default ./data",
)


DEBUG = False  # `cdp --debug`: errors re-raised with their traceback


class UserError(Exception):
    """An error whose message is for the user: printed without a traceback."""


@contextmanager
def progress_bar(title: str) -> Iterator:
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,  # in logs/pipes the summary that follows says it all
    ) as bar:
        task = bar.add_task(title, total=None)

        def update(step: str, done: int, total: int) -> None:
            bar.update(task, description=f"{title}: {step}", completed=done, total=total)

        yield update


def workspace(home: Path | None) -> Workspace:
    ws = Workspace.from_env(home)
    private(ws.root)
    os.environ["CDP_HOME"] = str(ws.root)
    return ws


def show(title: str, summary: dict) -> None:
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        table.add_row(str(key), json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value))
    console.print(table)


@contextmanager
def writing(ws: Workspace, command: str) -> Iterator[None]:
    """Hold the workspace lock while a writing command runs (cdp.atomic.workspace_lock): a second
    writer stops at once with one red line naming the command that holds it (exit 3)."""
    from cdp.atomic import WorkspaceBusy, workspace_lock
    from cdp.privacy.subjects import rekey_journal

    try:
        lock = workspace_lock(ws.root, command)
        lock.__enter__()
    except WorkspaceBusy as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(code=3) from None
    if rekey_journal(ws).exists() and command != "privacy rekey":  # tokens part old-key, part new-key
        lock.__exit__(None, None, None)
        console.print(
            "[red]error:[/red] privacy rekey interrupted: run `cdp privacy rekey` to finish it first", soft_wrap=True
        )
        raise typer.Exit(code=1)
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def run_stage(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a stage; known input problems become one red line instead of a traceback."""
    from cdp.ingest.staging import ContractError
    from cdp.privacy.subjects import PrivacyKeyMismatch
    from cdp.training.capability import CapabilityOff

    try:
        return fn(*args, **kwargs)
    except PrivacyKeyMismatch as mismatch:  # would let erased people back in: loud, not a data error
        if DEBUG:
            raise
        console.print(f"[red]error:[/red] {mismatch}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    except CapabilityOff as off:  # not an error in the data: a capability the tables do not support
        if DEBUG:
            raise
        console.print(f"[yellow]skipped:[/yellow] {off}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    except (ContractError, UserError, ValueError, FileNotFoundError) as error:
        if DEBUG:
            raise
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(code=2) from None
