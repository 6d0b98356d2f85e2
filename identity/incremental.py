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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cdp.atomic import write_parquet_atomic
from cdp.identity import matching
from cdp.identity.ids import HISTORY_COLUMNS, fresh_id
from cdp.identity.links import CUSTOMER_TABLES, ResolveConfig, record_identifiers
from cdp.identity.resolve import (
    combine_linked_by,
    edges_by_record,
    guard_links,
    guard_scored_edges,
    joined_kinds,
    soft_record_edges,
)
from cdp.identity.state import guards_from_state, load_state, save_state, write_state
from cdp.workspace import Workspace


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


@dataclass
class _Previous:
    """What the last run left in identity/, and the profile records as staged now."""

    identity_map: pd.DataFrame
    identifier_map: pd.DataFrame
    model: dict | None
    state: dict | None
    profiles: pd.DataFrame
    known: pd.Index  # "table|key" of every record identity_map holds


@dataclass
class _Guards:
    """Identifier guards re-evaluated with the new records, and the links they leave usable."""

    blocked: pd.DataFrame
    shared: pd.DataFrame
    shared_edges: pd.DataFrame
    usable: pd.DataFrame
    guarded_now: set
    degree_of: Callable[[set], pd.Series]  # node -> how many records carry it (all records)
    counts: tuple[pd.DataFrame, pd.DataFrame] | None = None  # full read: node counts for the state
    state_nodes: pd.DataFrame | None = None  # state read: the updated state tables
    state_pairs: pd.DataFrame | None = None


def resolve_incremental(
    ws: Workspace, config: ResolveConfig = ResolveConfig(), use_state: bool = True
) -> IncrementalSummary:
    """Link the staged records that are not in identity_map yet to the existing customers.
    With the state saved by the previous run (identity/incremental_state/) only the records
    identity_map does not hold are read; `use_state=False` (or no state) reads and guards every
    record: the same result, slower."""
    ws.require("identity_map", "identifier_map")  # incremental linking needs a previous full run
    previous = _load_previous(ws, use_state)
    links, unknown_links = _unknown_links(ws, previous)
    new_profile = ~previous.profiles["unique_id"].isin(previous.known).to_numpy()
    new_records = pd.Index(
        pd.unique(
            np.concatenate(
                [unknown_links["record"].to_numpy(), previous.profiles.loc[new_profile, "unique_id"].to_numpy()]
            )
        )
    )
    if new_records.empty:
        return IncrementalSummary(0, 0, 0, 0, 0, 0, 0, int(previous.identity_map["customer_id"].nunique()))
    guards = _guards(ws, previous, links, unknown_links, config)
    identifier_map = previous.identifier_map
    node_customer = identifier_map[~identifier_map["node"].isin(guards.guarded_now)].set_index("node")["customer_id"]
    record_customer = pd.Series(previous.identity_map["customer_id"].to_numpy(), index=previous.known)
    local = _local_subgraph(guards.usable, new_records, node_customer)
    scored = _scored_new_pairs(previous, new_profile, config)
    prob = scored[scored["accepted"].astype(bool)]
    soft = _soft_edges(guards.shared_edges, prob, new_records)
    new_profile_ids = previous.profiles.loc[new_profile, "unique_id"].to_numpy()
    frame = _components(local, soft, node_customer, record_customer, new_profile_ids)
    if not frame["is_record"].any():  # only records that reach no one (anonymous events): nothing to write
        customers = int(previous.identity_map["customer_id"].nunique())
        return IncrementalSummary(len(new_records), 0, 0, 0, len(prob), len(new_records), 0, customers)
    history_path = ws.path("id_history")
    history = pd.read_parquet(history_path) if history_path.exists() else pd.DataFrame(columns=HISTORY_COLUMNS)
    records, ids, retired = _assign_ids(frame, previous, history)
    _add_link_evidence(records, guards, soft, local, node_customer)
    updated = _write_maps(ws, previous, records, frame, ids, retired, guards, scored, history)
    _update_households_and_state(ws, previous, updated, records, retired, links, unknown_links, guards)
    new_mapped = records[records["vertex"].isin(new_records)]
    existing_ids = set(previous.identity_map["customer_id"])
    return IncrementalSummary(
        new_records=len(new_records),
        linked_to_existing=int(new_mapped["customer_id"].isin(existing_ids).sum()),
        new_customers=int(new_mapped.loc[~new_mapped["customer_id"].isin(existing_ids), "customer_id"].nunique()),
        merged_ids=len(retired),
        probabilistic_links=len(prob),
        unlinked_new_records=int(len(new_records) - len(new_mapped)),
        identifiers_now_guarded=int(identifier_map["node"].isin(guards.guarded_now).sum()),
        customers=int(updated["customer_id"].nunique()),
    )


