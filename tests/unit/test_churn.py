"""Churn model: labels, out-of-time split, MLflow registration, batch scores pushed back."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow import MlflowClient

from cdp.featurestore.store import open_store
from cdp.models.churn import CHURN, labelled_entities
from cdp.training.tracking import CHAMPION
from cdp.workspace import use_workspace


def test_labels_need_a_complete_window_and_prior_activity():
    orders = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "c"],
            "ordered_at": pd.to_datetime(["2025-01-10", "2025-02-15", "2025-01-20", "2025-03-10"], utc=True),
        }
    )
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
    # calibration is measured and logged: ECE, and a Brier score better than the constant baseline's
    for name in ("ece", "brier_constant", "brier_skill", "person_ece", "person_brier", "person_brier_constant"):
        assert run.data.metrics[name] == pytest.approx(result["metrics"][name]), name
    assert result["metrics"]["brier"] < result["metrics"]["brier_constant"]
    assert result["metrics"]["person_brier"] < result["metrics"]["person_brier_constant"]
    assert 0 <= result["metrics"]["ece"] < 0.1
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "plots")}
    assert {"plots/roc.png", "plots/pr.png", "plots/calibration.png", "plots/gain.png"} <= artifacts


def test_scores_are_pushed_online_and_offline(pipeline_ws, stage_results):
    scored = stage_results["score"]["customers_scored"]
    offline = pd.read_parquet(pipeline_ws.features / "churn_scores.parquet")
    assert len(offline) == scored > 0
    assert offline["churn_probability"].between(0, 1).all()
    sample = offline.sample(5, random_state=1)
    online = (
        open_store(pipeline_ws)
        .get_online_features(
            features=["churn_scores:churn_probability"], entity_rows=[{"customer_id": c} for c in sample["customer_id"]]
        )
        .to_df()
    )
    assert online["churn_probability"].to_numpy() == pytest.approx(sample["churn_probability"].to_numpy())


def test_more_complaints_do_not_lower_churn_risk(pipeline_ws):
    """Behaviour on the synthetic process (service pain drives churn): adding complaints, contacts
    and unresolved contacts to every scored customer must not lower the average risk, and may
    lower almost no individual score by much."""
    from cdp.training.tracking import load_champion
    from cdp.training.train import build_training_set, predict

    model, _ = load_champion(pipeline_ws, CHURN.name)
    scored = pd.read_parquet(pipeline_ws.features / "churn_scores.parquet")[["customer_id", "event_timestamp"]]
    frame = build_training_set(open_store(pipeline_ws), CHURN, scored.head(400))
    base = predict(model, frame)
    worse = frame.copy()
    for column, extra in (("complaints_365d", 2), ("contacts_365d", 2), ("contacts_90d", 2), ("unresolved_365d", 1)):
        worse[column] = worse[column].fillna(0) + extra
    worse["worst_sentiment_365d"] = worse["worst_sentiment_365d"].fillna(0).clip(upper=-0.6)
    more = predict(model, worse)
    assert more.mean() >= base.mean()
    assert (more < base - 0.05).mean() < 0.05


def test_promotion_gate_keeps_the_better_model(tmp_path):
    import mlflow

    from cdp.training.gate import Reference
    from cdp.training.tracking import apply_gate
    from cdp.workspace import Workspace

    use_workspace(Workspace(tmp_path))
    client = MlflowClient()
    client.create_registered_model("gate_demo")
    outcomes = []
    for auc in (0.70, 0.65, 0.75):
        with mlflow.start_run() as run:
            mlflow.log_metric("roc_auc", auc)
        version = client.create_model_version("gate_demo", f"runs:/{run.info.run_id}/model", run.info.run_id).version
        gate = apply_gate("gate_demo", version, "roc_auc", auc)
        outcomes.append((gate["promoted"], str(client.get_model_version_by_alias("gate_demo", CHAMPION).version)))
    assert outcomes == [(True, "1"), (False, "1"), (True, "3")]
    # the champion cannot be re-scored here (no model files): the gate falls back to its logged metric
    with mlflow.start_run() as run:
        mlflow.log_metric("roc_auc", 0.74)
    version = client.create_model_version("gate_demo", f"runs:/{run.info.run_id}/model", run.info.run_id).version
    gate = apply_gate("gate_demo", version, "roc_auc", 0.74, score_champion=lambda _: 0.70)
    assert gate["compared_on"] == "logged metric" and not gate["promoted"] and gate["previous_value"] == 0.75
    # beating the champion is not enough: the same run's simple baseline must be beaten too
    with mlflow.start_run() as run:
        mlflow.log_metric("roc_auc", 0.80)
    version = client.create_model_version("gate_demo", f"runs:/{run.info.run_id}/model", run.info.run_id).version
    gate = apply_gate("gate_demo", version, "roc_auc", 0.80, baseline=Reference("recency", 0.82))
    assert not gate["promoted"] and gate["verdict"].startswith("no model better than recency")
    assert str(client.get_model_version_by_alias("gate_demo", CHAMPION).version) == "3"


def test_a_first_model_that_loses_to_its_baseline_is_not_champion(tmp_path):
    import mlflow

    from cdp.training.gate import Reference
    from cdp.training.tracking import apply_gate
    from cdp.workspace import Workspace

    use_workspace(Workspace(tmp_path))
    client = MlflowClient()
    client.create_registered_model("first_demo")
    with mlflow.start_run() as run:
        mlflow.log_metric("roc_auc", 0.60)
    version = client.create_model_version("first_demo", f"runs:/{run.info.run_id}/model", run.info.run_id).version
    gate = apply_gate("first_demo", version, "roc_auc", 0.60, baseline=Reference("recency", 0.70))
    assert not gate["promoted"] and gate["champion_version"] is None
    assert CHAMPION not in client.get_registered_model("first_demo").aliases


def test_calibration_error_and_brier_against_a_constant():
    import numpy as np

    from cdp.models.churn import calibration_report, expected_calibration_error

    rng = np.random.default_rng(0)
    score = rng.uniform(0, 1, 200_000)
    label = rng.uniform(0, 1, score.size) < score  # calibrated by construction
    assert expected_calibration_error(label, score) < 0.005
    assert expected_calibration_error(label, np.clip(score + 0.1, 0, 1)) == pytest.approx(0.1, abs=0.01)
    report = calibration_report(label, score, constant=label.mean())
    assert report["brier_skill"] > 0.3 and report["brier_constant"] == pytest.approx(0.25, abs=0.005)
    assert calibration_report(label, np.full(score.size, label.mean()), label.mean())["brier_skill"] == pytest.approx(0)
    with pytest.raises(ValueError, match="no rows"):
        expected_calibration_error(np.array([]), np.array([]))


def test_calibration_rows_are_person_level_customers_at_the_latest_training_snapshot():
    from cdp.models.churn import person_level_customers
    from cdp.training.train import calibration_rows

    identity = pd.DataFrame(
        {
            "source_table": ["crm_contacts", "orders", "orders", "web_events", "online_accounts", "orders"],
            "source_key": ["r1", "o1", "o2", "w1", "a1", "o3"],
            "customer_id": ["p1", "p1", "f1", "f2", "p2", "p2"],
        }
    )
    persons = person_level_customers(identity)
    assert persons == {"p1", "p2"}  # f1 (a stray order) and f2 (web events only) are fragments
    t0, t1 = pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-02-01", tz="UTC")
    train = pd.DataFrame({"customer_id": ["p1", "f1", "p1", "f1", "p2"], "event_timestamp": [t0, t0, t1, t1, t1]})
    rows = calibration_rows(train, persons)
    assert rows["customer_id"].tolist() == ["p1", "p2"] and (rows["event_timestamp"] == t1).all()
