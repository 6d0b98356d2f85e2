"""Feast's Spark offline store (feast 0.67, pyspark 4.3) with one fix, for CDP_OFFLINE_STORE=spark.

In:  feature_store*.spark.yaml: `offline_store: {type: cdp.featurestore.spark.CdpSparkOfflineStore, spark_conf: ...}`.
Out: point-in-time joins, `pull_latest`/`pull_all` (materialize) exactly as Feast's SparkOfflineStore.

The fix: pushing scores to the offline store (`store.push(..., to=PushMode.OFFLINE)`) calls
`SparkOfflineStore.offline_write_batch`, which appends with `df.write.mode("append").save(path)`:
Spark treats `path` as a folder of part files, so for our single-file sources
(`features/<family>_scores.parquet`, read as one file by every other stage) it fails with
`org.apache.hadoop.fs.ParentNotDirectoryException: Parent path is not a directory` (checked with
pyspark 4.3.0: Spark wants to create `<path>/_temporary`). For a source whose path is
one local Parquet file we append the way the embedded DuckDB store does (new rows first, cast to
the file's schema, rewrite the file); folders, tables and remote paths still go to Spark.
Imported only when that yaml is used: it imports pyspark and Feast.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pyarrow
import pyarrow.parquet as pq
from feast import FeatureView
from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
    SparkOfflineStore,
    SparkOfflineStoreConfig,
)
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.repo_config import RepoConfig
from pydantic import StrictStr


class CdpSparkOfflineStoreConfig(SparkOfflineStoreConfig):
    type: StrictStr = "cdp.featurestore.spark.CdpSparkOfflineStore"


class CdpSparkOfflineStore(SparkOfflineStore):
    @staticmethod
    def offline_write_batch(
        config: RepoConfig, feature_view: FeatureView, table: pyarrow.Table, progress: Callable[[int], Any] | None
    ):
        source = feature_view.batch_source
        if not (
            isinstance(source, SparkSource)
            and source.path
            and source.file_format == "parquet"
            and os.path.isfile(source.path)
        ):
            return SparkOfflineStore.offline_write_batch(config, feature_view, table, progress)
        existing = pq.read_table(source.path)
        if existing.column_names != table.column_names:  # the check Feast's writers make (no Spark job needed)
            raise ValueError(
                f"push to {feature_view.name}: columns {table.column_names}, "
                f"expected (in this order) {existing.column_names}"
            )
        if table.schema != existing.schema:
            table = table.cast(existing.schema)
        pq.write_table(pyarrow.concat_tables([table, existing]), source.path)
        if progress:
            progress(table.num_rows)
