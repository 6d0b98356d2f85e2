"""CLV training and out-of-time evaluation.

In:  Feast store (FeatureService clv_v1), customer orders, snapshots, data end.
Split: the cutoff is the latest snapshot whose next 365 days are fully observed. The model is
     fitted on purchase features *at the cutoff* (history strictly before it); it is evaluated
     on each customer's actual spend in [cutoff, cutoff + 365 days), which the fit never sees.
     (With two years of history a supervised 12-month model could not be trained on label
     windows that close before the evaluation starts; BG/NBD + Gamma-Gamma needs no label.)
Compared on the same customers: the naive baseline "next 12 months = last 12 months' spend"
     and, with truth/, an oracle (the person's true order process at the cutoff x their mean
     order value over the whole window).
Out: `CLVModel` logged + registered in MLflow (alias `champion` through the promotion gate)
     with MAE, RMSE, normalized Gini, Spearman, top-decile value share and total bias.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from cdp.models.clv import CLV, FEATURES, CLVModel
from cdp.training.gate import Reference
from cdp.training.train import TrainResult, build_training_set
from cdp.workspace import Workspace


def cutoff_snapshot(snapshots: list[pd.Timestamp], data_end: pd.Timestamp, horizon_days: int = 365) -> pd.Timestamp:
    """Latest snapshot whose [s, s + horizon) is observed (data runs to the end of data_end's day)."""
    observed_until = pd.Timestamp(data_end).floor("D") + pd.Timedelta(days=1)
    complete = [s for s in snapshots if s + pd.Timedelta(days=horizon_days) <= observed_until]
    if not complete:
        raise ValueError(
            f"clv: no snapshot has {horizon_days} days of observed data after it "
            f"(data ends {pd.Timestamp(data_end):%Y-%m-%d})"
        )
    return complete[-1]


def evaluation_set(store, orders: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int = 365) -> pd.DataFrame:
    """Customers with an order before the cutoff: clv_v1 features at the cutoff (point in time)
    + `spend_next_365d`, their spend in [cutoff, cutoff + horizon)."""
    before = orders.loc[orders["ordered_at"] < cutoff, "customer_id"].unique()
    entities = pd.DataFrame({"customer_id": sorted(before)})
    entities["event_timestamp"] = pd.Timestamp(cutoff).tz_convert("UTC")
    entities["event_timestamp"] = entities["event_timestamp"].astype("datetime64[us, UTC]")
    frame = build_training_set(store, CLV, entities)
    window = orders[
        (orders["ordered_at"] >= cutoff) & (orders["ordered_at"] < cutoff + pd.Timedelta(days=horizon_days))
    ]
    spend = window.groupby("customer_id")["total_amount"].sum(min_count=1)
    frame[CLV.label] = frame["customer_id"].map(spend).fillna(0.0).to_numpy(float)
    return frame


def normalized_gini(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Gini of the value captured when customers are ranked by `predicted`, divided by the Gini
    of the perfect ranking (1 = perfect order, 0 = random)."""

    def gini(order_by: np.ndarray) -> float:
        order = np.lexsort((np.arange(len(order_by)), -order_by))
        captured = np.cumsum(actual[order]) / actual.sum()
        return float(np.mean(captured - np.arange(1, len(actual) + 1) / len(actual)))

    return gini(np.asarray(predicted, float)) / gini(actual) if actual.sum() > 0 else 0.0


def clv_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    actual, predicted = np.asarray(actual, float), np.nan_to_num(np.asarray(predicted, float))
    top = np.argsort(-predicted, kind="stable")[: max(1, len(predicted) // 10)]
    return {
        "mae": float(np.mean(np.abs(predicted - actual))),
        "rmse": float(np.sqrt(np.mean((predicted - actual) ** 2))),
        "gini": normalized_gini(actual, predicted),
        "spearman": float(spearmanr(predicted, actual).statistic),
        "top_decile_value_share": float(actual[top].sum() / max(actual.sum(), 1e-9)),
        "total_bias": float(predicted.sum() / max(actual.sum(), 1e-9) - 1),
    }


def oracle_clv(ws: Workspace, customers: pd.Series, cutoff: pd.Timestamp, horizon_days: int = 365) -> np.ndarray | None:
    """Truth-based expected spend: E[orders in horizon | true rates, alive at cutoff] (memoryless
    churn at hazard h; residual rate after churn) x the person's mean order value (all orders)."""
    if not (ws.truth / "persons.parquet").exists() or not (ws.truth / "orders_truth.parquet").exists():
        return None
    from cdp.training.oracle import customer_persons

    persons = pd.read_parquet(
        ws.truth / "persons.parquet", columns=["person_id", "churn_at", "order_rate", "dead_order_rate", "churn_hazard"]
    )
    persons = persons.set_index("person_id")
    lam, r, h = (persons[c].to_numpy(float) for c in ("order_rate", "dead_order_rate", "churn_hazard"))
    t = float(horizon_days)
    alive_share = (1 - np.exp(-h * t)) / np.maximum(h, 1e-12)  # expected alive days in the horizon
    expected_alive = lam * alive_share + r * (t - alive_share)
    alive = (persons["churn_at"] > cutoff).to_numpy()
    expected = pd.Series(np.where(alive, expected_alive, r * t), index=persons.index)
    truth_orders = pd.read_parquet(ws.truth / "orders_truth.parquet", columns=["order_id", "person_id"])
    amounts = pd.read_parquet(ws.staged / "orders.parquet", columns=["order_id", "total_amount"])
    value = (
        truth_orders.astype({"order_id": str})
        .merge(amounts.astype({"order_id": str}), on="order_id")
        .groupby("person_id")["total_amount"]
        .mean()
    )
    person = customers.map(customer_persons(ws)["person_id"])
    return (person.map(expected) * person.map(value)).to_numpy(float)


def _plots(actual: np.ndarray, scores: dict[str, np.ndarray], out: Path) -> list[Path]:
    from cdp.training.evaluate import plt, save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    deciles = np.arange(1, 11)
    for name, score in scores.items():
        bins = pd.qcut(pd.Series(score).rank(method="first"), 10, labels=False)
        ax.plot(deciles, pd.Series(actual).groupby(bins).mean().to_numpy(), "o-", label=f"{name}: actual")
    model_bins = pd.qcut(pd.Series(scores["model"]).rank(method="first"), 10, labels=False)
    ax.plot(deciles, pd.Series(scores["model"]).groupby(model_bins).mean().to_numpy(), "k--", label="model: predicted")
    ax.set(
        xlabel="Predicted-CLV decile (1 = lowest)",
        ylabel="Mean 12-month spend",
        title="CLV: predicted vs actual by decile (out-of-time)",
    )
    ax.legend(fontsize=7)
    paths = [save_figure(fig, out / "clv_deciles.png")]
    fig, ax = plt.subplots(figsize=(5, 4))
    share = np.arange(1, len(actual) + 1) / len(actual)
    for name, score in scores.items():
        order = np.argsort(-score, kind="stable")
        ax.plot(share, np.cumsum(actual[order]) / max(actual.sum(), 1e-9), label=name)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.set(
        xlabel="Share of customers (by predicted CLV)",
        ylabel="Share of next-12-month spend",
        title="CLV: value captured (gain)",
    )
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "clv_gain.png"))
    return paths


