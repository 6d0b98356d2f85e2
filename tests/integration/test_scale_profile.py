"""The scale profile: same code, other engines. A copy of the session workspace is trained,
scored and served with CDP_PROFILE=scale against a real PostgreSQL (MLflow tracking + registry),
a real Redis (online store) and Feast's Spark offline store (local[2]: the point-in-time training
set); results must match the embedded run on the same data."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from cdp.features.build import load_snapshots
from cdp.settings import ProfileError, apply_profile, profile_values
from cdp.workspace import Workspace
from tests.conftest import free_port
from tests.services import postgres_server, redis_server


def test_profiles_fill_only_unset_variables():
    env = {"CDP_PROFILE": "scale", "CDP_REDIS": "cache.internal:6380"}
    applied = apply_profile(env)
    assert env["CDP_REDIS"] == "cache.internal:6380" and "CDP_REDIS" not in applied  # explicit wins
    assert env["CDP_ONLINE_STORE"] == "redis" and env["CDP_MLFLOW_URI"].startswith("postgresql")
    assert env["CDP_OFFLINE_STORE"] == "spark" and env["CDP_SPARK_MASTER"] == "local[2]"
    embedded = apply_profile({})  # embedded is the default
    assert embedded["CDP_ONLINE_STORE"] == "sqlite" and embedded["CDP_OFFLINE_STORE"] == "duckdb"
    with pytest.raises(ProfileError, match="CDP_PROFILE='huge'"):
        apply_profile({"CDP_PROFILE": "huge"})


def test_a_malformed_profile_file_names_the_line(tmp_path):
    (tmp_path / "bad.env").write_text("# ok\nCDP_ONLINE_STORE redis\n")
    with pytest.raises(ProfileError, match="line 2"):
        profile_values("bad", tmp_path)


@pytest.fixture(scope="module")
def scale_run(pipeline_ws, stage_results, tmp_path_factory):
    from cdp import pipeline
    from cdp.featurestore.store import materialize_latest, open_store, stop_spark

    root = tmp_path_factory.mktemp("scale")
    home = root / "ws"
    shutil.copytree(pipeline_ws.root, home, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    ws = Workspace(home)
    saved = dict(os.environ)
    with redis_server(free_port(), root) as redis_address, postgres_server(free_port()) as pg_url:
        os.environ.update(CDP_PROFILE="scale", CDP_REDIS=redis_address, CDP_MLFLOW_URI=pg_url, CDP_HOME=str(home))
        for key in ("CDP_ONLINE_STORE", "CDP_OFFLINE_STORE", "CDP_SPARK_MASTER", "CDP_FEATURE_STORE_YAML"):
            os.environ.pop(key, None)
        apply_profile()
        try:
            materialize_latest(ws, open_store(ws), load_snapshots(ws)[0][-1])
            trained = pipeline.train(ws, "churn")
            scored = pipeline.score(ws)
            from cdp.serving.service import ChurnRequest, CustomerScores

            ids = pd.read_parquet(pipeline_ws.features / "churn_scores.parquet")["customer_id"].head(40).tolist()
            os.environ.update(CDP_MODEL_RELOAD_SECONDS="0", CDP_SERVE_MODELS="churn")  # only churn is retrained here
            served = CustomerScores().churn(ChurnRequest(customer_ids=ids, reasons=False))
            from mlflow import MlflowClient

            from cdp.workspace import use_workspace

            use_workspace(ws)
            champion = MlflowClient().get_model_version_by_alias("churn", "champion")
            config = open_store(ws).config
            yield {
                "ws": ws,
                "trained": trained,
                "scored": scored,
                "served": served,
                "champion": champion,
                "online": config.online_store.type,
                "offline": config.offline_store.type,
                "embedded": stage_results,
            }
        finally:
            stop_spark()  # the Spark offline store's session; Splink on Spark tests start their own
            os.environ.clear()
            os.environ.update(saved)


def test_scale_profile_uses_postgres_redis_and_spark(scale_run):
    assert scale_run["online"] == "redis"
    assert scale_run["offline"] == "cdp.featurestore.spark.CdpSparkOfflineStore"  # training set joined by Spark SQL
    assert str(scale_run["champion"].version) == "1"  # registered in the (fresh) PostgreSQL registry
    assert not (scale_run["ws"].root / "mlflow.db").exists()  # nothing fell back to SQLite


def test_scale_profile_matches_the_embedded_run(scale_run, pipeline_ws):
    embedded = scale_run["embedded"]["train"]["metrics"]
    scaled = scale_run["trained"]["metrics"]
    for metric in ("roc_auc", "pr_auc", "brier"):
        assert scaled[metric] == pytest.approx(embedded[metric], abs=1e-9), metric
    original = pd.read_parquet(pipeline_ws.features / "churn_scores.parquet")
    original = original[original["churn_model_version"] == original["churn_model_version"].iloc[0]]
    expected = original.drop_duplicates("customer_id", keep="last").set_index("customer_id")["churn_probability"]
    served = {s["customer_id"]: s["churn_probability"] for s in scale_run["served"]["scores"]}
    assert len(served) == 40 and scale_run["served"]["errors"] == []
    for customer_id, probability in served.items():
        assert probability == pytest.approx(expected[customer_id], abs=1e-6)
    assert scale_run["scored"]["customers_scored"] == scale_run["embedded"]["score"]["customers_scored"]
