"""Request-time events -> session features, through Feast push, online and offline.

In:  batches of events {customer_id, event_type, timestamp, category?, product_id?} from
     POST /events (cdp.serving.service) or a Redis stream (`cdp events consume`, cdp.serving.stream).
Out: one row per customer and batch pushed to the stream feature view `session_activity`
     (features/definitions.py) as `store.push(..., to=PushMode.ONLINE_AND_OFFLINE)` does (its two
     writes, `write_to_online_store` + `write_to_offline_store`, see `push`): the online row the
     service reads on the next request, and the offline row point-in-time training sets join.

A row is the customer's session state: epoch seconds of the last hour's product views, cart adds
and searches, the latest viewed category/product and the latest complaint. `session_features`
derives the features from it at a reading time (counts in the hour before it, complaint on its UTC
day), so a row written an hour ago never claims its views are recent, and the same function at an
entity timestamp gives point-in-time-correct values from the offline rows.

Writes are read-modify-write of that state: serialized by a lock per process and an flock on
feast/session_push.lock across processes on this machine (service workers, the stream consumer).
Writers on several machines can lose each other's counts for a customer written at the same
moment (last writer wins); the latest view and complaint are kept by timestamp either way.
"""

from __future__ import annotations

import fcntl
import threading
import warnings
from collections.abc import Iterable
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from cdp.featurestore.online_reader import OnlineReader
from cdp.settings import setting

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

    from cdp.serving.erased import ErasedCustomers
    from cdp.workspace import Workspace

SESSION_VIEW = "session_activity"  # = cdp.features.definitions.SESSION_VIEW (not imported: it imports feast)
PUSH_SOURCE = f"{SESSION_VIEW}_push"
WINDOW = timedelta(hours=1)
FUTURE_SKEW = timedelta(minutes=5)  # client clocks ahead of ours by up to this are accepted
MAX_EVENTS = 1000
MAX_TIMES = 500  # event times kept per type and customer: counts saturate here (a bot, not a person)
EVENT_TYPES = ("product_view", "add_to_cart", "search", "complaint")
TIMES_FIELD = {"product_view": "view_times_1h", "add_to_cart": "cart_add_times_1h", "search": "search_times_1h"}
STATE_FIELDS = (*TIMES_FIELD.values(), "last_viewed_category", "last_viewed_product", "last_viewed_at")
STATE_FIELDS = (*STATE_FIELDS, "last_complaint_at")
Text = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]


