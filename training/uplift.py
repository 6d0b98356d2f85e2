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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cdp.models.campaign_response import (
    CAMPAIGN_RESPONSE,
    LEARNERS,
    MIN_UPLIFT,
    UpliftModel,
    campaign_features,
    labelled_sends,
)
from cdp.settings import setting
from cdp.training.evaluate import qini_figure, save_figure
from cdp.training.explain import explain
from cdp.training.gate import Reference
from cdp.training.model_card import campaign_response_card, log_model_card
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


def marketer_metrics(y: np.ndarray, treated: np.ndarray, score: np.ndarray, contact_cost: float = 0.0) -> dict:
    """What a marketer reads: the Qini as a share of the perfect ranking's (treated buyers first,
    control buyers last), the uplift in the top 50%, and the recommended depth: the share of
    customers to contact that maximizes expected incremental profit, depth x (uplift - cost), with
    `contact_cost` one contact's cost as a share of a conversion's value (0 when none pays:
    contact no one), and the incremental conversions per 1,000 contacts there."""
    y, t = np.asarray(y), np.asarray(treated).astype(bool)
    perfect = np.where(t & (y == 1), 2.0, np.where(~t & (y == 1), 0.0, 1.0))
    best = uplift_metrics(y, t, perfect)["qini"]
    n_t, n_c, y_t, y_c = _cumulative(y, t, score)
    idx = np.maximum((GRID * len(y)).astype(int) - 1, 0)
    uplift = y_t[idx] / np.maximum(n_t[idx], 1) - y_c[idx] / np.maximum(n_c[idx], 1)
    profit = GRID * (uplift - contact_cost)
    depth = int(np.argmax(profit))
    pays = profit[depth] > 0
    return {
        "normalized_qini": float(uplift_metrics(y, t, score)["qini"] / best) if best > 0 else float("nan"),
        "uplift_top_50": float(uplift[49]),
        "recommended_depth": float(GRID[depth]) if pays else 0.0,
        "incremental_per_1000_contacts": float(1000 * uplift[depth]) if pays else 0.0,
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
    views: pd.DataFrame,
    first_snapshot: pd.Timestamp,
    data_end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Labelled sends after the first feature snapshot + Feast features at sent_at + campaign
    features. Sends whose response window ends after `data_end` (the latest event in any table,
    `latest_event`) are left out and counted in `attrs["unobserved_sends"]`."""
    spec = CAMPAIGN_RESPONSE
    labelled = labelled_sends(sends, orders, spec, data_end=data_end)
    frame = labelled[labelled["event_timestamp"] > first_snapshot].reset_index(drop=True)
    entities = frame[["customer_id", "event_timestamp"]].drop_duplicates(ignore_index=True)
    customer = build_training_set(store, spec, entities)
    camp = campaign_features(frame, campaigns, lines, views)
    camp["event_timestamp"] = camp["event_timestamp"].astype("datetime64[us, UTC]")
    customer["event_timestamp"] = customer["event_timestamp"].astype("datetime64[us, UTC]")
    out = frame.merge(customer, on=["customer_id", "event_timestamp"], how="left").merge(
        camp, on=["customer_id", "campaign_id", "event_timestamp"], how="left"
    )
    if len(out) != len(frame):
        raise RuntimeError(f"send set: {len(out)} rows for {len(frame)} sends")
    out.attrs.update(labelled.attrs, before_first_snapshot=len(labelled) - len(frame))
    return out


class OutcomeError(ValueError):
    """CDP_CAMPAIGN_OUTCOME names a response the data cannot supply (e.g. an event type never seen)."""


def outcome_events(timeline, outcome: str | None = None) -> pd.DataFrame:
    """(customer_id, ordered_at) of the events that count as a response (CDP_CAMPAIGN_OUTCOME):
    orders (`order`), any web/app event (`web_visit`), or web/app events of one type
    (`web:<event type>`, e.g. web:add_to_cart). An event type absent from web_events is refused
    with the types that are there, never trained as "nobody responded"."""
    chosen = outcome or str(setting("campaign_outcome"))
    web = timeline.web
    if chosen == "web_visit":
        return web[["customer_id", "occurred_at"]].rename(columns={"occurred_at": "ordered_at"})
    if chosen.startswith("web:"):
        event_type = chosen.removeprefix("web:")
        types = web["event_type"] if "event_type" in web else pd.Series(dtype=str)
        picked = web[types == event_type]
        if picked.empty:
            seen = ", ".join(sorted(types.dropna().astype(str).unique())[:20]) or "none"
            raise OutcomeError(
                f"CDP_CAMPAIGN_OUTCOME={chosen!r}: no web_events with event_type {event_type!r} (found: {seen})"
            )
        return picked[["customer_id", "occurred_at"]].rename(columns={"occurred_at": "ordered_at"})
    if chosen != "order":
        raise OutcomeError(f"CDP_CAMPAIGN_OUTCOME={chosen!r}: choose order, web_visit or web:<event type>")
    return timeline.orders[["customer_id", "ordered_at"]]


def latest_event(timeline) -> pd.Timestamp:
    """The data's end for response windows: the latest event in any table (an experiment's
    export may end with its last send or web visit, not with an order), or CDP_DATA_END (when
    the data was extracted) if later."""
    columns = (("orders", "ordered_at"), ("sends", "sent_at"), ("responses", "occurred_at"), ("web", "occurred_at"))
    stamps = [
        pd.Timestamp(getattr(timeline, table)[column].max())
        for table, column in columns
        if column in getattr(timeline, table) and getattr(timeline, table)[column].notna().any()
    ]
    latest = max(s if s.tzinfo else s.tz_localize("UTC") for s in stamps)
    declared = setting("data_end")  # the extract's date, when the user gives it (CDP_DATA_END)
    if declared is None:
        return latest
    declared = pd.Timestamp(declared)
    return max(latest, declared if declared.tzinfo else declared.tz_localize("UTC"))


def split_by_campaign(frame: pd.DataFrame, campaigns: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list, list]:
    """Hold out the latest campaigns by start date; train on campaigns whose window closed before."""
    starts = campaigns.set_index("campaign_id")["start_at"]
    used = starts[starts.index.isin(frame["campaign_id"].unique())].sort_values()
    n_valid = max(1, round(len(used) * VALID_SHARE))
    cutoff = used.iloc[-n_valid]
    valid_ids = list(used.index[used >= cutoff])  # campaigns starting with the held-out one are held out too
    horizon = pd.Timedelta(days=CAMPAIGN_RESPONSE.horizon_days + 1)
    train_ids = [
        c
        for c in used.index[used < cutoff]
        if frame.loc[frame["campaign_id"] == c, "event_timestamp"].max() + horizon <= cutoff
    ]
    if not train_ids:
        raise NoTimeSplit("campaign_response: no campaign ends before the held-out campaigns start")
    return (
        frame[frame["campaign_id"].isin(train_ids)],
        frame[frame["campaign_id"].isin(valid_ids)],
        train_ids,
        valid_ids,
    )


class NoTimeSplit(ValueError):
    """Too few campaigns, or all at once (one experiment): no out-of-time split exists."""


CROSS_FIT_FOLDS = 5


@dataclass
class HeldOut:
    """Evaluation rows, each learner's uplift on them, the model kept per learner, how the rows
    were held out (MLflow params), and the customers whose sends trained the kept models."""

    rows: pd.DataFrame
    scores: dict[str, np.ndarray]
    models: dict[str, UpliftModel]
    split: dict[str, str]
    population: pd.Series


def held_out_predictions(frame: pd.DataFrame, campaigns: pd.DataFrame, features: list[str], seed: int) -> HeldOut:
    """Each learner's uplift on sends its model never saw.

    With campaigns that follow one another: fit on the earlier ones, predict the latest ones
    (out of time). With one campaign, same-date campaigns or waves: cross-fit K folds by customer
    (a customer's sends are all in one fold), so every send is predicted by models that never saw
    its customer; the models kept are then fitted on every send."""
    label = CAMPAIGN_RESPONSE.label
    try:
        train, valid, train_ids, valid_ids = split_by_campaign(frame, campaigns)
    except NoTimeSplit:
        return _cross_fitted(frame, features, seed)
    models = {name: UpliftModel(name, seed).fit(train[features], train["treated"], train[label]) for name in LEARNERS}
    scores = {name: m.predict(valid[features]) for name, m in models.items()}
    left_out = sorted(set(frame["campaign_id"]) - set(train_ids) - set(valid_ids))  # windows overlap the held-out
    split = {
        "split": "out of time",
        "train_campaigns": ",".join(train_ids),
        "valid_campaigns": ",".join(valid_ids),
        "campaigns_left_out": ",".join(left_out) or "none",
    }
    return HeldOut(valid, scores, models, split | {"train_rows": str(len(train))}, train["customer_id"])


def _cross_fitted(frame: pd.DataFrame, features: list[str], seed: int) -> HeldOut:
    from sklearn.model_selection import GroupKFold

    label = CAMPAIGN_RESPONSE.label
    folds = min(CROSS_FIT_FOLDS, frame["customer_id"].nunique())
    if folds < 2:
        raise ValueError("campaign_response: cross-fitting needs sends to at least 2 customers")
    scores = {name: np.full(len(frame), np.nan) for name in LEARNERS}
    X, t, y = frame[features], frame["treated"].to_numpy(), frame[label].to_numpy()
    for fit_rows, held in GroupKFold(n_splits=folds).split(X, y, groups=frame["customer_id"]):
        for name in LEARNERS:
            model = UpliftModel(name, seed).fit(X.iloc[fit_rows], t[fit_rows], y[fit_rows])
            scores[name][held] = model.predict(X.iloc[held])
    models = {name: UpliftModel(name, seed).fit(X, t, y) for name in LEARNERS}
    ids = ",".join(sorted(frame["campaign_id"].unique()))
    split = {"split": f"cross-fitted, {folds} folds by customer", "train_campaigns": ids, "valid_campaigns": ids}
    return HeldOut(frame, scores, models, split | {"train_rows": str(len(frame))}, frame["customer_id"])


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
    views: pd.DataFrame,
    snapshots: list[pd.Timestamp],
    progress=None,
    seed: int = 0,
    data_end: pd.Timestamp | None = None,
    outcome: str = "order",
) -> TrainResult:
    """`orders`: the response events (`outcome_events`: orders, or web visits for `outcome`
    "web_visit"); `lines` and `views` (customer_category_views): past order lines and category
    views for the campaign features."""
    spec, step = CAMPAIGN_RESPONSE, progress or (lambda *_: None)
    step("labelled sends + point-in-time features", 1, 4)
    frame = build_send_set(store, sends, campaigns, orders, lines, views, snapshots[0], data_end)
    features = feature_columns(frame)
    step("fit the uplift learners (held out: later campaigns, else cross-fitted by customer)", 2, 4)
    started = time.perf_counter()
    held = held_out_predictions(frame, campaigns, features, seed)
    valid, scores, models, split = held.rows, held.scores, held.models, held.split
    fit_seconds = round(time.perf_counter() - started, 2)
    y, t = valid[spec.label].to_numpy(), valid["treated"].to_numpy()
    rankings = {f"{name}_learner": score for name, score in scores.items()}
    rankings["propensity"] = models["t"].predict_outcomes(valid[features])["p_treated"].to_numpy()
    rankings["random"] = np.random.default_rng(seed).random(len(valid))
    tau = true_tau(ws, valid["send_id"])
    if tau is not None:
        rankings["oracle"] = tau
    compared = _compare_rankings(y, t, rankings, tau)
    chosen = max(LEARNERS, key=lambda name: compared[f"{name}_learner"]["qini"])
    metrics = dict(compared[f"{chosen}_learner"])
    metrics.update(qini_interval(y, t, scores[chosen], seed=seed))
    metrics.update(marketer_metrics(y, t, scores[chosen], float(setting("campaign_contact_cost"))))
    step("log to MLflow", 3, 4)
    observed = {
        "fit_seconds": fit_seconds,
        "unobserved_sends": int(frame.attrs.get("unobserved_sends", 0)),
        "sends_before_first_snapshot": int(frame.attrs.get("before_first_snapshot", 0)),
        "data_end": str(frame.attrs.get("data_end", "")),
        "outcome": outcome,
    }
    run_id, version, gate = _log_campaign_run(ws, held, chosen, features, rankings, metrics, compared, observed)
    step("registered", 4, 4)
    return TrainResult(
        model_name=spec.name,
        version=version,
        run_id=run_id,
        metrics=metrics,
        train_rows=int(split["train_rows"]),
        valid_rows=len(valid),
        train_snapshots=split["train_campaigns"].split(","),
        valid_snapshot=split["valid_campaigns"],
        oracle=compared.pop("oracle", {}),
        extra={"learner": chosen, "split": split["split"], "compared": compared, "promotion": gate, **observed},
    )


def _compare_rankings(y: np.ndarray, t: np.ndarray, rankings: dict[str, np.ndarray], tau) -> dict[str, dict]:
    compared = {name: uplift_metrics(y, t, score) for name, score in rankings.items()}
    if tau is not None:
        for name, score in rankings.items():
            order = np.argsort(-score, kind="stable")
            for share in (10, 30):
                compared[name][f"true_uplift_top_{share}"] = float(
                    np.nanmean(tau[order[: max(1, len(order) * share // 100)]])
                )
            compared[name]["true_uplift_all"] = float(np.nanmean(tau))
    return compared


def qini_interval(y: np.ndarray, t: np.ndarray, score: np.ndarray, draws: int = 200, seed: int = 0) -> dict:
    """Bootstrap 95% interval of the Qini coefficient over the evaluation rows."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        rows = rng.integers(0, len(y), len(y))
        if t[rows].min() != t[rows].max():
            values.append(uplift_metrics(y[rows], t[rows], score[rows])["qini"])
    low, high = np.quantile(values, [0.025, 0.975]) if values else (np.nan, np.nan)
    return {"qini_low": float(low), "qini_high": float(high)}


def _log_campaign_run(
    ws: Workspace,
    held: HeldOut,
    chosen: str,
    features: list[str],
    rankings: dict[str, np.ndarray],
    metrics: dict[str, float],
    compared: dict[str, dict],
    observed: dict,
) -> tuple[str, str, dict]:
    """The MLflow run: params (split, data end, unobserved sends), every ranking's metrics, the
    Qini plot, the chosen learner registered through the gate. Returns (run id, version, gate)."""
    import mlflow

    from cdp.models.campaign_response import LEARNERS as LEARNER_NAMES
    from cdp.training.tracking import register_run_model, set_experiment
    from cdp.workspace import use_workspace

    spec, model, valid, split = CAMPAIGN_RESPONSE, held.models[chosen], held.rows, held.split
    y, t = valid[spec.label].to_numpy(), valid["treated"].to_numpy()
    use_workspace(ws)
    set_experiment(ws, spec.name)
    learner = f"{chosen}_learner"
    random = random_targeting(y, t, spec.primary_metric)
    with mlflow.start_run(run_name=f"{spec.name}-{valid['event_timestamp'].min():%Y%m%d}") as run:
        mlflow.log_params(
            {
                "feature_service": spec.feature_service,
                "label": spec.label,
                "response_window": f"(sent_at, sent_at + {spec.horizon_days} days]",
                "estimator": f"{LEARNER_NAMES[chosen]} (chosen by held-out Qini among {', '.join(LEARNER_NAMES)})",
                "n_features": len(features),
                "valid_rows": len(valid),
                "valid_control_rows": int((t == 0).sum()),
                **split,
                **observed,
            }
        )
        mlflow.log_metrics(
            {
                **metrics,
                **{f"{name}_{m}": v for name, ms in compared.items() for m, v in ms.items()},
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            plot = save_figure(qini_figure(y, t, rankings, learner, MIN_UPLIFT), Path(tmp) / "qini.png")
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
                held.population,
                ws=ws,
                metrics={k: v for k, v in metrics.items() if not k.startswith("true_")},
                evaluate_model=lambda candidate: uplift_metrics(y, t, candidate.predict(valid[features])),
                baseline=random,
            )
            card = campaign_response_card(
                run.info.run_id, version, gate, valid, chosen, metrics, compared, random.value, split, plots
            )
            log_model_card(card)
    return run.info.run_id, version, gate