def _load_previous(ws: Workspace, use_state: bool) -> _Previous:
    identity_map = pd.read_parquet(ws.path("identity_map"))
    model_path = ws.path("splink_model")
    return _Previous(
        identity_map=identity_map,
        identifier_map=pd.read_parquet(ws.path("identifier_map")),
        model=json.loads(model_path.read_text()) if model_path.exists() else None,
        state=load_state(ws) if use_state else None,
        profiles=matching.profile_records(ws),
        known=pd.Index(identity_map["source_table"] + "|" + identity_map["source_key"]),
    )


def _unknown_links(ws: Workspace, previous: _Previous) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """(all record->identifier links or None when the state is used, the links of unknown records)."""
    if previous.state is None:  # no saved state (or asked not to use it): read and guard every record
        links = record_identifiers(ws)
        unknown = links[~links["record"].isin(previous.known).to_numpy()].reset_index(drop=True)
        return links, unknown
    # only the records identity_map does not hold (new + earlier unmapped ones)
    return None, record_identifiers(ws, exclude=ws.path("identity_map"))


def _guards(
    ws: Workspace, previous: _Previous, links: pd.DataFrame | None, unknown_links: pd.DataFrame, config: ResolveConfig
) -> _Guards:
    if previous.state is None:
        assert links is not None
        blocked, shared, shared_edges, usable, counts = guard_links(links, previous.profiles, config)

        def degree_of(nodes: set) -> pd.Series:
            hit = usable[usable["node"].isin(nodes).to_numpy()]
            return hit.groupby("node")["record"].nunique()

        guarded = set(blocked["node"]) | set(shared["node"])
        return _Guards(blocked, shared, shared_edges, usable, guarded, degree_of, counts=counts)
    unseen = ~unknown_links["record"].isin(set(previous.state["unmapped"]["record"])).to_numpy()
    blocked, shared, shared_edges, state_nodes, state_pairs = guards_from_state(
        ws, previous.state, unknown_links[unseen], previous.profiles, config
    )
    guarded = set(blocked["node"]) | set(shared["node"])
    usable = unknown_links[~unknown_links["node"].isin(guarded).to_numpy()].reset_index(drop=True)
    node_records = state_nodes.set_index("node")["records"]

    def degree_from_state(nodes: set) -> pd.Series:
        return node_records.reindex(list(nodes)).dropna()

    return _Guards(
        blocked,
        shared,
        shared_edges,
        usable,
        guarded,
        degree_from_state,
        state_nodes=state_nodes,
        state_pairs=state_pairs,
    )


def _local_subgraph(usable: pd.DataFrame, new_records: pd.Index, node_customer: pd.Series) -> pd.DataFrame:
    """The links around the new records. Records of the last run that it could not map (e.g.
    anonymous web events) are not in identity_map either: only those that reach a customer or a
    new customer-table record through their identifiers (two hops) are worth a look."""
    new_links = usable[usable["record"].isin(new_records)]
    customer_rows = new_links["source_table"].isin(CUSTOMER_TABLES).to_numpy()
    reach = set(node_customer.index) | set(new_links.loc[customer_rows, "node"])
    candidates = set(new_links.loc[customer_rows, "record"])
    for _ in range(2):
        hit = ~customer_rows & new_links["node"].isin(reach).to_numpy()
        candidates |= set(new_links.loc[hit, "record"])
        reach |= set(new_links.loc[new_links["record"].isin(candidates).to_numpy(), "node"])
    return new_links[new_links["record"].isin(candidates).to_numpy()]


