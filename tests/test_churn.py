"""Churn model: labels, out-of-time split, MLflow registration, batch scores pushed back."""
from __future__ import annotations

import pandas as pd
import pytest
from mlflow import MlflowClient

from cdp.store import open_store
from models.churn import CHURN, labelled_entities
from training.tracking import CHAMPION, use_workspace


def test_labels_need_a_complete_window_and_prior_activity():
    orders = pd.DataFrame({
        "customer_id": ["a", "a", "b", "c"],
        "ordered_at": pd.to_datetime(["2025-01-10", "2025-02-15", "2025-01-20", "2025-03-10"], utc=True),
    })
    snapshots = [pd.Timestamp("2025-02-01", tz="UTC"), pd.Timestamp("2025-06-01", tz="UTC")]
    frame = labelled_entities(orders, snapshots, data_end=pd.Timestamp("2025-06-30", tz="UTC"))
    assert set(frame["event_timestamp"]) == {snapshots[0]}  # June's window is not complete
    labels = dict(zip(frame["customer_id"], frame[CHURN.label]))
    assert labels == {"a": 0, "b": 1}  # c was not active before the snapshot


def test_training_is_out_of_time_and_registered(pipeline_ws, stage_results):
    result = stage_results["train"]
    valid_at = pd.Timestamp(result["valid_snapshot"])
    assert all(pd.Timestamp(s) + pd.Timedelta(days=CHURN.horizon_days) <= valid_at for s in result["train_snapshots"])
    assert result["metrics"]["roc_auc"] > 0.65  # learns something real on 1.5k people
    assert 0 < result["metrics"]["brier"] < 0.25
    oracle = result["oracle"]  # the true probabilities bound the model on identity-clean rows
    assert oracle["clean_rows_roc_auc"] >= oracle["model_clean_rows_roc_auc"] - 0.02
    use_workspace(pipeline_ws)
    client = MlflowClient()
    version = client.get_model_version_by_alias(CHURN.name, CHAMPION)
    run = client.get_run(version.run_id)
    assert run.data.metrics["roc_auc"] == pytest.approx(result["metrics"]["roc_auc"])
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "plots")}
    assert {"plots/roc.png", "plots/pr.png", "plots/calibration.png", "plots/gain.png"} <= artifacts


def test_scores_are_pushed_online_and_offline(pipeline_ws, stage_results):
    scored = stage_results["score"]["customers_scored"]
    offline = pd.read_parquet(pipeline_ws.features / "churn_scores.parquet")
    assert len(offline) == scored > 0
    assert offline["churn_probability"].between(0, 1).all()
    sample = offline.sample(5, random_state=1)
    online = open_store(pipeline_ws).get_online_features(
        features=["churn_scores:churn_probability"],
        entity_rows=[{"customer_id": c} for c in sample["customer_id"]]).to_df()
    assert online["churn_probability"].to_numpy() == pytest.approx(sample["churn_probability"].to_numpy())
