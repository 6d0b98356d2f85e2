"""`cdp events consume`: events from a Redis stream into the session features (as POST /events).

In:  entries of the stream CDP_EVENTS_STREAM (default `cdp:events`) on the Redis at CDP_REDIS (the
     one the scale profile runs), one event per entry with the fields of POST /events:
     `XADD cdp:events * customer_id cus_1 event_type product_view timestamp 2026-12-03T21:15:00Z product_id P1`.
Out: the same checks, gates and writes as the route (cdp.serving.events.SessionEvents), one write
     per read batch. Read through the consumer group CDP_EVENTS_GROUP: each entry is acknowledged
     after its batch is written, so a consumer killed mid-batch gets it again on restart (its
     pending entries are read first): at-least-once, an entry redelivered then counts twice in the
     hour's counts. Malformed entries are acknowledged and copied to `<stream>:rejected` with the
     reason; entries of unknown, erased or profiling-withdrawn customers are acknowledged and dropped.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import ValidationError

from cdp.serving.events import Event, SessionEvents
from cdp.workspace import Workspace

FIELDS = tuple(Event.model_fields)


def redis_client(address: str):
    """A client for Feast's connection string `host:port[,db=N][,password=...][,ssl=true]`."""
    import redis

    host_port, *options = [part.strip() for part in address.split(",") if part.strip()]
    host, _, port = host_port.rpartition(":")
    settings = dict(option.split("=", 1) for option in options if "=" in option)
    return redis.Redis(
        host=host or "localhost",
        port=int(port or 6379),
        db=int(settings.get("db", 0)),
        password=settings.get("password"),
        ssl=settings.get("ssl", "false").lower() == "true",
    )


class EventQueue:
    """POST /events with CDP_EVENTS_WRITE=stream: checked events appended to the stream (one round
    trip per request) instead of written in the request; `consume` writes them. Feast's writes
    (protobuf conversion, the offline Parquet rewrite) then run in the consumer's process, so the
    service's reads never queue behind them."""

    def __init__(self, address: str, stream: str) -> None:
        self.client, self.stream, self.where = redis_client(address), stream, address.split(",")[0]

    def publish(self, events: list[Event]) -> None:
        """Append `events` to the stream; EventQueueDown when Redis does not take them (none stored)."""
        import redis

        if not events:
            return
        try:
            with self.client.pipeline(transaction=True) as pipe:  # all of the request's events or none
                for event in events:
                    pipe.xadd(self.stream, event_fields(event.model_dump(mode="json")))
                pipe.execute()
        except redis.RedisError as error:
            raise EventQueueDown(
                f"events: the Redis stream {self.stream} at {self.where} did not take them ({error}); nothing stored"
            ) from None


class EventQueueDown(RuntimeError):
    """The stream behind CDP_EVENTS_WRITE=stream is unreachable: the request's events were not stored."""


def parse(fields: dict[bytes, bytes]) -> Event:
    """One entry as an Event (ValidationError naming the field when it is not one)."""
    values = {k.decode(): v.decode() for k, v in fields.items()}
    return Event.model_validate({k: v for k, v in values.items() if v != ""})


def _reason(error: ValidationError) -> str:
    item = error.errors()[0]
    field = ".".join(str(p) for p in item["loc"]) or "entry"
    return f"{field}: {item['msg']} (got {item.get('input')!r})"


def consume(
    ws: Workspace,
    address: str,
    stream: str,
    group: str,
    consumer: str | None = None,
    batch: int = 500,
    block_ms: int = 1000,
    max_entries: int | None = None,
    drain: bool = False,
    on_batch: Callable[[dict], None] | None = None,
    exit_with: int | None = None,
) -> dict:
    """Read, write and acknowledge until `max_entries` were read or, with `drain`, the stream has
    nothing new; `exit_with`: also stop (within `block_ms`) once that process is gone (the server
    `cdp serve` started this consumer for). Returns counts: read, pushed (events), customers (rows),
    rejected, refused."""
    import redis

    from cdp.featurestore.store import open_store
    from cdp.models.next_best_product import catalogue
    from cdp.serving.erased import ErasedCustomers

    client = redis_client(address)
    consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
    events = SessionEvents(ws, open_store(ws), ErasedCustomers(ws), catalogue(ws))
    totals = {"read": 0, "pushed": 0, "customers": 0, "rejected": 0, "refused": 0}
    pending = True  # first this consumer's own unacknowledged entries (a crash mid-batch), then new ones
    while (max_entries is None or totals["read"] < max_entries) and (exit_with is None or _alive(exit_with)):
        count = batch if max_entries is None else min(batch, max_entries - totals["read"])
        answer = client.xreadgroup(group, consumer, {stream: "0" if pending else ">"}, count=count, block=block_ms)
        entries = answer[0][1] if answer else []
        if pending and not entries:
            pending = False
            continue
        if not entries:
            if drain:
                break
            continue
        done = _handle(client, events, stream, entries)
        client.xack(stream, group, *[entry_id for entry_id, _ in entries])
        for key, value in done.items():
            totals[key] += value
        if on_batch is not None:
            on_batch(done)
    return totals


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _handle(client, events: SessionEvents, stream: str, entries: list) -> dict:
    now = datetime.now(UTC)
    good: list[Event] = []
    rejected = 0
    for entry_id, fields in entries:
        try:
            event = parse(fields)
            problem = events.problem(event, now)
        except ValidationError as error:
            problem = _reason(error)
        if problem is not None:
            rejected += 1
            copy = {k.decode(): v for k, v in fields.items() if k.decode() in FIELDS}
            client.xadd(f"{stream}:rejected", {**copy, "entry_id": entry_id, "reason": problem})
            continue
        good.append(event)
    refused = events.refusals(e.customer_id for e in good)
    allowed = [e for e in good if e.customer_id not in refused]
    customers = events.push(allowed, now)
    return {
        "read": len(entries),
        "pushed": len(allowed),
        "customers": customers,
        "rejected": rejected,
        "refused": len(good) - len(allowed),
    }


def event_fields(event: dict) -> dict[str, str]:
    """An event (as POST /events takes it) as stream entry fields (what a producer XADDs)."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in event.items() if v is not None}
