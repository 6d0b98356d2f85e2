"""Unified profiles and behavioural signals: one row per customer_id per snapshot.

In:  a Timeline (customer-attached events) and snapshot times.
Out: one Parquet file per Feast feature view in `ws.features` (customer_id, event_timestamp,
     features). A snapshot row uses only events strictly before its event_timestamp, so
     Feast's point-in-time join can never hand a model information from the future.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import pandas as pd

from cdp.atomic import write_parquet_atomic
from cdp.features.dtypes import COUNTS, FLAGS, feature_kind
from cdp.features.timeline import Timeline
from cdp.ingest.contract import CONSENT_PURPOSES
from cdp.settings import Settings, setting
from cdp.workspace import Workspace

TIER_RANK = {"bronze": 1, "silver": 2, "gold": 3, "platinum": 4}
INCOME_RANK = {"<25k": 1, "25-50k": 2, "50-75k": 3, "75-100k": 4, "100-150k": 5, ">150k": 6}
# Rank of a known value outside the ranked set (ingest keeps unknown categories as given, e.g. a
# tier 'diamond'): "other", below every known rank; null stays null (no card, no income band).
OTHER_RANK = 0
ENRICHMENT_MAX_AGE_DAYS: int = Settings.model_fields["enrichment_max_age_days"].default  # vendor facts age out


def enrichment_max_age_days() -> int:
    """Retention of vendor facts in days: $CDP_ENRICHMENT_MAX_AGE_DAYS, else 730."""
    return int(setting("enrichment_max_age_days"))


def snapshot_times(data_end: pd.Timestamp, months: int = 18) -> list[pd.Timestamp]:
    """Month starts covering the last `months` months, plus an 'as of now' snapshot."""
    now = (data_end.floor("D") + pd.Timedelta(days=1)).tz_convert("UTC")
    starts = pd.date_range(end=now, periods=months, freq="MS", tz="UTC")
    return sorted({*starts, now})


def data_end(timeline: Timeline) -> pd.Timestamp:
    return pd.Timestamp(timeline.orders["ordered_at"].max()).tz_convert("UTC")


# ---------------------------------------------------------------------------------------------
# One SQL text per relation, run as is by DuckDB (embedded) and Spark SQL (CDP_FEATURE_ENGINE=spark).
# Written in the dialect both accept: CAST(x AS INT), FILTER (WHERE ...), max_by, explicit NULLS
# LAST, joins + window functions instead of correlated/lateral subqueries. The one function they
# spell differently, days between two instants, is written Spark's way, `datediff(end, start)`
# (calendar days in UTC); DuckDB gets it as a one-line macro (DUCKDB_MACROS).
#
# Base relations (same columns on both engines, see features/timeline.py): orders, order_lines,
# web, service, sends (`send_group` = the staged `group`), responses, crm, loyalty, accounts;
# vendor (staged enrichment), consent_raw (staged consent_events), identifier_map, snapshot_times.
# ---------------------------------------------------------------------------------------------
DUCKDB_MACROS = ("CREATE OR REPLACE TEMP MACRO datediff(e, s) AS date_diff('day', CAST(s AS DATE), CAST(e AS DATE))",)


def _case(column: str, ranks: Mapping[str, object], other: object = None) -> str:
    """SQL mapping `column`'s values to `ranks`; any other non-null value to `other` (None: null)."""
    whens = " ".join(f"WHEN {column} = '{k}' THEN {v}" for k, v in ranks.items())
    tail = "" if other is None else f" WHEN {column} IS NOT NULL THEN {other}"
    return f"CASE {whens}{tail} END"


def rank_of(values: pd.Series, ranks: Mapping[str, int]) -> pd.Series:
    """`values` mapped to `ranks`; a non-null value outside them to OTHER_RANK (as `_case`)."""
    return values.map(ranks).where(values.isna() | values.isin(list(ranks)), OTHER_RANK)


CONSENT_NODE_KIND = {"email": "email", "phone": "phone", "account_id": "account", "card_id": "card"}

