"""Opening the Feast feature store of a workspace, applying definitions, materializing.

Feast is imported lazily: `import feast` costs seconds and must stay out of `--help`.
The yaml is chosen by configuration, never by code: CDP_FEATURE_STORE_YAML names one outright;
otherwise CDP_ONLINE_STORE=sqlite (default) or redis (server at CDP_REDIS=host:port[,db=N], default
localhost:6379) times CDP_OFFLINE_STORE=duckdb (default) or spark (Feast's Spark offline store over
the same Parquet files; session settings from CDP_SPARK_MASTER etc., defaults as for Splink on Spark):
`feature_store[.redis][.spark].yaml`. The definitions pick FileSource or SparkSource the same way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from cdp import feature_repo as _feature_repo_package
from cdp.settings import setting
from cdp.workspace import Workspace

if TYPE_CHECKING:
    from feast import FeatureStore

FEATURE_REPO = Path(_feature_repo_package.__file__).parent  # the Feast repo, installed as package data
SCORE_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("churn_probability", pa.float64()),
        ("churn_model_version", pa.string()),
        ("churn_scored_at", pa.string()),
    ]
)


@lru_cache(maxsize=1)
def repo_definitions() -> ModuleType:
    """cdp.features.definitions, imported once per process (its builders take settings as arguments)."""
    from cdp.features import definitions

    return definitions


ONLINE_STORES = ("sqlite", "redis")
OFFLINE_STORES = ("duckdb", "spark")
SPARK_DEFAULTS = {
    "CDP_SPARK_MASTER": "local[2]",
    "CDP_SPARK_SHUFFLE_PARTITIONS": "4",
    "CDP_SPARK_DRIVER_MEMORY": "4g",
    "CDP_SPARK_DRIVER_HOST": "127.0.0.1",
}  # as cdp/engines/spark.py


class StoreConfigError(ValueError):
    """The configured feature store cannot be used; the message says what to set or start."""


def feature_store_yaml() -> Path:
    custom = setting("feature_store_yaml", StoreConfigError)
    if custom is not None:
        if not custom.exists():
            raise StoreConfigError(f"CDP_FEATURE_STORE_YAML={custom}: no such file")
        return Path(custom)
    online = setting("online_store", StoreConfigError)
    offline = offline_store()
    if online == "redis":
        os.environ.setdefault("CDP_REDIS", "localhost:6379")
    if offline == "spark":
        for key, value in SPARK_DEFAULTS.items():  # expanded inside the yaml
            os.environ.setdefault(key, value)
        # Splink's similarity-UDF jar goes on the JVM this session may launch: the driver classpath
        # is fixed when the JVM starts, so if Feast starts Spark first, Splink on Spark (in the same
        # process, later) could not register jaro_winkler etc. otherwise.
        from splink.backends.spark import similarity_jar_location

        os.environ.setdefault("CDP_SPARK_JARS", similarity_jar_location())
    name = "feature_store" + "".join(f".{kind}" for kind in (online, offline) if kind not in ("sqlite", "duckdb"))
    return FEATURE_REPO / f"{name}.yaml"


def offline_store() -> str:
    kind = str(setting("offline_store", StoreConfigError))
    if kind == "spark" and importlib.util.find_spec("pyspark") is None:
        raise StoreConfigError(
            "CDP_OFFLINE_STORE=spark needs pyspark: `pip install -c constraints.txt "
            "'.[scale]'` and a Java runtime (17 or 21), or set CDP_OFFLINE_STORE=duckdb"
        )
    return kind


def stop_spark() -> None:
    """Stop the process's Spark session (tests, benchmarks): the one Splink on Spark started
    (cdp/engines/spark.py keeps it cached) and any the Spark offline store started itself."""
    if importlib.util.find_spec("pyspark") is None:
        return
    from pyspark.sql import SparkSession

    from cdp.engines.spark import stop_spark as stop_identity_spark

    stop_identity_spark()
    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def open_store(ws: Workspace) -> FeatureStore:
    from feast import FeatureStore

    # ibis (inside Feast's DuckDB store) warns on every query about a DuckDB rename; Feast's Spark
    # store and SparkSource warn "experimental" on every call. Not for users.
    warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="The spark .* is an experimental feature", category=RuntimeWarning)
    os.environ["CDP_HOME"] = str(ws.root)  # expanded inside feature_store.yaml
    ws.feast.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(repo_path=str(FEATURE_REPO), fs_yaml_file=feature_store_yaml())
    _follow_workspace(ws, store)
    return store


def _follow_workspace(ws: Workspace, store: FeatureStore) -> None:
    """Feast's registry keeps absolute Parquet paths and the source class. When a workspace folder
    was moved or copied, the paths still name the old folder: reads would come from, and score
    pushes go to, someone else's files; when CDP_OFFLINE_STORE changed, the sources are of the other
    store's class (the Spark store refuses FileSources). Re-apply the definitions in both cases."""
    from feast import FileSource

    try:
        sources = [s for s in store.list_data_sources() if getattr(s, "path", None)]
    except Exception:
        return
    features, spark = ws.features.resolve(), _source_kind(store) == "spark"
    if sources and any(
        Path(s.path).resolve().parent != features or isinstance(s, FileSource) == spark  # type: ignore[attr-defined]
        for s in sources
    ):
        store.apply(repo_definitions().definitions(ws.features, _source_kind(store)))


