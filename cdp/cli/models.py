"""Data-science commands: `cdp promote` and `cdp eval-enrichment` (registered on the main app).

`cdp train clv` lives with the other models in `cdp train`. Output is metrics, versions and
vendor names only: never customer identifiers.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from cdp.cli.ui import HomeOption, UserError, console, progress_bar, run_stage, workspace

app = typer.Typer()  # merged into the main `cdp` app by cdp.cli.app


@app.command()
def promote(
    model: str = typer.Argument(..., help="Model: churn, next-best-product, campaign-response, clv."),
    version: str | None = typer.Option(
        None, "--version", "-v", help="Registered version to promote (default: the latest)."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Promote even when the gate refuses; recorded as model-version tags "
        "promotion_forced / promotion_forced_reason.",
    ),
    reason: str | None = typer.Option(None, "--reason", help="Why --force was needed (stored as a tag)."),
    home: Path | None = HomeOption,
) -> None:
    """Make a version `champion` only if it beats the champion on the challenger's out-of-time rows."""
    from cdp.training.promote import PromotionError
    from cdp.training.promote import promote as run_promote

    ws = workspace(home)

    def gate() -> dict:
        try:
            return run_promote(ws, model, version, force=force, reason=reason)
        except PromotionError as error:
            raise UserError(str(error)) from None

    with console.status(f"scoring challenger and champion of {model} out of time"):
        outcome = run_stage(gate)
    table = Table(title=f"promote {outcome['model']} v{outcome['challenger_version']}", show_header=False)
    for key in (
        "decision",
        "metric",
        "challenger_value",
        "champion_version",
        "champion_value",
        "compared_on",
        "reason",
    ):
        if outcome.get(key) is not None:
            table.add_row(key, str(outcome[key]))
    console.print(table)
    if outcome["decision"] == "refused":
        console.print(
            f"[red]refused:[/red] {outcome['reason']}. Champion stays "
            f"v{outcome['champion_version']}; --force overrides (recorded as a tag)."
        )
        raise typer.Exit(code=1)
    if outcome["decision"] == "forced":
        console.print(
            f"[yellow]forced:[/yellow] v{outcome['challenger_version']} is champion although the gate "
            f"refused ({outcome['reason']}); tagged promotion_forced=true."
        )


@app.command("eval-enrichment")
def eval_enrichment(
    bootstrap: int = typer.Option(200, min=20, help="Bootstrap resamples for the lift interval."),
    seed: int = typer.Option(0, help="Seed for the model fits and the bootstrap."),
    home: Path | None = HomeOption,
) -> None:
    """Churn out-of-time ROC AUC with and without each enrichment vendor's features: lift + 95% interval."""
    from cdp.features.build import load_snapshots
    from cdp.features.timeline import load_timeline
    from cdp.featurestore.store import open_store
    from cdp.training.enrichment import evaluate_enrichment

    ws = workspace(home)

    def run(progress) -> dict:
        snapshots, end = load_snapshots(ws)
        return evaluate_enrichment(ws, open_store(ws), load_timeline(ws), snapshots, end, bootstrap, seed, progress)

    with progress_bar("eval-enrichment") as update:
        result = run_stage(run, update)
    table = Table(
        title=f"enrichment test-and-learn: churn ROC AUC on {result['valid_rows']} out-of-time rows "
        f"({result['valid_snapshot']}), {result['bootstrap']} bootstrap resamples"
    )
    for column in ("variant", "coverage", "roc_auc", "lift", "95% interval", "pr_auc lift"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, row in result["results"].items():
        lift = row.get("lift_roc_auc")
        table.add_row(
            name,
            f"{row['coverage_valid_rows']:.1%}",
            f"{row['roc_auc']:.4f}",
            "-" if lift is None else f"{lift:+.4f}",
            "-" if lift is None else f"{row['lift_ci_low']:+.4f}..{row['lift_ci_high']:+.4f}",
            "-" if lift is None else f"{row['lift_pr_auc']:+.4f}",
        )
    console.print(table)
    ws.reports.mkdir(parents=True, exist_ok=True)
    (ws.reports / "enrichment_eval.json").write_text(json.dumps(result, indent=1))
    console.print(f"written to {ws.reports / 'enrichment_eval.json'}")
