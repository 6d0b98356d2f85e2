"""Customer-attached event tables: staged records joined to their resolved customer_id.

In:  staged tables + identity/identity_map.parquet.  Out: DataFrames keyed by customer_id,
shared by feature building (profiles/signals.py) and label building (models/*). Anonymous
records (no customer_id) are left out here on purpose: they cannot describe a person.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from cdp.paths import Workspace


def _staged(ws: Workspace, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    path = ws.staged / f"{table}.parquet"
    return pd.read_parquet(path, columns=columns)


def attach_customers(ws: Workspace, table: str, key: str, columns: list[str],
                     identity_map: pd.DataFrame) -> pd.DataFrame:
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


def load_timeline(ws: Workspace) -> Timeline:
    identity_map = pd.read_parquet(ws.identity / "identity_map.parquet")
    orders = attach_customers(ws, "orders", "order_id",
                              ["ordered_at", "channel", "total_amount", "discount_amount", "coupon_code"],
                              identity_map)
    lines = _staged(ws, "order_lines", ["order_id", "product_id", "quantity", "unit_price"])
    products = _staged(ws, "products", ["product_id", "category"])
    lines = (lines.astype({"order_id": str, "product_id": str})
             .merge(products.astype({"product_id": str}), on="product_id", how="left")
             .merge(orders[["order_id", "customer_id", "ordered_at"]], on="order_id"))
    sends = attach_customers(ws, "marketing_sends", "send_id", ["campaign_id", "sent_at", "group"],
                             identity_map)
    responses_path = ws.staged / "marketing_responses.parquet"
    responses = (pd.read_parquet(responses_path) if responses_path.exists()
                 else pd.DataFrame(columns=["send_id", "event_type", "occurred_at"]))
    responses = responses.astype({"send_id": str}).merge(sends[["send_id", "customer_id"]], on="send_id")
    return Timeline(
        orders=orders,
        order_lines=lines,
        web=attach_customers(ws, "web_events", "event_id",
                             ["occurred_at", "event_type", "session_id", "device_id"], identity_map),
        service=attach_customers(ws, "service_interactions", "interaction_id",
                                 ["occurred_at", "reason", "resolved", "sentiment", "handle_seconds"],
                                 identity_map),
        sends=sends,
        responses=responses[["send_id", "customer_id", "event_type", "occurred_at"]],
        crm=attach_customers(ws, "crm_contacts", "record_id",
                             ["created_at", "date_of_birth", "postcode", "email_sha256"], identity_map),
        loyalty=attach_customers(ws, "loyalty_members", "card_id",
                                 ["enrolled_at", "tier", "status", "email_sha256"], identity_map),
        accounts=attach_customers(ws, "online_accounts", "account_id", ["created_at", "email_sha256"],
                                  identity_map),
    )
