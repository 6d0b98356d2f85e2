"""Feature building on the configured engine: the entry point of the features stage.

In:  a workspace after `cdp resolve`, its timeline (DuckDB) and the snapshot times.
Out: one Parquet per feature view in features/ (rows per view returned).
engine duckdb (default: $CDP_FEATURE_ENGINE): the SQL of features/views.py over the pandas
`timeline`, in process. engine spark: the same SQL on Spark over the staged Parquet + identity map
(features/spark.py; `timeline` is not used).
"""

from __future__ import annotations

import json

import pandas as pd

from cdp.atomic import write_json_atomic
from cdp.features.incremental import build_features_duckdb, build_incremental, clear_state
from cdp.features.timeline import Timeline
from cdp.features.views import feature_engine
from cdp.workspace import Workspace


def build_features(
    ws: Workspace,
    timeline: Timeline | None,
    snapshots: list[pd.Timestamp],
    progress=None,
    engine: str | None = None,
    incremental: bool = False,
) -> tuple[dict[str, int], dict[str, int] | None]:
    """(rows per view, what an incremental build recomputed; None: built in full). `incremental`
    (DuckDB only): recompute only the rows whose inputs changed since the last build
    (features/incremental.py), in full when there is no usable state of it."""
    if (engine or feature_engine()) == "spark":
        from cdp.features.spark import build_features_spark

        clear_state(ws)  # the DuckDB build's state no longer describes the views
        return build_features_spark(ws, snapshots, progress=progress), None
    if timeline is None:
        raise ValueError("the DuckDB feature engine needs the timeline (load_timeline(ws))")
    if incremental and (updated := build_incremental(ws, timeline, snapshots, progress=progress)):
        return updated
    return build_features_duckdb(ws, timeline, snapshots, progress=progress), None


def write_snapshots(ws: Workspace, snapshots: list[pd.Timestamp], data_end: pd.Timestamp) -> None:
    """features/snapshots.json: the snapshot times the views were built at, and the data end."""
    write_json_atomic(
        ws.path("snapshots"), {"snapshots": [s.isoformat() for s in snapshots], "data_end": data_end.isoformat()}
    )


def load_snapshots(ws: Workspace) -> tuple[list[pd.Timestamp], pd.Timestamp]:
    """(snapshot times, data end) of the last `cdp features`."""
    ws.require("snapshots")
    meta = json.loads(ws.path("snapshots").read_text())
    return [pd.Timestamp(s) for s in meta["snapshots"]], pd.Timestamp(meta["data_end"])
