"""Churn: will an active customer place no order in the 90 days after a snapshot?

Entities: customers with at least one order in the 365 days before the snapshot.
Label: 1 when they place no order in [snapshot, snapshot + 90 days).
Pipeline: LightGBM fitted on the earlier training snapshots, then isotonic-calibrated on the
latest training snapshot (out-of-time calibration, one boosting fit instead of k), so scores are
probabilities a retention team can read as such. Calibration uses person-level customers only
(`person_level_customers`: at least one CRM, loyalty or account record): a fragment made of stray
orders or web events "churns" whenever its person orders under another identity, and calibrating
on those biased every probability upward. `calibration_report` measures the result (ECE, Brier
against a constant baseline) for MLflow.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from cdp.models.spec import ModelSpec

CHURN = ModelSpec(
    name="churn",
    feature_service="churn_v1",
    label="churned_90d",
    objective="binary",
    horizon_days=90,
    primary_metric="roc_auc",
    hyperparameters={
        "n_estimators": 300,
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_child_samples": 50,
        "subsample": 0.8,
        "subsample_freq": 1,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
    },
)
ACTIVE_DAYS = 365


def labelled_entities(
    orders: pd.DataFrame, snapshots: list[pd.Timestamp], data_end: pd.Timestamp, spec: ModelSpec = CHURN
) -> pd.DataFrame:
    """(customer_id, event_timestamp, label) for active customers at snapshots whose label window
    is fully observed (snapshot + horizon <= data_end)."""
    complete = [s for s in snapshots if s + pd.Timedelta(days=spec.horizon_days) <= data_end]
    grid = pd.DataFrame({"event_timestamp": pd.to_datetime(complete, utc=True)})
    con = duckdb.connect()
    con.register("orders", orders[["customer_id", "ordered_at"]])
    con.register("snapshots", grid)
    frame = con.execute(f"""
        SELECT o.customer_id, s.event_timestamp,
          (count(*) FILTER (o.ordered_at >= s.event_timestamp
                            AND o.ordered_at < s.event_timestamp + INTERVAL {spec.horizon_days} DAY) = 0)::INT
            AS {spec.label}
        FROM snapshots s JOIN orders o
          ON o.ordered_at >= s.event_timestamp - INTERVAL {ACTIVE_DAYS} DAY
         AND o.ordered_at < s.event_timestamp + INTERVAL {spec.horizon_days} DAY
        GROUP BY ALL
        HAVING count(*) FILTER (o.ordered_at < s.event_timestamp) > 0
        ORDER BY 2, 1""").df()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    return frame


def scoring_entities(orders: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Customers active in the year before `as_of`: the population churn scores describe."""
    recent = orders.loc[
        (orders["ordered_at"] < as_of) & (orders["ordered_at"] >= as_of - pd.Timedelta(days=ACTIVE_DAYS)), "customer_id"
    ]
    frame = pd.DataFrame({"customer_id": sorted(recent.unique())})
    frame["event_timestamp"] = pd.Timestamp(as_of).tz_convert("UTC")
    frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[us, UTC]")
    return frame


# Service pain drives churn: more contacts/complaints or worse sentiment must never lower the risk.
MONOTONE = {
    "complaints_365d": 1,
    "unresolved_365d": 1,
    "cancellation_inquiries_365d": 1,
    "contacts_365d": 1,
    "contacts_90d": 1,
    "worst_sentiment_365d": -1,
    "mean_sentiment_365d": -1,
}


def build_booster(features: list[str], seed: int = 0) -> LGBMClassifier:
    # n_jobs=1: on this shared 2-core machine two LightGBM threads measured several times slower.
    return LGBMClassifier(
        **CHURN.hyperparameters,
        monotone_constraints=[MONOTONE.get(f, 0) for f in features],
        random_state=seed,
        n_jobs=1,
        verbose=-1,
    )


def fit_calibrated(
    fit_part: pd.DataFrame, calibration_part: pd.DataFrame, features: list[str], label: str, seed: int = 0
) -> CalibratedClassifierCV:
    """Boost on the earlier snapshots, calibrate (isotonic) on a later one the booster never saw."""
    booster = build_booster(features, seed).fit(fit_part[features], fit_part[label].to_numpy())
    calibrated = CalibratedClassifierCV(FrozenEstimator(booster), method="isotonic")
    return calibrated.fit(calibration_part[features], calibration_part[label].to_numpy())


PROFILE_TABLES = ("crm_contacts", "loyalty_members", "online_accounts")
ECE_BINS = 10


def person_level_customers(identity_map: pd.DataFrame) -> set[str]:
    """customer_ids holding at least one profile record (CRM contact, loyalty card, online account):
    an identified person, not a fragment made only of orders, web events, sends or contacts."""
    return set(identity_map.loc[identity_map["source_table"].isin(PROFILE_TABLES), "customer_id"])


def expected_calibration_error(y_true: np.ndarray, score: np.ndarray, bins: int = ECE_BINS) -> float:
    """Share-weighted mean |observed rate - mean score| over equal-width score bins."""
    y, p = np.asarray(y_true, dtype=float), np.asarray(score, dtype=float)
    if len(y) == 0:
        raise ValueError("expected_calibration_error: no rows")
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, y, minlength=bins) - np.bincount(which, p, minlength=bins))
    return float(gap.sum() / count.sum())


def calibration_report(y_true: np.ndarray, score: np.ndarray, constant: float, prefix: str = "") -> dict[str, float]:
    """ECE, Brier, the Brier of always predicting `constant` (the calibration rows' churn rate, known
    before validation) and the skill 1 - brier / brier_constant (> 0: better than the constant)."""
    y, p = np.asarray(y_true, dtype=float), np.asarray(score, dtype=float)
    brier, brier_constant = float(np.mean((p - y) ** 2)), float(np.mean((constant - y) ** 2))
    return {
        f"{prefix}ece": expected_calibration_error(y, p),
        f"{prefix}brier": brier,
        f"{prefix}brier_constant": brier_constant,
        f"{prefix}brier_skill": 1 - brier / brier_constant if brier_constant > 0 else float("nan"),
        f"{prefix}mean_predicted": float(p.mean()),
        f"{prefix}observed_rate": float(y.mean()),
    }
