import numpy as np
import pandas as pd

from cdp.training.monitoring import null_share, psi


def test_psi_flags_a_shift_and_passes_a_resample():
    rng = np.random.default_rng(0)
    train = pd.Series(rng.normal(50, 10, 5000))
    assert psi(train, pd.Series(rng.normal(50, 10, 5000))) < 0.05
    assert psi(train, pd.Series(rng.normal(65, 10, 5000))) > 0.2  # e.g. a category's prices up 30%


def test_psi_categorical_counts_unseen_categories():
    train = pd.Series(["a", "b"] * 500)
    assert psi(train, pd.Series(["a", "b"] * 500)) < 1e-6
    assert psi(train, pd.Series(["c"] * 1000)) > 0.2


def test_null_share():
    assert null_share(pd.Series([1.0, None, None, 4.0])) == 0.5


def test_profile_stores_no_rows_and_no_rare_category():
    from cdp.training.monitoring import MIN_CATEGORY_ROWS, profile, psi_against

    rng = np.random.default_rng(1)
    amounts = pd.Series(rng.lognormal(3, 1, 2000))
    stored = profile(amounts)
    assert stored["kind"] == "numeric" and len(stored["edges"]) == 9  # interior edges only: no min, no max
    assert amounts.min() not in stored["edges"] and amounts.max() not in stored["edges"]
    assert psi_against(stored, amounts * 3) > 1.0  # prices x3
    assert psi_against(stored, pd.Series(rng.lognormal(3, 1, 2000))) < 0.05
    names = pd.Series(["common"] * 500 + ["Jane Doe"] * (MIN_CATEGORY_ROWS - 1))
    stored = profile(names)
    assert stored["categories"] == ["common"] and stored["other"] > 0  # a near-unique value is never named


def test_alerts_name_every_feature_over_the_threshold():
    from cdp.training.monitor_report import Thresholds, alerts

    run = {
        "model": "churn",
        "version": "3",
        "scored_at": pd.Timestamp("2026-01-01", tz="UTC"),
        "max_psi": 0.8,
        "max_psi_feature": "spend_90d",
        "top_psi": "spend_90d=0.8000, price_paid_vs_list_90d=0.3000, orders_90d=0.1000",
        "max_null_jump": 0.02,
        "max_null_jump_feature": "age_years",
        "score_psi": 0.05,
        "realized_metric": "roc_auc",
        "realized_value": 0.70,
        "promised_value": 0.84,
        "realized_snapshot": "2025-09-01",
        "realized_model_version": "2",
    }
    found = alerts(pd.DataFrame([run]), Thresholds(psi_max=0.2, null_jump=0.1, metric_drop=0.05))
    assert [a.split(": ")[1].split(",")[0] for a in found[:2]] == [
        "feature spend_90d drifted",
        "feature price_paid_vs_list_90d drifted",
    ]
    assert "realized roc_auc 0.700" in found[2] and "0.140 below" in found[2]
    assert len(found) == 3
    quiet = alerts(pd.DataFrame([{**run, "top_psi": "a=0.1", "realized_value": 0.83}]), Thresholds(0.2, 0.1, 0.05))
    assert quiet == []


def test_training_snapshots_from_the_champions_run(tmp_path):
    import pytest

    from cdp.training.drift import REFERENCE_SNAPSHOTS, ReferenceUnavailable, training_snapshots
    from cdp.workspace import Workspace

    ws = Workspace(tmp_path)
    months = list(pd.date_range("2024-01-01", periods=18, freq="MS", tz="UTC"))
    churn = training_snapshots(ws, {"valid_snapshot": "2025-03-01", "train_snapshots": "9"}, 90, months)
    assert churn[-1] == pd.Timestamp("2024-12-01", tz="UTC") and len(churn) == REFERENCE_SNAPSHOTS
    listed = training_snapshots(ws, {"train_snapshots": "2024-05-01,2024-06-01"}, 30, months)
    assert listed == [pd.Timestamp("2024-05-01", tz="UTC"), pd.Timestamp("2024-06-01", tz="UTC")]
    with pytest.raises(ReferenceUnavailable, match="neither"):
        training_snapshots(ws, {}, 90, months)