# Derived inputs, materialized in this order before the views run.
INPUT_SQL = {
    "first_seen": """
        SELECT customer_id, min(ts) AS first_seen FROM (
          SELECT customer_id, created_at AS ts FROM crm UNION ALL
          SELECT customer_id, enrolled_at AS ts FROM loyalty UNION ALL
          SELECT customer_id, created_at AS ts FROM accounts UNION ALL
          SELECT customer_id, ordered_at AS ts FROM orders) stamps
        GROUP BY customer_id""",
    # every customer seen before a snapshot gets a row at that snapshot
    "snapshots": """
        SELECT f.customer_id, t.event_timestamp
        FROM first_seen f JOIN snapshot_times t ON f.first_seen < t.event_timestamp""",
    "tiers": f"""
        SELECT customer_id, enrolled_at, {_case("tier", TIER_RANK, OTHER_RANK)} AS tier_rank FROM loyalty""",
    # Point in time: a date of birth counts from the moment its CRM record existed.
    "births": """
        SELECT customer_id, date_of_birth, created_at FROM crm WHERE date_of_birth IS NOT NULL""",
    # Vendor facts through the hashed email, `linked_at` = when the customer's record carrying that
    # hash first existed (ties: CRM before loyalty before accounts).
    "enrich": f"""
        WITH owners AS (
          SELECT email_sha256, customer_id, linked_at,
            row_number() OVER (PARTITION BY email_sha256
                               ORDER BY linked_at, source, customer_id NULLS LAST) AS nth
          FROM (SELECT email_sha256, customer_id, created_at AS linked_at, 1 AS source FROM crm UNION ALL
                SELECT email_sha256, customer_id, enrolled_at AS linked_at, 2 AS source FROM loyalty UNION ALL
                SELECT email_sha256, customer_id, created_at AS linked_at, 3 AS source FROM accounts) o
          WHERE email_sha256 IS NOT NULL AND customer_id IS NOT NULL AND linked_at IS NOT NULL)
        SELECT v.vendor, o.customer_id, v.as_of, o.linked_at, v.household_size,
          {_case("v.income_band", INCOME_RANK, OTHER_RANK)} AS income_band_rank, v.home_owner, v.car_owner
        FROM vendor v JOIN owners o ON o.email_sha256 = v.email_sha256 AND o.nth = 1""",
    # Consent events attached to customers through the identifier they name; a grant and a
    # withdrawal at the same instant count as a withdrawal (one deterministic answer on every engine).
    "consent": f"""
        SELECT m.customer_id, e.occurred_at, e.purpose, min(CAST(e.granted AS INT)) AS granted
        FROM consent_raw e JOIN identifier_map m
          ON m.node = {_case("e.identifier_type", {k: f"'{v}'" for k, v in CONSENT_NODE_KIND.items()})}
                      || ':' || CAST(e.identifier_norm AS STRING)
        GROUP BY m.customer_id, e.occurred_at, e.purpose""",
}

# Each category's market price level per snapshot time (all customers' lines in the 30 days before
# it, paid / list): the one input of a view shared across customers (change_signals).
MARKET_SQL = """
          SELECT t.event_timestamp, l.category,
            sum(l.quantity * l.unit_price) / sum(l.quantity * l.list_price) AS price_index
          FROM snapshot_times t JOIN order_lines l
            ON l.ordered_at < t.event_timestamp AND l.ordered_at >= t.event_timestamp - INTERVAL 30 DAY
          WHERE l.list_price > 0 AND l.category IS NOT NULL
          GROUP BY t.event_timestamp, l.category"""

