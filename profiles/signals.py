"""Unified profiles and behavioural signals: one row per customer_id per snapshot.

In:  a Timeline (customer-attached events) and snapshot times.
Out: one Parquet file per Feast feature view in `ws.features` (customer_id, event_timestamp,
     features). A snapshot row uses only events strictly before its event_timestamp, so
     Feast's point-in-time join can never hand a model information from the future.
"""
from __future__ import annotations

import os

import duckdb
import pandas as pd

from cdp.paths import Workspace
from profiles.contract import CONSENT_PURPOSES
from profiles.timeline import Timeline

TIER_RANK = {"bronze": 1, "silver": 2, "gold": 3, "platinum": 4}
INCOME_RANK = {"<25k": 1, "25-50k": 2, "50-75k": 3, "75-100k": 4, "100-150k": 5, ">150k": 6}
ENRICHMENT_MAX_AGE_DAYS = 730  # vendor facts older than this have aged out (default)


def enrichment_max_age_days() -> int:
    """Retention of vendor facts in days: $CDP_ENRICHMENT_MAX_AGE_DAYS, else 730."""
    raw = os.environ.get("CDP_ENRICHMENT_MAX_AGE_DAYS", "").strip()
    if not raw:
        return ENRICHMENT_MAX_AGE_DAYS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"CDP_ENRICHMENT_MAX_AGE_DAYS: must be a whole number of days >= 1, got '{raw}'")
    return int(raw)


def snapshot_times(data_end: pd.Timestamp, months: int = 18) -> list[pd.Timestamp]:
    """Month starts covering the last `months` months, plus an 'as of now' snapshot."""
    now = (data_end.floor("D") + pd.Timedelta(days=1)).tz_convert("UTC")
    starts = pd.date_range(end=now, periods=months, freq="MS", tz="UTC")
    return sorted({*starts, now})


def data_end(timeline: Timeline) -> pd.Timestamp:
    return pd.Timestamp(timeline.orders["ordered_at"].max()).tz_convert("UTC")


