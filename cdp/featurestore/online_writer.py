"""Writing feature and score rows into the Feast online store fast, in Feast's own format.

Feast's `materialize`/`push` convert Arrow to protobuf value by value in Python and, for SQLite,
issue one INSERT per feature value: ~2-7k customer rows/s here. This writer builds the same
protobuf values column by column and hands them over in bulk:
- SQLite: one `executemany` upsert per view into the table Feast created (same columns, same
  serialized entity keys and values, so `get_online_features` reads them back unchanged);
- Redis: Feast's own `online_write_batch` (one pipelined HSET per entity, `skip_dedup`);
- any other online store: Feast's provider `online_write_batch` with the prebuilt protobufs.
`tests/test_online_writer.py` checks the stores read back exactly what Feast's materialize wrote.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

SQLITE_TYPES = ("sqlite", "feast.infra.online_stores.sqlite.SqliteOnlineStore")
REDIS_TYPES = ("redis", "feast.infra.online_stores.redis.RedisOnlineStore")
CHUNK = 20_000  # entities per bulk write: bounds memory of the prebuilt protobufs


# Value's oneof `val` (feast/protos/feast/types/Value.proto); a set oneof is serialized even at 0/false.
DOUBLE_TAG = 0x29  # double_val: field 5, wire type 1 (fixed 64-bit)
INT64_TAG = 0x20  # int64_val: field 4, wire type 0 (varint)
BOOL_TAG = 0x38  # bool_val: field 7, wire type 0 (varint 0/1)


class Column:
    """One feature's values in the online store's encodings: serialized ValueProtos and the
    `value_text` Feast's SQLite store keeps beside them (None for a null). The texts are made
    only when asked for: Redis does not store them, and `str()` per value was a fifth of its write."""

    def __init__(self, blobs: list[bytes], texts: list[str | None] | None = None, values: list | None = None) -> None:
        self.blobs, self._texts, self._values = blobs, texts, values

    @property
    def texts(self) -> list[str | None]:
        if self._texts is None:
            values = self._values if self._values is not None else [0.0] * len(self.blobs)
            self._texts = [None if not blob else str(v) for blob, v in zip(self.blobs, values, strict=True)]
        return self._texts

    def protos(self) -> list:
        from feast.protos.feast.types.Value_pb2 import Value

        return [Value.FromString(b) for b in self.blobs]


def _column(series: pd.Series, dtype_name: str, name: str = "") -> Column:
    """Nulls become the empty Value (Feast's null). Doubles are packed with numpy: building and
    serializing one protobuf per value was half of the write time."""
    from feast.protos.feast.types.Value_pb2 import Value

    if dtype_name in ("Int64", "Bool"):
        return _whole_column(series, dtype_name, name)
    if dtype_name == "String":  # few distinct values (model versions, dates): encode each once
        values = series.astype(object).tolist()
        encoded = {
            v: (b"", None)
            if v is None or (isinstance(v, float) and math.isnan(v))
            else (Value(string_val=str(v)).SerializeToString(), str(v))
            for v in set(values)
        }
        return Column([encoded[v][0] for v in values], [encoded[v][1] for v in values])
    array = pd.to_numeric(series, errors="raise").astype("float64").to_numpy()
    packed = np.empty(len(array), dtype=np.dtype([("tag", "u1"), ("value", "<f8")]))  # 9 bytes, unpadded
    packed["tag"], packed["value"] = DOUBLE_TAG, array
    raw, null = packed.tobytes(), np.isnan(array).tolist()
    blobs = [b"" if null[i] else raw[9 * i : 9 * i + 9] for i in range(len(array))]
    return Column(blobs, values=array.tolist())


def _whole_column(series: pd.Series, dtype_name: str, name: str) -> Column:
    """Int64 counts / Bool flags: few distinct values per column, so each is serialized once by
    protobuf itself (int64_val / bool_val) and looked up per row. A fractional number, or anything
    but 0/1/true/false for a flag, is refused with the feature named (never truncated)."""
    from feast.protos.feast.types.Value_pb2 import Value

    null = series.isna().to_numpy()
    if pd.api.types.is_integer_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        ints = series.fillna(0).astype("int64").to_numpy()  # exact: never through a float
        bad = np.zeros(len(ints), dtype=bool)
    else:  # floats or objects (nulls made them so): whole numbers only
        array = pd.to_numeric(series.astype(object).where(~null, None), errors="raise").astype("float64").to_numpy()
        bad = ~null & (array != np.round(array))
        ints = np.where(null | bad, 0, array).astype(np.int64)
    if dtype_name == "Bool":
        bad |= ~null & ~np.isin(ints, (0, 1))
    if bad.any():
        raise ValueError(
            f"feature {name!r} ({dtype_name}): cannot store {series[bad].tolist()[0]!r} in {int(bad.sum())} row(s)"
        )
    codes, uniques = pd.factorize(ints)
    if dtype_name == "Bool":
        python: list = [bool(u) for u in uniques]
        encoded = [Value(bool_val=v).SerializeToString() for v in python]
    else:
        python = [int(u) for u in uniques]
        encoded = [Value(int64_val=v).SerializeToString() for v in python]
    null_list = null.tolist()
    blobs = [b"" if null_list[i] else encoded[c] for i, c in enumerate(codes.tolist())]
    return Column(blobs, values=[python[c] for c in codes.tolist()])


def _entity_keys(customer_ids: Iterable[str]) -> list:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=c)]) for c in customer_ids]


@lru_cache(maxsize=1 << 20)
def _serialized_key(customer_id: str, version: int) -> bytes:
    """Feast's serialized entity key. Cached: every view of one write repeats the same customers."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return serialize_entity_key(
        EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)]),
        entity_key_serialization_version=version,
    )


