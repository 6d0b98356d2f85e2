"""The stages, as plain functions composed explicitly. The CLI and the demo call these.

generate -> ingest -> resolve -> build_features (+ feast apply/materialize) -> train -> score
Each returns a small summary dict that the CLI prints and the demo writes to JSON.
"""
from __future__ import annotations

import json
import time
from typing import Callable

import pandas as pd

from cdp.paths import Workspace

Progress = Callable[[str, int, int], None]


def _timed(fn):
    def wrapper(*args, **kwargs) -> dict:
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        result["seconds"] = round(time.perf_counter() - started, 2)
        return result
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


@_timed
def generate(ws: Workspace, customers: int, seed: int, progress: Progress | None = None) -> dict:
    """Synthetic first-party data (raw/) and its ground truth (truth/)."""
    from synthetic.generate import generate as generate_data

    summary = generate_data(ws.root, customers=customers, seed=seed, progress=progress)
    return {"people": summary.people, "rows": dict(summary.rows)}


@_timed
def ingest(ws: Workspace, progress: Progress | None = None) -> dict:
    """Validate raw tables, normalize identifiers, quarantine rejected rows with reasons."""
    from profiles.ingest import ingest as ingest_raw

    report = ingest_raw(ws.ensure(), progress=progress).to_dict()
    return {"tables": {row.pop("table"): row for row in report["tables"]}, "warnings": report["warnings"]}


@_timed
def resolve(ws: Workspace) -> dict:
    """Deterministic identity resolution into identity/identity_map.parquet."""
    from profiles.identity import resolve as resolve_identities

    return resolve_identities(ws).to_dict()


def load_snapshots(ws: Workspace) -> tuple[list[pd.Timestamp], pd.Timestamp]:
    meta = json.loads((ws.features / "snapshots.json").read_text())
    return [pd.Timestamp(s) for s in meta["snapshots"]], pd.Timestamp(meta["data_end"])


@_timed
def build_features(ws: Workspace, progress: Progress | None = None) -> dict:
    """Profiles + signals per snapshot -> Parquet -> feast apply -> materialize the latest."""
    from cdp.store import apply_definitions, materialize_latest
    from profiles.signals import build_features as build, data_end, snapshot_times
    from profiles.timeline import load_timeline

    timeline = load_timeline(ws)
    end = data_end(timeline)
    snapshots = snapshot_times(end)
    written = build(ws, timeline, snapshots, progress=progress)
    (ws.features / "snapshots.json").write_text(json.dumps(
        {"snapshots": [s.isoformat() for s in snapshots], "data_end": end.isoformat()}, indent=1))
    started = time.perf_counter()
    store = apply_definitions(ws)
    materialize_latest(ws, store, snapshots[-1])
    return {"rows_per_view": written, "snapshots": len(snapshots), "as_of": snapshots[-1].isoformat(),
            "customers_latest_snapshot": int(pd.read_parquet(ws.features / "customer_profile.parquet",
                                                             columns=["event_timestamp"])
                                             .eq(snapshots[-1]).sum().iloc[0]),
            "feast_apply_materialize_seconds": round(time.perf_counter() - started, 2)}


@_timed
def train(ws: Workspace, model: str = "churn", progress: Progress | None = None) -> dict:
    """Point-in-time training set -> LightGBM -> MLflow run, registry alias `champion`."""
    from cdp.store import open_store
    from profiles.timeline import load_timeline
    from training.oracle import churn_oracle
    from training.train import train_churn

    if model != "churn":
        raise ValueError(f"model: unknown model '{model}' (available: churn)")
    snapshots, end = load_snapshots(ws)
    timeline = load_timeline(ws)
    result = train_churn(ws, open_store(ws), timeline.orders, snapshots, end,
                         oracle_fn=churn_oracle(ws), progress=progress)
    return result.to_dict()


@_timed
def score(ws: Workspace) -> dict:
    """Batch-score every active customer and push the scores back into the profiles."""
    from cdp.store import open_store
    from profiles.timeline import load_timeline
    from serving.batch import score_churn

    snapshots, _ = load_snapshots(ws)
    scores = score_churn(ws, open_store(ws), load_timeline(ws).orders, snapshots[-1])
    return {"customers_scored": len(scores), "mean_churn_probability": round(float(scores["churn_probability"].mean()), 4),
            "model_version": scores["churn_model_version"].iloc[0] if len(scores) else None}