def _source_kind(store: FeatureStore) -> str:
    """Which batch source class the store's offline store reads: spark (SparkSource) or duckdb (FileSource)."""
    return "spark" if "spark" in str(store.config.offline_store.type).lower() else "duckdb"


def apply_definitions(ws: Workspace) -> FeatureStore:
    from cdp.atomic import write_parquet_atomic

    scores = ws.path("churn_scores")
    if not scores.exists():  # the PushSource's batch file needs explicit column types
        write_parquet_atomic(SCORE_SCHEMA.empty_table(), scores)
    store = open_store(ws)
    store.apply(repo_definitions().definitions(ws.features, _source_kind(store)))
    return store


def materialize_latest(ws: Workspace, store: FeatureStore, as_of: pd.Timestamp, engine: str | None = None) -> int:
    """Load the latest snapshot of every batch feature view into the online store; rows written.

    engine "bulk" (default) reads each view's Parquet with Feast's TTL rule and writes through
    `cdp.featurestore.online_writer` (~10x Feast's own path here); "feast" runs `FeatureStore.materialize`.
    CDP_MATERIALIZE_ENGINE chooses when not given."""
    definitions = repo_definitions()
    engine = (engine or setting("materialize_engine")).lower()
    if engine == "feast":
        os.environ.setdefault("TQDM_DISABLE", "1")  # Feast's per-view tqdm bars would flood the CLI's own progress
        with contextlib.redirect_stdout(io.StringIO()):  # and so would its banner per view
            store.materialize(
                start_date=(as_of - definitions.SNAPSHOT_TTL).to_pydatetime(),
                end_date=(as_of + pd.Timedelta(seconds=1)).to_pydatetime(),
                feature_views=list(definitions.FEATURES),
            )
        return sum(len(latest_snapshot(ws, view, as_of)) for view in definitions.FEATURES)
    if engine != "bulk":
        raise StoreConfigError(f"CDP_MATERIALIZE_ENGINE={engine!r}: choose bulk or feast")
    from cdp.featurestore.online_writer import write_online_views

    return write_online_views(store, {view: latest_snapshot(ws, view, as_of) for view in definitions.FEATURES})


def float_features(frame: pd.DataFrame, service) -> pd.DataFrame:
    """`frame` with the FeatureService's Int64 counts and Bool flags as float64 (null -> NaN),
    in place. The models fit and score float matrices: typed in the store, a count reaches
    LightGBM/sklearn as the same number from a training set, a batch read or an online read
    (whose routes build float64 arrays)."""
    for projection in service.feature_view_projections:
        for field in projection.features:
            if str(field.dtype) in ("Int64", "Bool") and field.name in frame.columns:
                column = frame[field.name]
                frame[field.name] = pd.to_numeric(column.astype(object).where(column.notna(), float("nan"))).astype(
                    "float64"
                )
    return frame


def latest_rows(ws: Workspace, view: str, as_of: pd.Timestamp, columns: str = "*") -> tuple[str, list]:
    """(SQL, parameters) selecting each customer's latest row of `view` within the view's TTL
    before `as_of`: what Feast materializes and what a point-in-time join at `as_of` returns."""
    ttl = repo_definitions().SNAPSHOT_TTL
    as_of = pd.Timestamp(as_of).tz_convert("UTC")
    sql = f"""SELECT {columns} FROM read_parquet(?)
        WHERE event_timestamp <= ? AND event_timestamp > ?
        QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY event_timestamp DESC) = 1"""
    return sql, [str(ws.features / f"{view}.parquet"), as_of, as_of - ttl]


def latest_snapshot(ws: Workspace, view: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """Each customer's latest row of `view` at `as_of` (see `latest_rows`), by customer_id."""
    import duckdb

    sql, params = latest_rows(ws, view, as_of)
    return duckdb.connect().execute(f"{sql} ORDER BY customer_id", params).df()
