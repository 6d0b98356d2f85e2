"""Customer-attached event tables: staged records joined to their resolved customer_id.

In:  staged tables + identity/identity_map.parquet.  Out: DataFrames keyed by customer_id,
shared by feature building (features/views.py) and label building (models/*). Anonymous
records (no customer_id) are left out here on purpose: they cannot describe a person.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from cdp.workspace import Workspace


def _staged(ws: Workspace, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    path = ws.staged / f"{table}.parquet"
    return pd.read_parquet(path, columns=columns)


def attach_customers(
    ws: Workspace, table: str, key: str, columns: list[str], identity_map: pd.DataFrame
) -> pd.DataFrame:
    """Rows of `table` that identity resolution linked, with their customer_id (inner join)."""
    path = ws.staged / f"{table}.parquet"
    if not path.exists():
        return pd.DataFrame(columns=["customer_id", key, *columns])
    records = _staged(ws, table, list(dict.fromkeys([key, *columns])))
    records[key] = records[key].astype(str)
    ids = identity_map.loc[identity_map["source_table"] == table, ["source_key", "customer_id"]]
    return records.merge(ids, left_on=key, right_on="source_key").drop(columns="source_key")


@dataclass
class Timeline:
    """Everything known per customer, each table with a timestamp column."""

    orders: pd.DataFrame
    order_lines: pd.DataFrame
    web: pd.DataFrame
    service: pd.DataFrame
    sends: pd.DataFrame
    responses: pd.DataFrame
    crm: pd.DataFrame
    loyalty: pd.DataFrame
    accounts: pd.DataFrame


# Timeline frame -> (staged table, key, columns): the records identity resolution linked, with
# their customer_id. One spec for the pandas Timeline (load_timeline) and the same relations on
# Spark (spark_timeline_sql, feature building with CDP_FEATURE_ENGINE=spark).
ATTACHED = {
    "orders": ("orders", "order_id", ["ordered_at", "channel", "total_amount", "discount_amount", "coupon_code"]),
    "web": ("web_events", "event_id", ["occurred_at", "event_type", "session_id", "device_id"]),
    "service": (
        "service_interactions",
        "interaction_id",
        ["occurred_at", "reason", "resolved", "sentiment", "handle_seconds"],
    ),
    "sends": ("marketing_sends", "send_id", ["campaign_id", "sent_at", "group"]),
    "crm": ("crm_contacts", "record_id", ["created_at", "date_of_birth", "postcode", "email_sha256"]),
    "loyalty": ("loyalty_members", "card_id", ["enrolled_at", "tier", "status", "email_sha256"]),
    "accounts": ("online_accounts", "account_id", ["created_at", "email_sha256"]),
}
SQL_NAMES = {"group": "send_group"}  # a reserved word in SQL: the relations call it send_group
DOUBLES = {"total_amount", "discount_amount", "sentiment", "handle_seconds", "quantity", "unit_price"}


def sql_type(column: str) -> str:
    """SQL type of a timeline column (typed empty relations when an optional table is absent)."""
    if column.endswith("_at") or column == "date_of_birth":
        return "TIMESTAMP"
    return "DOUBLE" if column in DOUBLES else "BOOLEAN" if column == "resolved" else "STRING"


def load_timeline(ws: Workspace) -> Timeline:
    identity_map = pd.read_parquet(ws.path("identity_map"))
    attached = {
        name: attach_customers(ws, table, key, columns, identity_map)
        for name, (table, key, columns) in ATTACHED.items()
    }
    orders, sends = attached["orders"], attached["sends"]
    lines = _staged(ws, "order_lines", ["order_id", "product_id", "quantity", "unit_price"])
    products = _staged(ws, "products", ["product_id", "category", "price"]).rename(columns={"price": "list_price"})
    lines = (
        lines.astype({"order_id": str, "product_id": str})
        .merge(products.astype({"product_id": str}), on="product_id", how="left")
        .merge(orders[["order_id", "customer_id", "ordered_at"]], on="order_id")
    )
    responses_path = ws.staged / "marketing_responses.parquet"
    responses = (
        pd.read_parquet(responses_path)
        if responses_path.exists()
        else pd.DataFrame(columns=["send_id", "event_type", "occurred_at"])
    )
    responses = responses.astype({"send_id": str}).merge(sends[["send_id", "customer_id"]], on="send_id")
    return Timeline(
        order_lines=lines, responses=responses[["send_id", "customer_id", "event_type", "occurred_at"]], **attached
    )


def spark_timeline_sql() -> dict[str, str]:
    """The Timeline as Spark SQL over views `staged_<table>` and `identity_map`, relation names and
    columns as features/views.py reads them (`group` as send_group). Relations depend on earlier
    ones (order_lines on orders, responses on sends): create them in this order."""

    def attached(table: str, key: str, columns: list[str]) -> str:
        selected = "".join(f", r.`{c}` AS {SQL_NAMES.get(c, c)}" for c in columns)
        return (
            f"SELECT CAST(r.{key} AS STRING) AS {key}{selected}, m.customer_id FROM staged_{table} r "
            f"JOIN identity_map m ON m.source_table = '{table}' AND m.source_key = CAST(r.{key} AS STRING)"
        )

    relations = {name: attached(*spec) for name, spec in ATTACHED.items()}
    relations["order_lines"] = """
        SELECT CAST(l.order_id AS STRING) AS order_id, CAST(l.product_id AS STRING) AS product_id, l.quantity,
          l.unit_price, p.category, p.list_price, o.customer_id, o.ordered_at
        FROM staged_order_lines l
        LEFT JOIN (SELECT CAST(product_id AS STRING) AS product_id, category, price AS list_price FROM staged_products) p
          ON p.product_id = CAST(l.product_id AS STRING)
        JOIN orders o ON o.order_id = CAST(l.order_id AS STRING)"""
    relations["responses"] = """
        SELECT CAST(r.send_id AS STRING) AS send_id, s.customer_id, r.event_type, r.occurred_at
        FROM staged_marketing_responses r JOIN sends s ON s.send_id = CAST(r.send_id AS STRING)"""
    return relations


def staged_columns() -> dict[str, dict[str, str]]:
    """Staged table -> the columns the timeline reads, with SQL types (for absent optional tables)."""
    tables = {table: {key: "STRING", **{c: sql_type(c) for c in columns}} for table, key, columns in ATTACHED.values()}
    tables["order_lines"] = {"order_id": "STRING", "product_id": "STRING", "quantity": "DOUBLE", "unit_price": "DOUBLE"}
    tables["products"] = {"product_id": "STRING", "category": "STRING", "price": "DOUBLE"}
    tables["marketing_responses"] = {"send_id": "STRING", "event_type": "STRING", "occurred_at": "TIMESTAMP"}
    return tables