def serialized_keys(customer_ids: list[str], version: int) -> list[bytes]:
    return [_serialized_key(c, version) for c in customer_ids]


def _utc(timestamps: pd.Series) -> list[datetime]:
    """Python datetimes; a write holds few distinct timestamps, so each is converted once.
    (`cache=False`: pandas' cache probe iterated every value, a tenth of a Redis write.)"""
    codes, uniques = pd.factorize(pd.to_datetime(timestamps, utc=True, cache=False))
    as_python = [ts.to_pydatetime() for ts in uniques]
    return [as_python[c] for c in codes.tolist()]


@dataclass
class ViewRows:
    """One feature view's rows, encoded once for whichever online store writes them."""

    view: FeatureView
    ids: list[str]
    serialized: list[bytes]  # Feast's serialized entity keys
    columns: dict[str, Column]
    stamps: list[datetime]


def write_online(store: FeatureStore, view_name: str, frame: pd.DataFrame) -> int:
    """Upsert `frame` (customer_id, event_timestamp, the view's features) into the online store.

    Rows for one customer: the latest event_timestamp wins, as in Feast. Returns rows written."""
    return write_online_views(store, {view_name: frame})


def write_online_views(store: FeatureStore, frames: dict[str, pd.DataFrame]) -> int:
    """`write_online` for several feature views at once; returns (customer, view) rows written.
    On Redis each customer's views go out as one HSET (one hash per entity is Feast's layout),
    a seventh of the commands the view-by-view writes sent."""
    views = {name: store.get_feature_view(name) for name in frames}
    latest = {name: _latest_per_customer(name, views[name], frame) for name, frame in frames.items()}
    customers = sorted(set().union(*(frame["customer_id"] for frame in latest.values())))
    written = 0
    for start in range(0, len(customers), CHUNK):  # bounds memory of the encoded rows
        first, last = customers[start], customers[min(start + CHUNK, len(customers)) - 1]
        chunks = []
        for name, frame in latest.items():
            ids = frame["customer_id"].to_numpy()
            lo, hi = np.searchsorted(ids, first, "left"), np.searchsorted(ids, last, "right")
            if hi > lo:
                chunks.append(_encode(store, views[name], frame.iloc[lo:hi]))
        _write_chunks(store, chunks)
        written += sum(len(chunk.ids) for chunk in chunks)
    return written


def _latest_per_customer(name: str, view: FeatureView, frame: pd.DataFrame) -> pd.DataFrame:
    missing = [f.name for f in view.features if f.name not in frame.columns]
    if missing or "customer_id" not in frame.columns or "event_timestamp" not in frame.columns:
        raise ValueError(
            f"frame for feature view '{name}' lacks columns "
            f"{missing + [c for c in ('customer_id', 'event_timestamp') if c not in frame.columns]}"
        )
    frame = frame.sort_values("event_timestamp", kind="stable").drop_duplicates("customer_id", keep="last")
    frame = frame.assign(customer_id=frame["customer_id"].astype(str))
    return frame.sort_values("customer_id", kind="stable").reset_index(drop=True)


def _encode(store: FeatureStore, view: FeatureView, frame: pd.DataFrame) -> ViewRows:
    ids = frame["customer_id"].tolist()
    return ViewRows(
        view,
        ids,
        serialized_keys(ids, store.config.entity_key_serialization_version),
        {f.name: _column(frame[f.name], str(f.dtype), f.name) for f in view.features},
        _utc(frame["event_timestamp"]),
    )


def _write_chunks(store: FeatureStore, chunks: list[ViewRows]) -> None:
    config = store.config
    kind = config.online_store.type
    if kind in REDIS_TYPES and config.online_store.skip_dedup:
        _redis_hset(store, chunks)
        return
    for rows in chunks:
        if kind in SQLITE_TYPES:
            _sqlite_upsert(store, rows)
        else:  # Redis without skip_dedup and any other store: Feast's own writer, fed prebuilt protobufs
            created = datetime.now(UTC)
            protos = {name: column.protos() for name, column in rows.columns.items()}
            data = [
                (key, {name: values[i] for name, values in protos.items()}, rows.stamps[i], created)
                for i, key in enumerate(_entity_keys(rows.ids))
            ]
            store._get_provider().online_write_batch(config, rows.view, data, progress=None)  # type: ignore[arg-type]


