"""Batch scoring: every active customer's scores as of the latest snapshot, written back into
the profiles through one Feast PushSource per score family (online and offline store), in one
batch per family.

In:  Feast store (each model's FeatureService), champion models from MLflow, the timeline.
Out: pushed frames: churn (churn_scores), next best products (next_best_product_scores: top 10
     product_ids in catalogue), campaign uplift (campaign_response_scores: for the latest
     campaign's channel and target category, as if sent at the snapshot). A model with no
     champion yet is skipped, so churn keeps working on its own.
"""
from __future__ import annotations

import pandas as pd

from cdp.paths import Workspace
from models.churn import CHURN, scoring_entities
from profiles.consent import filter_profiling_consent
from training.tracking import load_champion
from training.train import build_training_set, predict

TOP_K = 10


def _stamp(scores: pd.DataFrame) -> pd.DataFrame:
    scores["event_timestamp"] = pd.to_datetime(scores["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    return scores


def score_churn(ws: Workspace, store, orders: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    from feast.data_source import PushMode

    model, version = load_champion(ws, CHURN.name)
    entities, _ = filter_profiling_consent(ws, scoring_entities(orders, as_of), as_of)  # never score refusers
    features = build_training_set(store, CHURN, entities)
    scores = features[["customer_id", "event_timestamp"]].copy()
    scores["churn_probability"] = predict(model, features)
    scores["churn_model_version"] = version
    scores["churn_scored_at"] = f"{as_of:%Y-%m-%dT%H:%M:%SZ}"
    store.push("churn_scores_push", _stamp(scores), to=PushMode.ONLINE_AND_OFFLINE)
    return scores


def score_next_best_product(ws: Workspace, store, lines: pd.DataFrame, orders: pd.DataFrame,
                            as_of: pd.Timestamp) -> pd.DataFrame:
    """Top TOP_K in-catalogue products per active customer (owned items allowed)."""
    from feast.data_source import PushMode

    from models.next_best_product import NEXT_BEST_PRODUCT, candidates, catalogue, item_stats, recommend

    model, version = load_champion(ws, NEXT_BEST_PRODUCT.name)
    entities, _ = filter_profiling_consent(ws, scoring_entities(orders, as_of), as_of)  # never score refusers
    products = catalogue(ws)
    frame = candidates(lines, item_stats(lines, products, as_of), entities["customer_id"])
    frame = frame.merge(build_training_set(store, NEXT_BEST_PRODUCT, entities), on="customer_id", how="left")
    recs = recommend(model, frame, TOP_K, set(products["product_id"]))
    scores = (recs.groupby("customer_id", sort=True)
              .agg(nbp_top_products=("product_id", ",".join), nbp_top_score=("score", "first")).reset_index())
    scores.insert(1, "event_timestamp", as_of)
    scores["nbp_model_version"] = version
    scores["nbp_scored_at"] = f"{as_of:%Y-%m-%dT%H:%M:%SZ}"
    store.push("next_best_product_scores_push", _stamp(scores), to=PushMode.ONLINE_AND_OFFLINE)
    return scores


def score_campaign_response(ws: Workspace, store, lines: pd.DataFrame, orders: pd.DataFrame,
                            as_of: pd.Timestamp, campaign_id: str | None = None) -> pd.DataFrame:
    """p(order | contacted), p(order | not contacted), uplift and decision per active customer for
    `campaign_id` (default: the latest campaign) as if sent at `as_of`."""
    from feast.data_source import PushMode

    from models.campaign_response import CAMPAIGN_RESPONSE, campaign_features, decisions

    model, version = load_champion(ws, CAMPAIGN_RESPONSE.name)
    campaigns = pd.read_parquet(ws.staged / "campaigns.parquet")
    campaign_id = campaign_id or campaigns.sort_values("start_at")["campaign_id"].iloc[-1]
    entities, _ = filter_profiling_consent(ws, scoring_entities(orders, as_of), as_of)  # never score refusers
    customer = build_training_set(store, CAMPAIGN_RESPONSE, entities)
    camp = campaign_features(entities.assign(campaign_id=campaign_id), campaigns, lines)
    frame = customer.merge(camp.drop(columns=["event_timestamp"]), on="customer_id", how="left")
    out = decisions(model.predict_outcomes(frame))
    scores = pd.DataFrame({"customer_id": frame["customer_id"], "event_timestamp": frame["event_timestamp"],
                           "campaign_id": campaign_id, "campaign_p_treated": out["p_treated"],
                           "campaign_p_control": out["p_control"], "campaign_uplift": out["uplift"],
                           "campaign_target": out["target"].astype(float),
                           "campaign_model_version": version, "campaign_scored_at": f"{as_of:%Y-%m-%dT%H:%M:%SZ}"})
    store.push("campaign_response_scores_push", _stamp(scores), to=PushMode.ONLINE_AND_OFFLINE)
    return scores


def _has_champion(ws: Workspace, name: str) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.tracking import CHAMPION, use_workspace

    use_workspace(ws)
    try:
        MlflowClient().get_model_version_by_alias(name, CHAMPION)
        return True
    except MlflowException:
        return False


def score_all(ws: Workspace, store, timeline, as_of: pd.Timestamp) -> dict:
    """Every family with a champion; returns the summary `cdp score` prints."""
    from models.campaign_response import CAMPAIGN_RESPONSE
    from models.next_best_product import NEXT_BEST_PRODUCT

    churn = score_churn(ws, store, timeline.orders, as_of)
    summary: dict = {"customers_scored": len(churn),
                     "mean_churn_probability": round(float(churn["churn_probability"].mean()), 4) if len(churn) else None,
                     "model_version": churn["churn_model_version"].iloc[0] if len(churn) else None}
    if _has_champion(ws, NEXT_BEST_PRODUCT.name):
        nbp = score_next_best_product(ws, store, timeline.order_lines, timeline.orders, as_of)
        summary["next_best_product"] = {"customers_scored": len(nbp),
                                        "model_version": nbp["nbp_model_version"].iloc[0] if len(nbp) else None}
    if _has_champion(ws, CAMPAIGN_RESPONSE.name):
        camp = score_campaign_response(ws, store, timeline.order_lines, timeline.orders, as_of)
        summary["campaign_response"] = {
            "customers_scored": len(camp), "campaign_id": camp["campaign_id"].iloc[0] if len(camp) else None,
            "targeted": int(camp["campaign_target"].sum()),
            "expected_incremental_conversions": round(float(camp.loc[camp["campaign_target"] > 0, "campaign_uplift"].sum()), 2),
            "model_version": camp["campaign_model_version"].iloc[0] if len(camp) else None}
    return summary
