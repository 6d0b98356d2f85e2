"""Campaign-response / uplift training and out-of-time evaluation.

In:  Feast store (FeatureService campaign_response_v1), sends, campaigns, orders, order lines.
Out: an `UpliftModel` logged + registered in MLflow (alias `champion` through the promotion gate),
     and, on the later campaigns (split by campaign start date), Qini coefficient, AUUC and the
     observed uplift in the top 10% / 30% for: the model (T- and X-learner), targeting by
     response propensity P(order | contacted), random targeting, and, with truth/, the oracle
     (true tau per send) plus the mean *true* uplift of each ranking's top 10% / 30%.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cdp.models.campaign_response import (
    CAMPAIGN_RESPONSE,
    MIN_UPLIFT,
    UpliftModel,
    campaign_features,
    labelled_sends,
)
from cdp.training.evaluate import qini_figure, save_figure
from cdp.training.explain import explain
from cdp.training.gate import Reference
from cdp.training.train import TrainResult, build_training_set
from cdp.workspace import Workspace

VALID_SHARE = 0.3  # share of campaigns (latest by start date) held out
GRID = np.linspace(0.01, 1.0, 100)


def _cumulative(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.argsort(-score, kind="stable")
    t, yy = treated[order].astype(bool), y[order]
    n_t, n_c = np.cumsum(t), np.cumsum(~t)
    y_t, y_c = np.cumsum(yy * t), np.cumsum(yy * ~t)
    return n_t, n_c, y_t, y_c


def uplift_metrics(y: np.ndarray, treated: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Qini coefficient (area between the Qini curve and random targeting, in incremental
    conversions per treated customer), AUUC (mean over targeting depths of depth x observed
    uplift) and the observed uplift (treated rate - control rate) in the top 10% and 30%."""
    n_t, n_c, y_t, y_c = _cumulative(y, treated, score)
    idx = np.maximum((GRID * len(y)).astype(int) - 1, 0)
    qini = y_t[idx] - y_c[idx] * n_t[idx] / np.maximum(n_c[idx], 1)
    random_line = GRID * qini[-1]
    uplift = y_t[idx] / np.maximum(n_t[idx], 1) - y_c[idx] / np.maximum(n_c[idx], 1)
    return {
        "qini": float(np.mean(qini - random_line) / max(n_t[-1], 1)),
        "auuc": float(np.mean(uplift * GRID)),
        "uplift_top_10": float(uplift[9]),
        "uplift_top_30": float(uplift[29]),
        "uplift_all": float(uplift[-1]),
    }


def random_targeting(
    y: np.ndarray, treated: np.ndarray, metric: str = "qini", draws: int = 200, seed: int = 0
) -> Reference:
    """Random targeting's 97.5th percentile of `metric` on these rows (random scores, `draws`
    times): a campaign model must beat it to be trusted over contacting everyone or no one."""
    rng = np.random.default_rng(seed)
    null = [uplift_metrics(y, treated, rng.random(len(y)))[metric] for _ in range(draws)]
    return Reference("random targeting (97.5th percentile)", float(np.quantile(null, 0.975)))


def true_tau(ws: Workspace, send_ids: pd.Series) -> np.ndarray | None:
    path = ws.truth / "sends_truth.parquet"
    if not path.exists():
        return None
    truth = pd.read_parquet(path, columns=["send_id", "tau"]).set_index("send_id")["tau"]
    return send_ids.map(truth).to_numpy(float)


def build_send_set(
    store,
    sends: pd.DataFrame,
    campaigns: pd.DataFrame,
    orders: pd.DataFrame,
    lines: pd.DataFrame,
    first_snapshot: pd.Timestamp,
) -> pd.DataFrame:
    """Labelled sends after the first feature snapshot + Feast features at sent_at + campaign features."""
    spec = CAMPAIGN_RESPONSE
    frame = labelled_sends(sends, orders, spec)
    frame = frame[frame["event_timestamp"] > first_snapshot].reset_index(drop=True)
    entities = frame[["customer_id", "event_timestamp"]].drop_duplicates(ignore_index=True)
    customer = build_training_set(store, spec, entities)
    camp = campaign_features(frame, campaigns, lines)
    camp["event_timestamp"] = camp["event_timestamp"].astype("datetime64[us, UTC]")
    customer["event_timestamp"] = customer["event_timestamp"].astype("datetime64[us, UTC]")
    out = frame.merge(customer, on=["customer_id", "event_timestamp"], how="left").merge(
        camp, on=["customer_id", "campaign_id", "event_timestamp"], how="left"
    )
    if len(out) != len(frame):
        raise RuntimeError(f"send set: {len(out)} rows for {len(frame)} sends")
    return out


def split_by_campaign(frame: pd.DataFrame, campaigns: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list, list]:
    """Hold out the latest campaigns by start date; train on campaigns whose window closed before."""
    starts = campaigns.set_index("campaign_id")["start_at"]
    used = starts[starts.index.isin(frame["campaign_id"].unique())].sort_values()
    n_valid = max(1, round(len(used) * VALID_SHARE))
    valid_ids = list(used.index[-n_valid:])
    cutoff = used.iloc[-n_valid]
    horizon = pd.Timedelta(days=CAMPAIGN_RESPONSE.horizon_days + 1)
    train_ids = [
        c
        for c in used.index[:-n_valid]
        if frame.loc[frame["campaign_id"] == c, "event_timestamp"].max() + horizon <= cutoff
    ]
    if not train_ids:
        raise ValueError("campaign_response: no campaign ends before the held-out campaigns start")
    return (
        frame[frame["campaign_id"].isin(train_ids)],
        frame[frame["campaign_id"].isin(valid_ids)],
        train_ids,
        valid_ids,
    )


