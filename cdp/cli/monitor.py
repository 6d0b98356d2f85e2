"""`cdp monitor`: drift and decay of the served models, from the runs every `cdp score` logs to
MLflow (experiment `monitoring`); exits 1 past the thresholds so a scheduler can alert."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cdp.cli.ui import HomeOption, console, workspace

app = typer.Typer()  # merged into the main `cdp` app by cdp.cli.app


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


HELP = (
    "Drift and decay of each served champion, per its latest scoring run; exit 1 past a threshold.\n\n"
    "Every `cdp score` logs one MLflow run per scored model (experiment `monitoring`): PSI and null share of "
    "each feature of the scored population vs the champion's training snapshots, PSI of the churn scores vs "
    "its validation scores and, once labels mature, the realized metric of the scores served back then vs "
    "what validation promised (churn ROC AUC after 90 days, next best product NDCG@10 after 30).\n\n"
    "Prints each model's latest run, writes reports/monitoring_<model>.png (history; also logged to the run) "
    "and exits 1 with one alert line per threshold crossed, naming the feature and value; 0 when all is "
    "within the thresholds; 2 when nothing has been scored yet. Features in CDP_MONITOR_IGNORE_FEATURES, "
    "or with fewer than 200 non-null values, never alert on PSI."
)


@app.command(help=HELP)
def monitor(
    psi_max: float | None = typer.Option(
        None,
        "--psi-max",
        min=0.0,
        help="Alert above this PSI of a feature or the scores (default CDP_MONITOR_PSI_MAX).",
    ),
    null_jump: float | None = typer.Option(
        None, "--null-jump", min=0.0, help="Alert above this rise of a null share (default CDP_MONITOR_NULL_JUMP)."
    ),
    metric_drop: float | None = typer.Option(
        None,
        "--metric-drop",
        min=0.0,
        help="Alert when the realized metric is this far below validation (default CDP_MONITOR_METRIC_DROP).",
    ),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write plots over time (reports/, MLflow)."),
    home: Path | None = HomeOption,
) -> None:
    """Drift and decay of each served champion, per its latest scoring run; exit 1 past a threshold."""
    from dataclasses import replace

    from cdp.training.monitor_report import Thresholds, alerts, history, latest, plot_history

    ws = workspace(home)
    limits = Thresholds.from_settings()
    chosen = {"psi_max": psi_max, "null_jump": null_jump, "metric_drop": metric_drop}
    limits = replace(limits, **{k: v for k, v in chosen.items() if v is not None})
    runs = history(ws)
    if runs.empty:
        console.print(f"[red]error:[/red] no monitoring runs in {ws.root}: run `cdp score` first", soft_wrap=True)
        raise typer.Exit(code=2)
    last = latest(runs)
    table = Table(title=f"monitoring: latest scoring run per model ({len(runs)} runs in MLflow '{'monitoring'}')")
    for column in ("model", "scored at", "max feature PSI", "null share jump", "score PSI", "realized vs validation"):
        table.add_column(column, overflow="fold")
    for row in last.itertuples(index=False):
        realized = (
            "-"
            if row.realized_value != row.realized_value
            else f"{row.realized_metric} {_fmt(row.realized_value)} vs {_fmt(row.promised_value)}\n"
            f"(v{row.realized_model_version} served {row.realized_snapshot})"
        )
        table.add_row(
            f"{row.model} v{row.version}",
            f"{row.scored_at:%Y-%m-%d}",
            f"{_fmt(row.max_psi)}\n{row.max_psi_feature if isinstance(row.max_psi_feature, str) else ''}",
            f"{_fmt(row.max_null_jump)}\n{row.max_null_jump_feature if isinstance(row.max_null_jump_feature, str) else ''}",
            _fmt(row.score_psi),
            realized,
        )
    console.print(table)
    if plots:
        for path in plot_history(ws, runs, limits):
            console.print(f"plot: {path}", soft_wrap=True)
    problems = alerts(last, limits)
    for line in problems:
        console.print(f"[red]alert:[/red] {line}", soft_wrap=True)
    if problems:
        raise typer.Exit(code=1)
    console.print(
        f"ok: within thresholds (PSI <= {limits.psi_max}, null share rise <= {limits.null_jump}, "
        f"metric drop <= {limits.metric_drop})"
    )
