"""The `cdp` command line as a user meets it: help everywhere, clear errors, the demo itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

CDP = str(Path(sys.executable).with_name("cdp"))
COMMANDS = ["generate", "ingest", "resolve", "features", "train", "score", "serve", "demo"]


def run(*args: str, home: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real console script, with a clean environment as a new user's shell would have."""
    env = {k: v for k, v in os.environ.items() if k not in ("CDP_HOME", "MLFLOW_TRACKING_URI")}
    env_args = ["--home", str(home)] if home else []
    return subprocess.run([CDP, *args, *env_args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = subprocess.run([CDP, command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "Usage" in result.stdout and "--home" in result.stdout


def test_ingest_without_raw_data_is_a_clear_error(tmp_path):
    result = run("ingest", home=tmp_path)
    assert result.returncode == 2
    assert "error:" in result.stdout and "orders" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_unknown_model_is_a_clear_error(tmp_path):
    result = run("train", "nextbest", home=tmp_path)
    assert result.returncode == 2
    assert "unknown model 'nextbest'" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """The README's main job, on tiny data: every stage, a real server call, the JSON summary."""
    result = run("demo", "--customers", "800", "--port", str(free_port()), home=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "reports" / "demo_summary.json").read_text())
    for table, read in summary["rows_read"].items():
        counts = summary["stages"]["ingest"]["tables"][table]
        assert counts["accepted"] + counts["quarantined"] == read, table
    assert sum(summary["rows_quarantined"].values()) > 0
    assert summary["people_in_truth"] == 800
    assert 0.8 * 800 <= summary["customers_found"] <= 1.5 * 800
    assert summary["churn_roc_auc"] > 0.6
    assert summary["served"]["scored"] == 3
    # personal data is the owner's only: every file 0600-or-stricter, every folder 0700
    readable = [p for p in tmp_path.rglob("*") if p.stat().st_mode & 0o077]
    assert not readable, [f"{p.relative_to(tmp_path)} {oct(p.stat().st_mode)}" for p in readable[:5]]
    assert summary["served"]["errors"][0]["customer_id"] == "cus_does_not_exist"
    assert set(summary["stage_seconds"]) == {"generate", "ingest", "resolve", "features", "train", "score", "serve"}
