"""`cdp config`: the effective settings, each with where it came from (registered on the main app)."""

from __future__ import annotations

import json

import typer
from pydantic import SecretStr
from rich.table import Table

from cdp.cli.ui import console

app = typer.Typer()  # merged into the main `cdp` app by cdp.cli.app


def shown(value: object) -> str:
    """Secrets masked; an API key or privacy key never reaches a terminal or a log."""
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else ""
    if isinstance(value, str) and "://" in value and "@" in value:  # a URI with a password
        scheme, _, rest = value.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return "" if value is None else str(value)


@app.command("config")
def config(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Print every CDP_* setting: effective value (secrets masked), where it came from (environment,
    the CDP_PROFILE file, or the default) and what it does."""
    from cdp.settings import Settings, applied_profile, env_name, load_settings, sources

    settings = load_settings()
    origin = sources(applied=applied_profile())
    rows = [
        (env_name(field), shown(getattr(settings, field)), origin[field], info.description or "")
        for field, info in Settings.model_fields.items()
    ]
    if as_json:
        keys = ("variable", "value", "source", "description")
        typer.echo(json.dumps([dict(zip(keys, row, strict=True)) for row in rows], indent=2))
        return
    table = Table(title=f"effective settings (profile {settings.profile}): environment > profile file > default")
    for column in ("variable", "value", "source", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
