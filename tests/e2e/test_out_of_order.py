"""Every command run out of order says, in one line and without a traceback, what to run first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CDP = str(Path(sys.executable).with_name("cdp"))

# command -> the command its message must point to, on an empty workspace
ON_EMPTY = {
    "ingest": "cdp contract",
    "resolve": "cdp ingest",
    "resolve --incremental": "cdp resolve",
    "features": "cdp ingest",
    "train churn": "cdp features",
    "train next-best-product": "cdp features",
    "train campaign-response": "cdp features",
    "train clv": "cdp features",
    "score": "cdp features",
    "serve": "cdp features",
    "eval-enrichment": "cdp features",
    "export churn": "cdp score",
    "explain-match a b": "cdp resolve",
    "privacy export someone@example.com": "cdp resolve",
    "privacy erase someone@example.com": "cdp resolve",
    "privacy purge --inactive-days 30": "cdp resolve",
}


def run(command: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_")}
    return subprocess.run(
        [CDP, *command.split(), "--home", str(home)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize("command", sorted(ON_EMPTY))
def test_on_an_empty_workspace(command, tmp_path):
    result = run(command, tmp_path / "ws")
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert f"`{ON_EMPTY[command]}" in lines[0] or ON_EMPTY[command] in lines[0], output


def test_features_after_ingest_but_before_resolve_points_to_resolve(tmp_path):
    ws = tmp_path / "ws"
    (ws / "staged").mkdir(parents=True)
    (ws / "staged" / "orders.parquet").touch()  # only its presence matters to the check
    result = run("features", ws)
    assert result.returncode != 0 and "run `cdp resolve` first" in result.stdout, result.stdout


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    ws = tmp_path / "ws"
    (ws / "features").mkdir(parents=True)
    (ws / "features" / "snapshots.json").write_text("{}")  # readable JSON, not what `cdp features` writes
    plain = run("train churn", ws)
    assert plain.returncode == 1 and "Traceback" not in plain.stdout + plain.stderr
    assert "unexpected KeyError" in plain.stdout and "--debug" in plain.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_")}
    debug = subprocess.run(
        [CDP, "--debug", "train", "churn", "--home", str(ws)], capture_output=True, text=True, env=env, timeout=300
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_a_model_whose_optional_tables_are_absent_is_skipped_with_the_reason(tmp_path):
    import pandas as pd

    ws = tmp_path / "ws"
    (ws / "features").mkdir(parents=True)
    (ws / "features" / "snapshots.json").write_text(
        '{"snapshots": ["2025-01-01T00:00:00+00:00"], "data_end": "2025-01-02"}'
    )
    (ws / "staged").mkdir()
    pd.DataFrame({"campaign_id": pd.Series(dtype="string")}).to_parquet(ws / "staged" / "campaigns.parquet")
    result = run("train campaign-response", ws)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "skipped:" in result.stdout and "campaigns" in result.stdout and "cdp contract" in result.stdout
