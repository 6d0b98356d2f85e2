"""Session state folding and the features derived from it (cdp.serving.events), no stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from cdp.serving.events import Event, boost, fold, recent_category, session_features

NOW = datetime(2026, 12, 3, 21, 0, tzinfo=UTC)
CATEGORY = {"P1": "apparel", "P2": "home"}


def event(kind: str, minutes_ago: float, **extra) -> Event:
    return Event(customer_id="c1", event_type=kind, timestamp=NOW - timedelta(minutes=minutes_ago), **extra)


def test_counts_are_the_last_hour_at_reading_time_and_late_views_do_not_win():
    state, stamp = fold(None, [event("product_view", 50, product_id="P1"), event("search", 10)], CATEGORY)
    assert stamp == NOW - timedelta(minutes=10)
    state, _ = fold(state, [event("product_view", 55, product_id="P2")], CATEGORY)  # late, older than P1's view
    now = session_features(state, NOW)
    assert (now["session_views_1h"], now["session_searches_1h"]) == (2, 1)
    assert now["last_viewed_category"] == "apparel" and now["last_viewed_product"] == "P1"
    later = session_features(state, NOW + timedelta(minutes=11))  # both views leave the hour, the search stays
    assert (later["session_views_1h"], later["session_searches_1h"]) == (0, 1)
    assert recent_category(session_features(state, NOW + timedelta(minutes=11))) is None


def test_complaint_counts_on_its_utc_day_only():
    state, _ = fold(None, [event("complaint", 30)], CATEGORY)
    assert session_features(state, NOW)["complaint_today"] == 1
    assert session_features(state, NOW + timedelta(hours=4))["complaint_today"] == 0
    assert session_features(None, NOW)["complaint_today"] == 0


def test_events_name_the_bad_field():
    with pytest.raises(ValidationError, match="event_type"):
        Event(customer_id="c1", event_type="page_view", timestamp=NOW)
    with pytest.raises(ValidationError, match="timestamp"):
        Event(customer_id="c1", event_type="search", timestamp="2026-12-03T21:00:00")  # no time zone
    with pytest.raises(ValidationError, match="search_query"):
        Event(customer_id="c1", event_type="search", timestamp=NOW, search_query="my address")


def test_boost_puts_the_category_first_and_fills_from_popular_products():
    ranked = [
        {"product_id": p, "category": c, "score": s, "rank": i}
        for i, (p, c, s) in enumerate([("A", "x", 3.0), ("B", "y", 2.0), ("C", "x", 1.0)], start=1)
    ]
    got = boost(ranked, "y", 3, 2, ["B", "D", "E"], skip={"D"})
    assert [p["product_id"] for p in got] == ["B", "E", "A"]
    assert [p["rank"] for p in got] == [1, 2, 3] and got[1]["score"] is None and got[0]["session_boost"]
    assert boost(ranked, None, 2, 2, [], set()) == ranked[:2]
