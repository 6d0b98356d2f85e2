"""Fault injection with real subprocesses (issue 16): every writing stage is killed with SIGKILL at
several points (cdp.faults: before a temporary file is published, right after a publish, or between
Feast's apply and materialize), then the stage is run again as a user would. The
workspace must then equal the uninterrupted one, and until the re-run nothing downstream may run
on the half-written outputs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

CDP = str(Path(sys.executable).with_name("cdp"))
ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = "300"

# (stage command, kill point) — 24 kill points over ingest, resolve, features, score and erase;
# `ingest --full` re-reads every file, plain `ingest` on the ingested reference is the incremental
# path (nothing new: the quarantine, field issues, regions, manifest and state are rewritten)
KILLS = [
    *[("ingest --full", p) for p in ("after:1", "before:4", "after:8", "before:13", "after:17")],
    *[("ingest", p) for p in ("after:2", "before:6")],
    *[("resolve", p) for p in ("after:1", "after:3", "before:6", "after:9", "before:12")],
    *[("features", p) for p in ("after:1", "before:5", "after:9", "after:10", "step:1")],
    *[("score", p) for p in ("after:1", "before:2", "after:3")],
]
ERASE_KILLS = ("after:1", "after:2", "after:4", "before:6")
DOWNSTREAM = {"ingest": "resolve", "resolve": "features", "features": "score"}


def cdp(*args: str, home: Path, kill: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CDP_HOME", "MLFLOW_TRACKING_URI")}
    command = [CDP, *args, "--home", str(home)]
    if kill:
        env["CDPTEST_KILL_AT"] = kill
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _compare():
    spec = importlib.util.spec_from_file_location("compare_workspaces", ROOT / "scripts" / "compare_workspaces.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compare_tables


compare_tables = _compare()


def online_rows(home: Path) -> dict[str, int]:
    """Rows per table of the Feast SQLite online store."""
    with sqlite3.connect(home / "feast" / "online.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}


def differences(reference: Path, home: Path) -> list[str]:
    found = compare_tables(reference, home)
    if online_rows(reference) != online_rows(home):
        found.append(f"online store rows {online_rows(reference)} vs {online_rows(home)}")
    leftovers = [str(p.relative_to(home)) for p in home.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    return found + [f"temporary file left: {name}" for name in leftovers]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run: generate -> ingest -> resolve -> features -> train churn -> score."""
    home = tmp_path_factory.mktemp("faults") / "reference"
    ok(cdp("generate", "--customers", CUSTOMERS, "--seed", "3", home=home))
    for stage in ("ingest", "resolve"):
        ok(cdp(stage, home=home))
    ok(cdp("features", home=home))
    ok(cdp("train", "churn", home=home))
    ok(cdp("score", home=home))
    return home


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "kill"), KILLS, ids=[f"{s}-{k}" for s, k in KILLS])
def test_a_killed_stage_is_refused_downstream_and_a_rerun_restores_it(reference, tmp_path, stage, kill):
    home = tmp_path / "ws"
    shutil.copytree(reference, home)
    command = stage.split()[0]
    killed = cdp(*stage.split(), home=home, kill=kill)
    assert killed.returncode == -signal.SIGKILL, f"kill point {kill} never reached: {killed.stdout[-1500:]}"
    if command in DOWNSTREAM:
        refused = cdp(DOWNSTREAM[command], home=home)
        assert refused.returncode == 2 and "did not finish" in refused.stdout, refused.stdout[-1500:]
        assert "Traceback" not in refused.stdout + refused.stderr
    ok(cdp(command, home=home))  # what the user does after a crash: run the command again (with defaults)
    assert differences(reference, home) == []


@pytest.fixture(scope="module")
def erased_reference(reference, tmp_path_factory) -> tuple[Path, str]:
    """The reference workspace with one customer erased without interruption."""
    home = tmp_path_factory.mktemp("faults") / "erased"
    shutil.copytree(reference, home)
    scores = pd.read_parquet(home / "features" / "churn_scores.parquet")
    customer = f"customer:{scores['customer_id'].iloc[7]}"
    ok(cdp("privacy", "erase", customer, "--yes", home=home))
    return home, customer


def suppressed(home: Path) -> set[str]:
    frame = pd.read_parquet(home / "privacy" / "suppressions.parquet")
    return set(frame.loc[frame["kind"] != "key-check", "token"])


@pytest.mark.slow
@pytest.mark.parametrize("kill", ERASE_KILLS)
def test_a_killed_erasure_is_finished_by_resume(reference, erased_reference, tmp_path, kill):
    done, customer = erased_reference
    home = tmp_path / "ws"
    shutil.copytree(reference, home)
    killed = cdp("privacy", "erase", customer, "--yes", home=home, kill=kill)
    assert killed.returncode == -signal.SIGKILL, f"kill point {kill} never reached: {killed.stdout[-1500:]}"
    resumed = ok(cdp("privacy", "erase", "--resume", home=home))
    assert "finished erasure" in resumed.stdout
    assert differences(done, home) == []
    assert suppressed(home) == suppressed(done)
    assert not list((home / "privacy" / "journal").glob("*.json"))
    assert len(list((home / "privacy" / "receipts").glob("*.json"))) == 1
