"""What `cdp ingest` prints: counts per table, every warning and data-driven choice, nulled values per column.

Loss above `LOSS_SHARE` (a column's non-null values nulled, or a table's rows quarantined) is
shown in red and listed as a problem; `--strict` turns problems into exit 1. A table whose every
row was quarantined is always a problem unless `--allow-empty`.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

LOSS_SHARE = 0.05
COUNTED = ("read", "accepted", "quarantined", "suppressed", "superseded", "field_issues")


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def problems(summary: dict, allow_empty: bool = False) -> tuple[list[str], list[str]]:
    """(losses above LOSS_SHARE, fully quarantined tables unless allowed), one line each."""
    losses, empty = [], []
    for name, counts in summary["tables"].items():
        read, bad = counts.get("read", 0), counts.get("quarantined", 0)
        if read and bad == read and not allow_empty:
            empty.append(f"{name}: all {read:,} rows quarantined (see staged/quarantine.parquet; --allow-empty)")
        elif _share(bad, read) > LOSS_SHARE:
            losses.append(f"{name}: {bad:,} of {read:,} rows quarantined ({_share(bad, read):.1%})")
        for col, c in counts.get("columns", {}).items():
            if _share(c["nulled"], c["present"]) > LOSS_SHARE:
                losses.append(
                    f"{name}.{col}: {c['nulled']:,} of {c['present']:,} values nulled ({_share(c['nulled'], c['present']):.1%})"
                )
    return losses, empty


def render(summary: dict, console: Console, title: str, written: bool = True) -> None:
    """Print the counts table, the per-column nulled/unknown summary, notes and warnings."""
    table = Table(title=title)
    for column in ("table", *COUNTED):
        table.add_column(column, justify="left" if column == "table" else "right")
    for name, counts in summary["tables"].items():
        red = counts.get("read", 0) and _share(counts.get("quarantined", 0), counts["read"]) > LOSS_SHARE
        cells = [f"{counts.get(c, 0):,}" for c in COUNTED]
        table.add_row(name, *([f"[red]{v}[/red]" for v in cells] if red else cells))
    console.print(table)
    columns = Table(title="values set aside per column (nulled: unparseable or invalid; unknown: kept as given)")
    for column in ("column", "non-null read", "nulled", "nulled %", "unknown kept"):
        columns.add_column(column, justify="left" if column == "column" else "right")
    for name, counts in summary["tables"].items():
        for col, c in counts.get("columns", {}).items():
            share = _share(c["nulled"], c["present"])
            row = [f"{name}.{col}", f"{c['present']:,}", f"{c['nulled']:,}", f"{share:.1%}", f"{c['unknown']:,}"]
            columns.add_row(*([f"[red]{v}[/red]" for v in row] if share > LOSS_SHARE else row))
    if columns.row_count:
        console.print(columns)
        if written:
            console.print("every value set aside is listed in staged/field_issues.parquet (table, row, column, reason)")
    for note in summary.get("notes", []):
        console.print(f"[cyan]note:[/cyan] {note}")
    for warning in summary.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")