class Event(BaseModel):
    """One event. Unknown fields are refused (a search query or page URL may carry personal data)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Text = Field(..., description="A customer id from identity resolution")
    event_type: Literal[EVENT_TYPES] = Field(..., description=f"One of {', '.join(EVENT_TYPES)}")  # type: ignore[valid-type]
    timestamp: AwareDatetime = Field(..., description="When it happened, ISO-8601 with a time zone")
    category: Text | None = Field(None, description="Catalogue category (product_view without product_id)")
    product_id: Text | None = Field(None, description="Catalogue product (product_view, add_to_cart)")


class EventBatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "events": [
                    {
                        "customer_id": "cus_3f2a9c1b7d04",
                        "event_type": "product_view",
                        "timestamp": "2026-12-03T21:15:00Z",
                        "product_id": "SKU00006",
                    }
                ]
            }
        },
    )

    events: list[Event] = Field(..., min_length=1, max_length=MAX_EVENTS, description=f"1..{MAX_EVENTS} events")


def _arrow_dtypes() -> dict:
    import pandas as pd
    import pyarrow as pa

    kinds = {"int_list": pa.list_(pa.int64()), "string": pa.string(), "int": pa.int64()}
    fields = {f: kinds["int_list"] for f in TIMES_FIELD.values()}
    fields |= {"last_viewed_category": kinds["string"], "last_viewed_product": kinds["string"]}
    fields |= {"last_viewed_at": kinds["int"], "last_complaint_at": kinds["int"]}
    return {f: pd.ArrowDtype(t) for f, t in fields.items()}


def quiet_stream_warning() -> None:
    """Feast warns "Stream feature views are experimental" each time one is built (every registry
    read); its import puts its own filters first, so this runs after feast is imported."""
    import feast  # noqa: F401

    warnings.filterwarnings("ignore", message="Stream feature views are experimental", category=RuntimeWarning)


class EventQueue(Protocol):
    """Where /events puts checked events when they are written elsewhere (cdp.serving.stream.EventQueue)."""

    def publish(self, events: list[Event]) -> None: ...


class EventError(ValueError):
    """An event that cannot be used; the message names the field and the value."""


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


def session_features(state: dict | None, at: datetime) -> dict:
    """The session features at `at` from a stored state row (None: no events)."""
    state, now = state or {}, at.timestamp()
    since = now - WINDOW.total_seconds()

    def count(field: str) -> int:
        return sum(1 for t in state.get(field) or () if t > since)

    viewed_at, complained_at = state.get("last_viewed_at"), state.get("last_complaint_at")
    return {
        "session_views_1h": count("view_times_1h"),
        "session_cart_adds_1h": count("cart_add_times_1h"),
        "session_searches_1h": count("search_times_1h"),
        "last_viewed_category": state.get("last_viewed_category"),
        "last_viewed_product": state.get("last_viewed_product"),
        "last_viewed_seconds_ago": None if viewed_at is None else max(0, int(now - viewed_at)),
        "complaint_today": int(
            complained_at is not None and datetime.fromtimestamp(complained_at, UTC).date() == at.astimezone(UTC).date()
        ),
    }


def recent_category(features: dict) -> str | None:
    """The category viewed within the session window, else None (what /next_best_product boosts)."""
    ago = features.get("last_viewed_seconds_ago")
    return features.get("last_viewed_category") if ago is not None and ago < WINDOW.total_seconds() else None


def fold(state: dict | None, events: list[Event], product_category: dict[str, str]) -> tuple[dict, datetime]:
    """The new state row of one customer (and its event_timestamp) after `events`.

    Times older than the window before the row's timestamp are dropped; a late event still counts
    while inside it. The latest view/complaint is chosen by event time, not arrival order."""
    state = dict(state or {})
    times = {f: list(state.get(f) or ()) for f in TIMES_FIELD.values()}
    known = [t for ts in times.values() for t in ts] + [
        t for t in (state.get("last_viewed_at"), state.get("last_complaint_at")) if t is not None
    ]
    latest = max([_epoch(e.timestamp) for e in events] + known)
    for event in sorted(events, key=lambda e: e.timestamp):
        at = _epoch(event.timestamp)
        if event.event_type in TIMES_FIELD:
            times[TIMES_FIELD[event.event_type]].append(at)
        if event.event_type == "product_view" and at >= (state.get("last_viewed_at") or -1):
            state["last_viewed_at"] = at
            state["last_viewed_product"] = event.product_id
            state["last_viewed_category"] = product_category.get(event.product_id or "", event.category)
        if event.event_type == "complaint" and at >= (state.get("last_complaint_at") or -1):
            state["last_complaint_at"] = at
    since = latest - WINDOW.total_seconds()
    for field, ts in times.items():
        state[field] = sorted(t for t in ts if t > since)[-MAX_TIMES:]
    return {f: state.get(f) for f in STATE_FIELDS}, datetime.fromtimestamp(latest, UTC)


def session_registered(store: FeatureStore) -> bool:
    try:
        store.get_stream_feature_view(SESSION_VIEW)
        return True
    except Exception:  # Feast raises its own not-found kinds per registry
        return False


class SessionEvents:
    """Checks, gates and pushes events; reads session features back. One per process."""

    def __init__(
        self,
        ws: Workspace,
        store: FeatureStore,
        erased: ErasedCustomers,
        products: pd.DataFrame,
        queue: EventQueue | None = None,
    ) -> None:
        quiet_stream_warning()
        self.ws, self.store, self.erased, self.queue = ws, store, erased, queue
        self.reader = OnlineReader(store)
        self.product_category = dict(zip(products["product_id"].astype(str), products["category"].astype(str)))
        self.categories = set(self.product_category.values())
        self.max_age = timedelta(hours=float(setting("events_max_age_hours")))
        self.lock = threading.Lock()
        self.lock_path = ws.feast / "session_push.lock"
        fed = {v.name for v in store._fvs_for_push_source_or_raise(PUSH_SOURCE, allow_cache=True)}
        if fed != {SESSION_VIEW}:  # push() writes exactly these views: the shortcut must write the same
            raise RuntimeError(f"push source {PUSH_SOURCE} feeds {sorted(fed)}, expected only {SESSION_VIEW}")

    # ---- checks -------------------------------------------------------------------------------

    def problem(self, event: Event, now: datetime) -> str | None:
        """Why `event` cannot be used (naming the field and value), or None."""
        if event.timestamp > now + FUTURE_SKEW:
            return f"timestamp: {event.timestamp.isoformat()} is in the future (more than {FUTURE_SKEW} ahead)"
        if event.timestamp < now - self.max_age:
            return (
                f"timestamp: {event.timestamp.isoformat()} is older than CDP_EVENTS_MAX_AGE_HOURS="
                f"{self.max_age.total_seconds() / 3600:g} (the daily batch takes older events)"
            )
        if event.product_id is not None and event.product_id not in self.product_category:
            return f"product_id: unknown product '{event.product_id}' (not in the catalogue)"
        if event.category is not None and event.category not in self.categories:
            return f"category: unknown category '{event.category}' (known: {', '.join(sorted(self.categories))})"
        if event.product_id and event.category and self.product_category[event.product_id] != event.category:
            return (
                f"category: '{event.category}' is not the category of product '{event.product_id}' "
                f"('{self.product_category[event.product_id]}')"
            )
        if event.event_type == "add_to_cart" and event.product_id is None:
            return "product_id: required for event_type 'add_to_cart'"
        if event.event_type == "product_view" and event.product_id is None and event.category is None:
            return "product_id: required for event_type 'product_view' (or category)"
        return None

    def refusals(self, customer_ids: Iterable[str]) -> dict[str, str]:
        """customer_id -> why its events are refused: erased, no profile, or profiling withdrawn."""
        from cdp.features.consent import profiling_refusal

        ids = list(dict.fromkeys(customer_ids))
        online = self.reader.read(["customer_profile:tenure_days", "consent_state:consent_profiling"], ids)
        refused = {}
        for i, customer_id in enumerate(ids):
            if customer_id in self.erased or online["tenure_days"][i] is None:
                refused[customer_id] = "unknown customer_id: no profile in the online store"
            elif (why := profiling_refusal(online["consent_profiling"][i])) is not None:
                refused[customer_id] = why
        return refused

    # ---- writes and reads ---------------------------------------------------------------------

    @contextmanager
    def _exclusive(self):
        with self.lock, open(self.lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def push(self, events: list[Event], now: datetime | None = None) -> int:
        """Fold checked, allowed events into each customer's state and push one row per customer,
        online and offline (`PushMode.ONLINE_AND_OFFLINE`). Returns the rows pushed."""
        import pandas as pd

        if not events:
            return 0
        now = now or datetime.now(UTC)
        by_customer: dict[str, list[Event]] = {}
        for event in events:
            by_customer.setdefault(event.customer_id, []).append(event)
        with self._exclusive():
            states = self.states(list(by_customer))
            rows = []
            for customer_id, own in by_customer.items():
                state, stamp = fold(states[customer_id], own, self.product_category)
                rows.append({"customer_id": customer_id, "event_timestamp": stamp, "created": now, **state})
            frame = pd.DataFrame(rows).astype(_arrow_dtypes())  # typed even when a column is all null
            # What store.push(PUSH_SOURCE, frame, to=PushMode.ONLINE_AND_OFFLINE) does for its one view
            # (checked in __init__), minus ~110 ms a call of listing every view and feature service
            # in the registry to find that view again (measured: push 140-150 ms, these two 30-40 ms).
            self.store.write_to_online_store(SESSION_VIEW, frame)
            self.store.write_to_offline_store(SESSION_VIEW, frame)
        return len(rows)

    def states(self, customer_ids: list[str]) -> dict[str, dict | None]:
        """The stored state row of each customer (None when no event was pushed for them)."""
        online = self.reader.read([f"{SESSION_VIEW}:{f}" for f in STATE_FIELDS], customer_ids)
        out: dict[str, dict | None] = {}
        for i, customer_id in enumerate(customer_ids):
            row = {f: online[f][i] for f in STATE_FIELDS}
            out[customer_id] = row if any(v is not None for v in row.values()) else None
        return out

    def features(self, customer_ids: list[str], at: datetime | None = None) -> dict[str, dict]:
        at = at or datetime.now(UTC)
        return {c: session_features(s, at) for c, s in self.states(customer_ids).items()}

    def accept(self, events: list[Event], now: datetime | None = None) -> dict:
        """Check every event (EventError naming the first bad ones), push those of allowed customers
        (or, with a queue, append them to it for `cdp events consume` to push: `queued`); refused
        customers' events are per-id errors (never stored)."""
        now = now or datetime.now(UTC)
        problems = [f"events[{i}].{why}" for i, e in enumerate(events) if (why := self.problem(e, now))]
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise EventError("; ".join(problems[:5]) + more)
        refused = self.refusals(e.customer_id for e in events)
        allowed = [e for e in events if e.customer_id not in refused]
        if self.queue is not None:
            self.queue.publish(allowed)
            customers, queued = len({e.customer_id for e in allowed}), len(allowed)
        else:
            customers, queued = self.push(allowed, now), 0
        return {
            "accepted": len(allowed),
            "customers": customers,
            "queued": queued,
            "errors": [{"customer_id": c, "error": why} for c, why in refused.items()],
        }


