"""CLV (BG/NBD + Gamma-Gamma): the maths on simulated customers, and the out-of-time run on the
session workspace against the naive last-12-months baseline and the truth-based oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from cdp.models.clv import CLV, CLVModel
from cdp.training.clv import clv_metrics, normalized_gini
from cdp.training.tracking import CHAMPION
from cdp.workspace import use_workspace


def simulate(n: int, seed: int, r=0.8, alpha=25.0, a=0.7, b=2.5, days=365.0) -> tuple[pd.DataFrame, np.ndarray]:
    """BG/NBD customers born uniformly in the first half-year of a year of history, plus their
    order count in the following `days` (the 'future' the model never sees)."""
    rng = np.random.default_rng(seed)
    lam, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    birth = rng.uniform(0, 180, n)
    T = 365.0 - birth
    rows, future = [], np.zeros(n)
    for i in range(n):
        t, alive, times = 0.0, True, [0.0]
        while alive:
            t += rng.exponential(1 / lam[i])
            if t > T[i] + days:
                break
            times.append(t)
            alive = rng.random() >= p[i]
        past = [x for x in times if x <= T[i]]
        future[i] = sum(1 for x in times if T[i] < x <= T[i] + days)
        rows.append(
            {
                "orders_lifetime": len(past),
                "days_since_first_order": T[i],
                "days_since_last_order": T[i] - past[-1],
                "orders_365d": len(past),
                "avg_order_value_365d": rng.gamma(4, 25),
            }
        )
    return pd.DataFrame(rows), future


def test_expected_orders_match_simulated_future():
    X, future = simulate(3000, seed=1)
    model = CLVModel().fit(X)
    r, alpha, a, b = model.bgnbd_
    assert 0.4 < r < 1.6 and 10 < alpha < 50  # purchase-rate prior recovered roughly
    expected = model.predict_components(X)["expected_orders"].to_numpy()
    assert expected.sum() == pytest.approx(future.sum(), rel=0.12)  # never saw `future`
    assert np.corrcoef(expected, future)[0, 1] > 0.5
    assert model.predict(X) == pytest.approx(expected * model.predict_components(X)["expected_order_value"])


def test_recency_and_frequency_move_clv_the_right_way():
    X, _ = simulate(1500, seed=2)
    model = CLVModel().fit(X)
    base = pd.DataFrame(
        {
            "orders_lifetime": [5.0],
            "days_since_first_order": [300.0],
            "days_since_last_order": [10.0],
            "orders_365d": [5.0],
            "avg_order_value_365d": [100.0],
        }
    )
    lapsed = base.assign(days_since_last_order=250.0)
    frequent = base.assign(orders_lifetime=12.0, orders_365d=12.0)
    pricier = base.assign(avg_order_value_365d=300.0)
    never = base.assign(orders_lifetime=0.0, orders_365d=0.0)
    value = lambda frame: float(model.predict(frame)[0])
    assert value(lapsed) < value(base) < value(frequent)
    assert value(base) < value(pricier)
    assert value(never) == 0.0
    assert model.predict_components(lapsed)["p_alive"].iloc[0] < model.predict_components(base)["p_alive"].iloc[0]


def test_metrics_reward_the_right_order():
    actual = np.array([0.0, 10.0, 50.0, 200.0])
    assert normalized_gini(actual, actual) == pytest.approx(1.0)
    assert normalized_gini(actual, -actual) < 0
    assert clv_metrics(actual, actual)["mae"] == 0.0
    assert clv_metrics(actual, actual * 2)["total_bias"] == pytest.approx(1.0)


def test_clv_is_trained_out_of_time_and_beats_the_naive_baseline(pipeline_ws, stage_results):
    result = stage_results["train_clv"]
    cutoff = pd.Timestamp(result["valid_snapshot"], tz="UTC")
    assert result["extra"]["label_window"].startswith(f"[{cutoff:%Y-%m-%d}")
    assert result["extra"]["fitted_on"].startswith(f"purchase history before {cutoff:%Y-%m-%d}")
    naive = result["extra"]["baselines"]["naive_last_12m"]
    model = result["metrics"]
    assert model["gini"] > naive["gini"] and model["spearman"] > naive["spearman"]
    assert model["rmse"] < naive["rmse"]
    assert abs(model["total_bias"]) < 0.5
    oracle = result["oracle"]  # the true order process bounds what any model can rank
    assert oracle["gini"] >= oracle["model_gini_same_rows"] - 0.02
    use_workspace(pipeline_ws)
    client = MlflowClient()
    version = client.get_model_version_by_alias(CLV.name, CHAMPION)
    assert str(version.version) == result["version"]
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "plots")}
    assert {"plots/clv_deciles.png", "plots/clv_gain.png"} <= artifacts
    reports = {a.path for a in client.list_artifacts(version.run_id, "reports")}
    assert {"reports/champion_comparison.json", "reports/champion_comparison.md"} <= reports


def test_clv_only_sees_orders_before_the_cutoff(pipeline_ws, stage_results):
    """Adding huge orders after the cutoff changes the label, never the features or the fit."""
    from cdp.features.timeline import load_timeline
    from cdp.featurestore.store import open_store
    from cdp.models.clv import FEATURES
    from cdp.training.clv import evaluation_set

    cutoff = pd.Timestamp(stage_results["train_clv"]["valid_snapshot"], tz="UTC")
    orders = load_timeline(pipeline_ws).orders
    store = open_store(pipeline_ws)
    frame = evaluation_set(store, orders, cutoff)
    extra = orders.head(50).assign(
        ordered_at=cutoff + pd.Timedelta(days=3), total_amount=1e6, order_id=lambda f: f["order_id"] + "_future"
    )
    poisoned = evaluation_set(store, pd.concat([orders, extra]), cutoff)
    assert poisoned[FEATURES].equals(frame[FEATURES])
    assert poisoned[CLV.label].sum() > frame[CLV.label].sum()
    assert CLVModel().fit(poisoned[FEATURES]).bgnbd_ == pytest.approx(CLVModel().fit(frame[FEATURES]).bgnbd_)