def feature_columns(frame: pd.DataFrame) -> list[str]:
    skip = {"send_id", "customer_id", "campaign_id", "event_timestamp", "treated", CAMPAIGN_RESPONSE.label}
    return [c for c in frame.columns if c not in skip]


def train_campaign_response(
    ws: Workspace,
    store,
    sends: pd.DataFrame,
    campaigns: pd.DataFrame,
    orders: pd.DataFrame,
    lines: pd.DataFrame,
    snapshots: list[pd.Timestamp],
    progress=None,
    seed: int = 0,
) -> TrainResult:
    import mlflow

    from cdp.training.tracking import register_run_model, set_experiment
    from cdp.workspace import use_workspace

    spec, step = CAMPAIGN_RESPONSE, progress or (lambda *_: None)
    step("labelled sends + point-in-time features", 1, 4)
    frame = build_send_set(store, sends, campaigns, orders, lines, snapshots[0])
    train, valid, train_ids, valid_ids = split_by_campaign(frame, campaigns)
    features = feature_columns(frame)
    step("fit T- and X-learners", 2, 4)
    started = time.perf_counter()
    learners = {
        name: UpliftModel(learner=name, seed=seed).fit(train[features], train["treated"], train[spec.label])
        for name in ("t", "x")
    }
    fit_seconds = time.perf_counter() - started
    y, t = valid[spec.label].to_numpy(), valid["treated"].to_numpy()
    outcomes = {name: m.predict_outcomes(valid[features]) for name, m in learners.items()}
    rankings = {
        "t_learner": outcomes["t"]["uplift"].to_numpy(),
        "x_learner": outcomes["x"]["uplift"].to_numpy(),
        "propensity": outcomes["t"]["p_treated"].to_numpy(),
        "random": np.random.default_rng(seed).random(len(valid)),
    }
    tau = true_tau(ws, valid["send_id"])
    if tau is not None:
        rankings["oracle"] = tau
    compared = {name: uplift_metrics(y, t, score) for name, score in rankings.items()}
    if tau is not None:
        for name, score in rankings.items():
            order = np.argsort(-score, kind="stable")
            for share in (10, 30):
                compared[name][f"true_uplift_top_{share}"] = float(
                    np.nanmean(tau[order[: max(1, len(order) * share // 100)]])
                )
            compared[name]["true_uplift_all"] = float(np.nanmean(tau))
    chosen = "x" if compared["x_learner"]["qini"] >= compared["t_learner"]["qini"] else "t"
    model = learners[chosen]
    metrics = dict(compared[f"{chosen}_learner"])
    step("log to MLflow", 3, 4)

    use_workspace(ws)
    set_experiment(ws, spec.name)
    with mlflow.start_run(run_name=f"{spec.name}-{valid['event_timestamp'].min():%Y%m%d}") as run:
        mlflow.log_params(
            {
                "feature_service": spec.feature_service,
                "label": spec.label,
                "response_window": f"(sent_at, sent_at + {spec.horizon_days} days]",
                "estimator": f"{chosen.upper()}-learner on LightGBM (chosen by out-of-time Qini)",
                "n_features": len(features),
                "train_rows": len(train),
                "valid_rows": len(valid),
                "train_campaigns": ",".join(train_ids),
                "valid_campaigns": ",".join(valid_ids),
                "valid_control_rows": int((t == 0).sum()),
            }
        )
        mlflow.log_metrics(
            {
                **metrics,
                "fit_seconds": fit_seconds,
                **{f"{name}_{m}": v for name, ms in compared.items() for m, v in ms.items()},
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            plot = save_figure(qini_figure(y, t, rankings, f"{chosen}_learner", MIN_UPLIFT), Path(tmp) / "qini.png")
            plots = [plot, *explain(model, valid[features], Path(tmp), "campaign uplift")]
            sample = valid[features].head(50)
            version, gate = register_run_model(
                spec,
                model,
                metrics[spec.primary_metric],
                features,
                plots,
                sample,
                model.predict(sample),
                lambda champion: uplift_metrics(y, t, champion.predict(valid[features]))["qini"],
                train["customer_id"],
                ws=ws,
                metrics={k: v for k, v in metrics.items() if not k.startswith("true_")},
                evaluate_model=lambda candidate: uplift_metrics(y, t, candidate.predict(valid[features])),
                baseline=random_targeting(y, t, spec.primary_metric),
            )
    step("registered", 4, 4)
    return TrainResult(
        model_name=spec.name,
        version=version,
        run_id=run.info.run_id,
        metrics=metrics,
        train_rows=len(train),
        valid_rows=len(valid),
        train_snapshots=train_ids,
        valid_snapshot=",".join(valid_ids),
        oracle=compared.pop("oracle", {}),
        extra={"learner": chosen, "compared": compared, "promotion": gate},
    )