def _scored_new_pairs(previous: _Previous, new_profile: np.ndarray, config: ResolveConfig) -> pd.DataFrame:
    """New profile records scored against existing and new ones with the saved model, guarded."""
    if not (config.probabilistic and previous.model and new_profile.any()):
        return pd.DataFrame(columns=["unique_id_l", "unique_id_r", "match_probability", "accepted", "guard"])
    predicted = matching.predict_new(previous.profiles, new_profile, previous.model, config.score_floor)
    return guard_scored_edges(predicted, previous.profiles, config, previous.model)


def _soft_edges(shared_edges: pd.DataFrame, prob: pd.DataFrame, new_records: pd.Index) -> pd.DataFrame:
    """Shared-identifier and probabilistic edges touching a new record: uid_l, uid_r, kind, p."""
    soft = soft_record_edges(shared_edges, prob)
    return soft[soft["uid_l"].isin(new_records) | soft["uid_r"].isin(new_records)].reset_index(drop=True)


def _as_customer_vertex(ids: pd.Series) -> np.ndarray:
    return ("=" + ids.astype(str)).to_numpy()  # "=" + id: never a node or a record


def _components(
    local: pd.DataFrame,
    soft: pd.DataFrame,
    node_customer: pd.Series,
    record_customer: pd.Series,
    new_profile_ids: np.ndarray,
) -> pd.DataFrame:
    """Connected components over local records, identifier nodes and existing customers:
    vertex, component, is_customer, is_record."""
    known_nodes = local["node"].isin(node_customer.index).to_numpy()
    edge_a = [local["record"].to_numpy(), local.loc[known_nodes, "node"].to_numpy()]
    edge_b = [local["node"].to_numpy(), _as_customer_vertex(local.loc[known_nodes, "node"].map(node_customer))]
    for side, other in (("uid_l", "uid_r"), ("uid_r", "uid_l")):
        old = soft[other].isin(record_customer.index).to_numpy()
        edge_a.append(soft.loc[old, side].to_numpy())
        edge_b.append(_as_customer_vertex(soft.loc[old, other].map(record_customer)))
    both_new = (~soft["uid_l"].isin(record_customer.index) & ~soft["uid_r"].isin(record_customer.index)).to_numpy()
    edge_a.append(soft.loc[both_new, "uid_l"].to_numpy())
    edge_b.append(soft.loc[both_new, "uid_r"].to_numpy())
    a, b = np.concatenate(edge_a).astype(object), np.concatenate(edge_b).astype(object)
    vertices = pd.Index(pd.unique(np.concatenate([a, b, local["record"].to_numpy(), new_profile_ids])))
    n = len(vertices)
    graph = coo_matrix(
        (np.ones(len(a), dtype=np.int8), (vertices.get_indexer(a), vertices.get_indexer(b))), shape=(n, n)
    )
    _, component = connected_components(graph, directed=False)
    frame = pd.DataFrame({"vertex": vertices, "component": component})
    frame["is_customer"] = frame["vertex"].str.startswith("=")
    frame["is_record"] = frame["vertex"].isin(set(local["record"]) | set(new_profile_ids))
    return frame


def _assign_ids(
    frame: pd.DataFrame, previous: _Previous, history: pd.DataFrame
) -> tuple[pd.DataFrame, dict, dict[str, str]]:
    """(new records with their customer_id, component -> id, retired id -> survivor). Existing
    customers in a component merge into the one with most records (ties: smaller id); a component
    of new records with a customer-table record gets a fresh id."""
    identity_map = previous.identity_map
    sizes = identity_map["customer_id"].value_counts()
    customers = frame[frame["is_customer"]].assign(customer_id=lambda f: f["vertex"].str[1:])
    customers["n"] = customers["customer_id"].map(sizes).fillna(0).astype(int)
    customers = customers.sort_values(["component", "n", "customer_id"], ascending=[True, False, True])
    survivor = customers.drop_duplicates("component").set_index("component")["customer_id"]
    losers = customers[~customers["customer_id"].isin(set(survivor))][["customer_id", "component"]]
    retired = dict(zip(losers["customer_id"], losers["component"].map(survivor)))
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
    records = records[records["customer_id"].notna() & ~records["vertex"].isin(previous.known)]
    return records, ids, retired


