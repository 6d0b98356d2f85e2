"""The DuckDB feature builds: in full (`build_features_duckdb`, which saves the state below) or
incremental, recomputing only the (customer, snapshot) rows whose inputs changed.

A snapshot row depends on the customer's own records dated before the snapshot, and (for
change_signals) on the market price level at that snapshot. After every DuckDB build the state in
features/incremental/ keeps a digest per (customer, relation, month of the record's date) of the
derived inputs (records already attached to their customer_id: merges and splits, updated and
late records all change a digest), the market levels, the snapshot times and a signature of the
SQL. The next build recomputes, on the same SQL, only
  - every row at a snapshot time not built before (the daily "as of now" snapshot, a new month),
  - every row at a built snapshot whose market level changed (late order lines),
  - the rows of a customer whose digests changed, at the snapshots from the earliest changed month on
    (a customer id that vanished in a merge loses its rows there),
keeps the other rows as they are and drops the rows of snapshot times no longer in the window.
Same rows as a full build (tests/e2e/test_refresh.py checks it). No state, or a signature that
differs (SQL, settings, DuckDB version): None, the caller rebuilds in full.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd

from cdp.atomic import write_json_atomic
from cdp.features.timeline import Timeline
from cdp.features.views import (
    INPUT_SQL,
    MARKET_SQL,
    SQL,
    connect,
    view_body,
    view_columns,
    view_sql,
    write_feature_table,
)
from cdp.workspace import Workspace

# relation -> the instant from which a record can count in a snapshot (its row is used only at
# snapshots after it; the vendor fact once both its date and its link exist)
RECORD_TIME = {
    "orders": "ordered_at",
    "order_lines": "ordered_at",
    "web": "occurred_at",
    "service": "occurred_at",
    "sends": "sent_at",
    "responses": "occurred_at",
    "crm": "created_at",
    "loyalty": "enrolled_at",
    "accounts": "created_at",
    "enrich": "greatest(as_of, linked_at)",
    "consent": "occurred_at",
}
EPOCH = "TIMESTAMPTZ '1900-01-01 00:00:00+00'"  # the month of a record without a date: before every snapshot
FINGERPRINT_SQL = " UNION ALL ".join(
    f"SELECT customer_id, '{name}' AS relation, coalesce(date_trunc('month', {when}), {EPOCH}) AS month, "
    f"CAST(sum(hash(r)) % 18446744073709551557 AS UBIGINT) AS digest FROM {name} r "
    "WHERE customer_id IS NOT NULL GROUP BY ALL"
    for name, when in RECORD_TIME.items()
)
MARKET_TOLERANCE = 1e-12  # relative: the same lines summed in another order


def state_dir(ws: Workspace) -> Path:
    return ws.features / "incremental"


def signature() -> str:
    """What the rows are a function of besides the data: the SQL (settings filled in) and DuckDB."""
    texts = [duckdb.__version__, MARKET_SQL, *INPUT_SQL.values(), *(view_body(name) for name in SQL)]
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()


def clear_state(ws: Workspace) -> None:
    """Forget the state (a build by another engine): the next build is a full one."""
    shutil.rmtree(state_dir(ws), ignore_errors=True)


def save_state(
    ws: Workspace,
    con: duckdb.DuckDBPyConnection,
    snapshots: list[pd.Timestamp],
    market: str = MARKET_SQL,
    whole: bool = True,
) -> None:
    """The state of the views just written (`market`: a relation holding MARKET_SQL's rows, if
    computed already). state.json goes last, it says the state is whole (`whole=False`: not yet,
    `mark_whole` once the views are written)."""
    folder = state_dir(ws)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").unlink(missing_ok=True)
    for name, sql in (("fingerprints", FINGERPRINT_SQL), ("market", f"SELECT * FROM ({market})")):
        temporary = folder / f".{name}.parquet.tmp"
        con.execute(f"COPY ({sql}) TO '{temporary}' (FORMAT parquet)")
        os.replace(temporary, folder / f"{name}.parquet")
    if whole:
        mark_whole(ws, snapshots)


def mark_whole(ws: Workspace, snapshots: list[pd.Timestamp]) -> None:
    write_json_atomic(
        state_dir(ws) / "state.json", {"signature": signature(), "snapshots": [s.isoformat() for s in snapshots]}
    )


def load_state(ws: Workspace) -> dict | None:
    path = state_dir(ws) / "state.json"
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    return state if state.get("signature") == signature() else None


def _write_views(ws: Workspace, con: duckdb.DuckDBPyConnection, query_of, progress) -> dict[str, int]:
    """Run each view's query (`query_of(name)`), publish its Parquet; rows per view."""
    written = {}
    for step, name in enumerate(SQL):
        frame = con.execute(query_of(name)).df()
        write_feature_table(ws, name, frame)
        written[name] = len(frame)
        if progress:
            progress(name, step + 1, len(SQL))
    return written


