"""Opening the Feast feature store of a workspace, applying definitions, materializing.

Feast is imported lazily: `import feast` costs seconds and must stay out of `--help`.
The yaml is chosen by configuration, never by code: CDP_FEATURE_STORE_YAML names one outright;
otherwise CDP_ONLINE_STORE=sqlite (default, `feature_store.yaml`) or redis (`feature_store.redis.yaml`,
server at CDP_REDIS=host:port[,db=N], default localhost:6379).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cdp.paths import REPO_ROOT, Workspace

if TYPE_CHECKING:
    from feast import FeatureStore

FEATURE_REPO = REPO_ROOT / "feature_repo"
SCORE_SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
    ("churn_probability", pa.float64()), ("churn_model_version", pa.string()),
    ("churn_scored_at", pa.string()),
])


def repo_definitions() -> ModuleType:
    """feature_repo/definitions.py as a module (the folder is a Feast repo, not a package)."""
    spec = importlib.util.spec_from_file_location("cdp_feature_definitions", FEATURE_REPO / "definitions.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


ONLINE_STORES = {"sqlite": "feature_store.yaml", "redis": "feature_store.redis.yaml"}


class StoreConfigError(ValueError):
    """The configured feature store cannot be used; the message says what to set or start."""


def feature_store_yaml() -> Path:
    if os.environ.get("CDP_FEATURE_STORE_YAML"):
        path = Path(os.environ["CDP_FEATURE_STORE_YAML"])
        if not path.exists():
            raise StoreConfigError(f"CDP_FEATURE_STORE_YAML={path}: no such file")
        return path
    kind = os.environ.get("CDP_ONLINE_STORE", "sqlite").strip().lower()
    if kind not in ONLINE_STORES:
        raise StoreConfigError(f"CDP_ONLINE_STORE={kind!r}: choose one of {', '.join(ONLINE_STORES)}")
    if kind == "redis":
        os.environ.setdefault("CDP_REDIS", "localhost:6379")
    return FEATURE_REPO / ONLINE_STORES[kind]


def open_store(ws: Workspace) -> "FeatureStore":
    from feast import FeatureStore

    # ibis (inside Feast's DuckDB store) warns on every query about a DuckDB rename; not for users.
    warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
    os.environ["CDP_HOME"] = str(ws.root)  # expanded inside feature_store.yaml
    ws.feast.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(repo_path=str(FEATURE_REPO), fs_yaml_file=feature_store_yaml())
    _follow_workspace(ws, store)
    return store


def _follow_workspace(ws: Workspace, store: "FeatureStore") -> None:
    """Feast's registry keeps absolute Parquet paths. When a workspace folder was moved or copied,
    they still name the old folder: reads would come from, and score pushes go to, someone else's
    files. Re-apply the definitions so every source points into this workspace."""
    from feast import FileSource

    try:
        sources = [s for s in store.list_data_sources() if isinstance(s, FileSource)]
    except Exception:  # noqa: BLE001 - no registry yet: nothing to follow
        return
    features = ws.features.resolve()
    if sources and any(Path(s.path).resolve().parent != features for s in sources):
        store.apply(repo_definitions().definitions(ws.features))


def apply_definitions(ws: Workspace) -> "FeatureStore":
    scores = ws.features / "churn_scores.parquet"
    if not scores.exists():  # the PushSource's batch file needs explicit column types
        pq.write_table(SCORE_SCHEMA.empty_table(), scores)
    store = open_store(ws)
    store.apply(repo_definitions().definitions(ws.features))
    return store


def materialize_latest(ws: Workspace, store: "FeatureStore", as_of: pd.Timestamp, engine: str | None = None) -> int:
    """Load the latest snapshot of every batch feature view into the online store; rows written.

    engine "bulk" (default) reads each view's Parquet with Feast's TTL rule and writes through
    `cdp.online_writer` (~10x Feast's own path here); "feast" runs `FeatureStore.materialize`.
    CDP_MATERIALIZE_ENGINE chooses when not given."""
    definitions = repo_definitions()
    engine = (engine or os.environ.get("CDP_MATERIALIZE_ENGINE", "bulk")).lower()
    if engine == "feast":
        os.environ.setdefault("TQDM_DISABLE", "1")  # Feast's per-view tqdm bars would flood the CLI's own progress
        with contextlib.redirect_stdout(io.StringIO()):  # and so would its banner per view
            store.materialize(start_date=(as_of - definitions.SNAPSHOT_TTL).to_pydatetime(),
                              end_date=(as_of + pd.Timedelta(seconds=1)).to_pydatetime(),
                              feature_views=list(definitions.FEATURES))
        return sum(len(latest_snapshot(ws, view, as_of)) for view in definitions.FEATURES)
    if engine != "bulk":
        raise StoreConfigError(f"CDP_MATERIALIZE_ENGINE={engine!r}: choose bulk or feast")
    from cdp.online_writer import write_online

    return sum(write_online(store, view, latest_snapshot(ws, view, as_of)) for view in definitions.FEATURES)


def latest_snapshot(ws: Workspace, view: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """Each customer's latest row of `view` within the view's TTL before `as_of` (what Feast
    materializes and what a point-in-time join at `as_of` returns)."""
    import duckdb

    ttl = repo_definitions().SNAPSHOT_TTL
    as_of = pd.Timestamp(as_of).tz_convert("UTC")
    return duckdb.connect().execute(f"""
        SELECT * FROM read_parquet(?)
        WHERE event_timestamp <= ? AND event_timestamp > ?
        QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY event_timestamp DESC) = 1
        ORDER BY customer_id""", [str(ws.features / f"{view}.parquet"), as_of, as_of - ttl]).df()


def latest_service_features(ws: Workspace, store: "FeatureStore", service_name: str,
                            entities: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The FeatureService's features for `entities` (customer_id, event_timestamp == as_of), read
    straight from each view's latest snapshot: the same rows Feast's point-in-time join returns for
    a single timestamp (tests check equality) at a fraction of its cost, for batch scoring."""
    stamps = pd.to_datetime(entities["event_timestamp"], utc=True)
    as_of = pd.Timestamp(as_of).tz_convert("UTC")
    if not (stamps == as_of).all():
        raise ValueError("latest_service_features needs every entity row at as_of; use a point-in-time join")
    frame = entities.copy()
    for projection in store.get_feature_service(service_name).feature_view_projections:
        names = [f.name for f in projection.features]
        latest = latest_snapshot(ws, projection.name, as_of)[["customer_id", *names]]
        frame = frame.merge(latest, on="customer_id", how="left")
    return frame