SQL = {
    "purchase_behaviour": """
        SELECT s.customer_id, s.event_timestamp,
          date_diff('day', max(o.ordered_at), s.event_timestamp) AS days_since_last_order,
          date_diff('day', min(o.ordered_at), s.event_timestamp) AS days_since_first_order,
          count(*) FILTER (o.ordered_at >= s.event_timestamp - INTERVAL 30 DAY) AS orders_30d,
          count(*) FILTER (o.ordered_at >= s.event_timestamp - INTERVAL 90 DAY) AS orders_90d,
          count(*) FILTER (o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY) AS orders_365d,
          count(*) AS orders_lifetime,
          coalesce(sum(o.total_amount) FILTER (o.ordered_at >= s.event_timestamp - INTERVAL 90 DAY), 0) AS spend_90d,
          coalesce(sum(o.total_amount) FILTER (o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY), 0) AS spend_365d,
          avg(o.total_amount) FILTER (o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY) AS avg_order_value_365d,
          avg((coalesce(o.discount_amount, 0) > 0 OR o.coupon_code IS NOT NULL)::INT)
              FILTER (o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY) AS discounted_order_share_365d,
          avg((o.channel = 'store')::INT) FILTER (o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY) AS store_share_365d,
          avg((o.channel <> 'store')::INT) FILTER (o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY) AS digital_share_365d,
          date_diff('day', min(o.ordered_at), max(o.ordered_at)) / greatest(count(*) - 1, 1) AS mean_days_between_orders
        FROM snapshots s JOIN orders o
          ON o.customer_id = s.customer_id AND o.ordered_at < s.event_timestamp
        GROUP BY s.customer_id, s.event_timestamp""",
    "category_mix": """
        WITH per_cat AS (
          SELECT s.customer_id, s.event_timestamp, l.category, sum(l.quantity * l.unit_price) AS spend
          FROM snapshots s JOIN order_lines l
            ON l.customer_id = s.customer_id AND l.ordered_at < s.event_timestamp
           AND l.ordered_at >= s.event_timestamp - INTERVAL 365 DAY
          GROUP BY ALL)
        SELECT customer_id, event_timestamp,
          max(spend) / nullif(sum(spend), 0) AS top_category_share_365d,
          count(*) AS categories_bought_365d,
          -sum((spend / nullif(total, 0)) * ln(nullif(spend / nullif(total, 0), 0))) AS category_entropy_365d
        FROM (SELECT *, sum(spend) OVER (PARTITION BY customer_id, event_timestamp) AS total FROM per_cat)
        GROUP BY ALL""",
    "digital_engagement": """
        SELECT s.customer_id, s.event_timestamp,
          count(DISTINCT w.session_id) FILTER (w.occurred_at >= s.event_timestamp - INTERVAL 30 DAY) AS sessions_30d,
          count(DISTINCT w.session_id) FILTER (w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS sessions_90d,
          count(*) FILTER (w.event_type = 'product_view' AND w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS product_views_90d,
          count(*) FILTER (w.event_type = 'search' AND w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS searches_90d,
          count(*) FILTER (w.event_type = 'add_to_cart' AND w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS cart_adds_90d,
          count(*) FILTER (w.event_type = 'wishlist_add' AND w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS wishlist_adds_90d,
          greatest(count(DISTINCT w.session_id) FILTER (w.event_type = 'add_to_cart' AND w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY)
                 - count(DISTINCT w.session_id) FILTER (w.event_type = 'checkout_start' AND w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY), 0)
              AS abandoned_carts_90d,
          date_diff('day', max(w.occurred_at), s.event_timestamp) AS days_since_last_visit
        FROM snapshots s JOIN web w
          ON w.customer_id = s.customer_id AND w.occurred_at < s.event_timestamp
         AND w.occurred_at >= s.event_timestamp - INTERVAL 365 DAY
        GROUP BY s.customer_id, s.event_timestamp""",
    "service_signals": """
        SELECT s.customer_id, s.event_timestamp,
          count(*) FILTER (v.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS contacts_90d,
          count(*) AS contacts_365d,
          count(*) FILTER (v.reason = 'complaint') AS complaints_365d,
          count(*) FILTER (NOT coalesce(v.resolved, false)) AS unresolved_365d,
          count(*) FILTER (v.reason = 'cancellation') AS cancellation_inquiries_365d,
          avg(v.sentiment) AS mean_sentiment_365d,
          min(v.sentiment) AS worst_sentiment_365d,
          coalesce(sum(v.handle_seconds), 0) / 60.0 AS handle_minutes_365d,
          date_diff('day', max(v.occurred_at), s.event_timestamp) AS days_since_last_contact
        FROM snapshots s JOIN service v
          ON v.customer_id = s.customer_id AND v.occurred_at < s.event_timestamp
         AND v.occurred_at >= s.event_timestamp - INTERVAL 365 DAY
        GROUP BY s.customer_id, s.event_timestamp""",
    "campaign_engagement": """
        WITH sent AS (
          SELECT s.customer_id, s.event_timestamp, m.send_id
          FROM snapshots s JOIN sends m
            ON m.customer_id = s.customer_id AND m.sent_at < s.event_timestamp
           AND m.sent_at >= s.event_timestamp - INTERVAL 365 DAY AND m."group" = 'treatment'),
        reacted AS (
          SELECT t.customer_id, t.event_timestamp, t.send_id, r.event_type
          FROM sent t JOIN responses r ON r.send_id = t.send_id AND r.occurred_at < t.event_timestamp)
        SELECT t.customer_id, t.event_timestamp,
          count(DISTINCT t.send_id) AS campaigns_received_365d,
          count(DISTINCT r.send_id) FILTER (r.event_type = 'opened') AS campaigns_opened_365d,
          count(DISTINCT r.send_id) FILTER (r.event_type = 'clicked') AS campaigns_clicked_365d,
          (count(DISTINCT r.send_id) FILTER (r.event_type = 'unsubscribed') > 0)::INT AS unsubscribed_365d,
          count(DISTINCT r.send_id) FILTER (r.event_type = 'opened') / count(DISTINCT t.send_id) AS open_rate_365d
        FROM sent t LEFT JOIN reacted r USING (customer_id, event_timestamp, send_id)
        GROUP BY ALL""",
}