def _sqlite_upsert(store: FeatureStore, rows: ViewRows) -> None:
    from feast.infra.online_stores.sqlite import _table_id, adapt_datetime_epoch

    view, serialized, columns, stamps = rows.view, rows.serialized, rows.columns, rows.stamps
    names = list(columns)

    config = store.config
    conn = store._get_provider().online_store._get_conn(config)  # type: ignore[attr-defined]  # SqliteOnlineStore
    table = _table_id(config.project, view, config.registry.enable_online_feature_view_versioning)
    # Feast stores timestamps as the epoch of the naive-UTC datetime: few distinct values, convert once.
    epochs = {s: adapt_datetime_epoch(s.astimezone(UTC).replace(tzinfo=None)) for s in set(stamps)}
    created = adapt_datetime_epoch(datetime.now(UTC).replace(tzinfo=None))
    blobs = {name: columns[name].blobs for name in names}
    text = {name: columns[name].texts for name in names}
    # Rows in primary-key order (entity_key, feature_name): B-tree inserts stay local, ~2x faster.
    order = sorted(range(len(serialized)), key=serialized.__getitem__)
    names_sorted = sorted(names)
    values = [
        (serialized[i], name, blobs[name][i], text[name][i], epochs[stamps[i]], created)
        for i in order
        for name in names_sorted
    ]
    sql = (
        f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
        "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
        "created_ts = excluded.created_ts"
    )
    with conn:
        conn.executemany(sql, values)


def _redis_hset(store: FeatureStore, chunks: list[ViewRows]) -> None:
    """Feast's Redis layout (one hash per entity; field = mmh3("<view>:<feature>"), plus "_ts:<view>"),
    the same as its `skip_dedup` writer: one HSET per customer carrying all of `chunks`' views,
    field names hashed once per view, not once per value.

    On a single Redis (or a Sentinel's master) the commands are packed by hiredis and sent on one
    connection (`_send_packed`): redis-py's pipeline spent ~15 us of Python per command building,
    queueing and unpacking. A Redis Cluster keeps redis-py's pipeline, which routes keys to slots."""
    import redis
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
    from google.protobuf.timestamp_pb2 import Timestamp

    config = store.config
    project = config.project.encode("utf-8")  # Feast's _redis_key: serialized entity key + project
    commands: dict[bytes, list] = {}  # redis key -> [HSET, key, field, value, field, value, ...]
    for rows in chunks:
        view_name = _versioned_fv_name(rows.view, config)
        fields = [_mmh3(f"{view_name}:{name}") for name in rows.columns]
        blob_columns = [column.blobs for column in rows.columns.values()]
        ts_field = f"_ts:{view_name}".encode()
        stamp_bytes = {}
        for s in set(rows.stamps):
            proto = Timestamp()
            proto.FromDatetime(s)
            stamp_bytes[s] = proto.SerializeToString()
        for i, key in enumerate(rows.serialized):
            redis_key = key + project
            args = commands.get(redis_key)
            if args is None:
                args = commands[redis_key] = [b"HSET", redis_key]
            args += (ts_field, stamp_bytes[rows.stamps[i]])
            for field, blobs in zip(fields, blob_columns):
                args += (field, blobs[i])
    batch = list(commands.values())
    ttl = config.online_store.key_ttl_seconds
    if ttl:
        batch += [[b"EXPIRE", key, ttl] for key in commands]
    client = RedisOnlineStore()._get_client(config.online_store)
    if isinstance(client, redis.Redis):
        _send_packed(client, batch)
        return
    with client.pipeline(transaction=False) as pipe:
        for args in batch:
            pipe.execute_command(*args)
        pipe.execute()


def _send_packed(client, commands: list[list], batch: int = 5_000) -> None:
    """Send `commands` in hiredis-packed buffers of `batch` commands on one of the client's
    connections (so AUTH, TLS and the database are the client's), keeping one buffer in flight
    while the next is packed, and read the replies with one hiredis reader in large chunks
    (redis-py's per-reply `read_response` cost ~7 us a command). Every reply is read before
    anything is raised, so an error reply (e.g. Redis out of memory) fails the write loudly and
    the connection goes back to the pool clean."""
    import hiredis

    connection = client.connection_pool.get_connection()
    reader = hiredis.Reader()
    errors: list[Exception] = []

    def read_replies(count: int) -> None:
        while count:
            reply = reader.gets()
            if reply is False:
                reader.feed(connection._sock.recv(1 << 20) or _closed())
                continue
            count -= 1
            if isinstance(reply, hiredis.ReplyError):
                errors.append(reply)

    try:
        in_flight = 0
        for start in range(0, len(commands), batch):
            part = commands[start : start + batch]
            connection.send_packed_command([b"".join([hiredis.pack_command(tuple(args)) for args in part])])
            read_replies(in_flight)
            in_flight = len(part)
        read_replies(in_flight)
    except BaseException:
        connection.disconnect()  # replies may be left unread on it
        raise
    finally:
        client.connection_pool.release(connection)
    if errors:
        from redis.exceptions import ResponseError

        raise ResponseError(f"Redis refused {len(errors)} of {len(commands)} writes, first: {errors[0]}")


def _closed() -> bytes:
    raise ConnectionError("Redis closed the connection during a bulk write")
