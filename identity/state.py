"""The saved state of identity resolution that lets `resolve --incremental` skip re-reading records.

In:  record -> identifier links (`cdp.identity.resolve.record_identifiers`), the identity_map.
Out: identity/incremental_state/ (see STATE_FILES), and the hard and household guards evaluated
     from it plus the links of records it has not seen: the same answers as re-reading every record,
     as long as staged records are only added. Erasure drops the folder (privacy/erasure.py).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from cdp.atomic import write_parquet_atomic
from cdp.identity.ids import state_dir
from cdp.identity.links import (
    PROFILE_TABLES,
    ResolveConfig,
    blocked_nodes,
    node_counts,
    record_identifiers,
    shared_nodes,
)
from cdp.workspace import Workspace

# --- incremental state: what a run saves so the next incremental run need not re-read every record
# nodes:    per identifier node: kind, records carrying it, orders carrying it, on a profile record?
# pairs:    distinct (phone/email/device node, card/account/email node seen on the same record)
# unmapped: records with identifiers that the run saw but did not map (e.g. anonymous web events)
# household_keys: every (customer_id, household key) pair of the mapped records (cdp.identity.households)
# Together with identity_map they describe every staged record the run saw; the guards of the
# next run are these counts plus the new records' own, which is what re-reading everything gives
# as long as staged records are only added (records seen before are not changed afterwards).
STATE_FILES = ("nodes.parquet", "pairs.parquet", "unmapped.parquet", "household_keys.parquet")


def _add_state(nodes: pd.DataFrame, pairs: pd.DataFrame, links: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """State (nodes, pairs) plus the contribution of records it has not seen yet (`links`)."""
    if links.empty:
        return nodes, pairs
    new_nodes, new_pairs = node_counts(links)
    con = duckdb.connect()
    try:
        for name, frame in (("n0", nodes), ("n1", new_nodes), ("p0", pairs), ("p1", new_pairs)):
            con.register(name, frame)
        nodes = con.execute("""
            SELECT node, any_value(kind) AS kind, sum(records)::BIGINT AS records, sum(orders)::BIGINT AS orders,
                   bool_or(on_profile) AS on_profile
            FROM (SELECT * FROM n0 UNION ALL SELECT * FROM n1) GROUP BY node""").df()
        pairs = con.execute("SELECT DISTINCT * FROM (SELECT * FROM p0 UNION ALL SELECT * FROM p1)").df()
    finally:
        con.close()
    return nodes, pairs


def save_state(ws: Workspace, nodes: pd.DataFrame, pairs: pd.DataFrame, unmapped: np.ndarray) -> None:
    folder = state_dir(ws)
    folder.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(nodes, folder / "nodes.parquet")
    write_parquet_atomic(pairs, folder / "pairs.parquet")
    write_parquet_atomic(pd.DataFrame({"record": pd.unique(unmapped)}), folder / "unmapped.parquet")


def write_state(
    ws: Workspace, links: pd.DataFrame, identity_map: pd.DataFrame, counts: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """Save the incremental state of a run that read every record (`links`: all of them; `counts`:
    their `node_counts`, as the guards computed them; identity_map: what the run mapped).
    household_keys.parquet is written by build_households."""
    nodes, pairs = counts
    known = pd.Index(identity_map["source_table"] + "|" + identity_map["source_key"])
    records = links["record"] if "record" in links else links["source_table"] + "|" + links["source_key"]
    save_state(ws, nodes, pairs, records[~records.isin(known)].to_numpy())


def load_state(ws: Workspace) -> dict[str, pd.DataFrame] | None:
    folder = state_dir(ws)
    if not all((folder / name).exists() for name in STATE_FILES):
        return None
    return {name.split(".")[0]: pd.read_parquet(folder / name) for name in STATE_FILES}


def guards_from_state(
    ws: Workspace, state: dict[str, pd.DataFrame], fresh: pd.DataFrame, profiles: pd.DataFrame, config: ResolveConfig
) -> tuple[pd.DataFrame, ...]:
    """guard_links' (blocked, shared, shared_edges) over every record, from the saved state plus
    the records it has not seen (`fresh`), and the updated state nodes and pairs. Shared
    identifiers are recomputed from the profile tables' links (small: a shared node is a
    phone/email on profile records)."""
    nodes, pairs = _add_state(state["nodes"], state["pairs"], fresh)
    blocked = blocked_nodes(nodes, pairs, config)
    if config.household_guards and PROFILE_TABLES.keys() & {p.stem for p in ws.staged.glob("*.parquet")}:
        profile_links = record_identifiers(ws, tables=tuple(PROFILE_TABLES))
        con = duckdb.connect()
        con.register("links", profile_links[~profile_links["node"].isin(set(blocked["node"]))].reset_index(drop=True))
        con.register("profiles", profiles)
        shared, shared_edges = shared_nodes(con, config)
        con.close()
    else:
        shared, shared_edges = (
            pd.DataFrame(columns=["node", "kind", "reason"]),
            pd.DataFrame(columns=["uid_l", "uid_r", "node"]),
        )
    return blocked, shared, shared_edges, nodes, pairs
