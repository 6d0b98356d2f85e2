"""The stages, as plain functions composed explicitly. The CLI and the demo call these.

generate -> ingest -> resolve -> build_features (+ feast apply/materialize) -> train -> score
Each returns a small summary dict that the CLI prints and the demo writes to JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from cdp.faults import checkpoint
from cdp.generations import check_inputs, writing_stage
from cdp.workspace import Workspace

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
def generate(
    ws: Workspace,
    customers: int,
    seed: int,
    progress: Progress | None = None,
    trend: bool = False,
    daily_drops: int = 0,
    phone_country: str | None = None,
    date_order: str | None = None,
) -> dict:
    """Synthetic first-party data (raw/) and its ground truth (truth/); `trend`: synthetic/trend.py.
    `daily_drops` N: the last N days become raw/<table>/<date>.parquet drops (synthetic/drops.py).
    `phone_country` / `date_order`: foreign formats of the same data (synthetic/formats.py)."""
    from cdp.synthetic.drops import write_daily_drops
    from cdp.synthetic.formats import ForeignFormat
    from cdp.synthetic.generate import generate as generate_data

    fmt = ForeignFormat(phone_country, date_order)
    if fmt.active and daily_drops:
        raise ValueError("daily_drops: not available with --phone-country / --date-order (drops read typed dates)")
    summary = generate_data(ws.root, customers=customers, seed=seed, progress=progress, trend=trend, fmt=fmt)
    out: dict = {"people": summary.people, "rows": dict(summary.rows)}
    if daily_drops:
        drops = write_daily_drops(ws, daily_drops, seed)
        out["daily_drops"] = {"days": daily_drops, "files": len(drops), "rows": sum(drops.values())}
    return out


@_timed
def ingest(ws: Workspace, progress: Progress | None = None, write: bool = True, full: bool = False) -> dict:
    """Validate raw tables, normalize identifiers, quarantine rejected rows with reasons.
    Reads only the new drop files when that gives exactly the full ingest's result
    (cdp.ingest.incremental); `full`: re-read every raw file. `write=False`: validate and report
    only, nothing written to the workspace."""
    from cdp.ingest.incremental import ingest as ingest_raw

    if write:
        with writing_stage(ws.ensure(), "ingest"):
            report: dict[str, Any] = ingest_raw(ws, progress=progress, write=True, full=full).to_dict()
    else:
        report = ingest_raw(ws, progress=progress, write=False).to_dict()
    return {
        "mode": report["mode"],
        "tables": {row.pop("table"): row for row in report["tables"]},
        "warnings": report["warnings"],
        "notes": report["notes"],
    }


@_timed
def resolve(ws: Workspace, incremental: bool = False) -> dict:
    """Identity resolution into identity/identity_map.parquet. `incremental`: only link the
    staged records not in identity_map yet to the existing customers (needs a previous full run)."""
    if incremental:  # needs a previous full run (which needed ingest)
        from cdp.identity.incremental import resolve_incremental

        ws.require("identity_map", "identifier_map", "staged_orders")
        with writing_stage(ws, "resolve"):
            return resolve_incremental(ws).to_dict()
    from cdp.identity.resolve import resolve as resolve_identities

    ws.require("staged_orders")
    with writing_stage(ws, "resolve"):
        return resolve_identities(ws).to_dict()


@_timed
def build_features(ws: Workspace, progress: Progress | None = None, incremental: bool = False) -> dict:
    """Profiles + signals per snapshot -> Parquet -> feast apply -> materialize the latest.
    CDP_FEATURE_ENGINE=spark (scale profile) builds the views on Spark from the staged Parquet
    (same SQL, same files); the default builds them with DuckDB over the pandas Timeline.
    `incremental` (DuckDB): recompute only the rows whose inputs changed since the last complete
    build (cdp.features.incremental); the full build is the reference and the fallback."""
    from cdp.generations import record

    ws.require("staged_orders", "identity_map")
    previous = record(ws, "features")  # read before this run marks itself running
    whole = previous is not None and not previous.get("running")  # an interrupted build: rebuild in full
    with writing_stage(ws, "features"):
        return _build_features(ws, progress, incremental and whole)


def _build_features(ws: Workspace, progress: Progress | None, incremental: bool = False) -> dict:
    from cdp.features.build import build_features as build
    from cdp.features.build import write_snapshots
    from cdp.features.timeline import load_timeline
    from cdp.features.views import data_end, feature_engine, snapshot_times
    from cdp.featurestore.store import apply_definitions, materialize_latest

    engine = feature_engine()
    if engine == "spark":  # the driver never loads the event tables
        from cdp.features.spark import spark_data_end

        timeline, end = None, spark_data_end(ws)
    else:
        timeline = load_timeline(ws)
        end = data_end(timeline)
    snapshots = snapshot_times(end)
    written, recomputed = build(ws, timeline, snapshots, progress=progress, engine=engine, incremental=incremental)
    write_snapshots(ws, snapshots, end)
    started = time.perf_counter()
    if progress:
        progress("feast apply + materialize latest snapshot", len(written), len(written) + 1)
    store = apply_definitions(ws)
    checkpoint("step")  # fault tests: killed between Feast apply and materialize
    materialize_latest(ws, store, snapshots[-1])
    if progress:
        progress("online store loaded", len(written) + 1, len(written) + 1)
    return {
        "engine": engine,
        "build": "incremental" if recomputed else "full",
        **(recomputed or {}),
        "rows_per_view": written,
        "snapshots": len(snapshots),
        "as_of": snapshots[-1].isoformat(),
        "customers_latest_snapshot": int(
            pd.read_parquet(ws.path("customer_profile"), columns=["event_timestamp"]).eq(snapshots[-1]).sum().iloc[0]
        ),
        "feast_apply_materialize_seconds": round(time.perf_counter() - started, 2),
    }


@_timed
def train(ws: Workspace, model: str = "churn", progress: Progress | None = None) -> dict:
    """Point-in-time training set from the model's FeatureService -> fit -> out-of-time evaluation
    -> MLflow run -> registry alias `champion` when it beats its baseline and the current champion
    (cdp.training.gate). `model`: any registered family (cdp.training.registry), dashed or not."""
    from cdp.training.registry import family, training_context

    chosen = family(model)
    ws.require("snapshots")
    check_inputs(ws, "train")
    chosen.check_inputs(ws)  # CapabilityOff: an optional table it needs was not provided
    return chosen.train(training_context(ws), progress).to_dict()


@_timed
def score(ws: Workspace) -> dict:
    """Batch-score every active customer with each registered champion and push the scores back
    into the profiles (one PushSource per score family). Models without a champion are skipped."""
    from cdp.features.build import load_snapshots
    from cdp.features.timeline import load_timeline
    from cdp.featurestore.store import open_store
    from cdp.serving.batch import score_all

    snapshots, _ = load_snapshots(ws)
    with writing_stage(ws, "score"):
        return score_all(ws, open_store(ws), load_timeline(ws), snapshots[-1])


REFRESHED = "refreshed_files.json"  # in staged/: the raw files (name -> sha256) the last complete refresh covered


def new_raw_files(ws: Workspace) -> tuple[dict[str, str], list[str]]:
    """(every raw file now -> its sha256, the names new or changed since the last complete refresh,
    else since the last ingest)."""
    from cdp.ingest.drops import MANIFEST, file_digests
    from cdp.ingest.staging import IngestReport, locate

    now = file_digests(ws.raw, [p for paths in locate(ws.raw, IngestReport()).values() for p in paths])
    seen_path = ws.staged / REFRESHED if (ws.staged / REFRESHED).exists() else ws.staged / MANIFEST
    seen = json.loads(seen_path.read_text()) if seen_path.exists() else {}
    return now, sorted(name for name, digest in now.items() if seen.get(name) != digest)


@_timed
def refresh(ws: Workspace, progress: Progress | None = None, incremental: bool = True) -> dict:
    """The daily run: if raw/ holds files not seen yet (name + content hash), ingest, link the new
    records to the existing customers (resolve --incremental), update the feature views (only the
    rows whose inputs changed; `incremental=False`: rebuild them in full) and materialize the latest snapshot, score and push with the champions. Needs a previous full run.
    Nothing new: nothing is written. Only after every stage succeeded are the files recorded as
    refreshed, so a run stopped half-way is redone whole by the next one (each stage is idempotent)."""
    from cdp.atomic import write_json_atomic
    from cdp.serving.batch import SCORERS
    from cdp.training.tracking import has_champion

    ws.require("identity_map", "identifier_map", "staged_orders", "snapshots")
    now, new = new_raw_files(ws)
    if new and not (ws.staged / REFRESHED).exists():  # first refresh: its baseline is the last ingest,
        write_json_atomic(ws.staged / REFRESHED, {n: d for n, d in now.items() if n not in new})  # kept if it fails
    if not new:
        return {"new_files": 0, "nothing_new": True}
    stages: list[tuple[str, Callable[[], dict]]] = [
        ("ingest", lambda: ingest(ws)),
        ("resolve --incremental", lambda: resolve(ws, incremental=True)),
        ("features", lambda: build_features(ws, incremental=incremental)),
        (
            "score",
            lambda: (
                score(ws)
                if any(has_champion(ws, name) for name in SCORERS)
                else {"skipped": "no model has a champion yet (cdp train churn)"}
            ),
        ),
    ]
    out: dict[str, Any] = {"new_files": len(new), "files": new if len(new) <= 20 else [*new[:20], "..."]}
    for done, (name, run) in enumerate(stages):
        if progress:
            progress(name, done, len(stages))
        result = run()
        out[name] = _brief(name, result)
    if progress:
        progress("done", len(stages), len(stages))
    write_json_atomic(ws.staged / REFRESHED, now)
    return out


def _brief(stage: str, result: dict) -> dict:
    """The few numbers of a stage's summary a daily log needs."""
    if stage == "ingest":
        tables = result["tables"]
        return {
            "mode": result["mode"],
            "read": sum(t["read"] for t in tables.values()),
            "superseded": sum(t["superseded"] for t in tables.values()),
            "seconds": result["seconds"],
        }
    return {k: v for k, v in result.items() if not isinstance(v, dict | list)}