def build_features_duckdb(
    ws: Workspace, timeline: Timeline, snapshots: list[pd.Timestamp], progress=None
) -> dict[str, int]:
    """Write one Parquet per feature view with DuckDB over the pandas `timeline`; rows per view."""
    con = connect(ws, timeline, snapshots)
    ws.features.mkdir(parents=True, exist_ok=True)
    written = _write_views(ws, con, lambda name: view_sql(name, view_columns(con, name)), progress)
    save_state(ws, con, snapshots)  # what the next incremental build compares against
    return written


def build_incremental(
    ws: Workspace, timeline: Timeline, snapshots: list[pd.Timestamp], progress=None
) -> tuple[dict[str, int], dict[str, int]] | None:
    """Update the views in features/ to `snapshots` (module docstring): (rows per view, what was
    recomputed), or None without a usable state (then build in full)."""
    state = load_state(ws)
    if state is None or not all((ws.features / f"{name}.parquet").exists() for name in SQL):
        return None
    folder = state_dir(ws)
    built = {pd.Timestamp(s) for s in state["snapshots"]}
    con = connect(ws, timeline, snapshots)
    con.register("built_frame", pd.DataFrame({"event_timestamp": sorted(built & set(snapshots))}))
    con.execute(
        "CREATE TEMP TABLE kept AS SELECT CAST(event_timestamp AS TIMESTAMPTZ) AS event_timestamp FROM built_frame"
    )
    con.execute(f"""CREATE TEMP TABLE changed AS
        SELECT customer_id, min(month) AS since
        FROM ({FINGERPRINT_SQL}) n FULL OUTER JOIN read_parquet('{folder / "fingerprints.parquet"}') o
          USING (customer_id, relation, month)
        WHERE n.digest IS DISTINCT FROM o.digest
        GROUP BY customer_id""")
    con.execute(f"CREATE TEMP TABLE market_now AS {MARKET_SQL}")  # every snapshot time's, read twice
    con.execute(f"""CREATE TEMP TABLE clean AS
        SELECT event_timestamp FROM kept WHERE event_timestamp NOT IN (
          SELECT event_timestamp FROM market_now n
          FULL OUTER JOIN read_parquet('{folder / "market.parquet"}') o USING (event_timestamp, category)
          WHERE NOT (n.price_index IS NOT DISTINCT FROM o.price_index
                     OR abs(n.price_index - o.price_index) <= {MARKET_TOLERANCE} * abs(o.price_index)))""")
    save_state(ws, con, snapshots, "SELECT * FROM market_now", whole=False)  # the new inputs' digests
    # the rows to compute: the grid (INPUT_SQL "snapshots") outside clean snapshots or of changed customers
    con.execute("""CREATE TEMP TABLE grid AS SELECT s.* FROM snapshots s
        WHERE s.event_timestamp NOT IN (SELECT event_timestamp FROM clean)
           OR EXISTS (SELECT 1 FROM changed c WHERE c.customer_id = s.customer_id AND s.event_timestamp >= c.since)""")
    recomputed = {
        "rows_recomputed": con.sql("SELECT count(*) FROM grid").fetchone()[0],  # type: ignore[index]
        "rows_total": con.sql("SELECT count(*) FROM snapshots").fetchone()[0],  # type: ignore[index]
        "customers_changed": con.sql("SELECT count(*) FROM changed").fetchone()[0],  # type: ignore[index]
        "snapshots_new": len(set(snapshots) - built),
        "snapshots_market_changed": len(built & set(snapshots)) - con.sql("SELECT count(*) FROM clean").fetchone()[0],  # type: ignore[index]
    }
    con.execute("DROP TABLE snapshots")
    con.execute("CREATE TEMP TABLE snapshots AS SELECT * FROM grid")
    con.execute("CREATE OR REPLACE TEMP TABLE snapshot_times AS SELECT DISTINCT event_timestamp FROM grid")

    def kept_and_recomputed(name: str) -> str:
        columns = view_columns(con, name)
        selected = ", ".join(["customer_id", "event_timestamp", *columns])
        return f"""SELECT * FROM (
            SELECT {selected} FROM read_parquet('{ws.features / f"{name}.parquet"}') o
            WHERE o.event_timestamp IN (SELECT event_timestamp FROM clean)
              AND NOT EXISTS (SELECT 1 FROM changed c
                              WHERE c.customer_id = o.customer_id AND o.event_timestamp >= c.since)
            UNION ALL SELECT {selected} FROM ({view_sql(name, columns)}))
            ORDER BY event_timestamp, customer_id"""

    written = _write_views(ws, con, kept_and_recomputed, progress)
    mark_whole(ws, snapshots)
    return written, recomputed