SQL = {
    "customer_profile": """
        WITH tier AS (
          SELECT s.customer_id, s.event_timestamp, max(t.tier_rank) AS loyalty_tier_rank, count(*) AS loyalty_cards
          FROM snapshots s JOIN tiers t ON t.customer_id = s.customer_id AND t.enrolled_at < s.event_timestamp
          GROUP BY s.customer_id, s.event_timestamp),
        birth AS (
          SELECT s.customer_id, s.event_timestamp, min(b.date_of_birth) AS date_of_birth
          FROM snapshots s JOIN births b ON b.customer_id = s.customer_id AND b.created_at < s.event_timestamp
          GROUP BY s.customer_id, s.event_timestamp),
        fact AS (  -- the freshest vendor fact that has not aged out; ties (same as_of) broken on every
                   -- column used, so both engines pick the same fact (LIMIT 1 picked any of them)
          SELECT s.customer_id, s.event_timestamp, x.as_of, x.household_size, x.income_band_rank,
            x.home_owner, x.car_owner,
            row_number() OVER (PARTITION BY s.customer_id, s.event_timestamp
                               ORDER BY x.as_of DESC, x.vendor NULLS LAST, x.linked_at DESC NULLS LAST,
                                        x.household_size NULLS LAST, x.income_band_rank NULLS LAST,
                                        x.home_owner NULLS LAST, x.car_owner NULLS LAST) AS nth
          FROM snapshots s JOIN enrich x ON x.customer_id = s.customer_id AND x.as_of < s.event_timestamp
           AND x.linked_at < s.event_timestamp
           AND x.as_of >= s.event_timestamp - INTERVAL {max_age_days} DAY)
        SELECT s.customer_id, s.event_timestamp,
          datediff(s.event_timestamp, f.first_seen) AS tenure_days,
          t.loyalty_tier_rank,
          coalesce(t.loyalty_cards, 0) AS loyalty_cards,
          year(CAST(s.event_timestamp AS DATE)) - year(CAST(b.date_of_birth AS DATE)) AS age_years,
          e.household_size, e.income_band_rank, CAST(e.home_owner AS INT) AS home_owner,
          CAST(e.car_owner AS INT) AS car_owner,
          datediff(s.event_timestamp, e.as_of) AS enrichment_age_days
        FROM snapshots s
        JOIN first_seen f ON f.customer_id = s.customer_id
        LEFT JOIN tier t ON t.customer_id = s.customer_id AND t.event_timestamp = s.event_timestamp
        LEFT JOIN birth b ON b.customer_id = s.customer_id AND b.event_timestamp = s.event_timestamp
        LEFT JOIN fact e ON e.customer_id = s.customer_id AND e.event_timestamp = s.event_timestamp AND e.nth = 1""",
    # Per purpose: 1 granted, 0 withdrawn, null never asked — the latest event at or before the snapshot.
    "consent_state": "SELECT s.customer_id, s.event_timestamp, "
    + ",\n          ".join(
        f"max_by(CAST(c.granted AS INT), c.occurred_at) FILTER (WHERE c.purpose = '{p}') AS consent_{p}"
        for p in CONSENT_PURPOSES
    )
    + """
        FROM snapshots s JOIN consent c ON c.customer_id = s.customer_id AND c.occurred_at <= s.event_timestamp
        GROUP BY s.customer_id, s.event_timestamp""",
    "purchase_behaviour": """
        SELECT s.customer_id, s.event_timestamp,
          datediff(s.event_timestamp, max(o.ordered_at)) AS days_since_last_order,
          datediff(s.event_timestamp, min(o.ordered_at)) AS days_since_first_order,
          count(*) FILTER (WHERE o.ordered_at >= s.event_timestamp - INTERVAL 30 DAY) AS orders_30d,
          count(*) FILTER (WHERE o.ordered_at >= s.event_timestamp - INTERVAL 90 DAY) AS orders_90d,
          count(*) FILTER (WHERE o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY) AS orders_365d,
          count(*) AS orders_lifetime,
          coalesce(sum(o.total_amount) FILTER (WHERE o.ordered_at >= s.event_timestamp - INTERVAL 90 DAY), 0) AS spend_90d,
          coalesce(sum(o.total_amount) FILTER (WHERE o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY), 0) AS spend_365d,
          avg(o.total_amount) FILTER (WHERE o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY) AS avg_order_value_365d,
          avg(CAST(coalesce(o.discount_amount, 0) > 0 OR o.coupon_code IS NOT NULL AS INT))
              FILTER (WHERE o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY) AS discounted_order_share_365d,
          avg(CAST(o.channel = 'store' AS INT))
              FILTER (WHERE o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY) AS store_share_365d,
          avg(CAST(o.channel <> 'store' AS INT))
              FILTER (WHERE o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY) AS digital_share_365d,
          datediff(max(o.ordered_at), min(o.ordered_at)) / greatest(count(*) - 1, 1) AS mean_days_between_orders
        FROM snapshots s JOIN orders o
          ON o.customer_id = s.customer_id AND o.ordered_at < s.event_timestamp
        GROUP BY s.customer_id, s.event_timestamp""",
    "category_mix": """
        WITH per_cat AS (
          SELECT s.customer_id, s.event_timestamp, l.category, sum(l.quantity * l.unit_price) AS spend
          FROM snapshots s JOIN order_lines l
            ON l.customer_id = s.customer_id AND l.ordered_at < s.event_timestamp
           AND l.ordered_at >= s.event_timestamp - INTERVAL 365 DAY
          GROUP BY s.customer_id, s.event_timestamp, l.category)
        SELECT customer_id, event_timestamp,
          max(spend) / nullif(sum(spend), 0) AS top_category_share_365d,
          count(*) AS categories_bought_365d,
          -sum((spend / nullif(total, 0)) * ln(nullif(spend / nullif(total, 0), 0))) AS category_entropy_365d
        FROM (SELECT *, sum(spend) OVER (PARTITION BY customer_id, event_timestamp) AS total FROM per_cat) c
        GROUP BY customer_id, event_timestamp""",
    "digital_engagement": """
        SELECT s.customer_id, s.event_timestamp,
          count(DISTINCT w.session_id) FILTER (WHERE w.occurred_at >= s.event_timestamp - INTERVAL 30 DAY) AS sessions_30d,
          count(DISTINCT w.session_id) FILTER (WHERE w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS sessions_90d,
          count(*) FILTER (WHERE w.event_type = 'product_view' AND w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS product_views_90d,
          count(*) FILTER (WHERE w.event_type = 'search' AND w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS searches_90d,
          count(*) FILTER (WHERE w.event_type = 'add_to_cart' AND w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS cart_adds_90d,
          count(*) FILTER (WHERE w.event_type = 'wishlist_add' AND w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS wishlist_adds_90d,
          greatest(count(DISTINCT w.session_id) FILTER (WHERE w.event_type = 'add_to_cart' AND w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY)
                 - count(DISTINCT w.session_id) FILTER (WHERE w.event_type = 'checkout_start' AND w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY), 0)
              AS abandoned_carts_90d,
          datediff(s.event_timestamp, max(w.occurred_at)) AS days_since_last_visit
        FROM snapshots s JOIN web w
          ON w.customer_id = s.customer_id AND w.occurred_at < s.event_timestamp
         AND w.occurred_at >= s.event_timestamp - INTERVAL 365 DAY
        GROUP BY s.customer_id, s.event_timestamp""",
    "service_signals": """
        SELECT s.customer_id, s.event_timestamp,
          count(*) FILTER (WHERE v.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS contacts_90d,
          count(*) AS contacts_365d,
          count(*) FILTER (WHERE v.reason = 'complaint') AS complaints_365d,
          count(*) FILTER (WHERE NOT coalesce(v.resolved, false)) AS unresolved_365d,
          count(*) FILTER (WHERE v.reason = 'cancellation') AS cancellation_inquiries_365d,
          avg(v.sentiment) AS mean_sentiment_365d,
          min(v.sentiment) AS worst_sentiment_365d,
          coalesce(sum(v.handle_seconds), 0) / 60.0 AS handle_minutes_365d,
          datediff(s.event_timestamp, max(v.occurred_at)) AS days_since_last_contact
        FROM snapshots s JOIN service v
          ON v.customer_id = s.customer_id AND v.occurred_at < s.event_timestamp
         AND v.occurred_at >= s.event_timestamp - INTERVAL 365 DAY
        GROUP BY s.customer_id, s.event_timestamp""",
    "campaign_engagement": """
        WITH sent AS (
          SELECT s.customer_id, s.event_timestamp, m.send_id
          FROM snapshots s JOIN sends m
            ON m.customer_id = s.customer_id AND m.sent_at < s.event_timestamp
           AND m.sent_at >= s.event_timestamp - INTERVAL 365 DAY AND m.send_group = 'treatment'),
        reacted AS (
          SELECT t.customer_id, t.event_timestamp, t.send_id, r.event_type
          FROM sent t JOIN responses r ON r.send_id = t.send_id AND r.occurred_at < t.event_timestamp)
        SELECT t.customer_id, t.event_timestamp,
          count(DISTINCT t.send_id) AS campaigns_received_365d,
          count(DISTINCT r.send_id) FILTER (WHERE r.event_type = 'opened') AS campaigns_opened_365d,
          count(DISTINCT r.send_id) FILTER (WHERE r.event_type = 'clicked') AS campaigns_clicked_365d,
          CAST(count(DISTINCT r.send_id) FILTER (WHERE r.event_type = 'unsubscribed') > 0 AS INT) AS unsubscribed_365d,
          count(DISTINCT r.send_id) FILTER (WHERE r.event_type = 'opened') / count(DISTINCT t.send_id) AS open_rate_365d
        FROM sent t LEFT JOIN reacted r
          ON r.customer_id = t.customer_id AND r.event_timestamp = t.event_timestamp AND r.send_id = t.send_id
        GROUP BY t.customer_id, t.event_timestamp""",
    # Change, not level: this month vs the three before (days 30-120 back, per month), the last 90
    # days vs the 275 before (scaled to 90 days), price paid vs the catalogue list price, exposure to
    # categories whose market price level (all customers' lines in the 30 days before the snapshot,
    # paid / list) is at least RISEN_PRICE_INDEX, and the latest complaint.
    "change_signals": """
        WITH ord AS (
          SELECT s.customer_id, s.event_timestamp,
            count(*) FILTER (WHERE o.ordered_at >= s.event_timestamp - INTERVAL 30 DAY) AS m0,
            CAST(count(*) FILTER (WHERE o.ordered_at < s.event_timestamp - INTERVAL 30 DAY
                                    AND o.ordered_at >= s.event_timestamp - INTERVAL 120 DAY) AS DOUBLE) / 3 AS m3,
            count(*) FILTER (WHERE o.ordered_at >= s.event_timestamp - INTERVAL 90 DAY) AS q0,
            CAST(count(*) FILTER (WHERE o.ordered_at < s.event_timestamp - INTERVAL 90 DAY) AS DOUBLE) * 90 / 275 AS q3,
            coalesce(sum(o.total_amount) FILTER (WHERE o.ordered_at >= s.event_timestamp - INTERVAL 30 DAY), 0) AS s0,
            coalesce(sum(o.total_amount) FILTER (WHERE o.ordered_at < s.event_timestamp - INTERVAL 30 DAY
                                                   AND o.ordered_at >= s.event_timestamp - INTERVAL 120 DAY), 0) / 3 AS s3
          FROM snapshots s JOIN orders o
            ON o.customer_id = s.customer_id AND o.ordered_at < s.event_timestamp
           AND o.ordered_at >= s.event_timestamp - INTERVAL 365 DAY
          GROUP BY s.customer_id, s.event_timestamp),
        ses AS (
          SELECT s.customer_id, s.event_timestamp,
            count(DISTINCT w.session_id) FILTER (WHERE w.occurred_at >= s.event_timestamp - INTERVAL 30 DAY) AS m0,
            CAST(count(DISTINCT w.session_id) FILTER (WHERE w.occurred_at < s.event_timestamp - INTERVAL 30 DAY
                                   AND w.occurred_at >= s.event_timestamp - INTERVAL 120 DAY) AS DOUBLE) / 3 AS m3,
            count(DISTINCT w.session_id) FILTER (WHERE w.occurred_at >= s.event_timestamp - INTERVAL 90 DAY) AS q0,
            CAST(count(DISTINCT w.session_id) FILTER (WHERE w.occurred_at < s.event_timestamp - INTERVAL 90 DAY)
              AS DOUBLE) * 90 / 275 AS q3
          FROM snapshots s JOIN web w
            ON w.customer_id = s.customer_id AND w.occurred_at < s.event_timestamp
           AND w.occurred_at >= s.event_timestamp - INTERVAL 365 DAY
          GROUP BY s.customer_id, s.event_timestamp),
        market AS ({market}),
        paid AS (
          SELECT s.customer_id, s.event_timestamp,
            sum(l.quantity * l.unit_price) FILTER (WHERE l.ordered_at >= s.event_timestamp - INTERVAL 90 DAY)
              / nullif(sum(l.quantity * l.list_price) FILTER (WHERE l.ordered_at >= s.event_timestamp - INTERVAL 90 DAY), 0)
              AS price_paid_vs_list_90d,
            avg(CAST(coalesce(m.price_index, 0) >= {risen_price_index} AS INT)) AS risen_category_line_share_365d,
            count(DISTINCT l.category) FILTER (WHERE m.price_index >= {risen_price_index})
              / count(DISTINCT l.category) AS risen_category_share_365d
          FROM snapshots s JOIN order_lines l
            ON l.customer_id = s.customer_id AND l.ordered_at < s.event_timestamp
           AND l.ordered_at >= s.event_timestamp - INTERVAL 365 DAY
          LEFT JOIN market m ON m.event_timestamp = s.event_timestamp AND m.category = l.category
          WHERE l.list_price > 0
          GROUP BY s.customer_id, s.event_timestamp),
        complaint AS (
          SELECT s.customer_id, s.event_timestamp, datediff(s.event_timestamp, max(v.occurred_at)) AS days
          FROM snapshots s JOIN service v
            ON v.customer_id = s.customer_id AND v.occurred_at < s.event_timestamp AND v.reason = 'complaint'
          GROUP BY s.customer_id, s.event_timestamp)
        SELECT s.customer_id, s.event_timestamp,
          coalesce(o.m3, 0) AS orders_prior_3m_monthly,
          coalesce(o.m0, 0) - coalesce(o.m3, 0) AS orders_30d_vs_prior_3m,
          coalesce(o.q0, 0) - coalesce(o.q3, 0) AS orders_90d_vs_prior_275d,
          coalesce(o.s0, 0) AS spend_30d,
          coalesce(o.s3, 0) AS spend_prior_3m_monthly,
          coalesce(o.s0, 0) - coalesce(o.s3, 0) AS spend_30d_vs_prior_3m,
          coalesce(w.m3, 0) AS sessions_prior_3m_monthly,
          coalesce(w.m0, 0) - coalesce(w.m3, 0) AS sessions_30d_vs_prior_3m,
          coalesce(w.q0, 0) - coalesce(w.q3, 0) AS sessions_90d_vs_prior_275d,
          p.price_paid_vs_list_90d, p.risen_category_line_share_365d, p.risen_category_share_365d,
          c.days AS days_since_last_complaint
        FROM snapshots s
        LEFT JOIN ord o ON o.customer_id = s.customer_id AND o.event_timestamp = s.event_timestamp
        LEFT JOIN ses w ON w.customer_id = s.customer_id AND w.event_timestamp = s.event_timestamp
        LEFT JOIN paid p ON p.customer_id = s.customer_id AND p.event_timestamp = s.event_timestamp
        LEFT JOIN complaint c ON c.customer_id = s.customer_id AND c.event_timestamp = s.event_timestamp""",
}
RISEN_PRICE_INDEX = 1.04  # a category's paid/list level this high means its price rose (list-price noise is < 1%)