def boost(
    ranked: list[dict], category: str | None, k: int, slots: int, popular: list[str], skip: set[str]
) -> list[dict]:
    """The `k` products to answer: the first `slots` go to `category` (the ranker's own candidates
    of it in its order, then the category's most popular catalogue products, `score` null), the
    rest is the ranker's order. `skip`: products that may not be added (owned, with exclude_owned).
    Ranks are renumbered; products placed by the session carry `"session_boost": true`."""
    if category is None or slots <= 0:
        return ranked[:k]
    listed = {p["product_id"] for p in ranked}
    first = [p for p in ranked if p["category"] == category][:slots]
    for product_id in popular:
        if len(first) >= slots:
            break
        if product_id not in listed and product_id not in skip:
            first.append({"product_id": product_id, "category": category, "score": None})
    chosen = {p["product_id"] for p in first}
    ordered = [{**p, "session_boost": True} for p in first] + [p for p in ranked if p["product_id"] not in chosen]
    return [{**p, "rank": i} for i, p in enumerate(ordered[:k], start=1)]


def popular_by_category(items: pd.DataFrame, catalogue_ids: set[str], per_category: int = 20) -> dict[str, list[str]]:
    """category -> its most popular products on sale (ItemStats.items is sorted by popularity)."""
    on_sale = items[items["product_id"].isin(catalogue_ids)]
    return {str(c): g["product_id"].astype(str).head(per_category).tolist() for c, g in on_sale.groupby("category")}