def _add_link_evidence(
    records: pd.DataFrame, guards: _Guards, soft: pd.DataFrame, local: pd.DataFrame, node_customer: pd.Series
) -> None:
    """linked_by and match_probability, as a full run writes them (in place)."""
    usable = guards.usable
    kinds = joined_kinds(usable[usable["record"].isin(records["vertex"])])
    soft_by_record = edges_by_record(soft)
    hard_kinds = records["vertex"].map(kinds).fillna("").astype(str).to_numpy(dtype=object)
    extra = records["vertex"].map(joined_kinds(soft_by_record)).fillna("").astype(str).to_numpy(dtype=object)
    records["linked_by"] = combine_linked_by(hard_kinds, extra)
    degree = guards.degree_of(set(local["node"]))
    bound = local["node"].map(degree).gt(1) | local["node"].isin(node_customer.index)
    hard = set(local.loc[bound.to_numpy(), "record"])
    best = soft_by_record.groupby("record")["p"].max()
    p = records["vertex"].map(best).fillna(1.0).to_numpy(float)
    p[records["vertex"].isin(hard).to_numpy()] = 1.0
    records["match_probability"] = p


def _write_maps(
    ws: Workspace,
    previous: _Previous,
    records: pd.DataFrame,
    frame: pd.DataFrame,
    ids: dict,
    retired: dict[str, str],
    guards: _Guards,
    scored: pd.DataFrame,
    history: pd.DataFrame,
) -> pd.DataFrame:
    """Retire merged ids everywhere, append the new rows; returns the updated identity map."""
    columns = ["source_table", "source_key", "customer_id", "linked_by", "match_probability"]
    identity_map = previous.identity_map.assign(customer_id=_retire(previous.identity_map["customer_id"], retired))
    updated = _insert_sorted(identity_map[columns], records[columns])
    identifier_map = previous.identifier_map.assign(
        customer_id=_retire(previous.identifier_map["customer_id"], retired)
    )
    node_rows = frame[~frame["is_customer"] & ~frame["is_record"]].assign(customer_id=lambda f: f["component"].map(ids))
    node_rows = node_rows[node_rows["customer_id"].notna() & ~node_rows["vertex"].isin(set(identifier_map["node"]))]
    new_nodes = pd.DataFrame(
        {"node": node_rows["vertex"].to_numpy(), "customer_id": node_rows["customer_id"].to_numpy()}
    )
    write_parquet_atomic(updated, ws.path("identity_map"))
    write_parquet_atomic(pd.concat([identifier_map, new_nodes], ignore_index=True), ws.path("identifier_map"))
    write_parquet_atomic(
        pd.concat([guards.blocked, guards.shared.assign(guard="shared")], ignore_index=True),
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
        merged = pd.concat([history, events], ignore_index=True) if len(history) else events
        write_parquet_atomic(merged, ws.path("id_history"))
    return updated


def _update_households_and_state(
    ws: Workspace,
    previous: _Previous,
    updated: pd.DataFrame,
    records: pd.DataFrame,
    retired: dict[str, str],
    links: pd.DataFrame | None,
    unknown_links: pd.DataFrame,
    guards: _Guards,
) -> None:
    from cdp.identity.households import all_household_keys, build_households

    if previous.state is None:
        assert links is not None and guards.counts is not None  # a full read has both
        build_households(ws, updated, previous.profiles, links)
        write_state(ws, links, updated, guards.counts)
        return
    # household keys of the earlier records (ids retired) + those of the newly mapped ones
    keys = previous.state["household_keys"].assign(customer_id=lambda k: _retire(k["customer_id"], retired))
    mapped_keys = all_household_keys(
        records[["source_table", "source_key", "customer_id"]], previous.profiles, unknown_links
    )
    keys = pd.concat([keys, mapped_keys], ignore_index=True).drop_duplicates()
    build_households(ws, updated, keys=keys.reset_index(drop=True))
    mapped = set(records["vertex"])
    unmapped = unknown_links.loc[~unknown_links["record"].isin(mapped).to_numpy(), "record"].to_numpy()
    save_state(ws, guards.state_nodes, guards.state_pairs, unmapped)