def view_body(name: str) -> str:
    """The view's own SQL (one row per (customer, snapshot) with any events) with its settings filled in."""
    return SQL[name].format(
        max_age_days=enrichment_max_age_days(), risen_price_index=RISEN_PRICE_INDEX, market=MARKET_SQL
    )


def _typed(column: str) -> str:
    """A feature in its Feast type (cdp.features.dtypes): counts BIGINT (0 where the view has no
    row: nothing was counted), flags BOOLEAN (false likewise), everything else DOUBLE (null kept)."""
    if column in COUNTS:
        return f"CAST(coalesce(v.{column}, 0) AS BIGINT) AS {column}"
    if column in FLAGS:
        return f"coalesce(CAST(v.{column} AS BOOLEAN), false) AS {column}"
    kind = {"int": "BIGINT", "float": "DOUBLE"}[feature_kind(column)]
    return f"CAST(v.{column} AS {kind}) AS {column}"


def view_sql(name: str, columns: list[str]) -> str:
    """A view's final rows: every (customer, snapshot) of the grid, its features typed (`_typed`),
    ordered by snapshot then customer_id. Same text on both engines."""
    selected = ", ".join(_typed(c) for c in columns)
    return f"""SELECT g.customer_id, g.event_timestamp, {selected}
        FROM snapshots g LEFT JOIN ({view_body(name)}) v
          ON v.customer_id = g.customer_id AND v.event_timestamp = g.event_timestamp
        ORDER BY g.event_timestamp, g.customer_id"""


