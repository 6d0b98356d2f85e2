"""Request-time events: POST /events on the real `bentoml serve`, seen by /profile and
/next_best_product; the Redis Streams consumer on a real redis-server; the offline rows."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest

from cdp.serving.server import running_server
from cdp.workspace import Workspace
from tests.conftest import free_port
from tests.services import redis_server


@pytest.fixture(scope="module")
def events_ws(pipeline_ws, tmp_path_factory) -> Workspace:
    """A copy with every champion (events write into it: the shared workspace stays as is)."""
    from tests.conftest import with_every_champion

    return with_every_champion(pipeline_ws, tmp_path_factory.mktemp("events") / "ws")[0]


def profiled(ws: Workspace, withdrawn: bool = False) -> list[str]:
    """Scored customers who may be profiled (consent granted or never asked), or those who withdrew it."""
    frame = pd.read_parquet(ws.features / "consent_state.parquet")
    frame = frame[frame["event_timestamp"] == frame["event_timestamp"].max()]
    scored = set(pd.read_parquet(ws.features / "churn_scores.parquet")["customer_id"])
    chosen = frame[(frame["consent_profiling"] == 0) == withdrawn]["customer_id"].tolist()
    return chosen if withdrawn else [c for c in chosen if c in scored]  # withdrawn customers are never scored


def now(seconds_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


@pytest.mark.slow
def test_an_event_posted_changes_profile_and_next_best_product(events_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("CDP_API_KEY", "k-events")
    key = {"X-API-Key": "k-events"}
    customer, withdrawn = profiled(events_ws)[0], profiled(events_ws, withdrawn=True)[0]
    with running_server(events_ws, free_port(), log_path=tmp_path / "bentoml.log") as url:
        post = lambda route, body, headers=key: httpx.post(f"{url}/{route}", json=body, headers=headers, timeout=30)
        before = post("next_best_product", {"customer_id": customer, "k": 5}).json()["products"]
        assert post("profile", {"customer_id": customer}).json()["session"]["session_views_1h"] == 0
        products = pd.read_parquet(events_ws.staged / "products.parquet")
        category = sorted(set(products["category"]) - {before[0]["category"]})[0]
        answer = post(
            "events",
            {
                "events": [
                    {"customer_id": customer, "event_type": "product_view", "timestamp": now(1), "category": category},
                    {"customer_id": customer, "event_type": "search", "timestamp": now()},
                    {"customer_id": withdrawn, "event_type": "search", "timestamp": now()},
                    {"customer_id": "cus_nobody", "event_type": "search", "timestamp": now()},
                ]
            },
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["accepted"], body["customers"]) == (2, 1)
        assert {e["customer_id"] for e in body["errors"]} == {withdrawn, "cus_nobody"}
        session = post("profile", {"customer_id": customer}).json()["session"]
        assert session["session_views_1h"] == 1 and session["session_searches_1h"] == 1
        assert session["last_viewed_category"] == category and session["complaint_today"] == 0
        after = post("next_best_product", {"customer_id": customer, "k": 5}).json()["products"]
        assert len(after) == 5 and after != before
        assert after[0]["category"] == category and after[0]["session_boost"] is True
        assert post("events", {"events": [{"customer_id": customer}]}, headers={}).status_code == 401
        bad = {
            "unknown type": ({"event_type": "page_view"}, "event_type"),
            "no time zone": ({"timestamp": "2026-12-03T10:00:00"}, "timestamp"),
            "too old": ({"timestamp": now(3 * 86400)}, "CDP_EVENTS_MAX_AGE_HOURS"),
            "unknown product": ({"event_type": "add_to_cart", "product_id": "nope"}, "product_id"),
            "cart without product": ({"event_type": "add_to_cart"}, "product_id"),
            "unknown category": ({"event_type": "product_view", "category": "nope"}, "category"),
            "extra field": ({"search_query": "an address"}, "search_query"),
        }
        for case, (change, field) in bad.items():
            event = {"customer_id": customer, "event_type": "search", "timestamp": now(), **change}
            response = post("events", {"events": [event]})
            assert 400 <= response.status_code < 500 and field in response.text, (case, response.text)
        assert post("events", {"events": []}).status_code == 400
        too_many = [{"customer_id": customer, "event_type": "search", "timestamp": now()}] * 1001
        assert post("events", {"events": too_many}).status_code == 400
        huge = b'{"events": [' + b'{"customer_id": "x"},' * 100_000 + b"{}]}"
        response = httpx.post(
            f"{url}/events", content=huge, headers={**key, "Content-Type": "application/json"}, timeout=30
        )
        assert response.status_code == 413
    # The same events are in the offline store: a point-in-time join sees them only after they happened.
    from cdp.featurestore.store import open_store

    offline = pd.read_parquet(events_ws.features / "session_activity.parquet")
    assert offline["customer_id"].tolist() == [customer]
    stamp = offline["event_timestamp"].iloc[0]
    entity = pd.DataFrame({"customer_id": [customer, customer], "event_timestamp": [stamp - pd.Timedelta("1s"), stamp]})
    store = open_store(events_ws)
    joined = store.get_historical_features(
        entity_df=entity, features=["session_activity:last_viewed_category", "session_activity:search_times_1h"]
    ).to_df()
    joined = joined.sort_values("event_timestamp")
    assert joined["last_viewed_category"].isna().iloc[0] and joined["last_viewed_category"].iloc[1] == category


def test_redis_stream_consumer_pushes_rejects_and_resumes(events_ws, tmp_path, monkeypatch):
    from cdp.featurestore.store import open_store
    from cdp.models.next_best_product import catalogue
    from cdp.serving.erased import ErasedCustomers
    from cdp.serving.events import SessionEvents
    from cdp.serving.stream import consume, event_fields, redis_client

    home = tmp_path / "ws"
    shutil.copytree(events_ws.root, home)
    ws = Workspace(home)
    monkeypatch.setenv("CDP_HOME", str(home))
    first, second = profiled(ws)[1:3]
    product = catalogue(ws).iloc[0]
    with redis_server(free_port(), tmp_path) as address:
        client = redis_client(address)
        entries = [
            {"customer_id": first, "event_type": "product_view", "timestamp": now(2), "product_id": product.product_id},
            {"customer_id": first, "event_type": "add_to_cart", "timestamp": now(1), "product_id": product.product_id},
            {"customer_id": second, "event_type": "complaint", "timestamp": now()},
            {"customer_id": second, "event_type": "search"},  # no timestamp: rejected
            {"customer_id": "cus_nobody", "event_type": "search", "timestamp": now()},  # refused
        ]
        for entry in entries:
            client.xadd("t:events", event_fields(entry))
        totals = consume(ws, address, "t:events", "g", "c1", batch=2, block_ms=100, drain=True)
        assert totals == {"read": 5, "pushed": 3, "customers": 2, "rejected": 1, "refused": 1}  # batches of 2
        rejected = client.xrange("t:events:rejected")
        assert len(rejected) == 1 and b"timestamp" in rejected[0][1][b"reason"]
        assert client.xpending("t:events", "g")["pending"] == 0
        # A consumer killed after reading, before acknowledging: its entries come back on restart.
        client.xadd("t:events", event_fields({"customer_id": second, "event_type": "search", "timestamp": now()}))
        client.xreadgroup("g", "c1", {"t:events": ">"}, count=10)
        assert client.xpending("t:events", "g")["pending"] == 1
        again = consume(ws, address, "t:events", "g", "c1", block_ms=100, drain=True)
        assert again["pushed"] == 1 and client.xpending("t:events", "g")["pending"] == 0
    events = SessionEvents(ws, open_store(ws), ErasedCustomers(ws), catalogue(ws))
    seen = events.features([first, second])
    assert seen[first]["session_views_1h"] == 1 and seen[first]["session_cart_adds_1h"] == 1
    assert seen[first]["last_viewed_product"] == product.product_id
    assert seen[second]["complaint_today"] == 1 and seen[second]["session_searches_1h"] == 1
    offline = pd.read_parquet(ws.features / "session_activity.parquet")
    assert offline["customer_id"].isin([first, second]).sum() == 3  # one row per customer and batch


@pytest.mark.slow
def test_stream_mode_queues_events_and_the_served_consumer_writes_them(events_ws, tmp_path):
    """CDP_EVENTS_WRITE=stream: /events answers after appending to the stream; the consumer the
    server runs beside it (as `cdp serve` does) writes them, and stops with the server."""
    import time

    from cdp.serving.stream import redis_client

    home = tmp_path / "ws"
    shutil.copytree(events_ws.root, home)
    (home / "features" / "session_activity.parquet").unlink(missing_ok=True)
    ws = Workspace(home)
    customer, withdrawn = profiled(ws)[3], profiled(ws, withdrawn=True)[0]
    with redis_server(free_port(), tmp_path) as address:
        env = {"CDP_EVENTS_WRITE": "stream", "CDP_REDIS": address, "CDP_EVENTS_STREAM": "t:served"}
        with running_server(ws, free_port(), log_path=tmp_path / "bentoml.log", extra_env=env) as url:
            post = lambda route, body: httpx.post(f"{url}/{route}", json=body, timeout=30)
            events = [
                {"customer_id": customer, "event_type": "search", "timestamp": now(1)},
                {"customer_id": customer, "event_type": "complaint", "timestamp": now()},
                {"customer_id": withdrawn, "event_type": "search", "timestamp": now()},
            ]
            answer = post("events", {"events": events})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert (body["accepted"], body["customers"], body["queued"]) == (2, 1, 2)
            assert [e["customer_id"] for e in body["errors"]] == [withdrawn]  # refused in the request
            bad = post("events", {"events": [{**events[0], "event_type": "page_view"}]})
            assert bad.status_code == 400 and "event_type" in bad.text  # checked in the request, not queued
            deadline, session = time.monotonic() + 20, {}
            while time.monotonic() < deadline:
                session = post("profile", {"customer_id": customer}).json()["session"]
                if session["session_searches_1h"] == 1:
                    break
                time.sleep(0.1)
            assert session["session_searches_1h"] == 1 and session["complaint_today"] == 1, session
        client = redis_client(address)
        assert client.xlen("t:served") == 2  # only the allowed events were queued
        assert client.xpending("t:served", "cdp-events")["pending"] == 0  # written and acknowledged
    offline = pd.read_parquet(home / "features" / "session_activity.parquet")
    assert offline["customer_id"].tolist() == [customer]


def test_event_queue_down_names_the_stream_and_stores_nothing():
    from cdp.serving.events import Event
    from cdp.serving.stream import EventQueue, EventQueueDown

    queue = EventQueue(f"127.0.0.1:{free_port()},db=0", "t:nowhere")  # nothing listens there
    event = Event(customer_id="cus_1", event_type="search", timestamp=datetime.now(UTC))
    with pytest.raises(EventQueueDown, match=r"t:nowhere at 127\.0\.0\.1"):
        queue.publish([event])
