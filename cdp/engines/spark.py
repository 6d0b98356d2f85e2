"""Which engine scores identity matches: Splink on DuckDB (embedded default) or Splink on Spark.

In:  environment (defaults from config/<CDP_PROFILE>.env):
     `CDP_IDENTITY_ENGINE`  duckdb | spark            (default duckdb)
     `CDP_SPARK_MASTER`     e.g. local[2], spark://host:7077, yarn   (default local[2])
     `CDP_SPARK_SHUFFLE_PARTITIONS` (default 4: right for local[2]; raise it on a cluster)
     `CDP_SPARK_DRIVER_MEMORY` (default 4g), `CDP_SPARK_LOCAL_DIR` (scratch + checkpoints),
     `CDP_SPARK_BREAK_LINEAGE` (persist on local masters, parquet otherwise)
Out: `splink_db_api()`: a fresh Splink database API for the chosen engine (DuckDBAPI or
     SparkAPI over one shared SparkSession, with Splink's similarity-UDF jar registered so
     jaro_winkler etc. run natively in the JVM); `model_for_dialect(model, dialect)`: a trained
     model re-rendered for another engine's SQL dialect (same m/u probabilities).

Only the probabilistic scoring (training + prediction) runs on Spark; deterministic links,
guards and stable ids stay in pandas/DuckDB on the (small) edge tables.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import lru_cache
from typing import Any

from cdp.settings import load_settings, setting

ENGINES = ("duckdb", "spark")
_NON_SQL_LEVEL_KEYS = (
    "m_probability",
    "u_probability",
    "tf_adjustment_column",
    "tf_adjustment_weight",
    "tf_minimum_u_value",
    "fix_m_probability",
    "fix_u_probability",
)


class EngineUnavailable(RuntimeError):
    """The configured identity engine cannot start; the message says what to install or set."""


def identity_engine() -> str:
    return str(setting("identity_engine", EngineUnavailable))


def _check_spark_available() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailable(
            "CDP_IDENTITY_ENGINE=spark needs pyspark: `pip install 'pyspark>=3.5'` (or set CDP_IDENTITY_ENGINE=duckdb)"
        ) from exc
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise EngineUnavailable(
            "CDP_IDENTITY_ENGINE=spark needs a Java runtime (17 or 21) for Spark: install one "
            "(e.g. `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME "
            "(or set CDP_IDENTITY_ENGINE=duckdb)"
        )


@lru_cache(maxsize=1)
def spark_session():
    """One SparkSession per process, configured from the environment, with Splink's UDF jar."""
    _check_spark_available()
    from pyspark.sql import SparkSession
    from splink.backends.spark import similarity_jar_location

    config = load_settings()
    local_dir = str(config.spark_local_dir) if config.spark_local_dir else None
    if not local_dir:  # scratch of our own: removed when the process exits
        local_dir = tempfile.mkdtemp(prefix="cdp_spark_")
        atexit.register(shutil.rmtree, local_dir, True)
    os.makedirs(local_dir, exist_ok=True)
    builder = (
        SparkSession.builder.appName("cdp-identity")
        .master(config.spark_master)
        .config("spark.jars", similarity_jar_location())
        .config("spark.driver.memory", config.spark_driver_memory)
        .config("spark.sql.shuffle.partitions", str(config.spark_shuffle_partitions))
        .config("spark.default.parallelism", str(config.spark_shuffle_partitions))
        .config("spark.local.dir", local_dir)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.host", config.spark_driver_host)
        .config("spark.driver.bindAddress", config.spark_driver_host)
    )
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # JVM failed to start (no Java, bad master URL, ...)
        raise EngineUnavailable(f"could not start Spark (CDP_SPARK_MASTER={config.spark_master}): {exc}") from exc
    spark.sparkContext.setLogLevel("ERROR")
    spark.sparkContext.setCheckpointDir(os.path.join(local_dir, "checkpoints"))
    return spark


def stop_spark() -> None:
    """Stop the shared session (tests, benchmarks); the next call starts a new one."""
    if spark_session.cache_info().currsize:
        spark_session().stop()
        spark_session.cache_clear()


def splink_db_api(engine: str | None = None):
    """A fresh Splink database API for the engine (each Linker gets its own table namespace)."""
    engine = engine or identity_engine()
    if engine == "duckdb":
        from splink import DuckDBAPI

        return DuckDBAPI()
    spark = spark_session()
    from splink.backends.spark import SparkAPI

    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    # Splink breaks the query lineage after each intermediate table: `persist` (memory, spilling to
    # disk) is fastest on one machine; on a cluster Splink's default, Parquet under the checkpoint dir.
    local = spark.sparkContext.master.startswith("local")
    method = setting("spark_break_lineage") or ("persist" if local else "parquet")
    return SparkAPI(spark_session=spark, num_partitions_on_repartition=partitions, break_lineage_method=method)


def model_for_dialect(model: dict[str, Any], dialect: str, settings_creator: Any) -> dict[str, Any]:
    """A trained model (settings dict) with its SQL re-rendered for `dialect`.

    A model saved by one engine holds that engine's SQL (DuckDB's `jaro_winkler_similarity`,
    `try_strptime`; Spark's `jaro_winkler`, `try_to_timestamp`). The comparisons are library
    objects (`settings_creator`), so render them for the target dialect and carry the trained
    parameters (m, u, term-frequency settings, the prior) across level by level."""
    if model.get("sql_dialect") == dialect:
        return model
    try:
        return _rerender(model, dialect, settings_creator)
    except ValueError:
        if "sql_dialect" not in model:  # not ours and dialect unknown: hand it to Splink unchanged
            return model
        raise


def _rerender(model: dict[str, Any], dialect: str, settings_creator: Any) -> dict[str, Any]:
    target = settings_creator.create_settings_dict(dialect)
    target["sql_dialect"] = dialect
    if len(target["comparisons"]) != len(model["comparisons"]):
        raise ValueError("trained model does not match the current comparisons: retrain with `cdp resolve`")
    for new, old in zip(target["comparisons"], model["comparisons"]):
        new_levels, old_levels = new["comparison_levels"], old["comparison_levels"]
        if (
            new.get("output_column_name") != old.get("output_column_name")
            or len(new_levels) != len(old_levels)
            or [lv.get("label_for_charts") for lv in new_levels] != [lv.get("label_for_charts") for lv in old_levels]
        ):
            raise ValueError(
                f"trained model's comparison {old.get('output_column_name')!r} does not match the "
                "current settings: retrain with `cdp resolve`"
            )
        for nl, ol in zip(new_levels, old_levels):
            nl.update({k: ol[k] for k in _NON_SQL_LEVEL_KEYS if k in ol})
    for key, value in model.items():
        if key not in ("comparisons", "blocking_rules_to_generate_predictions", "sql_dialect"):
            target[key] = value
    return target