def feature_engine() -> str:
    """Which engine builds the feature views: $CDP_FEATURE_ENGINE (duckdb | spark), default duckdb."""
    return str(setting("feature_engine"))


def consent_events(ws: Workspace) -> pd.DataFrame:
    """Consent events attached to customers through the identifier they name."""
    path = ws.staged / "consent_events.parquet"
    if not path.exists():
        return pd.DataFrame(columns=["customer_id", "occurred_at", "purpose", "granted"])
    events = pd.read_parquet(path, columns=["occurred_at", "identifier_norm", "identifier_type", "purpose", "granted"])
    events["node"] = events["identifier_type"].map(CONSENT_NODE_KIND) + ":" + events["identifier_norm"].astype(str)
    nodes = pd.read_parquet(ws.identity / "identifier_map.parquet")
    return events.merge(nodes, on="node")[["customer_id", "occurred_at", "purpose", "granted"]]


def vendor_facts(ws: Workspace, timeline: Timeline) -> pd.DataFrame:
    """Vendor facts attached to customers through the hashed email, with `linked_at`: when the
    customer's record carrying that hash first existed. Point in time, a fact may be used only
    once both its as_of and its link are before the snapshot."""
    path = ws.staged / "enrichment.parquet"
    columns = [
        "vendor",
        "customer_id",
        "as_of",
        "linked_at",
        "household_size",
        "income_band_rank",
        "home_owner",
        "car_owner",
    ]
    if not path.exists():
        return pd.DataFrame(columns=columns)
    vendor = pd.read_parquet(path)
    owners = pd.concat(
        [
            timeline.crm[["email_sha256", "customer_id", "created_at"]].rename(columns={"created_at": "linked_at"}),
            timeline.loyalty[["email_sha256", "customer_id", "enrolled_at"]].rename(
                columns={"enrolled_at": "linked_at"}
            ),
            timeline.accounts[["email_sha256", "customer_id", "created_at"]].rename(
                columns={"created_at": "linked_at"}
            ),
        ]
    )
    owners = owners.dropna().sort_values("linked_at", kind="stable").drop_duplicates("email_sha256")
    joined = vendor.merge(owners, on="email_sha256")
    joined["income_band_rank"] = rank_of(joined["income_band"], INCOME_RANK)
    return joined[columns]


