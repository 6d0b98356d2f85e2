"""Feature views built on Spark (CDP_FEATURE_ENGINE=spark, set by CDP_PROFILE=scale).

In:  staged/*.parquet + identity/identity_map.parquet + identity/identifier_map.parquet, read by
     Spark (never collected to the driver), and the snapshot times.
Out: the same `features/<view>.parquet` files as the embedded DuckDB path (features/views.py):
     same rows in the same order (snapshot, customer_id), same columns and feature types (int64
     counts, bool flags, float64 otherwise: cdp.features.dtypes),
     microsecond UTC event_timestamp, one Parquet file per view (what Feast's sources, the bulk
     online writer and score pushes expect).

The SQL is features/views.py's (INPUT_SQL, SQL, view_sql), unchanged; only the base relations
come from Spark (features/timeline.py's spark_timeline_sql: the Timeline's joins on Spark). The
Spark session is cdp/engines/spark.py's, so Splink on Spark and feature building in one
process share one JVM (with Splink's UDF jar). Spark writes each view as part files (sorted,
in order); they are concatenated row group by row group into the single file, so the driver
holds one row group at a time, not the table.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cdp.features.dtypes import feature_kind
from cdp.features.timeline import spark_timeline_sql, staged_columns
from cdp.features.views import INPUT_SQL, SQL, STAGED_INPUTS, empty_relation, view_body, view_sql
from cdp.workspace import Workspace


def _storage_level():
    from pyspark import StorageLevel

    return StorageLevel.MEMORY_AND_DISK


def _register_staged(spark, ws: Workspace) -> None:
    """Views `staged_<table>`, `vendor`, `consent_raw`, `identity_map`, `identifier_map` (typed
    empty relations for absent optional tables, as on DuckDB)."""

    def view(name: str, path: Path, columns: dict[str, str]) -> None:
        if path.exists():
            spark.read.parquet(str(path)).select(*[f"`{c}`" for c in columns]).createOrReplaceTempView(name)
        else:
            spark.sql(empty_relation(columns)).createOrReplaceTempView(name)

    for table, columns in staged_columns().items():
        view(f"staged_{table}", ws.staged / f"{table}.parquet", columns)
    for name, (table, columns) in STAGED_INPUTS.items():
        view(name, ws.staged / f"{table}.parquet", columns)
    view(
        "identity_map",
        ws.path("identity_map"),
        {"source_table": "STRING", "source_key": "STRING", "customer_id": "STRING"},
    )
    view("identifier_map", ws.path("identifier_map"), {"node": "STRING", "customer_id": "STRING"})


def _register_timeline(spark, ws: Workspace) -> list:
    """The Timeline's relations as persisted Spark views; returns the frames to unpersist."""
    _register_staged(spark, ws)
    kept = []
    for name, sql in spark_timeline_sql().items():
        frame = spark.sql(sql).persist(_storage_level())
        frame.createOrReplaceTempView(name)
        kept.append(frame)
    return kept


def spark_data_end(ws: Workspace) -> pd.Timestamp:
    """The latest linked order (cdp.features.views.data_end of the Timeline), computed on Spark."""
    from cdp.engines.spark import spark_session

    spark = spark_session()
    _register_staged(spark, ws)
    spark.sql(spark_timeline_sql()["orders"]).createOrReplaceTempView("orders")
    micros = spark.sql("SELECT unix_micros(max(ordered_at)) AS end FROM orders").first()["end"]
    return pd.Timestamp(micros, unit="us", tz="UTC")


def build_features_spark(ws: Workspace, snapshots: list[pd.Timestamp], progress=None) -> dict[str, int]:
    """Write one Parquet per feature view with Spark; returns rows written per view."""
    from cdp.engines.spark import spark_session

    spark = spark_session()
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")  # not INT96: us, UTC-adjusted
    kept = _register_timeline(spark, ws)
    times = pd.DataFrame({"event_timestamp": pd.to_datetime(list(snapshots), utc=True)})
    spark.createDataFrame(times).createOrReplaceTempView("snapshot_times")
    try:
        for name, sql in INPUT_SQL.items():
            frame = spark.sql(sql).persist(_storage_level())
            frame.createOrReplaceTempView(name)
            kept.append(frame)
        ws.features.mkdir(parents=True, exist_ok=True)
        written = {}
        for step, name in enumerate(SQL):
            columns = [c for c in spark.sql(view_body(name)).columns if c not in ("customer_id", "event_timestamp")]
            parts = ws.features / f".{name}.spark_parts"
            spark.sql(view_sql(name, columns)).write.mode("overwrite").parquet(str(parts))
            written[name] = _single_file(parts, ws.features / f"{name}.parquet", columns)
            if progress:
                progress(name, step + 1, len(SQL))
        return written
    finally:
        for frame in kept:
            frame.unpersist()


def feature_schema(columns: list[str]) -> pa.Schema:
    return pa.schema(
        [
            ("customer_id", pa.string()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            *[(c, {"int": pa.int64(), "bool": pa.bool_(), "float": pa.float64()}[feature_kind(c)]) for c in columns],
        ]
    )


def _single_file(parts: Path, target: Path, columns: list[str]) -> int:
    """Concatenate Spark's part files (in name order = sort order) into one Parquet file with the
    feature-table schema, one row group at a time; removes the parts. Returns the row count."""
    schema = feature_schema(columns)
    partial = target.with_name(f".{target.name}.writing")
    rows = 0
    with pq.ParquetWriter(partial, schema) as writer:
        for path in sorted(parts.glob("part-*.parquet")):
            source = pq.ParquetFile(path)
            for group in range(source.num_row_groups):
                table = source.read_row_group(group).select(schema.names).cast(schema)
                writer.write_table(table)
                rows += table.num_rows
    os.replace(partial, target)
    shutil.rmtree(parts, ignore_errors=True)
    return rows
