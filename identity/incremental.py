"""Incremental identity resolution: link new records to the existing graph (`cdp resolve --incremental`).

In:  staged tables, and the output of a previous full `resolve` in identity/: identity_map,
     identifier_map, splink_model.json, id_history, match_edges.
     *New* records are staged records of the linkable tables whose (source_table, source_key)
     is not in identity_map (records that carry no usable identifier are simply re-examined).
Out: the same identity/ files, updated in place: new records get a customer_id; existing
     records keep theirs unless a new record bridges two clusters (then the cluster with the
     most records keeps its id, ties: the smaller id, and the other id is retired with a
     'merged' row in id_history, exactly as a full run would name it).

How: the identifier guards (placeholders, fan-out, checkout placeholders, shared home
phones) are re-evaluated over all records, because a new record can make an identifier shared
or blocked; but only the records identity_map does not hold are read: the guards are evaluated
on the state every run saves (identity/state.py) plus the new records' own. This assumes
staged records are only added; without the state (or with use_state=False) every record is read
again: same result.
New records then link
  - deterministically to the customer an existing usable identifier belongs to
    (identifier_map), or to other new records through a new identifier;
  - probabilistically (new profile records only): Splink `predict_between` new x existing and
    `predict_within` new x new with the model saved by the last full run, the same threshold
    and the same guards (first names agree, no date-of-birth conflict);
  - through a shared identifier only to profile records whose names agree.
Existing clusters are never split here: an identifier that becomes blocked or shared after it
already joined existing records is reported (`identifiers_now_guarded`) so that a periodic full
`resolve` can re-split; a full run is also what re-trains the model.
A new cluster's id is "cus_" + sha1(smallest node or record of the cluster), unique against
every id ever issued: the same rule as a full run, so it is deterministic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cdp.atomic import write_parquet_atomic
from cdp.identity import matching
from cdp.identity.ids import HISTORY_COLUMNS, fresh_id
from cdp.identity.links import CUSTOMER_TABLES, ResolveConfig, record_identifiers
from cdp.identity.resolve import guard_links, guard_scored_edges
from cdp.identity.state import guards_from_state, load_state, save_state, write_state
from cdp.workspace import Workspace

REQUIRED = ("identity_map.parquet", "identifier_map.parquet")


@dataclass(frozen=True)
class IncrementalSummary:
    new_records: int
    linked_to_existing: int
    new_customers: int
    merged_ids: int
    probabilistic_links: int
    unlinked_new_records: int
    identifiers_now_guarded: int
    customers: int

    def to_dict(self) -> dict[str, int]:
        return self.__dict__.copy()


def _require_previous(ws: Workspace) -> None:
    missing = [name for name in REQUIRED if not (ws.identity / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"identity/{missing[0]}: not found in {ws.identity}; incremental linking needs a "
            f"previous full run: run `cdp resolve` first"
        )


def _retire(ids: pd.Series, retired: dict[str, str]) -> pd.Series:
    """`ids` with every retired id replaced by its survivor (only the few affected rows are touched)."""
    if not retired:
        return ids
    hit = ids.isin(list(retired)).to_numpy()
    out = ids.copy()
    out[hit] = ids[hit].map(retired)
    return out


def _insert_sorted(existing: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """existing + new rows ordered by (source_table, source_key), as a full run writes them,
    without re-sorting the (large, already ordered) existing map: the few new rows are placed
    by binary search. Falls back to a full sort if `existing` is not in order."""
    by = ["source_table", "source_key"]
    tables = existing["source_table"]
    ordered = tables.is_monotonic_increasing and all(
        existing["source_key"].iloc[lo:hi].is_monotonic_increasing for lo, hi in zip(*_blocks(tables.to_numpy()))
    )
    if not ordered or new.empty:
        out = pd.concat([existing, new], ignore_index=True)
        return (out if new.empty and ordered else out.sort_values(by)).reset_index(drop=True)
    new = new.sort_values(by)
    table_values, key_values = tables.to_numpy(), existing["source_key"].to_numpy()
    new_tables, new_keys = new["source_table"].to_numpy(), new["source_key"].to_numpy()
    position = np.empty(len(new), dtype=np.int64)
    for table in pd.unique(new_tables):
        rows = new_tables == table
        lo, hi = np.searchsorted(table_values, table, "left"), np.searchsorted(table_values, table, "right")
        position[rows] = lo + np.searchsorted(key_values[lo:hi], new_keys[rows], "left")
    # existing row i sorts at 2i+1, a new row inserted before existing row p at 2p (stable among new rows)
    rank = np.concatenate([2 * np.arange(len(existing), dtype=np.int64) + 1, 2 * position])
    out = pd.concat([existing, new], ignore_index=True)
    return out.iloc[np.argsort(rank, kind="stable")].reset_index(drop=True)


def _blocks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of equal values in a sorted array."""
    if not len(values):
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    return np.concatenate([[0], change]), np.concatenate([change, [len(values)]])