def empty_relation(columns: dict[str, str]) -> str:
    """SQL for an empty table with these columns (name -> SQL type): a missing optional input."""
    return "SELECT " + ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in columns.items()) + " WHERE 1 = 0"


# Staged inputs read as they are (not part of the Timeline); typed empty tables when absent.
STAGED_INPUTS = {
    "vendor": (
        "enrichment",
        {
            "vendor": "STRING",
            "as_of": "TIMESTAMP",
            "email_sha256": "STRING",
            "household_size": "DOUBLE",
            "income_band": "STRING",
            "home_owner": "BOOLEAN",
            "car_owner": "BOOLEAN",
        },
    ),
    "consent_raw": (
        "consent_events",
        {
            "occurred_at": "TIMESTAMP",
            "identifier_norm": "STRING",
            "identifier_type": "STRING",
            "purpose": "STRING",
            "granted": "BOOLEAN",
        },
    ),
}


def view_columns(con: duckdb.DuckDBPyConnection, name: str) -> list[str]:
    """The view's feature columns (its SQL's output without the entity key and timestamp)."""
    return [c for c in con.sql(view_body(name)).columns if c not in ("customer_id", "event_timestamp")]


def connect(ws: Workspace, timeline: Timeline, snapshots: list[pd.Timestamp]) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection holding the base relations and the derived inputs (INPUT_SQL, the
    `snapshots` grid of every customer at every snapshot time) the views' SQL reads."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # calendar days in UTC, as Spark (spark.sql.session.timeZone)
    for macro in DUCKDB_MACROS:
        con.execute(macro)
    for name, frame in timeline_relations(timeline).items():
        con.register(name, frame)
    for name, (table, typed) in STAGED_INPUTS.items():
        path = ws.staged / f"{table}.parquet"
        con.execute(
            f"CREATE TEMP VIEW {name} AS "
            + (f"SELECT {', '.join(typed)} FROM read_parquet('{path}')" if path.exists() else empty_relation(typed))
        )
    identifiers = ws.identity / "identifier_map.parquet"
    con.execute(
        "CREATE TEMP VIEW identifier_map AS "
        + (
            f"SELECT node, customer_id FROM read_parquet('{identifiers}')"
            if identifiers.exists()
            else empty_relation({"node": "STRING", "customer_id": "STRING"})
        )
    )
    times = pd.DataFrame({"event_timestamp": pd.to_datetime(list(snapshots), utc=True)})
    con.register("times_frame", times.astype({"event_timestamp": "datetime64[us, UTC]"}))
    con.execute("CREATE OR REPLACE TEMP TABLE snapshot_times AS SELECT * FROM times_frame")
    for name, sql in INPUT_SQL.items():
        con.execute(f"CREATE TEMP TABLE {name} AS {sql}")
    return con


