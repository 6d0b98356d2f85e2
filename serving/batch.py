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

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from cdp.features.consent import contactable, filter_profiling_consent
from cdp.featurestore.latest import latest_service_features
from cdp.models.churn import CHURN, scoring_entities
from cdp.models.spec import ModelSpec
from cdp.serving.churn_scorer import ChurnScorer
from cdp.training.tracking import has_champion, load_champion
from cdp.workspace import Workspace

TOP_K = 10


def _stamp(scores: pd.DataFrame) -> pd.DataFrame:
    scores["event_timestamp"] = pd.to_datetime(scores["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    return scores


def _features(ws: Workspace, store, spec: ModelSpec, entities: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The model's FeatureService at the latest snapshot (same rows as Feast's point-in-time join)."""
    return latest_service_features(ws, store, spec.feature_service, entities, as_of)


def _score_key(columns) -> list[str]:
    """What one stored score is: the customer, the moment it describes and, for campaign scores, the campaign."""
    scored_at = next(c for c in columns if c.endswith("_scored_at"))
    return ["customer_id", scored_at, *(["campaign_id"] if "campaign_id" in columns else [])]


def write_offline(path, scores: pd.DataFrame) -> int:
    """The family's offline table (the Parquet behind its PushSource) with `scores` replacing any
    stored score of the same customer and scored_at (campaign too): re-running `cdp score` on the
    same snapshot replaces the latest scores instead of appending a copy; scores of earlier
    snapshots are kept as history. Written atomically (cdp.atomic); rows in the table returned."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from cdp.atomic import write_parquet_atomic

    path = Path(path)
    existing = pq.read_table(path) if path.exists() else None
    if existing is None:
        write_parquet_atomic(scores, path)
        return len(scores)
    missing = [c for c in existing.column_names if c not in scores.columns]
    if missing:
        raise ValueError(f"scores for {path.name}: columns {missing} missing (expected {existing.column_names})")
    new = scores[existing.column_names]
    key = _score_key(existing.column_names)
    old = existing.to_pandas()
    fresh = pd.MultiIndex.from_frame(new[key].astype(str))
    old = old[~pd.MultiIndex.from_frame(old[key].astype(str)).isin(fresh)]
    combined = pd.concat([old, new], ignore_index=True).drop_duplicates(key, keep="last")
    write_parquet_atomic(pa.Table.from_pandas(combined, schema=existing.schema, preserve_index=False), path)
    return len(combined)


def write_back(store, family: str, scores: pd.DataFrame) -> None:
    """Scores into the profiles: offline into the family's push table (replacing the same
    snapshot's scores, see `write_offline`), online in bulk."""
    from cdp.featurestore.online_writer import write_online

    scores = _stamp(scores)
    write_offline(store.get_feature_view(family).batch_source.path, scores)
    write_online(store, family, scores)


# Campaign channels and the consent purpose that gates them; push has no consent purpose in the
# contract, paid display audiences are shared with ad platforms (third-party sharing).
CHANNEL_CONSENT = {"email": "email", "sms": "sms", "paid_display": None, "push": None}


def contactable_for(ws: Workspace, customer_ids: pd.Series, channel: str, as_of: pd.Timestamp) -> pd.Series:
    """bool per customer: may this campaign's channel contact them at `as_of` (consent per purpose)?"""
    from cdp.features.consent import consent_at

    if channel == "paid_display":
        return consent_at(ws, customer_ids, "third_party_sharing", as_of).map(lambda v: v is True).astype(bool)
    if CHANNEL_CONSENT.get(channel) is None:
        return pd.Series(True, index=customer_ids.to_numpy())
    return contactable(ws, customer_ids, channel, as_of)


def score_churn(ws: Workspace, store, orders: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    model, version = load_champion(ws, CHURN.name)
    entities, _ = filter_profiling_consent(ws, scoring_entities(orders, as_of), as_of)  # never score refusers
    features = _features(ws, store, CHURN, entities, as_of)
    scores = features[["customer_id", "event_timestamp"]].copy()
    scorer = ChurnScorer.from_model(model, version)  # booster + isotonic map: sklearn's predict_proba, faster
    scores["churn_probability"] = scorer.probabilities(scorer.matrix(features), threads=0)
    scores["churn_model_version"] = version
    scores["churn_scored_at"] = f"{as_of:%Y-%m-%dT%H:%M:%SZ}"
    write_back(store, "churn_scores", scores)
    return scores


def score_next_best_product(
    ws: Workspace, store, lines: pd.DataFrame, orders: pd.DataFrame, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Top TOP_K in-catalogue products per active customer (owned items allowed)."""
    from cdp.models.next_best_product import NEXT_BEST_PRODUCT, candidates, catalogue, item_stats, recommend

    model, version = load_champion(ws, NEXT_BEST_PRODUCT.name)
    entities, _ = filter_profiling_consent(ws, scoring_entities(orders, as_of), as_of)  # never score refusers
    products = catalogue(ws)
    frame = candidates(lines, item_stats(lines, products, as_of), entities["customer_id"])
    frame = frame.merge(_features(ws, store, NEXT_BEST_PRODUCT, entities, as_of), on="customer_id", how="left")
    recs = recommend(model, frame, TOP_K, set(products["product_id"]))
    scores = (
        recs.groupby("customer_id", sort=True)
        .agg(nbp_top_products=("product_id", ",".join), nbp_top_score=("score", "first"))
        .reset_index()
    )
    scores.insert(1, "event_timestamp", as_of)
    scores["nbp_model_version"] = version
    scores["nbp_scored_at"] = f"{as_of:%Y-%m-%dT%H:%M:%SZ}"
    write_back(store, "next_best_product_scores", scores)
    return scores


def score_campaign_response(
    ws: Workspace, store, lines: pd.DataFrame, orders: pd.DataFrame, as_of: pd.Timestamp, campaign_id: str | None = None
) -> pd.DataFrame:
    """p(order | contacted), p(order | not contacted), uplift and decision per active customer for
    `campaign_id` (default: the latest campaign) as if sent at `as_of`. Customers the campaign's
    channel may not contact (consent per purpose) are scored but never targeted."""
    from cdp.models.campaign_response import CAMPAIGN_RESPONSE, campaign_features, customer_category_views, decisions

    model, version = load_champion(ws, CAMPAIGN_RESPONSE.name)
    campaigns = pd.read_parquet(ws.staged / "campaigns.parquet")
    campaign_id = campaign_id or campaigns.sort_values("start_at")["campaign_id"].iloc[-1]
    entities, _ = filter_profiling_consent(ws, scoring_entities(orders, as_of), as_of)  # never score refusers
    customer = _features(ws, store, CAMPAIGN_RESPONSE, entities, as_of)
    views = customer_category_views(ws)
    camp = campaign_features(entities.assign(campaign_id=campaign_id), campaigns, lines, views)
    frame = customer.merge(camp.drop(columns=["event_timestamp"]), on="customer_id", how="left")
    channel = campaigns.loc[campaigns["campaign_id"] == campaign_id, "channel"].iloc[0]
    allowed = contactable_for(ws, frame["customer_id"], channel, as_of).reindex(frame["customer_id"]).fillna(False)
    out = decisions(model.predict_outcomes(frame), contactable=allowed.to_numpy())
    scores = pd.DataFrame(
        {
            "customer_id": frame["customer_id"],
            "event_timestamp": frame["event_timestamp"],
            "campaign_id": campaign_id,
            "campaign_p_treated": out["p_treated"],
            "campaign_p_control": out["p_control"],
            "campaign_uplift": out["uplift"],
            "campaign_target": out["target"].astype(float),
            "campaign_contactable": allowed.to_numpy(),
            "campaign_model_version": version,
            "campaign_scored_at": f"{as_of:%Y-%m-%dT%H:%M:%SZ}",
        }
    )
    write_back(store, "campaign_response_scores", scores.drop(columns=["campaign_contactable"]))
    return scores


def withdraw_refused_scores(ws: Workspace, as_of: pd.Timestamp) -> dict:
    """Delete the stored scores (offline push tables and online store, every `*_scores` family) of
    customers whose profiling consent is withdrawn now (or at the snapshot, if later); their other
    data stays. Returns {"customers": n, "rows": {store: rows removed}}."""
    import pyarrow.parquet as pq

    from cdp.features.consent import profiling_allowed
    from cdp.privacy.erasure import withdraw_scores

    stored: set[str] = set()
    for path in sorted(ws.features.glob("*_scores.parquet")):
        stored.update(pq.read_table(path, columns=["customer_id"]).column("customer_id").to_pylist())
    stored.discard(None)
    if not stored:
        return {"customers": 0, "rows": {}}
    moment = max(
        pd.Timestamp.now(tz="UTC"),
        pd.Timestamp(as_of).tz_localize("UTC") if pd.Timestamp(as_of).tzinfo is None else pd.Timestamp(as_of),
    )
    allowed = profiling_allowed(ws, sorted(stored), moment)
    refused = sorted(allowed.index[~allowed.to_numpy()])
    if not refused:
        return {"customers": 0, "rows": {}}
    rows = withdraw_scores(ws, refused)
    return {"customers": len(refused), "rows": {k: v for k, v in rows.items() if v}}


def _churn_summary(churn: pd.DataFrame) -> dict:
    return {
        "customers_scored": len(churn),
        "mean_churn_probability": round(float(churn["churn_probability"].mean()), 4) if len(churn) else None,
        "model_version": churn["churn_model_version"].iloc[0] if len(churn) else None,
    }


def _nbp_summary(nbp: pd.DataFrame) -> dict:
    return {
        "customers_scored": len(nbp),
        "model_version": nbp["nbp_model_version"].iloc[0] if len(nbp) else None,
    }


def _campaign_summary(camp: pd.DataFrame) -> dict:
    return {
        "customers_scored": len(camp),
        "campaign_id": camp["campaign_id"].iloc[0] if len(camp) else None,
        "targeted": int(camp["campaign_target"].sum()),
        "not_contactable_by_consent": int((~camp["campaign_contactable"]).sum()),
        "expected_incremental_conversions": round(
            float(camp.loc[camp["campaign_target"] > 0, "campaign_uplift"].sum()), 2
        ),
        "model_version": camp["campaign_model_version"].iloc[0] if len(camp) else None,
    }


@dataclass(frozen=True)
class Scorer:
    """How one served family is batch-scored: scores(ws, store, timeline, as_of) -> frame, the
    frame's score and version columns (for monitoring) and its line in the `cdp score` summary."""

    scores: Callable[..., pd.DataFrame]
    score_column: str
    version_column: str
    summary: Callable[[pd.DataFrame], dict]


SCORERS: dict[str, Scorer] = {
    "churn": Scorer(
        lambda ws, store, t, as_of: score_churn(ws, store, t.orders, as_of),
        "churn_probability",
        "churn_model_version",
        _churn_summary,
    ),
    "next_best_product": Scorer(
        lambda ws, store, t, as_of: score_next_best_product(ws, store, t.order_lines, t.orders, as_of),
        "nbp_top_score",
        "nbp_model_version",
        _nbp_summary,
    ),
    "campaign_response": Scorer(
        lambda ws, store, t, as_of: score_campaign_response(ws, store, t.order_lines, t.orders, as_of),
        "campaign_uplift",
        "campaign_model_version",
        _campaign_summary,
    ),
}


def score_all(ws: Workspace, store, timeline, as_of: pd.Timestamp) -> dict:
    """Every family with a champion (SCORERS); returns the summary `cdp score` prints: churn's
    figures at the top level, each other family's under its name, and why a family was not scored."""
    from cdp.serving.readiness import no_champion_reason
    from cdp.training.drift import monitor_scoring

    withdrawn = withdraw_refused_scores(ws, as_of)
    chosen = [name for name in SCORERS if has_champion(ws, name)]
    if not chosen:
        raise ValueError(
            "no model has a champion to score with: run `cdp train churn` first (`cdp train --help` lists the models)"
        )
    summary: dict = {"customers_scored": 0, "scores_removed_consent_withdrawn": withdrawn}
    scored = {}
    for name, scorer in SCORERS.items():
        if name not in chosen:
            summary[name] = {"not_scored": no_champion_reason(ws, name)}
            continue
        frame = scorer.scores(ws, store, timeline, as_of)
        line = scorer.summary(frame)
        if name == CHURN.name:
            summary.update(line)
        else:
            summary[name] = line
        if len(frame):
            scored[name] = (str(frame[scorer.version_column].iloc[0]), frame[scorer.score_column])
    summary["monitoring"] = monitor_scoring(ws, store, timeline, as_of, scored)  # drift + realized metric, MLflow
    return summary