def resolve_incremental(
    ws: Workspace, config: ResolveConfig = ResolveConfig(), use_state: bool = True
) -> IncrementalSummary:
    """Link the staged records that are not in identity_map yet to the existing customers.
    With the state saved by the previous run (identity/incremental_state/) only the records
    identity_map does not hold are read; `use_state=False` (or no state) reads and guards every
    record: the same result, slower."""
    _require_previous(ws)
    identity_map = pd.read_parquet(ws.path("identity_map"))
    identifier_map = pd.read_parquet(ws.path("identifier_map"))
    model_path = ws.path("splink_model")
    model = json.loads(model_path.read_text()) if model_path.exists() else None

    state = load_state(ws) if use_state else None
    profiles = matching.profile_records(ws)
    known = pd.Index(identity_map["source_table"] + "|" + identity_map["source_key"])
    if state is None:  # no saved state (or asked not to use it): read and guard every record
        links = record_identifiers(ws)
        record_of = links["record"]
        unknown_links = links[~record_of.isin(known).to_numpy()].reset_index(drop=True)
    else:  # only the records identity_map does not hold (new + earlier unmapped ones)
        links = None
        unknown_links = record_identifiers(ws, exclude=ws.path("identity_map"))
    new_profile = ~profiles["unique_id"].isin(known).to_numpy()
    new_records = pd.Index(
        pd.unique(
            np.concatenate([unknown_links["record"].to_numpy(), profiles.loc[new_profile, "unique_id"].to_numpy()])
        )
    )
    if new_records.empty:
        return IncrementalSummary(0, 0, 0, 0, 0, 0, 0, int(identity_map["customer_id"].nunique()))

    if state is None:
        blocked, shared, shared_edges, usable, counts = guard_links(links, profiles, config)
        guarded_now = set(blocked["node"]) | set(shared["node"])
        usable_all = usable

        def degree_of(nodes: set) -> pd.Series:
            hit = usable_all[usable_all["node"].isin(nodes).to_numpy()]
            return hit.groupby("node")["record"].nunique()
    else:
        unseen = ~unknown_links["record"].isin(set(state["unmapped"]["record"])).to_numpy()
        blocked, shared, shared_edges, state_nodes, state_pairs = guards_from_state(
            ws, state, unknown_links[unseen], profiles, config
        )
        guarded_now = set(blocked["node"]) | set(shared["node"])
        usable = unknown_links[~unknown_links["node"].isin(guarded_now).to_numpy()].reset_index(drop=True)
        node_records = state_nodes.set_index("node")["records"]

        def degree_of(nodes: set) -> pd.Series:
            return node_records.reindex(list(nodes)).dropna()

    identifiers_now_guarded = int(identifier_map["node"].isin(guarded_now).sum())
    node_customer = identifier_map[~identifier_map["node"].isin(guarded_now)].set_index("node")["customer_id"]
    record_customer = pd.Series(identity_map["customer_id"].to_numpy(), index=known)

    # the sub-graph around the new records. Records of the last run that it could not map (e.g.
    # anonymous web events) are not in identity_map either: only those that reach a customer or a
    # new customer-table record through their identifiers (two hops) are worth a look
    new_links = usable[usable["record"].isin(new_records)]
    customer_rows = new_links["source_table"].isin(CUSTOMER_TABLES).to_numpy()
    reach = set(node_customer.index) | set(new_links.loc[customer_rows, "node"])
    candidates = set(new_links.loc[customer_rows, "record"])
    for _ in range(2):
        hit = ~customer_rows & new_links["node"].isin(reach).to_numpy()
        candidates |= set(new_links.loc[hit, "record"])
        reach |= set(new_links.loc[new_links["record"].isin(candidates).to_numpy(), "node"])
    local = new_links[new_links["record"].isin(candidates).to_numpy()]

    scored = pd.DataFrame(columns=["unique_id_l", "unique_id_r", "match_probability", "accepted", "guard"])
    if config.probabilistic and model and new_profile.any():
        scored = guard_scored_edges(
            matching.predict_new(profiles, new_profile, model, config.score_floor), profiles, config, model
        )
    prob = scored[scored["accepted"].astype(bool)]
    soft = pd.concat(
        [
            shared_edges[["uid_l", "uid_r"]].assign(kind="shared_identifier+name", p=1.0),
            pd.DataFrame(
                {
                    "uid_l": prob["unique_id_l"],
                    "uid_r": prob["unique_id_r"],
                    "kind": "probabilistic",
                    "p": prob["match_probability"].astype(float),
                }
            ),
        ],
        ignore_index=True,
    )
    soft = soft[soft["uid_l"].isin(new_records) | soft["uid_r"].isin(new_records)].reset_index(drop=True)

    # vertices: local records, identifier nodes, existing customers ("=" + id, never a node or record)
    def cust(ids: pd.Series) -> np.ndarray:
        return ("=" + ids.astype(str)).to_numpy()

    known_nodes = local["node"].isin(node_customer.index).to_numpy()
    edge_a = [local["record"].to_numpy(), local.loc[known_nodes, "node"].to_numpy()]
    edge_b = [local["node"].to_numpy(), cust(local.loc[known_nodes, "node"].map(node_customer))]
    for side, other in (("uid_l", "uid_r"), ("uid_r", "uid_l")):
        old = soft[other].isin(record_customer.index).to_numpy()
        edge_a.append(soft.loc[old, side].to_numpy())
        edge_b.append(cust(soft.loc[old, other].map(record_customer)))
    both_new = (~soft["uid_l"].isin(record_customer.index) & ~soft["uid_r"].isin(record_customer.index)).to_numpy()
    edge_a.append(soft.loc[both_new, "uid_l"].to_numpy())
    edge_b.append(soft.loc[both_new, "uid_r"].to_numpy())
    a, b = np.concatenate(edge_a).astype(object), np.concatenate(edge_b).astype(object)
    new_profile_ids = profiles.loc[new_profile, "unique_id"].to_numpy()
    vertices = pd.Index(pd.unique(np.concatenate([a, b, local["record"].to_numpy(), new_profile_ids])))
    n = len(vertices)
    graph = coo_matrix(
        (np.ones(len(a), dtype=np.int8), (vertices.get_indexer(a), vertices.get_indexer(b))), shape=(n, n)
    )
    _, component = connected_components(graph, directed=False)
    frame = pd.DataFrame({"vertex": vertices, "component": component})
    frame["is_customer"] = frame["vertex"].str.startswith("=")
    frame["is_record"] = frame["vertex"].isin(set(local["record"]) | set(new_profile_ids))

    # ids: existing customers in a component merge into the one with most records (ties: smaller id)
    sizes = identity_map["customer_id"].value_counts()
    customers = frame[frame["is_customer"]].assign(customer_id=lambda f: f["vertex"].str[1:])
    customers["n"] = customers["customer_id"].map(sizes).fillna(0).astype(int)
    customers = customers.sort_values(["component", "n", "customer_id"], ascending=[True, False, True])
    survivor = customers.drop_duplicates("component").set_index("component")["customer_id"]
    retired = customers[~customers["customer_id"].isin(set(survivor))][["customer_id", "component"]]
    retired = dict(zip(retired["customer_id"], retired["component"].map(survivor)))

    history_path = ws.path("id_history")
    history = pd.read_parquet(history_path) if history_path.exists() else pd.DataFrame(columns=HISTORY_COLUMNS)
    taken = set(identity_map["customer_id"]) | set(history["old_id"].dropna()) | set(history["new_id"].dropna())
    records = frame[frame["is_record"]].copy()
    split = records["vertex"].str.split("|", n=1, expand=True)
    records["source_table"], records["source_key"] = split[0], split[1]
    has_customer_record = records["source_table"].isin(CUSTOMER_TABLES).groupby(records["component"]).any()
    ids = survivor.to_dict()
    need = set(has_customer_record[has_customer_record].index) - set(ids)
    anchors = (
        frame[~frame["is_customer"] & frame["component"].isin(need)]
        .sort_values("vertex")
        .drop_duplicates("component")
        .set_index("component")["vertex"]
        .sort_values()
    )
    for comp, anchor in anchors.items():
        if comp not in ids and has_customer_record.get(comp, False):
            ids[comp] = fresh_id(anchor, taken)
    records["customer_id"] = records["component"].map(ids)
    records = records[records["customer_id"].notna() & ~records["vertex"].isin(known)]

    # linked_by and match_probability, as a full run writes them
    kinds = (
        usable[usable["record"].isin(records["vertex"])]
        .groupby("record")["kind"]
        .agg(lambda k: ",".join(sorted(set(k))))
    )
    soft_kinds = pd.concat(
        [
            soft[["uid_l", "kind"]].set_axis(["record", "kind"], axis=1),
            soft[["uid_r", "kind"]].set_axis(["record", "kind"], axis=1),
        ]
    )
    soft_kinds = soft_kinds.groupby("record")["kind"].agg(lambda k: ",".join(sorted(set(k))))
    hard_kinds = records["vertex"].map(kinds).fillna("").astype(str).to_numpy(dtype=object)
    extra = records["vertex"].map(soft_kinds).fillna("").astype(str).to_numpy(dtype=object)
    records["linked_by"] = hard_kinds + np.where((hard_kinds != "") & (extra != ""), ",", "").astype(object) + extra
    degree = degree_of(set(local["node"]))
    bound = local["node"].map(degree).gt(1) | local["node"].isin(node_customer.index)
    hard = set(local.loc[bound.to_numpy(), "record"])
    best = (
        pd.concat(
            [
                soft[["uid_l", "p"]].set_axis(["record", "p"], axis=1),
                soft[["uid_r", "p"]].set_axis(["record", "p"], axis=1),
            ]
        )
        .groupby("record")["p"]
        .max()
    )
    p = records["vertex"].map(best).fillna(1.0).to_numpy(float)
    p[records["vertex"].isin(hard).to_numpy()] = 1.0
    records["match_probability"] = p

    # write: retire merged ids everywhere, append new rows
    columns = ["source_table", "source_key", "customer_id", "linked_by", "match_probability"]
    identity_map["customer_id"] = _retire(identity_map["customer_id"], retired)
    updated = _insert_sorted(identity_map[columns], records[columns])
    identifier_map["customer_id"] = _retire(identifier_map["customer_id"], retired)
    node_rows = frame[~frame["is_customer"] & ~frame["is_record"]].assign(customer_id=lambda f: f["component"].map(ids))
    node_rows = node_rows[node_rows["customer_id"].notna() & ~node_rows["vertex"].isin(set(identifier_map["node"]))]
    identifier_map = pd.concat(
        [
            identifier_map,
            node_rows[["vertex"]]
            .rename(columns={"vertex": "node"})
            .assign(customer_id=node_rows["customer_id"].to_numpy()),
        ],
        ignore_index=True,
    )
    write_parquet_atomic(updated, ws.path("identity_map"))
    write_parquet_atomic(identifier_map, ws.path("identifier_map"))
    write_parquet_atomic(
        pd.concat([blocked, shared.assign(guard="shared")], ignore_index=True),
        ws.path("blocked_identifiers"),
    )
    edges_path = ws.path("match_edges")
    if len(scored):
        previous_edges = pd.read_parquet(edges_path) if edges_path.exists() else None
        write_parquet_atomic(
            pd.concat([e for e in (previous_edges, scored) if e is not None and len(e)], ignore_index=True), edges_path
        )
    if retired:
        now = pd.Timestamp.now(tz="UTC").floor("s")
        events = pd.DataFrame(
            [("merged", old, new) for old, new in sorted(retired.items())], columns=HISTORY_COLUMNS[:3]
        ).assign(resolved_at=now)
        write_parquet_atomic(pd.concat([history, events], ignore_index=True) if len(history) else events, history_path)
    from cdp.identity.households import all_household_keys, build_households

    if state is None:
        build_households(ws, updated, profiles, links)
        write_state(ws, links, updated, counts)
    else:  # household keys of the earlier records (ids retired) + those of the newly mapped ones
        keys = state["household_keys"].assign(customer_id=lambda k: _retire(k["customer_id"], retired))
        keys = pd.concat(
            [keys, all_household_keys(records[["source_table", "source_key", "customer_id"]], profiles, unknown_links)],
            ignore_index=True,
        ).drop_duplicates()
        build_households(ws, updated, keys=keys.reset_index(drop=True))
        mapped = set(records["vertex"])
        save_state(
            ws,
            state_nodes,
            state_pairs,
            unknown_links.loc[~unknown_links["record"].isin(mapped).to_numpy(), "record"].to_numpy(),
        )

    new_mapped = records[records["vertex"].isin(new_records)]
    existing_ids = set(identity_map["customer_id"])
    return IncrementalSummary(
        new_records=len(new_records),
        linked_to_existing=int(new_mapped["customer_id"].isin(existing_ids).sum()),
        new_customers=int(new_mapped.loc[~new_mapped["customer_id"].isin(existing_ids), "customer_id"].nunique()),
        merged_ids=len(retired),
        probabilistic_links=len(prob),
        unlinked_new_records=int(len(new_records) - len(new_mapped)),
        identifiers_now_guarded=identifiers_now_guarded,
        customers=int(updated["customer_id"].nunique()),
    )