def timeline_relations(timeline: Timeline) -> dict[str, pd.DataFrame]:
    """The Timeline's frames under the base-relation names the SQL reads (`group` -> `send_group`)."""
    return {
        "orders": timeline.orders,
        "order_lines": timeline.order_lines,
        "web": timeline.web,
        "service": timeline.service,
        "sends": timeline.sends.rename(columns={"group": "send_group"}),
        "responses": timeline.responses,
        "crm": timeline.crm,
        "loyalty": timeline.loyalty,
        "accounts": timeline.accounts,
    }


FLOAT_DECIMALS = 10


def write_feature_table(ws: Workspace, name: str, frame: pd.DataFrame) -> None:
    """Parquet with microsecond UTC timestamps and features in their Feast types: int64 counts,
    bool flags, float64 otherwise (what Feast's sources and the online writer expect)."""
    frame = frame.copy()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    for column in frame.columns.difference(["customer_id", "event_timestamp"]):
        frame[column] = typed_column(name, column, frame[column])
    write_parquet_atomic(frame, ws.features / f"{name}.parquet")


def typed_column(view: str, column: str, values: pd.Series) -> pd.Series:
    """`values` as the feature's dtype; a null or fractional value in a whole-number or flag
    feature is an error naming it (the SQL makes them non-null: a null here is a bug, not data)."""
    kind = feature_kind(column)
    if kind == "bool" and pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("bool")
    numbers = pd.to_numeric(values, errors="raise").astype("float64")
    if kind == "float":
        # DuckDB's parallel sums differ in the last bit (1e-16) from run to run; LightGBM's bins
        # then move and models trained on the same data differ (scripts/parity.py). 10 decimals
        # is far below any feature's meaning and makes the same data give the same tables.
        return numbers.round(FLOAT_DECIMALS)
    bad = numbers.isna() | (numbers != numbers.round()) | (kind == "bool") & ~numbers.isin([0.0, 1.0])
    if bad.any():
        raise ValueError(
            f"feature view {view!r}: {column} must be a non-null {'flag (0/1)' if kind == 'bool' else 'whole number'}"
            f", got {values[bad].iloc[0]!r} in {int(bad.sum())} row(s)"
        )
    return numbers.astype("bool" if kind == "bool" else "int64")
