"""Feast definitions, top to bottom: entity -> sources -> feature views -> feature services -> push.

Feature tables are written by `profiles/signals.py` into $CDP_HOME/features/<view>.parquet;
the `cdp` CLI applies these objects with `apply_definitions`. The module-level objects let the
plain `feast` CLI work too (`CDP_HOME=/abs/path feast -c feature_repo apply`).
"""
from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Float64, String
from feast.value_type import ValueType

SNAPSHOT_TTL = timedelta(days=45)  # a snapshot row answers until the next monthly snapshot
SCORE_TTL = timedelta(days=400)

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING,
                  description="A real person as found by identity resolution (stable customer_id).")

FEATURES: dict[str, dict[str, str]] = {
    "customer_profile": {
        "tenure_days": "Days since the customer first appeared in any record or order.",
        "loyalty_tier_rank": "Highest loyalty tier held (1 bronze .. 4 platinum), null if no card.",
        "loyalty_cards": "Loyalty cards enrolled so far.",
        "age_years": "Age from the CRM date of birth.",
        "household_size": "Vendor enrichment: household size (freshest fact not older than 730 days).",
        "income_band_rank": "Vendor enrichment: income band rank 1 (<25k) .. 6 (>150k).",
        "home_owner": "Vendor enrichment: owns their home (1/0).",
        "car_owner": "Vendor enrichment: owns a car (1/0).",
        "enrichment_age_days": "Age of the enrichment fact used; null when none is fresh enough.",
    },
    "purchase_behaviour": {
        "days_since_last_order": "Recency: days since the last order.",
        "days_since_first_order": "Days since the first order.",
        "orders_30d": "Orders in the last 30 days.",
        "orders_90d": "Orders in the last 90 days.",
        "orders_365d": "Orders in the last 365 days.",
        "orders_lifetime": "All orders before the snapshot.",
        "spend_90d": "Order value in the last 90 days.",
        "spend_365d": "Order value in the last 365 days.",
        "avg_order_value_365d": "Mean order value over the last 365 days.",
        "discounted_order_share_365d": "Share of orders with a discount or coupon (365 days).",
        "store_share_365d": "Share of orders placed in a store (365 days).",
        "digital_share_365d": "Share of orders placed online or in the app (365 days).",
        "mean_days_between_orders": "Mean gap between orders over the customer's history.",
    },
    "category_mix": {
        "top_category_share_365d": "Spend share of the customer's top category (365 days).",
        "categories_bought_365d": "Distinct categories bought (365 days).",
        "category_entropy_365d": "Entropy of spend across categories (365 days).",
    },
    "digital_engagement": {
        "sessions_30d": "Web/app sessions in the last 30 days.",
        "sessions_90d": "Web/app sessions in the last 90 days.",
        "product_views_90d": "Product views in the last 90 days.",
        "searches_90d": "Searches in the last 90 days.",
        "cart_adds_90d": "Add-to-cart events in the last 90 days.",
        "wishlist_adds_90d": "Wishlist additions in the last 90 days.",
        "abandoned_carts_90d": "Sessions with a cart add but no checkout start (90 days).",
        "days_since_last_visit": "Days since the last web/app event (within 365 days).",
    },
    "service_signals": {
        "contacts_90d": "Customer-service contacts in the last 90 days.",
        "contacts_365d": "Customer-service contacts in the last 365 days.",
        "complaints_365d": "Complaints in the last 365 days.",
        "unresolved_365d": "Contacts not resolved (365 days).",
        "cancellation_inquiries_365d": "Contacts about cancelling (365 days).",
        "mean_sentiment_365d": "Mean contact sentiment, -1..1 (365 days).",
        "worst_sentiment_365d": "Lowest contact sentiment (365 days).",
        "handle_minutes_365d": "Total handling time in minutes (365 days).",
        "days_since_last_contact": "Days since the last service contact (within 365 days).",
    },
    "campaign_engagement": {
        "campaigns_received_365d": "Campaign messages received (treatment sends, 365 days).",
        "campaigns_opened_365d": "Campaign messages opened (365 days).",
        "campaigns_clicked_365d": "Campaign messages clicked (365 days).",
        "unsubscribed_365d": "Unsubscribed from a campaign in the last 365 days (1/0).",
        "open_rate_365d": "Opened / received (365 days).",
    },
    "consent_state": {
        "consent_email_marketing": "Email marketing consent: 1 granted, 0 withdrawn, null never asked.",
        "consent_sms_marketing": "SMS marketing consent: 1 granted, 0 withdrawn, null never asked.",
        "consent_profiling": "Profiling consent: 1 granted, 0 withdrawn, null never asked.",
        "consent_third_party_sharing": "Third-party sharing consent: 1/0/null.",
    },
}
SCORE_FEATURES = {
    "churn_probability": "Calibrated probability of no order in the next 90 days.",
    "churn_model_version": "Registered MLflow model version that produced the score.",
    "churn_scored_at": "Snapshot (as of) the churn score describes, ISO-8601.",
}
MODEL_VIEWS = {"churn_v1": list(FEATURES)}


def feature_views(features_dir: Path) -> dict[str, FeatureView]:
    views = {}
    for name, fields in FEATURES.items():
        source = FileSource(name=f"{name}_source", path=str(features_dir / f"{name}.parquet"),
                            timestamp_field="event_timestamp",
                            description=f"Monthly snapshots of {name.replace('_', ' ')}.")
        views[name] = FeatureView(
            name=name, entities=[customer], ttl=SNAPSHOT_TTL, source=source, online=True,
            schema=[Field(name=f, dtype=Float64, description=d) for f, d in fields.items()])
    return views


def score_view(features_dir: Path) -> tuple[PushSource, FeatureView]:
    batch = FileSource(name="churn_scores_batch", path=str(features_dir / "churn_scores.parquet"),
                       timestamp_field="event_timestamp", description="Scores written back by `cdp score`.")
    push = PushSource(name="churn_scores_push", batch_source=batch)
    dtypes = {"churn_probability": Float64, "churn_model_version": String, "churn_scored_at": String}
    view = FeatureView(name="churn_scores", entities=[customer], ttl=SCORE_TTL, source=push, online=True,
                       schema=[Field(name=f, dtype=dtypes[f], description=d) for f, d in SCORE_FEATURES.items()])
    return push, view


def definitions(features_dir: Path) -> list:
    views = feature_views(features_dir)
    push, scores = score_view(features_dir)
    services = [FeatureService(name=name, features=[views[v] for v in view_names],
                               description=f"Exactly the features model '{name}' trains and serves on.")
                for name, view_names in MODEL_VIEWS.items()]
    return [customer, *views.values(), push, scores, *services]


if os.environ.get("CDP_HOME"):  # plain `feast apply` support
    _objects = definitions(Path(os.environ["CDP_HOME"]) / "features")
    globals().update({obj.name: obj for obj in _objects})
