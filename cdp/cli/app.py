"""`cdp`: the command line of the customer data platform ML layer.

Heavy libraries (feast, mlflow, bentoml, lightgbm) are imported inside commands so that
`cdp --help` answers instantly.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.table import Table

from cdp.cli import config, contract, events, identity, models, monitor, privacy, serving, ui
from cdp.cli.demo import run_demo
from cdp.cli.ui import HomeOption, console, progress_bar, run_stage, show, workspace, writing

app = typer.Typer(
    help="Customer data platform ML layer: raw first-party data in, unified profiles and churn scores out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # main() turns an unexpected error into one line (--debug: the traceback)
)


@app.callback()
def options(
    debug: bool = typer.Option(False, "--debug", envvar="CDP_DEBUG", help="Show the full traceback of an error."),
) -> None:
    """Customer data platform ML layer: raw first-party data in, unified profiles and churn scores out."""
    ui.DEBUG = debug


@app.command()
def generate(
    customers: int = typer.Option(20_000, min=100, help="How many real people to simulate."),
    seed: int = typer.Option(7, help="Random seed: the same seed gives the same files."),
    trend: bool = typer.Option(
        False, "--trend", help="Churn also follows falling engagement and category price rises (off: the demo data)."
    ),
    daily_drops: int = typer.Option(
        0,
        "--daily-drops",
        min=0,
        help="Hold back the last N days as daily drop files raw/<table>/<date>.parquet (new rows, updates, "
        "late records) for `cdp refresh`.",
    ),
    phone_country: str | None = typer.Option(
        None, "--phone-country", help="Write phones in the national form of this country (GB) instead of US."
    ),
    date_order: str | None = typer.Option(
        None, "--date-order", help="Write dates and timestamps as day-first (dmy) or month-first (mdy) text."
    ),
    home: Path | None = HomeOption,
) -> None:
    """Write realistic synthetic first-party data (all contract tables) to raw/ and the truth to truth/."""
    from cdp import pipeline

    ws = workspace(home)
    with writing(ws, "generate"), progress_bar("generate") as update:
        summary = run_stage(
            pipeline.generate,
            ws,
            customers,
            seed,
            progress=update,
            trend=trend,
            daily_drops=daily_drops,
            phone_country=phone_country,
            date_order=date_order,
        )
    show(f"generated into {ws.raw}", summary)


@app.command()
def ingest(
    check: bool = typer.Option(False, "--check", help="Validate raw/ and print the report; write nothing."),
    strict: bool = typer.Option(
        False, "--strict", help="Exit 1 if a table loses >5% of its rows or a column >5% of its values."
    ),
    allow_empty: bool = typer.Option(
        False, "--allow-empty", help="Accept a table whose every row was quarantined (otherwise exit 1)."
    ),
    full: bool = typer.Option(
        False,
        "--full",
        help="Re-read and re-validate every raw file. Without it only new daily drop files are read when "
        "that gives exactly the same staged/ (the notes say which, and why a full ingest was needed).",
    ),
    home: Path | None = HomeOption,
) -> None:
    """Validate raw/ against the data contract; accepted rows to staged/, rejected to quarantine.

    Env: CDP_DATE_ORDER=ymd|dmy|mdy for non-ISO dates (default: detected per column),
    CDP_DEFAULT_REGION=GB (or GB,IE) for national-form phones (default: detected from the data)."""
    from cdp import pipeline
    from cdp.cli.ingest_report import problems, render

    ws = workspace(home)
    title = "ingest: accepted + quarantined + suppressed (erased) + superseded (updated by a later drop) = read"
    if check:
        with progress_bar("ingest --check") as update:
            summary = run_stage(pipeline.ingest, ws, progress=update, write=False)
        render(summary, console, title + " (--check: nothing written)", written=False)
    else:
        with writing(ws, "ingest"), progress_bar("ingest") as update:
            summary = run_stage(pipeline.ingest, ws, progress=update, full=full)
        render(
            summary, console, title + (" (incremental: this run's rows)" if summary["mode"] == "incremental" else "")
        )
    losses, empty = problems(summary, allow_empty)
    for line in empty + losses:
        console.print(f"[red]{'error' if line in empty or strict else 'loss'}:[/red] {line}")
    if empty or (strict and losses):
        raise typer.Exit(code=1)


@app.command()
def resolve(
    incremental: bool = typer.Option(
        False,
        "--incremental",
        help="Only link records not in identity_map yet (a day's orders, new sign-ups) to the existing "
        "customers with the saved model; existing ids are kept. Needs a previous full run.",
    ),
    home: Path | None = HomeOption,
) -> None:
    """Link records that belong to the same person into one customer_id (identity/identity_map.parquet)."""
    from cdp import pipeline

    ws = workspace(home)
    with writing(ws, "resolve"), console.status("linking new records" if incremental else "resolving identities"):
        summary = run_stage(pipeline.resolve, ws, incremental=incremental)
    show("identity resolution (incremental)" if incremental else "identity resolution", summary)


@app.command()
def features(
    rebuild: bool = typer.Option(
        True,
        "--rebuild/--incremental",
        help="--rebuild (default): every snapshot of every view from all the data, the reference. "
        "--incremental: recompute only the rows whose inputs changed since the last complete build "
        "(new snapshots, customers with new, updated or re-linked records); in full without one.",
    ),
    home: Path | None = HomeOption,
) -> None:
    """Build profile and signal snapshots, register them in Feast, materialize the latest."""
    from cdp import pipeline

    ws = workspace(home)
    with writing(ws, "features"), progress_bar("features") as update:
        summary = run_stage(pipeline.build_features, ws, progress=update, incremental=not rebuild)
    show("features", summary)


@app.command()
def train(
    model: str = typer.Argument(
        "churn", help="Which model to train: churn, next-best-product, campaign-response, clv."
    ),
    home: Path | None = HomeOption,
) -> None:
    """Train a model out-of-time on point-in-time features; log to MLflow; alias `champion` if it beats the champion."""
    from cdp import pipeline

    ws = workspace(home)
    with writing(ws, f"train {model}"), progress_bar(f"train {model}") as update:
        summary = run_stage(pipeline.train, ws, model, progress=update)
    show_training(model, summary, ws.mlflow_uri)


def show_training(model: str, summary: dict, mlflow_uri: str) -> None:
    """The result in four lines: metric vs its baseline vs the champion, the decision, where to look."""
    gate = summary.get("extra", {}).get("promotion") or {}
    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    table = Table(title=f"trained {model} v{summary['version']} (out-of-time, {summary['valid_rows']} rows)")
    for column in ("metric", "this model", gate.get("baseline") or "baseline", "champion before"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    table.add_row(
        gate.get("metric", "?"),
        fmt(gate.get("value")),
        fmt(gate.get("baseline_value")),
        fmt(gate.get("previous_value")),
    )
    console.print(table)
    verdict = "champion" if gate.get("promoted") else "not champion"
    console.print(f"[bold]{verdict}[/bold]: {gate.get('verdict', '')}", soft_wrap=True)
    console.print(f"MLflow run {summary['run_id']}: `mlflow ui --backend-store-uri {mlflow_uri}`", soft_wrap=True)


@app.command()
def score(home: Path | None = HomeOption) -> None:
    """Batch-score all active customers (churn, next best products, campaign uplift) and push the scores back (Feast push)."""
    from cdp import pipeline

    ws = workspace(home)
    with writing(ws, "score"), console.status("scoring"):
        summary = run_stage(pipeline.score, ws)
    show("scores pushed", summary)


@app.command()
def refresh(
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Rebuild the feature views in full instead of only the rows whose inputs changed."
    ),
    retrain_if_decayed: bool = typer.Option(
        False,
        "--retrain-if-decayed",
        help="Afterwards, train a challenger for every model whose latest monitoring run crossed a "
        "threshold (the alerts of `cdp monitor`: drift, score shift, realized metric below the promise); "
        "the promotion gate decides, and a new champion rescores everyone.",
    ),
    home: Path | None = HomeOption,
) -> None:
    """The daily run: ingest raw files not seen yet (e.g. raw/<table>/<date>.parquet drops), link new
    records (resolve --incremental), update features (only rows whose inputs changed) + materialize,
    score and push. Nothing new: exit 0."""
    from cdp import pipeline

    ws = workspace(home)
    with writing(ws, "refresh"):
        with progress_bar("refresh") as update:
            summary = run_stage(pipeline.refresh, ws, progress=update, incremental=not rebuild)
        if summary.get("nothing_new"):
            console.print("nothing new: every raw file was already refreshed (name and content unchanged)")
        else:
            show("refresh", summary)
        if retrain_if_decayed:
            _retrain_if_decayed(ws)


def _retrain_if_decayed(ws) -> None:
    from cdp.retrain import retrain_if_decayed

    with console.status("checking the monitoring runs; retraining decayed models"):
        outcome = run_stage(retrain_if_decayed, ws)
    if not outcome["decayed"]:
        console.print("no model decayed: every family's latest monitoring run is within thresholds")
        return
    for family, sentences in outcome["decayed"].items():
        for sentence in sentences:
            console.print(f"[yellow]decayed:[/yellow] {sentence}", soft_wrap=True)
        result = outcome["retrained"][family]
        state = "promoted to champion" if result["promoted"] else "not promoted"
        console.print(f"retrained {family}: v{result['version']} {state} ({result['verdict']})", soft_wrap=True)
    if "rescored" in outcome:
        console.print("scores pushed with the new champion(s)")


@app.command()
def serve(
    port: int = typer.Option(3000, help="HTTP port."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (default loopback only; 0.0.0.0 = every interface)."),
    insecure: bool = typer.Option(
        False,
        "--insecure",
        help="Allow a non-loopback --host without CDP_API_KEY (anyone reaching it can read profiles).",
    ),
    home: Path | None = HomeOption,
) -> None:
    """Serve /churn, /next_best_product, /campaign_response, /profile with BentoML (blocks; Ctrl-C stops).

    Env: CDP_ONLINE_STORE=sqlite|redis (CDP_REDIS=host:port), CDP_API_KEY (require X-API-Key or
    Authorization: Bearer), CDP_MAX_BODY_BYTES (default 1 MiB), CDP_SERVE_MODELS (default all three),
    CDP_MODEL_RELOAD_SECONDS (champion reload check, default 30)."""
    from cdp.serving.readiness import ServiceNotReady, check_ready
    from cdp.serving.server import exposure_problem, serve_forever

    ws = workspace(home)
    if (problem := exposure_problem(host, insecure)) is not None:
        console.print(f"[red]refusing to serve:[/red] {problem}")
        raise typer.Exit(code=2)
    try:
        check_ready(ws)
    except ServiceNotReady as error:
        console.print(f"[red]cannot serve:[/red] {error}", soft_wrap=True)
        raise typer.Exit(code=2) from None
    console.print(f"starting bentoml serve on {host}:{port} (ready in ~6 s)")
    serve_forever(ws, port, host, insecure)


@app.command()
def demo(
    customers: int = typer.Option(20_000, min=500, help="People to simulate."),
    seed: int = typer.Option(7, help="Random seed."),
    port: int = typer.Option(3000, help="Port for the demo's BentoML server."),
    home: Path | None = HomeOption,
) -> None:
    """Run everything end to end on embedded defaults and write reports/demo_summary.json."""
    ws = workspace(home)
    run_stage(run_demo, ws, customers, seed, port, console)
    console.print(f"summary written to [bold]{ws.reports / 'demo_summary.json'}[/bold]")


# Command groups live in their own modules, each on its own Typer; merged here (no name = top level).
for _group in (identity, privacy, models, serving, config, contract, monitor, events):
    app.add_typer(_group.app)


def quiet_third_parties() -> None:
    """MLflow's "Registered model ... already exists" / "Created version" lines and artifact download
    bars, and Feast/BentoML info logs, are for their own CLIs; ours prints its own summary."""
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Feast's import puts a "once" DeprecationWarning filter in front of ours: drop third-party
    # deprecation notices where they are shown instead (our own warnings still show).
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DeprecationWarning) and "site-packages" in str(filename):
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    for name in ("mlflow", "feast", "bentoml", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    # Third-party deprecation notices (ibis, SQLAlchemy) are for us, not for the user's terminal.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    quiet_third_parties()
    from cdp.settings import ProfileError, SettingsError, apply_profile, load_settings

    try:
        apply_profile()  # CDP_PROFILE=embedded|scale fills engine settings the environment leaves unset
        load_settings()  # every CDP_* value checked before any command starts work
    except (ProfileError, SettingsError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise SystemExit(2) from None
    try:
        app()
    except Exception as error:  # not an expected condition: one line, the traceback with --debug
        if ui.DEBUG:
            raise
        console.print(f"[red]error:[/red] unexpected {type(error).__name__}: {error}", soft_wrap=True)
        console.print("run again with --debug (after `cdp`) for the traceback, and report it if it persists")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
