"""`cdp contract`: printed, templated and documented from the contract code itself."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from cdp.cli.app import app
from cdp.cli.contract import contract_markdown
from cdp.ingest.contract import TABLES
from cdp.ingest.staging import OPTIONAL_TABLES

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_contract_document_is_the_generated_one():
    committed = (REPO / "docs" / "DATA_CONTRACT.md").read_text()
    assert committed == contract_markdown(), "regenerate: cdp contract --markdown > docs/DATA_CONTRACT.md"


def test_every_table_and_required_column_is_listed():
    text = contract_markdown()
    for name, spec in TABLES.items():
        need = "optional" if name in OPTIONAL_TABLES else "required"
        assert f"## `{name}` ({need}" in text
        for column in spec.required:
            assert f"| `{column}` |" in text


def test_templates_have_the_contract_headers_and_ingest_check_accepts_them(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["contract", "--template", str(tmp_path / "raw")])
    assert result.exit_code == 0, result.output
    for name, spec in TABLES.items():
        with (tmp_path / "raw" / f"{name}.csv").open() as handle:
            assert next(csv.reader(handle)) == list(spec.columns)
    check = runner.invoke(app, ["ingest", "--check", "--home", str(tmp_path)])
    assert check.exit_code == 0, check.output
    assert not (tmp_path / "staged").exists()  # --check writes nothing
    again = runner.invoke(app, ["contract", "--template", str(tmp_path / "raw")])
    assert again.exit_code == 2 and "not overwritten" in again.output