def _oracle_figures(
    ws: Workspace,
    customer_ids: pd.Series,
    actual: np.ndarray,
    predicted: np.ndarray,
    cutoff: pd.Timestamp,
    horizon_days: int,
) -> dict[str, float]:
    """The generator's true expected spend on the same rows (synthetic workspaces only, else {})."""
    oracle_score = oracle_clv(ws, customer_ids, cutoff, horizon_days)
    if oracle_score is None:
        return {}
    usable = ~np.isnan(oracle_score)
    return {
        **clv_metrics(actual[usable], oracle_score[usable]),
        "rows": int(usable.sum()),
        "model_gini_same_rows": normalized_gini(actual[usable], predicted[usable]),
    }


def _run_params(frame: pd.DataFrame, model: CLVModel, cutoff: pd.Timestamp, horizon_end: pd.Timestamp) -> dict:
    spec = CLV
    return {
        "feature_service": spec.feature_service,
        "label": spec.label,
        "horizon_days": spec.horizon_days,
        "estimator": spec.objective,
        "n_features": len(FEATURES),
        "valid_snapshot": f"{cutoff:%Y-%m-%d}",
        "label_window": f"[{cutoff:%Y-%m-%d}, {horizon_end:%Y-%m-%d})",
        "customers": len(frame),
        "train_rows": len(frame),
        "valid_rows": len(frame),
        **{f"bgnbd_{k}": round(float(v), 6) for k, v in zip(("r", "alpha", "a", "b"), model.bgnbd_)},
        **{f"gamma_gamma_{k}": round(float(v), 6) for k, v in zip(("p", "q", "gamma"), model.gamma_gamma_)},
    }


