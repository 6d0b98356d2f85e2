"""The change_signals view on a hand-built timeline: trends, price paid vs list, price-rise exposure
and the last complaint, each only from events before the snapshot."""

from __future__ import annotations

import pandas as pd
import pytest

from cdp.features.incremental import build_features_duckdb
from cdp.features.timeline import Timeline
from cdp.workspace import Workspace

AT = pd.Timestamp("2025-06-01", tz="UTC")


def ts(*days_before: float) -> pd.Series:
    return pd.Series([AT - pd.Timedelta(days=d) for d in days_before])


def timeline() -> Timeline:
    # a: 3 orders a month ago and before, 1 in the last 30 days; b: steady, buys only category "y"
    order_days = {"o1": ("a", 100), "o2": ("a", 70), "o3": ("a", 40), "o4": ("a", 5), "o5": ("b", 10), "o6": ("a", -3)}
    orders = pd.DataFrame(
        {
            "order_id": list(order_days),
            "customer_id": [c for c, _ in order_days.values()],
            "ordered_at": ts(*(d for _, d in order_days.values())),
            "channel": "online",
            "total_amount": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
            "discount_amount": 0.0,
            "coupon_code": None,
        }
    )
    # category x rose 20% twenty days ago (lines after that pay 1.2 x list); y did not
    lines = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3", "o4", "o5", "o6"],
            "product_id": "p",
            "quantity": 1.0,
            "unit_price": [10.0, 10.0, 10.0, 12.0, 5.0, 12.0],
            "category": ["x", "x", "y", "x", "y", "x"],
            "list_price": [10.0, 10.0, 10.0, 10.0, 5.0, 10.0],
        }
    ).merge(orders[["order_id", "customer_id", "ordered_at"]], on="order_id")
    service = pd.DataFrame(
        {
            "interaction_id": ["s1", "s2", "s3"],
            "customer_id": ["a", "a", "a"],
            "occurred_at": ts(50, 12, -1),
            "reason": ["complaint", "inquiry", "complaint"],
            "resolved": True,
            "sentiment": 0.0,
            "handle_seconds": 60.0,
        }
    )
    web = pd.DataFrame(
        {
            "event_id": ["w1", "w2", "w3"],
            "customer_id": "a",
            "occurred_at": ts(60, 45, 2),
            "event_type": "page_view",
            "session_id": ["x1", "x2", "x3"],
            "device_id": "d",
        }
    )
    crm = pd.DataFrame(
        {
            "record_id": ["c1", "c2"],
            "customer_id": ["a", "b"],
            "created_at": ts(400, 400),
            "date_of_birth": pd.NaT,
            "postcode": None,
            "email_sha256": None,
        }
    )
    empty = lambda *cols: pd.DataFrame(
        {c: pd.Series(dtype="datetime64[us, UTC]" if c.endswith("_at") else object) for c in cols}
    )
    return Timeline(
        orders=orders,
        order_lines=lines,
        web=web,
        service=service,
        sends=empty("send_id", "customer_id", "campaign_id", "sent_at", "group"),
        responses=empty("send_id", "customer_id", "event_type", "occurred_at"),
        crm=crm,
        loyalty=empty("card_id", "customer_id", "enrolled_at", "tier", "status", "email_sha256"),
        accounts=empty("account_id", "customer_id", "created_at", "email_sha256"),
    )


def test_change_signals_from_a_hand_built_timeline(tmp_path):
    ws = Workspace(tmp_path)
    build_features_duckdb(ws, timeline(), [AT])
    rows = pd.read_parquet(ws.features / "change_signals.parquet").set_index("customer_id")
    a, b = rows.loc["a"], rows.loc["b"]
    assert a["orders_prior_3m_monthly"] == pytest.approx(3 / 3)  # days 100, 70, 40
    assert a["orders_30d_vs_prior_3m"] == pytest.approx(1 - 1)
    assert a["spend_30d"] == 40.0 and a["spend_prior_3m_monthly"] == pytest.approx(60 / 3)
    assert a["orders_90d_vs_prior_275d"] == pytest.approx(3 - 1 * 90 / 275)
    assert a["sessions_prior_3m_monthly"] == pytest.approx(2 / 3) and a["sessions_30d_vs_prior_3m"] == pytest.approx(
        1 / 3
    )
    # paid / list over the last 90 days: a paid 10+10+12 for 10+10+10 (o6 is after the snapshot)
    assert a["price_paid_vs_list_90d"] == pytest.approx(32 / 30)
    # x's market level in the last 30 days is 1.2 (>= 1.04): 3 of a's 4 lines, 1 of its 2 categories
    assert a["risen_category_line_share_365d"] == pytest.approx(3 / 4)
    assert a["risen_category_share_365d"] == pytest.approx(1 / 2)
    assert b["risen_category_share_365d"] == 0.0 and b["price_paid_vs_list_90d"] == pytest.approx(1.0)
    assert a["days_since_last_complaint"] == 50  # the complaint after the snapshot is not seen
    assert pd.isna(b["days_since_last_complaint"])
