"""Daily drops: split a generated raw/ into an initial load and N daily drop files per table.

In: a workspace whose raw/ holds the single files `cdp generate` wrote. Out: raw/<table>.parquet
rewritten with the rows dated before the last N days (the initial load) and
raw/<table>/<YYYY-MM-DD>.parquet per day with (a) the rows dated that day, (b) late records: ~10%
of a day's events arrive 1-3 days later, (c) updates: CRM records of the initial load with a new
address (updated_at = the drop day) and loyalty cards closed. The layout is
docs/DATA_CONTRACT.md's "Daily drops" (cdp.ingest.drops reads it). Deterministic per seed.
Tables without a date of their own (products, campaigns, enrichment) stay in the initial load;
rows whose date does not parse (the generator's dirty values) too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cdp.ingest.contract import TABLES
from cdp.workspace import Workspace

from .common import data_window

DATED = {
    "crm_contacts": "created_at",
    "loyalty_members": "enrolled_at",
    "online_accounts": "created_at",
    "orders": "ordered_at",
    "web_events": "occurred_at",
    "service_interactions": "occurred_at",
    "marketing_sends": "sent_at",
    "marketing_responses": "occurred_at",
    "consent_events": "occurred_at",
}
LATE = {"orders", "web_events", "service_interactions", "marketing_responses"}  # events that arrive late
LATE_SHARE, CRM_MOVES, CARDS_CLOSED = 0.10, 0.01, 0.005  # per drop, shares of the table


def _iso(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_daily_drops(ws: Workspace, days: int, seed: int, end: str = "2025-12-31") -> dict[str, int]:
    """Split ws.raw into an initial load + `days` drops (see module docstring); rows per drop file."""
    if days < 1:
        return {}
    rng = np.random.default_rng([seed, 18])
    _, stop = data_window(end)
    cutoff = stop - pd.Timedelta(days=days)
    frames = {t: pd.read_parquet(ws.raw / f"{t}.parquet") for t in TABLES if (ws.raw / f"{t}.parquet").exists()}
    day: dict[str, np.ndarray] = {}  # table -> drop index per row (-1: initial load)
    for table, col in DATED.items():
        if table not in frames:
            continue
        when = pd.to_datetime(frames[table][col], errors="coerce", utc=True, format="ISO8601")
        index = ((when - cutoff) // pd.Timedelta(days=1)).to_numpy(dtype="float64", na_value=-1)
        index = np.clip(np.nan_to_num(index, nan=-1), -1, days - 1).astype("int64")
        if table in LATE:
            late = (index >= 0) & (rng.random(len(index)) < LATE_SHARE)
            index[late] = np.minimum(days - 1, index[late] + rng.integers(1, 4, late.sum()))
        day[table] = index
    if "order_lines" in frames and "orders" in frames:  # lines arrive with their order
        of_order = pd.Series(day["orders"], index=frames["orders"]["order_id"].to_numpy())
        of_order = of_order[~of_order.index.duplicated()]
        day["order_lines"] = frames["order_lines"]["order_id"].map(of_order).fillna(-1).to_numpy("int64")
    updates = _updates(frames, day, days, cutoff, rng)
    written: dict[str, int] = {}
    for table, frame in frames.items():
        index = day.get(table, np.full(len(frame), -1))
        pq.write_table(pa.Table.from_pandas(frame[index < 0], preserve_index=False), ws.raw / f"{table}.parquet")
        for d in range(days):
            part = pd.concat([frame[index == d], *[u for t, dd, u in updates if t == table and dd == d]])
            if len(part):
                name = f"{table}/{(cutoff + pd.Timedelta(days=d + 1)).date()}.parquet"
                (ws.raw / table).mkdir(exist_ok=True)
                pq.write_table(pa.Table.from_pandas(part, preserve_index=False), ws.raw / name)
                written[name] = len(part)
    return written


def _updates(frames, day, days, cutoff, rng) -> list[tuple[str, int, pd.DataFrame]]:
    """(table, drop index, changed copies of initial-load rows): moved CRM contacts, closed cards."""
    out = []
    for d in range(days):
        stamp = _iso(cutoff + pd.Timedelta(days=d, hours=9))
        if "crm_contacts" in frames:
            crm = frames["crm_contacts"]
            pool = np.flatnonzero(day["crm_contacts"] < 0)
            pick = rng.choice(pool, size=min(len(pool), max(1, int(len(crm) * CRM_MOVES))), replace=False)
            moved = crm.iloc[pick].copy()
            moved["address_line"] = [f"{rng.integers(1, 9999)} Harbour Street" for _ in pick]
            moved["updated_at"] = stamp
            out.append(("crm_contacts", d, moved))
        if "loyalty_members" in frames:
            cards = frames["loyalty_members"]
            pool = np.flatnonzero((day["loyalty_members"] < 0) & (cards["status"] == "active").to_numpy())
            pick = rng.choice(pool, size=min(len(pool), max(1, int(len(cards) * CARDS_CLOSED))), replace=False)
            out.append(("loyalty_members", d, cards.iloc[pick].assign(status="closed")))
    return out