def _log_and_register(
    ws: Workspace,
    frame: pd.DataFrame,
    model: CLVModel,
    scores: dict[str, np.ndarray],
    metrics: dict[str, float],
    compared: dict[str, dict[str, float]],
    oracle: dict[str, float],
    cutoff: pd.Timestamp,
) -> tuple[str, str, dict]:
    """One MLflow run: params, metrics, plots, the model registered through the champion gate."""
    import mlflow

    from cdp.training.tracking import register_run_model, set_experiment
    from cdp.workspace import use_workspace

    spec = CLV
    actual, predicted = frame[spec.label].to_numpy(float), scores["model"]
    horizon_end = cutoff + pd.Timedelta(days=spec.horizon_days)
    use_workspace(ws)
    set_experiment(ws, spec.name)
    with mlflow.start_run(run_name=f"{spec.name}-{cutoff:%Y%m%d}") as run:
        mlflow.log_params(_run_params(frame, model, cutoff, horizon_end))
        mlflow.log_metrics(
            {
                **metrics,
                **{f"naive_last_12m_{k}": v for k, v in compared["naive_last_12m"].items()},
                **{f"oracle_{k}": v for k, v in oracle.items()},
                "actual_mean_spend": float(actual.mean()),
                "predicted_mean_spend": float(predicted.mean()),
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            plots = _plots(actual, scores, Path(tmp))
            sample = frame[FEATURES].head(50)
            version, gate = register_run_model(
                spec,
                model,
                metrics[spec.primary_metric],
                FEATURES,
                plots,
                sample,
                model.predict(sample),
                lambda champion: clv_metrics(actual, champion.predict(frame[FEATURES]))[spec.primary_metric],
                frame["customer_id"],
                ws=ws,
                metrics=metrics,
                evaluate_model=lambda candidate: clv_metrics(actual, candidate.predict(frame[FEATURES])),
                baseline=Reference("last 12 months' spend", compared["naive_last_12m"][spec.primary_metric]),
            )
    return run.info.run_id, version, gate


def train_clv(
    ws: Workspace, store, orders: pd.DataFrame, snapshots: list[pd.Timestamp], data_end: pd.Timestamp, progress=None
) -> TrainResult:
    spec, step = CLV, progress or (lambda *_: None)
    cutoff = cutoff_snapshot(snapshots, data_end, spec.horizon_days)
    step("point-in-time features at the cutoff + next-12-month spend", 1, 4)
    frame = evaluation_set(store, orders, cutoff, spec.horizon_days)
    step("fit BG/NBD + Gamma-Gamma on pre-cutoff history", 2, 4)
    model = CLVModel(horizon_days=spec.horizon_days).fit(frame[FEATURES])
    actual = frame[spec.label].to_numpy(float)
    predicted = model.predict(frame[FEATURES])
    metrics = clv_metrics(actual, predicted)
    scores = {"model": predicted, "naive_last_12m": frame["spend_365d"].fillna(0).to_numpy(float)}
    compared = {"naive_last_12m": clv_metrics(actual, scores["naive_last_12m"])}
    oracle = _oracle_figures(ws, frame["customer_id"], actual, predicted, cutoff, spec.horizon_days)
    step("log to MLflow", 3, 4)

    horizon_end = cutoff + pd.Timedelta(days=spec.horizon_days)
    run_id, version, gate = _log_and_register(ws, frame, model, scores, metrics, compared, oracle, cutoff)
    step("registered", 4, 4)
    return TrainResult(
        model_name=spec.name,
        version=version,
        run_id=run_id,
        metrics=metrics,
        train_rows=len(frame),
        valid_rows=len(frame),
        train_snapshots=[f"{cutoff:%Y-%m-%d}"],
        valid_snapshot=f"{cutoff:%Y-%m-%d}",
        oracle=oracle,
        extra={
            "baselines": compared,
            "label_window": f"[{cutoff:%Y-%m-%d}, {horizon_end:%Y-%m-%d})",
            "fitted_on": f"purchase history before {cutoff:%Y-%m-%d} (no label)",
            "promotion": gate,
        },
    )
