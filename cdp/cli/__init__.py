"""The `cdp` command line: `app` (typer) in cdp.cli.app, command groups in sibling modules."""

from cdp.cli.app import main

__all__ = ["main"]
