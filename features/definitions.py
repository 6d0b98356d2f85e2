"""Feast definitions, top to bottom: entity -> sources -> feature views -> feature services -> push.

Feature tables are written by `features/views.py` into $CDP_HOME/features/<view>.parquet;
the `cdp` CLI applies these objects with `apply_definitions`. The module-level objects let the
plain `feast` CLI work too (`CDP_HOME=/abs/path feast -c feature_repo apply`).

The same Parquet files are batch sources for either offline store: `FileSource` for the embedded
DuckDB store (default), `SparkSource` when CDP_OFFLINE_STORE=spark (feature_store*.spark.yaml).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, Project, PushSource
from feast.types import Array, Bool, ComplexFeastType, Float64, Int64, PrimitiveFeastType, String
from feast.value_type import ValueType

from cdp.features.dtypes import COUNTS, FLAGS, WHOLE_DAYS, feature_kind
from cdp.settings import setting

OFFLINE_STORES = ("duckdb", "spark")
SNAPSHOT_TTL = timedelta(days=45)  # a snapshot row answers until the next monthly snapshot
SCORE_TTL = timedelta(days=400)
SESSION_TTL = timedelta(days=1)  # a session row answers for a day: "complaint today" looks back that far

project = Project(
    name="cdp",  # the `project:` of feature_repo/feature_store*.yaml
    description="Customer data platform ML layer: one profile per real person, behavioural signals, scores.",
    tags={"owner": "cdp-ml", "entity": "customer"},
)

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A real person as found by identity resolution (stable customer_id).",
)

FEATURES: dict[str, dict[str, str]] = {
    "customer_profile": {
        "tenure_days": "Days since the customer first appeared in any record or order.",
        "loyalty_tier_rank": "Highest loyalty tier held (1 bronze .. 4 platinum, 0 a tier outside those), null if no card.",
        "loyalty_cards": "Loyalty cards enrolled so far.",
        "age_years": "Age from the CRM date of birth.",
        "household_size": "Vendor enrichment: household size (freshest fact not older than 730 days).",
        "income_band_rank": "Vendor enrichment: income band rank 1 (<25k) .. 6 (>150k), 0 a band outside those.",
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
        "unsubscribed_365d": "Unsubscribed from a campaign in the last 365 days.",
        "open_rate_365d": "Opened / received (365 days).",
    },
    "change_signals": {  # change, not level: what churn follows in real retail (issue 17)
        "orders_prior_3m_monthly": "Orders per month in the three months before the last 30 days (days 30-120).",
        "orders_30d_vs_prior_3m": "Orders in the last 30 days minus the monthly average of the three months before.",
        "orders_90d_vs_prior_275d": "Orders in the last 90 days minus the days 90-365 count scaled to 90 days.",
        "spend_30d": "Order value in the last 30 days.",
        "spend_prior_3m_monthly": "Order value per month in the three months before the last 30 days.",
        "spend_30d_vs_prior_3m": "Order value in the last 30 days minus the monthly average of the three before.",
        "sessions_prior_3m_monthly": "Web/app sessions per month in the three months before the last 30 days.",
        "sessions_30d_vs_prior_3m": "Sessions in the last 30 days minus the monthly average of the three before.",
        "sessions_90d_vs_prior_275d": "Sessions in the last 90 days minus the days 90-365 count scaled to 90 days.",
        "price_paid_vs_list_90d": "Unit prices paid / catalogue list prices over the last 90 days' order lines.",
        "risen_category_line_share_365d": "Share of the year's order lines in categories whose price rose "
        "(market paid/list level >= 1.04 in the 30 days before the snapshot).",
        "risen_category_share_365d": "Share of the categories bought in the year whose price rose.",
        "days_since_last_complaint": "Days since the last complaint to customer service; null if none.",
    },
    "consent_state": {
        "consent_email_marketing": "Email marketing consent: 1 granted, 0 withdrawn, null never asked.",
        "consent_sms_marketing": "SMS marketing consent: 1 granted, 0 withdrawn, null never asked.",
        "consent_profiling": "Profiling consent: 1 granted, 0 withdrawn, null never asked.",
        "consent_third_party_sharing": "Third-party sharing consent: 1/0/null.",
    },
}
SCORE_FAMILIES: dict[str, dict[str, tuple[str, str]]] = {  # family -> field -> (type, description)
    "churn_scores": {
        "churn_probability": ("float", "Calibrated probability of no order in the next 90 days."),
        "churn_model_version": ("string", "Registered MLflow model version that produced the score."),
        "churn_scored_at": ("string", "Snapshot (as of) the churn score describes, ISO-8601."),
    },
    "next_best_product_scores": {
        "nbp_top_products": ("string", "Recommended product_ids, best first, comma-separated (in catalogue)."),
        "nbp_top_score": ("float", "Ranker score of the first recommendation."),
        "nbp_model_version": ("string", "Registered MLflow model version that produced the list."),
        "nbp_scored_at": ("string", "Time (as of) the recommendations describe, ISO-8601."),
    },
    "campaign_response_scores": {
        "campaign_id": ("string", "The campaign (channel + target category) the response scores describe."),
        "campaign_p_treated": ("float", "P(order within 14 days | contacted)."),
        "campaign_p_control": ("float", "P(order within 14 days | not contacted)."),
        "campaign_uplift": ("float", "Uplift: p_treated - p_control (expected incremental conversions)."),
        "campaign_target": ("float", "Targeting decision: 1 contact, 0 do not (uplift above the threshold)."),
        "campaign_model_version": ("string", "Registered MLflow model version that produced the scores."),
        "campaign_scored_at": ("string", "Time (as of) the scores describe, ISO-8601."),
    },
}
# Session state pushed at request time (POST /events, `cdp events consume`; cdp.serving.events).
# The windowed counts are derived when read, relative to the reading time (`session_features`), so a
# row written an hour ago does not claim its views are still recent; the same function applied at an
# entity timestamp gives point-in-time-correct session features from the offline rows.
SESSION_VIEW = "session_activity"
SESSION_FIELDS: dict[str, tuple[str, str]] = {  # field -> (type, description)
    "view_times_1h": ("int_list", "Epoch seconds of product views in the hour before the row's timestamp."),
    "cart_add_times_1h": ("int_list", "Epoch seconds of add-to-cart events in the hour before the row's timestamp."),
    "search_times_1h": ("int_list", "Epoch seconds of searches in the hour before the row's timestamp."),
    "last_viewed_category": (
        "string",
        "Category of the latest product view (from the catalogue when a product is given).",
    ),
    "last_viewed_product": ("string", "product_id of the latest product view, null when only a category was viewed."),
    "last_viewed_at": ("int", "Epoch seconds of the latest product view."),
    "last_complaint_at": ("int", "Epoch seconds of the latest complaint event."),
}
FEAST_TYPES = {"int": Int64, "bool": Bool, "float": Float64}  # cdp.features.dtypes kinds -> Feast types
_typed = COUNTS | WHOLE_DAYS | FLAGS
if not _typed <= {f for fields in FEATURES.values() for f in fields}:  # a renamed feature must not fall back to Float64
    raise RuntimeError(
        f"cdp.features.dtypes names unknown features: {sorted(_typed - {f for v in FEATURES.values() for f in v})}"
    )
CUSTOMER_VIEWS = ["customer_profile", "purchase_behaviour", "category_mix", "digital_engagement"]
MODEL_VIEWS = {
    "churn_v1": list(FEATURES),
    "next_best_product_v1": CUSTOMER_VIEWS,
    "campaign_response_v1": [*CUSTOMER_VIEWS, "service_signals", "campaign_engagement"],
    "clv_v1": ["purchase_behaviour"],  # BG/NBD + Gamma-Gamma reads recency/frequency/value only
}


def offline_store_kind(offline: str | None = None) -> str:
    """duckdb (embedded default) or spark: CDP_OFFLINE_STORE unless given."""
    kind = (offline or setting("offline_store")).strip().lower()
    if kind not in OFFLINE_STORES:
        raise ValueError(f"CDP_OFFLINE_STORE={kind!r}: choose one of {', '.join(OFFLINE_STORES)}")
    return kind


def batch_source(name: str, path: Path, description: str, offline: str | None = None):
    """A Parquet file as a batch source of the configured offline store (same file, same columns)."""
    if offline_store_kind(offline) == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(
            name=name, path=str(path), file_format="parquet", timestamp_field="event_timestamp", description=description
        )
    return FileSource(name=name, path=str(path), timestamp_field="event_timestamp", description=description)


def feature_views(features_dir: Path, offline: str | None = None) -> dict[str, FeatureView]:
    views = {}
    for name, fields in FEATURES.items():
        source = batch_source(
            f"{name}_source",
            features_dir / f"{name}.parquet",
            f"Monthly snapshots of {name.replace('_', ' ')}.",
            offline,
        )
        views[name] = FeatureView(
            name=name,
            entities=[customer],
            ttl=SNAPSHOT_TTL,
            source=source,
            online=True,
            schema=[Field(name=f, dtype=FEAST_TYPES[feature_kind(f)], description=d) for f, d in fields.items()],
            tags={"built_by": "cdp features", "cadence": "monthly snapshots", "pii": "none"},
        )
    return views


def seed_score_file(features_dir: Path, family: str) -> Path:
    """The empty Parquet behind a PushSource, with explicit column types (Feast needs them)."""
    import pyarrow as pa

    path = features_dir / f"{family}.parquet"
    if not path.exists():
        arrow = {"float": pa.float64(), "string": pa.string()}
        schema = pa.schema(
            [
                ("customer_id", pa.string()),
                ("event_timestamp", pa.timestamp("us", tz="UTC")),
                *((f, arrow[t]) for f, (t, _) in SCORE_FAMILIES[family].items()),
            ]
        )
        from cdp.atomic import write_parquet_atomic

        write_parquet_atomic(schema.empty_table(), path)
    return path


def score_view(
    features_dir: Path, family: str = "churn_scores", offline: str | None = None
) -> tuple[PushSource, FeatureView]:
    """Push source `<family>_push` + feature view `<family>`: scores written back by `cdp score`."""
    batch = batch_source(
        f"{family}_batch", seed_score_file(features_dir, family), "Scores written back by `cdp score`.", offline
    )
    push = PushSource(name=f"{family}_push", batch_source=batch)
    dtypes = {"float": Float64, "string": String}
    view = FeatureView(
        name=family,
        entities=[customer],
        ttl=SCORE_TTL,
        source=push,
        online=True,
        schema=[Field(name=f, dtype=dtypes[t], description=d) for f, (t, d) in SCORE_FAMILIES[family].items()],
        tags={"built_by": "cdp score", "pii": "none"},
    )
    return push, view


def seed_session_file(features_dir: Path) -> Path:
    """The empty Parquet behind the session push source (explicit column types, as for scores);
    `created` breaks ties between rows of one customer with the same event_timestamp."""
    import pyarrow as pa

    path = features_dir / f"{SESSION_VIEW}.parquet"
    if not path.exists():
        arrow = {"int_list": pa.list_(pa.int64()), "string": pa.string(), "int": pa.int64()}
        schema = pa.schema(
            [
                ("customer_id", pa.string()),
                ("event_timestamp", pa.timestamp("us", tz="UTC")),
                ("created", pa.timestamp("us", tz="UTC")),
                *((f, arrow[t]) for f, (t, _) in SESSION_FIELDS.items()),
            ]
        )
        from cdp.atomic import write_parquet_atomic

        features_dir.mkdir(parents=True, exist_ok=True)
        write_parquet_atomic(schema.empty_table(), path)
    return path


def session_view(features_dir: Path, offline: str | None = None):
    """Push source `session_activity_push` + stream feature view `session_activity`: events pushed
    online and offline by the service and the stream consumer. A Kafka deployment swaps the
    PushSource for a KafkaSource with the same batch source (docs/EVENTS.md)."""
    import warnings

    from feast import StreamFeatureView

    # Feast warns "experimental" on each construction (registry reads too); after its import, which adds filters
    warnings.filterwarnings("ignore", message="Stream feature views are experimental", category=RuntimeWarning)

    path = seed_session_file(features_dir)
    if offline_store_kind(offline) == "spark":
        batch = batch_source(f"{SESSION_VIEW}_batch", path, "Session events pushed at request time.", offline)
        batch.created_timestamp_column = "created"
    else:
        batch = FileSource(
            name=f"{SESSION_VIEW}_batch",
            path=str(path),
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
            description="Session events pushed at request time.",
        )
    push = PushSource(name=f"{SESSION_VIEW}_push", batch_source=batch)
    dtypes: dict[str, ComplexFeastType | PrimitiveFeastType] = {
        "int_list": Array(Int64),
        "string": String,
        "int": Int64,
    }
    view = StreamFeatureView(
        name=SESSION_VIEW,
        source=push,
        entities=[customer],
        ttl=SESSION_TTL,
        online=True,
        schema=[Field(name=f, dtype=dtypes[t], description=d) for f, (t, d) in SESSION_FIELDS.items()],
        timestamp_field="event_timestamp",
        tags={"built_by": "POST /events, cdp events consume", "pii": "none"},
    )
    return push, view


def definitions(features_dir: Path, offline: str | None = None) -> list:
    views = feature_views(features_dir, offline)
    pushed = [obj for family in SCORE_FAMILIES for obj in score_view(features_dir, family, offline)]
    pushed += session_view(features_dir, offline)
    services = [
        FeatureService(
            name=name,
            features=[views[v] for v in view_names],
            description=f"Exactly the features model '{name}' trains and serves on.",
            tags={"model": name.removesuffix("_v1")},
        )
        for name, view_names in MODEL_VIEWS.items()
    ]
    return [project, customer, *views.values(), *pushed, *services]
