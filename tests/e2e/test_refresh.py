"""`cdp refresh` parity: an initial load + one refresh per daily drop equals a full run on all the
data (identity partition, feature views); a second refresh with nothing new changes nothing. The
refreshes update the views incrementally (features/incremental.py), the full run rebuilds them."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdp import pipeline
from cdp.workspace import Workspace

DAYS = 3


def _full_run(ws: Workspace) -> None:
    pipeline.ingest(ws)
    pipeline.resolve(ws)
    pipeline.build_features(ws)


def _partition(ws: Workspace) -> set[frozenset[str]]:
    ids = pd.read_parquet(ws.path("identity_map"))
    records = ids["source_table"] + "|" + ids["source_key"]
    return {frozenset(group) for group in records.groupby(ids["customer_id"]).groups.values()}


def _canonical_ids(ws: Workspace) -> pd.Series:
    """customer_id -> the smallest record key of the customer (the same person in both workspaces)."""
    ids = pd.read_parquet(ws.path("identity_map"))
    return (ids["source_table"] + "|" + ids["source_key"]).groupby(ids["customer_id"]).min()


def _view(ws: Workspace, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(ws.features / name)
    frame["customer_id"] = frame["customer_id"].map(_canonical_ids(ws))
    keys = [c for c in ("customer_id", "event_timestamp") if c in frame]
    return frame.sort_values(keys).reset_index(drop=True)[sorted(frame.columns)]


def _digests(ws: Workspace) -> dict[str, str]:
    return {
        str(p.relative_to(ws.root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in (ws.staged, ws.root / "identity", ws.features)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory) -> tuple[Workspace, Workspace, list[dict]]:
    root = tmp_path_factory.mktemp("refresh")
    daily, full = Workspace(root / "daily"), Workspace(root / "full")
    pipeline.generate(daily, customers=300, seed=11, daily_drops=DAYS)
    shutil.copytree(daily.raw, full.raw)
    held = root / "held"
    drop_dirs = [d for d in daily.raw.iterdir() if d.is_dir()]
    for folder in drop_dirs:  # the drops arrive one day at a time
        shutil.move(folder, held / folder.name)
    _full_run(daily)
    runs = []
    for day in sorted({p.name for p in held.rglob("*.parquet")}):
        for file in held.glob(f"*/{day}"):
            (daily.raw / file.parent.name).mkdir(exist_ok=True)
            shutil.copy2(file, daily.raw / file.parent.name / day)
        runs.append(pipeline.refresh(daily))
    _full_run(full)
    return daily, full, runs


def test_each_drop_is_refreshed_once_and_a_second_run_changes_nothing(workspaces):
    daily, _, runs = workspaces
    assert len(runs) == DAYS and all(r["new_files"] > 0 for r in runs)
    assert sum(r["ingest"]["superseded"] for r in runs) > 0  # the drops carry updates
    linked = sum(
        r["resolve --incremental"]["linked_to_existing"] + r["resolve --incremental"]["new_customers"] for r in runs
    )
    assert linked > 0  # and records the incremental linker had to place
    before = _digests(daily)
    again = pipeline.refresh(daily)
    assert again["nothing_new"] and again["new_files"] == 0
    assert _digests(daily) == before


def test_refresh_recomputes_only_the_rows_whose_inputs_changed(workspaces):
    _, _, runs = workspaces
    for run in runs:
        built = run["features"]
        assert built["build"] == "incremental"
        assert built["snapshots_new"] >= 1  # the day's "as of now" snapshot
        assert built["customers_changed"] > 0 and built["rows_recomputed"] < built["rows_total"]


def test_an_interrupted_features_run_is_followed_by_a_full_build(tmp_path):
    from cdp.generations import record

    ws = Workspace(Path(tmp_path))
    pipeline.generate(ws, customers=80, seed=3)
    pipeline.ingest(ws)
    pipeline.resolve(ws)
    assert pipeline.build_features(ws, incremental=True)["build"] == "full"  # no earlier build
    assert pipeline.build_features(ws, incremental=True)["build"] == "incremental"
    made = record(ws, "features")
    (ws.root / "generations" / "features.json").write_text('{"running": true, "started_at": "x"}')
    assert pipeline.build_features(ws, incremental=True)["build"] == "full"
    assert made is not None and not record(ws, "features").get("running")


def test_identity_partition_equals_the_full_run(workspaces):
    daily, full, _ = workspaces
    assert _partition(daily) == _partition(full)


@pytest.mark.parametrize(
    "view",
    [
        "customer_profile",
        "purchase_behaviour",
        "category_mix",
        "change_signals",
        "digital_engagement",
        "service_signals",
        "consent_state",
        "campaign_engagement",
    ],
)
def test_feature_views_equal_the_full_run(workspaces, view):
    daily, full, _ = workspaces
    a, b = _view(daily, f"{view}.parquet"), _view(full, f"{view}.parquet")
    assert a.shape == b.shape
    for col in a.columns:
        if pd.api.types.is_float_dtype(a[col]):
            np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9, err_msg=col)
        else:
            pd.testing.assert_series_equal(a[col], b[col], check_names=False, obj=col)


def test_refresh_before_a_full_run_names_what_is_missing(tmp_path):
    with pytest.raises(Exception, match=r"identity_map|cdp resolve"):
        pipeline.refresh(Workspace(Path(tmp_path)))
