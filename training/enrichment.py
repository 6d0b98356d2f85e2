"""Enrichment test-and-learn: what does each vendor's data add to the churn model?

In:  the churn training set from Feast (FeatureService churn_v1) and staged/enrichment.parquet.
Variants, each fitted with the churn pipeline (cdp.training.train.fit) on the same out-of-time split:
  without      : churn_v1 minus the enrichment features (first-party data only)
  <vendor>     : first-party + that vendor's facts alone
  all_vendors  : first-party + the freshest fact of any vendor (what churn_v1 serves)
A vendor's facts are joined point in time exactly as features/views.py does for all vendors:
the latest fact with as_of strictly before the snapshot, aged out after
CDP_ENRICHMENT_MAX_AGE_DAYS, linked through the customer's email hashes of records that existed
before the snapshot (cdp.features.views.vendor_facts).
Out: per variant the out-of-time ROC AUC / PR AUC, the lift over `without` and a paired bootstrap
95% interval of that lift (validation rows resampled; both models scored on the same resample),
plus the vendor's coverage (share of validation rows with a fresh fact).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from cdp.features.views import enrichment_max_age_days
from cdp.features.views import vendor_facts as signal_vendor_facts
from cdp.models.churn import CHURN, labelled_entities, person_level_customers
from cdp.training.train import build_training_set, fit, predict, split_out_of_time
from cdp.workspace import Workspace

ENRICHMENT_FEATURES = ["household_size", "income_band_rank", "home_owner", "car_owner", "enrichment_age_days"]


def vendor_facts(ws: Workspace, timeline) -> pd.DataFrame:
    """Staged vendor records attached to customers (vendor kept), as the feature pipeline links them."""
    joined = signal_vendor_facts(ws, timeline)
    for flag in ("home_owner", "car_owner"):
        joined[flag] = joined[flag].astype("Float64").astype(float)
    return joined


def point_in_time_facts(rows: pd.DataFrame, facts: pd.DataFrame, max_age_days: int | None = None) -> pd.DataFrame:
    """For each (customer_id, event_timestamp): the freshest fact with as_of < event_timestamp and
    not older than max_age_days -> ENRICHMENT_FEATURES (nulls when none)."""
    max_age = max_age_days or enrichment_max_age_days()
    con = duckdb.connect()
    keys = rows[["customer_id", "event_timestamp"]].drop_duplicates()
    con.register("keys", keys)
    con.register("facts", facts.drop(columns=["vendor"], errors="ignore"))
    out = con.execute(f"""
        SELECT k.customer_id, k.event_timestamp, f.household_size, f.income_band_rank, f.home_owner, f.car_owner,
               date_diff('day', f.as_of, k.event_timestamp) AS enrichment_age_days
        FROM keys k LEFT JOIN LATERAL (
          SELECT * FROM facts x WHERE x.customer_id = k.customer_id AND x.as_of < k.event_timestamp
            AND x.linked_at < k.event_timestamp AND x.as_of >= k.event_timestamp - INTERVAL {max_age} DAY
          ORDER BY x.as_of DESC LIMIT 1) f ON true""").df()
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    out[ENRICHMENT_FEATURES] = out[ENRICHMENT_FEATURES].astype(float)
    merged = rows[["customer_id", "event_timestamp"]].merge(out, on=["customer_id", "event_timestamp"], how="left")
    return merged[ENRICHMENT_FEATURES].set_axis(rows.index)


def paired_bootstrap(
    y: np.ndarray, with_score: np.ndarray, without_score: np.ndarray, n: int = 200, seed: int = 0, metric=roc_auc_score
) -> tuple[float, float]:
    """95% percentile interval of metric(with) - metric(without) over resampled validation rows."""
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        deltas.append(metric(y[idx], with_score[idx]) - metric(y[idx], without_score[idx]))
    low, high = np.percentile(deltas, [2.5, 97.5])
    return float(low), float(high)


def evaluate_enrichment(
    ws: Workspace,
    store,
    timeline,
    snapshots: list[pd.Timestamp],
    data_end: pd.Timestamp,
    bootstrap: int = 200,
    seed: int = 0,
    progress=None,
) -> dict:
    spec, step = CHURN, progress or (lambda *_: None)
    persons = person_level_customers(pd.read_parquet(ws.path("identity_map")))  # calibrated as train_churn does
    facts = vendor_facts(ws, timeline)
    vendors = sorted(facts["vendor"].dropna().unique())
    step("point-in-time training set", 0, len(vendors) + 2)
    frame = build_training_set(store, spec, labelled_entities(timeline.orders, snapshots, data_end, spec))
    base = frame.drop(columns=[c for c in ENRICHMENT_FEATURES if c in frame.columns])
    variants = {
        "without": base,
        **{v: base.join(point_in_time_facts(base, facts[facts["vendor"] == v])) for v in vendors},
    }
    variants["all_vendors"] = base.join(point_in_time_facts(base, facts))
    # same column order as churn_v1 (LightGBM's column sampling depends on it): all_vendors
    # then reproduces the production churn model exactly
    variants = {name: data[[c for c in frame.columns if c in data.columns]] for name, data in variants.items()}
    results: dict[str, dict] = {}
    scores: dict[str, np.ndarray] = {}
    y = np.empty(0)
    for i, (name, data) in enumerate(variants.items()):
        step(f"fit churn {name}", i + 1, len(variants) + 1)
        train, valid = split_out_of_time(data, spec)
        scores[name] = predict(fit(spec, train, seed, calibration_customers=persons), valid)
        y = valid[spec.label].to_numpy()
        coverage = float(valid["enrichment_age_days"].notna().mean()) if "enrichment_age_days" in valid else 0.0
        results[name] = {
            "roc_auc": float(roc_auc_score(y, scores[name])),
            "pr_auc": float(average_precision_score(y, scores[name])),
            "coverage_valid_rows": coverage,
        }
    for name in results:
        if name == "without":
            continue
        low, high = paired_bootstrap(y, scores[name], scores["without"], bootstrap, seed)
        results[name].update(
            lift_roc_auc=results[name]["roc_auc"] - results["without"]["roc_auc"],
            lift_ci_low=low,
            lift_ci_high=high,
            lift_pr_auc=results[name]["pr_auc"] - results["without"]["pr_auc"],
        )
    return {
        "model": spec.name,
        "metric": "roc_auc",
        "bootstrap": bootstrap,
        "valid_rows": len(y),
        "valid_snapshot": f"{valid['event_timestamp'].max():%Y-%m-%d}",
        "vendors": vendors,
        "enrichment_max_age_days": enrichment_max_age_days(),
        "results": results,
    }
