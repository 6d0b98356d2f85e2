"""Shared helpers: the data window, named RNG streams and fast Arrow string columns.

Time inside the generator is int64 seconds since the Unix epoch (UTC); rates are per day.
Raw files carry ISO-8601 strings ("2025-03-04T10:22:31Z"), built here without Python loops.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

DAY = 86_400
HISTORY_YEARS = 2
RESPONSE_WINDOW_DAYS = 14


def data_window(end: str | pd.Timestamp = "2025-12-31") -> tuple[pd.Timestamp, pd.Timestamp]:
    """The history window [start, stop) in UTC: `end` minus 2 years up to `end`.

    A date-only `end` ("2025-12-31") means the whole day is included, so stop is the next
    midnight (2026-01-01T00:00:00Z) and start is 2024-01-01T00:00:00Z.
    """
    stop = pd.Timestamp(end)
    stop = stop.tz_localize("UTC") if stop.tzinfo is None else stop.tz_convert("UTC")
    if isinstance(end, str) and len(end.strip()) == 10:
        stop = stop + pd.Timedelta(days=1)
    return stop - pd.DateOffset(years=HISTORY_YEARS), stop


def window_seconds(end: str | pd.Timestamp) -> tuple[int, int]:
    """`data_window` as epoch seconds (start, stop)."""
    start, stop = data_window(end)
    return int(start.timestamp()), int(stop.timestamp())


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """An independent, deterministic RNG per (seed, stream name)."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(stream.encode())]))


def fixed_width(chars: np.ndarray, valid: np.ndarray | None = None) -> pa.StringArray:
    """An Arrow string array from an (n, width) uint8 matrix of ASCII codes (no copy per row)."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    validity = None
    if valid is not None and not valid.all():
        validity = pa.py_buffer(np.packbits(valid.astype(np.uint8), bitorder="little"))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars)), validity)


_TOD = np.frombuffer(
    "".join(f"{h:02d}:{m:02d}:{s:02d}Z" for h in range(24) for m in range(60) for s in range(60)).encode(),
    dtype=np.uint8,
).reshape(86_400, 9)


def iso_timestamps(seconds: np.ndarray, valid: np.ndarray | None = None) -> pa.StringArray:
    """Epoch seconds -> "YYYY-MM-DDTHH:MM:SSZ" strings (null where `valid` is False)."""
    secs = np.asarray(seconds, dtype=np.int64)
    if secs.size == 0:
        return pa.array([], type=pa.string())
    day = secs // DAY
    d0 = int(day.min())
    days = np.arange(d0, int(day.max()) + 1).astype("datetime64[D]")
    table = np.frombuffer("".join(f"{d}T" for d in days).encode(), dtype=np.uint8).reshape(-1, 11)
    out = np.empty((secs.size, 20), dtype=np.uint8)
    out[:, :11] = table[day - d0]
    out[:, 11:] = _TOD[secs - day * DAY]
    return fixed_width(out, valid)


def iso_dates(days: np.ndarray, valid: np.ndarray | None = None) -> pa.StringArray:
    """Days since epoch -> "YYYY-MM-DD" strings."""
    d = np.asarray(days, dtype=np.int64)
    if d.size == 0:
        return pa.array([], type=pa.string())
    d0 = int(d.min())
    span = np.arange(d0, int(d.max()) + 1).astype("datetime64[D]")
    table = np.frombuffer("".join(str(x) for x in span).encode(), dtype=np.uint8).reshape(-1, 10)
    return fixed_width(table[d - d0], valid)


def number_ids(prefix: str, numbers: np.ndarray, width: int, base: int = 10) -> pa.StringArray:
    """prefix + zero-padded numbers in base 10 or 16 (lower-case hex)."""
    p = prefix.encode()
    out = np.empty((len(numbers), len(p) + width), dtype=np.uint8)
    out[:, : len(p)] = np.frombuffer(p, dtype=np.uint8)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    v = np.asarray(numbers, dtype=np.uint64).copy()
    for k in range(width):
        out[:, len(p) + width - 1 - k] = digits[(v % base).astype(np.intp)]
        v //= base
    return fixed_width(out)


def take(pool: Sequence[str] | pa.Array, idx: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """pool[idx] as an Arrow string array, null where `valid` is False."""
    arr = pool if isinstance(pool, pa.Array) else pa.array(list(pool), type=pa.string())
    mask = None if valid is None else ~np.asarray(valid, dtype=bool)
    return arr.take(pa.array(np.asarray(idx, dtype=np.int64), mask=mask))


def strings(values: Sequence[str | None] | np.ndarray) -> pa.Array:
    """Python strings / None -> Arrow string array."""
    return pa.array(values, type=pa.string(), from_pandas=True)


def floats(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """float64 Arrow array, null where `valid` is False."""
    mask = None if valid is None else ~np.asarray(valid, dtype=bool)
    return pa.array(np.asarray(values, dtype=np.float64), mask=mask)


def bools(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    mask = None if valid is None else ~np.asarray(valid, dtype=bool)
    return pa.array(np.asarray(values, dtype=bool), mask=mask)


def where_or_none(keep: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Object array: values where `keep`, else None (np.where(keep, values, None), typed)."""
    out = np.asarray(values, dtype=object).copy()
    out[~np.asarray(keep, dtype=bool)] = None
    return out


def present(values: np.ndarray) -> np.ndarray:
    """Boolean mask of the entries of an object array that are not None."""
    return np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
