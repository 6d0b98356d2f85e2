"""Batch scoring: every active customer's churn score as of the latest snapshot, written back
into the profiles through the Feast PushSource (online and offline store), in one batch.

In:  Feast store (FeatureService churn_v1), champion model from MLflow, orders timeline.
Out: the pushed score frame (customer_id, event_timestamp, churn_probability, ...).
"""
from __future__ import annotations

import pandas as pd

from cdp.paths import Workspace
from models.churn import CHURN, scoring_entities
from training.tracking import load_champion
from training.train import build_training_set, predict


def score_churn(ws: Workspace, store, orders: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    from feast.data_source import PushMode

    model, version = load_champion(ws, CHURN.name)
    entities = scoring_entities(orders, as_of)
    features = build_training_set(store, CHURN, entities)
    scores = features[["customer_id", "event_timestamp"]].copy()
    scores["churn_probability"] = predict(model, features)
    scores["churn_model_version"] = version
    scores["churn_scored_at"] = f"{as_of:%Y-%m-%dT%H:%M:%SZ}"
    scores["event_timestamp"] = scores["event_timestamp"].astype("datetime64[us, UTC]")
    store.push("churn_scores_push", scores, to=PushMode.ONLINE_AND_OFFLINE)
    return scores
