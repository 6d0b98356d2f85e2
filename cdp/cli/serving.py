"""`cdp export churn`: the retention team's ranked list (registered on the main app)."""

from __future__ import annotations

from pathlib import Path

import typer

from cdp.cli.ui import HomeOption, console, run_stage, show, workspace

app = typer.Typer()  # merged into the main `cdp` app by cdp.cli.app

export_app = typer.Typer(help="Lists for business teams, written as CSV or Parquet.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("churn")
def export_churn(
    top: int = typer.Option(1000, "--top", min=1, help="How many customers, highest risk first."),
    out: Path | None = typer.Option(None, help="Output .csv or .parquet (default reports/churn_top_<N>.csv)."),
    min_probability: float = typer.Option(0.0, min=0.0, max=1.0, help="Leave out scores below this."),
    home: Path | None = HomeOption,
) -> None:
    """Ranked churn list: probability, the three strongest reasons in words, and consent-aware
    contactability per channel (email, sms) at the scoring snapshot. Ids only, no PII."""
    from cdp.serving.export import churn_list, write_list

    ws = workspace(home)
    frame = run_stage(churn_list, ws, top, min_probability)
    path = run_stage(write_list, frame, out or ws.reports / f"churn_top_{top}.csv")
    show(
        f"churn list -> {path}",
        {
            "customers": len(frame),
            "contactable_email": int(frame["contactable_email"].sum()),
            "contactable_sms": int(frame["contactable_sms"].sum()),
            "not_contactable": int((~frame["contactable_any"]).sum()),
            "lowest_probability_in_list": float(frame["churn_probability"].min()) if len(frame) else None,
        },
    )
    console.print(
        frame[["rank", "customer_id", "churn_probability", "reason_1", "contactable_any"]]
        .head(5)
        .to_string(index=False)
    )
