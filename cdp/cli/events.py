"""`cdp events consume`: a Redis Streams consumer pushing session events (registered on the main app)."""

from __future__ import annotations

from pathlib import Path

import typer

from cdp.cli.ui import HomeOption, console, run_stage, show, workspace

app = typer.Typer()  # merged into the main `cdp` app by cdp.cli.app
events_app = typer.Typer(help="Request-time session events (see docs/EVENTS.md).", no_args_is_help=True)
app.add_typer(events_app, name="events")


@events_app.command("consume")
def consume(
    stream: str | None = typer.Option(None, help="Redis stream to read (default CDP_EVENTS_STREAM, cdp:events)."),
    group: str | None = typer.Option(None, help="Consumer group (default CDP_EVENTS_GROUP, cdp-events)."),
    consumer: str | None = typer.Option(None, help="This consumer's name in the group (default host-pid)."),
    batch: int = typer.Option(500, min=1, max=10_000, help="Entries per read, written as one push."),
    max_events: int | None = typer.Option(None, min=1, help="Stop after reading this many entries."),
    drain: bool = typer.Option(False, "--drain", help="Stop once the stream has nothing new (else run until Ctrl-C)."),
    exit_with: int | None = typer.Option(
        None, "--exit-with", metavar="PID", help="Stop once process PID is gone (how `cdp serve` runs its consumer)."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="Print only the totals (not a line per batch)."),
    home: Path | None = HomeOption,
) -> None:
    """Read events from the Redis stream at CDP_REDIS (fields as POST /events: customer_id, event_type,
    timestamp, category, product_id) and push them into the session features, online and offline.
    Malformed entries go to `<stream>:rejected` with the reason; refused customers' entries are dropped."""
    from cdp.serving.stream import consume as run
    from cdp.settings import setting

    ws = workspace(home)
    address = str(setting("redis"))
    stream, group = stream or setting("events_stream"), group or setting("events_group")
    console.print(f"reading {stream} (group {group}) at redis {address.split(',')[0]}")

    def progress(done: dict) -> None:
        if not quiet:
            console.print(", ".join(f"{k} {v}" for k, v in done.items()))

    try:
        totals = run_stage(
            run, ws, address, stream, group, consumer, batch, 1000, max_events, drain, progress, exit_with
        )
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
    show("events consumed", totals)
