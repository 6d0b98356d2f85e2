"""`cdp privacy export|erase|purge|rekey`: subject access, erasure, retention, key rotation (registered on the main app).

Terminal output is counts, receipt ids and masked identifier hints only (an erased person's
customer_id is not printed either: logs outlive the erasure); the export itself
(the person's own data) goes to the file named by --out, or to stdout when asked for.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from cdp.cli.ui import HomeOption, console, run_stage, workspace, writing

app = typer.Typer()  # merged into the main `cdp` app by cdp.cli.app

privacy_app = typer.Typer(
    help="Privacy: subject access export, erasure, retention purge, key rotation.", no_args_is_help=True
)
app.add_typer(privacy_app, name="privacy")
IdentifierArgument = typer.Argument(
    ..., help="Email, phone, loyalty card id or account id (or prefixed: email:, phone:, card:, account:, customer:)."
)


def _receipt_table(title: str, receipt: dict) -> None:
    table = Table(title=title)
    table.add_column("store")
    table.add_column("rows removed", justify="right")
    for store, count in receipt["stores"].items():
        table.add_row(store, str(count))
    console.print(table)
    for run in receipt.get("models_trained_on_subjects", []):
        console.print(f"model {', '.join(run['model_versions'])} (run {run['run_id']}): {run['population']}")
    for note in receipt.get("not_erased", []):
        console.print(f"[yellow]not erased:[/yellow] {note}")


@privacy_app.command("export")
def export(
    identifier: str = IdentifierArgument,
    out: Path | None = typer.Option(None, "--out", help="Write the JSON here (default: stdout)."),
    home: Path | None = HomeOption,
) -> None:
    """Everything held about the person behind IDENTIFIER, as JSON (subject access request)."""
    from cdp.privacy.subject_access import export_subject
    from cdp.privacy.subjects import find_subject

    ws = workspace(home)
    subject = run_stage(find_subject, ws, identifier)
    report = run_stage(export_subject, ws, subject)
    text = json.dumps(report, indent=1, default=str)
    if out is None:
        sys.stdout.write(text + "\n")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(
        f"export of {subject.customer_id} written to [bold]{out}[/bold] "
        f"({sum(len(v) for v in report['source_records'].values())} source records)"
    )


def _resume(ws) -> list[dict]:
    """Finish pending erasures from their journals; one red line and exit 1 if a store still fails."""
    from cdp.privacy.erasure import ErasureIncomplete, resume_erasures

    try:
        return resume_erasures(ws)
    except ErasureIncomplete as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(code=1) from None


@privacy_app.command("erase")
def erase(
    identifier: str | None = typer.Argument(
        None,
        help="Email, phone, loyalty card id or account id (or prefixed: email:, phone:, card:, account:, customer:).",
    ),
    yes: bool = typer.Option(False, "--yes", help="Really erase (without it: a dry run that only counts)."),
    resume: bool = typer.Option(False, "--resume", help="Only finish erasures a failure left pending (journal)."),
    home: Path | None = HomeOption,
) -> None:
    """Erase the person behind IDENTIFIER from every store, suppress them at ingest, write a receipt.

    The suppression and a journal are written first; if a store fails (online store down) the
    person stays suppressed and `cdp privacy erase --resume` (or the next erase) finishes the job."""
    from cdp.privacy.erasure import ErasureIncomplete, erase_subjects, pending_erasures
    from cdp.privacy.subjects import find_subject

    ws = workspace(home)
    if resume or identifier is None:
        if not resume:
            console.print("[red]error:[/red] give an IDENTIFIER, or --resume to finish pending erasures")
            raise typer.Exit(code=2)
        with writing(ws, "privacy erase --resume"), console.status("resuming erasures"):
            receipts = _resume(ws)
        for receipt in receipts:
            _receipt_table(f"finished erasure (receipt {receipt['receipt_id']})", receipt)
            console.print(f"receipt: [bold]{receipt['receipt_path']}[/bold]")
        if not receipts:
            console.print("no pending erasure")
        return
    if pending_erasures(ws) and yes:
        with writing(ws, "privacy erase --resume"), console.status("finishing pending erasures first"):
            for receipt in _resume(ws):
                console.print(f"finished pending erasure: [bold]{receipt['receipt_path']}[/bold]")
    subject = run_stage(find_subject, ws, identifier)
    if not yes:
        console.print(
            f"dry run: would erase customer {subject.customer_id} "
            f"({len(subject.records)} linked records, {len(subject.identifier_nodes())} identifiers); "
            "re-run with --yes"
        )
        return
    with writing(ws, "privacy erase"), console.status("erasing"):
        try:
            receipt = run_stage(erase_subjects, ws, [subject])
        except ErasureIncomplete as error:
            console.print(f"[red]error:[/red] {error}", soft_wrap=True)
            raise typer.Exit(code=1) from None
    _receipt_table(f"erased 1 customer (receipt {receipt['receipt_id']})", receipt)  # no id left behind
    console.print(f"receipt: [bold]{receipt['receipt_path']}[/bold]")


@privacy_app.command("purge")
def purge(
    inactive_days: int = typer.Option(
        ..., "--inactive-days", min=1, help="Erase customers with no activity for more than N days."
    ),
    as_of: str | None = typer.Option(None, help="Reference time (default: the latest activity in the data)."),
    batch: int = typer.Option(500, min=1, help="Customers erased per pass over the stores."),
    yes: bool = typer.Option(False, "--yes", help="Really purge (without it: a dry run that only counts)."),
    home: Path | None = HomeOption,
) -> None:
    """Retention: erase every customer inactive for more than --inactive-days (batched erase)."""
    import pandas as pd

    from cdp.privacy.erasure import ErasureIncomplete, erase_subjects, inactive_customers
    from cdp.privacy.subjects import subjects_for

    ws = workspace(home)
    moment = None
    if as_of is not None:
        try:
            moment = pd.Timestamp(as_of)
            moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment
        except ValueError:
            console.print(f"[red]error:[/red] --as-of: not a timestamp '{as_of}'", soft_wrap=True)
            raise typer.Exit(code=2) from None
    ids = run_stage(inactive_customers, ws, inactive_days, moment)
    if not yes or not ids:
        console.print(
            f"{'dry run: would purge' if ids else 'nothing to purge:'} {len(ids)} customer(s) "
            f"inactive for more than {inactive_days} days" + ("; re-run with --yes" if ids else "")
        )
        return
    totals: dict[str, int] = {}
    receipts = []
    with writing(ws, "privacy purge"):
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            with console.status(f"purging {start + len(chunk)}/{len(ids)}"):
                try:
                    receipt = run_stage(erase_subjects, ws, subjects_for(ws, chunk).values())
                except ErasureIncomplete as error:
                    console.print(f"[red]error:[/red] {error}", soft_wrap=True)
                    raise typer.Exit(code=1) from None
            receipts.append(receipt["receipt_path"])
            for store, count in receipt["stores"].items():
                totals[store] = totals.get(store, 0) + count
    _receipt_table(f"purged {len(ids)} inactive customers", {"stores": totals})
    console.print("receipts: " + ", ".join(receipts))


@privacy_app.command("rekey")
def rekey(
    yes: bool = typer.Option(False, "--yes", help="Really rekey (without it: a dry run that only counts)."),
    drop_unrecoverable: bool = typer.Option(
        False,
        "--drop-unrecoverable",
        help="Drop tokens whose identifier is in no table any more (they stop suppressing it) instead of refusing.",
    ),
    home: Path | None = HomeOption,
) -> None:
    """Re-make every keyed token (suppressions, receipts, training populations) under a new privacy key.

    Keys are never given on the command line.

    Key file (default): the old key is privacy/token.key; a new random key is made and replaces it.

    Secrets manager: set CDP_PRIVACY_KEY to the new key, CDP_PRIVACY_OLD_KEY to the old one (privacy/token.key, if any, is removed: it held the old key).

    Crash-safe: if interrupted, every other command refuses until `cdp privacy rekey` is run again.
    """
    from cdp.privacy.rekey import RekeyError
    from cdp.privacy.rekey import rekey as run_rekey
    from cdp.privacy.subjects import rekey_journal

    ws = workspace(home)
    finishing = rekey_journal(ws).exists()
    if not yes and not finishing:
        summary = run_stage(_rekey_or_exit, run_rekey, RekeyError, ws, drop_unrecoverable, dry_run=True)
        console.print(
            f"dry run: would re-make {summary['tokens_rekeyed']} of {summary['tokens_stored']} token(s) in "
            f"{summary['stores']} store(s) (old key: {summary['old_key']}; new key: {summary['new_key']}); "
            "re-run with --yes"
        )
        return
    with writing(ws, "privacy rekey"), console.status("finishing the interrupted rekey" if finishing else "rekeying"):
        summary = run_stage(_rekey_or_exit, run_rekey, RekeyError, ws, drop_unrecoverable)
    what = "finished the interrupted rekey" if summary.get("resumed") else "rekeyed"
    console.print(
        f"{what}: {summary['tokens_rekeyed']} of {summary['tokens_stored']} token(s) in {summary['stores']} "
        f"store(s) now under the new key ({summary['new_key']})"
    )
    for store, count in summary.get("unrecoverable", {}).items():
        console.print(f"[yellow]dropped:[/yellow] {count} unrecoverable token(s) of {store}")
    if summary.get("warning"):
        console.print(f"[yellow]warning:[/yellow] {summary['warning']}")


def _rekey_or_exit(fn, error_type, *args, **kwargs) -> dict:
    """A rekey that cannot start as asked: one red line, exit 1 (nothing was changed)."""
    try:
        return fn(*args, **kwargs)
    except error_type as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(code=1) from None