def _profile(timeline: Timeline, enrichment: pd.DataFrame, con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Tenure, loyalty, age and the freshest enrichment fact that has not aged out."""
    tiers = timeline.loyalty.assign(tier_rank=timeline.loyalty["tier"].map(TIER_RANK))
    # Point in time: a date of birth counts from the moment its CRM record existed.
    births = timeline.crm.dropna(subset=["date_of_birth"])[["customer_id", "date_of_birth", "created_at"]]
    con.register("tiers", tiers)
    con.register("births", births)
    con.register("enrich", enrichment)
    return con.execute(f"""
        SELECT s.customer_id, s.event_timestamp,
          date_diff('day', f.first_seen, s.event_timestamp) AS tenure_days,
          (SELECT max(t.tier_rank) FROM tiers t WHERE t.customer_id = s.customer_id
             AND t.enrolled_at < s.event_timestamp) AS loyalty_tier_rank,
          (SELECT count(*) FROM tiers t WHERE t.customer_id = s.customer_id
             AND t.enrolled_at < s.event_timestamp) AS loyalty_cards,
          date_diff('year', CAST((SELECT min(b.date_of_birth) FROM births b WHERE b.customer_id = s.customer_id
                                    AND b.created_at < s.event_timestamp) AS DATE),
                    CAST(s.event_timestamp AS DATE)) AS age_years,
          e.household_size, e.income_band_rank, e.home_owner::INT AS home_owner, e.car_owner::INT AS car_owner,
          date_diff('day', e.as_of, s.event_timestamp) AS enrichment_age_days
        FROM snapshots s
        JOIN first_seen f ON f.customer_id = s.customer_id
        LEFT JOIN LATERAL (
          SELECT * FROM enrich x WHERE x.customer_id = s.customer_id AND x.as_of < s.event_timestamp
            AND x.linked_at < s.event_timestamp
            AND x.as_of >= s.event_timestamp - INTERVAL {enrichment_max_age_days()} DAY
          ORDER BY x.as_of DESC LIMIT 1) e ON true
    """).df()


def first_seen_times(timeline: Timeline) -> pd.Series:
    """When each customer first appears in any profile record or order."""
    stamps = pd.concat([
        timeline.crm[["customer_id", "created_at"]].rename(columns={"created_at": "ts"}),
        timeline.loyalty[["customer_id", "enrolled_at"]].rename(columns={"enrolled_at": "ts"}),
        timeline.accounts[["customer_id", "created_at"]].rename(columns={"created_at": "ts"}),
        timeline.orders[["customer_id", "ordered_at"]].rename(columns={"ordered_at": "ts"}),
    ])
    return stamps.groupby("customer_id")["ts"].min()


CONSENT_NODE_KIND = {"email": "email", "phone": "phone", "account_id": "account", "card_id": "card"}


def consent_events(ws: Workspace) -> pd.DataFrame:
    """Consent events attached to customers through the identifier they name."""
    path = ws.staged / "consent_events.parquet"
    if not path.exists():
        return pd.DataFrame(columns=["customer_id", "occurred_at", "purpose", "granted"])
    events = pd.read_parquet(path, columns=["occurred_at", "identifier_norm", "identifier_type", "purpose", "granted"])
    events["node"] = events["identifier_type"].map(CONSENT_NODE_KIND) + ":" + events["identifier_norm"].astype(str)
    nodes = pd.read_parquet(ws.identity / "identifier_map.parquet")
    return events.merge(nodes, on="node")[["customer_id", "occurred_at", "purpose", "granted"]]


def _consent(ws: Workspace, con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per purpose: 1 granted, 0 withdrawn, null never asked — the latest event before the snapshot."""
    con.register("consent", consent_events(ws))
    columns = ",\n".join(
        f"arg_max(c.granted::INT, c.occurred_at) FILTER (c.purpose = '{p}') AS consent_{p}" for p in CONSENT_PURPOSES)
    return con.execute(f"""
        SELECT s.customer_id, s.event_timestamp, {columns}
        FROM snapshots s JOIN consent c ON c.customer_id = s.customer_id AND c.occurred_at <= s.event_timestamp
        GROUP BY ALL""").df()


def vendor_facts(ws: Workspace, timeline: Timeline) -> pd.DataFrame:
    """Vendor facts attached to customers through the hashed email, with `linked_at`: when the
    customer's record carrying that hash first existed. Point in time, a fact may be used only
    once both its as_of and its link are before the snapshot."""
    path = ws.staged / "enrichment.parquet"
    columns = ["vendor", "customer_id", "as_of", "linked_at", "household_size", "income_band_rank",
               "home_owner", "car_owner"]
    if not path.exists():
        return pd.DataFrame(columns=columns)
    vendor = pd.read_parquet(path)
    owners = pd.concat([
        timeline.crm[["email_sha256", "customer_id", "created_at"]].rename(columns={"created_at": "linked_at"}),
        timeline.loyalty[["email_sha256", "customer_id", "enrolled_at"]].rename(columns={"enrolled_at": "linked_at"}),
        timeline.accounts[["email_sha256", "customer_id", "created_at"]].rename(columns={"created_at": "linked_at"})])
    owners = owners.dropna().sort_values("linked_at", kind="stable").drop_duplicates("email_sha256")
    joined = vendor.merge(owners, on="email_sha256")
    joined["income_band_rank"] = joined["income_band"].map(INCOME_RANK)
    return joined[columns]


def _enrichment(ws: Workspace, timeline: Timeline) -> pd.DataFrame:
    return vendor_facts(ws, timeline).drop(columns=["vendor"])


def build_features(ws: Workspace, timeline: Timeline, snapshots: list[pd.Timestamp],
                   progress=None) -> dict[str, int]:
    """Write one Parquet per feature view; returns rows written per view."""
    con = duckdb.connect()
    first_seen = first_seen_times(timeline)
    con.register("first_seen", first_seen.rename("first_seen").reset_index())
    grid = pd.DataFrame([(c, s) for s in snapshots for c in first_seen[first_seen < s].index],
                        columns=["customer_id", "event_timestamp"])
    grid["event_timestamp"] = pd.to_datetime(grid["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    con.register("snapshots", grid)
    for name, frame in (("orders", timeline.orders), ("order_lines", timeline.order_lines),
                        ("web", timeline.web), ("service", timeline.service),
                        ("sends", timeline.sends), ("responses", timeline.responses)):
        con.register(name, frame)
    views = {"customer_profile": lambda: _profile(timeline, _enrichment(ws, timeline), con),
             "consent_state": lambda: _consent(ws, con)}
    views.update({name: (lambda sql=sql: con.execute(sql).df()) for name, sql in SQL.items()})
    ws.features.mkdir(parents=True, exist_ok=True)
    written = {}
    for step, (name, build) in enumerate(views.items()):
        frame = grid.merge(build(), on=["customer_id", "event_timestamp"], how="left")
        write_feature_table(ws, name, frame)
        written[name] = len(frame)
        if progress:
            progress(name, step + 1, len(views))
    return written


def write_feature_table(ws: Workspace, name: str, frame: pd.DataFrame) -> None:
    """Parquet with microsecond UTC timestamps and float features (what Feast/DuckDB expect)."""
    frame = frame.copy()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    for column in frame.columns.difference(["customer_id", "event_timestamp"]):
        frame[column] = pd.to_numeric(frame[column], errors="raise").astype("float64")
    frame.to_parquet(ws.features / f"{name}.parquet", index=False)
