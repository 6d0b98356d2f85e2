"""Identity commands: `cdp eval-identity` and `cdp explain-match` (registered on the main app).

Output is counts, ids, agreement levels and masked identifier kinds only: never raw PII.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from cdp.cli.ui import HomeOption, console, run_stage, workspace

app = typer.Typer()  # merged into the main `cdp` app by cdp.cli.app


@app.command("eval-identity")
def eval_identity(
    tables: str = typer.Option(
        "crm_contacts,loyalty_members,online_accounts,orders", help="Comma-separated tables to evaluate on."
    ),
    home: Path | None = HomeOption,
) -> None:
    """Score identity_map against truth/: pairwise and B-cubed precision/recall, splits, merges."""
    from cdp.identity.evaluate import evaluate_workspace

    ws = workspace(home)
    result = run_stage(evaluate_workspace, ws, tuple(t.strip() for t in tables.split(",") if t.strip()))
    table = Table(title="identity resolution vs truth")
    table.add_column("metric")
    scopes = ("overall", "identified_records", "profile_records")  # identified: without anonymous receipts
    for scope in scopes:
        table.add_column(scope, justify="right")
    for metric in result["overall"]:
        table.add_row(metric, *(str(result[s][metric]) for s in scopes))
    console.print(table)
    console.print(json.dumps({k: v for k, v in result.items() if k not in scopes}))
    (ws.reports).mkdir(parents=True, exist_ok=True)
    (ws.reports / "identity_eval.json").write_text(json.dumps(result, indent=1))


@app.command("explain-match")
def explain_match(
    key_a: str = typer.Argument(..., help="source_key of the first record."),
    key_b: str = typer.Argument(..., help="source_key of the second record."),
    home: Path | None = HomeOption,
) -> None:
    """Why two records are (or are not) the same customer: ids, links, guards, field agreement."""
    from cdp.identity.explain import explain_pair

    ws = workspace(home)
    report = run_stage(explain_pair, ws, key_a, key_b)
    table = Table(title=f"explain-match {key_a} {key_b}", show_header=False)
    for name, value in report.items():
        table.add_row(name, json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value))
    console.print(table)
