"""Identity resolution v2: deterministic identifier links + guarded probabilistic matching.

In:  staged tables (ingest output) with `email_norm`, `phone_e164`, card/account/device ids,
     and profile fields (names, date of birth, address, postcode) for `cdp.identity.matching`;
     the previous `identity/identity_map.parquet` (if any) as the reference for stable ids.
Out: `identity/identity_map.parquet`  (source_table, source_key, customer_id, linked_by,
     match_probability: 1.0 when a deterministic identifier binds the record to its cluster)
     `identity/identifier_map.parquet` (identifier node -> customer_id)
     `identity/blocked_identifiers.parquet` (node, kind, reason, guard: 'blocked' never links;
     'shared' links only records whose names agree and dates of birth do not conflict)
     `identity/match_edges.parquet` (scored profile pairs, accepted or the guard that refused)
     `identity/splink_model.json`, `identity/id_history.parquet`, `identity/households.parquet`.

Graph: records <-> identifier nodes (cards, accounts, emails, phones, devices) plus
record <-> record edges (probabilistic matches, name-agreeing pairs on a shared identifier);
connected components are people. Guards: placeholder pattern, fan-out cap, shared-device cap,
checkout placeholders (hard blocks); a phone/email whose profile records fall into more than
one group of (transitively) agreeing first names, or whose dates of birth conflict, is a *shared*
identifier (a household's home phone): it no longer chains records, it only links name-agreeing
pairs; a probabilistic link needs match_threshold (or corroborated_threshold with the postcode and
close first names agreeing), agreeing first names and no date-of-birth conflict; a cluster left
with two conflicting dates of birth loses its probabilistic/shared edges and is re-split.
First names agree on exact, nickname (either name in the other's nickname set), Jaro-Winkler or
a first/last swap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cdp.atomic import write_parquet_atomic, write_text_atomic
from cdp.identity import matching
from cdp.identity.ids import assign_ids, customer_id_for  # noqa: F401  (re-exported)
from cdp.identity.links import (
    CUSTOMER_TABLES,
    LINK_SOURCES,
    PROFILE_TABLES,
    ResolveConfig,
    blocked_nodes,
    node_counts,
    record_identifiers,
    shared_nodes,
)
from cdp.workspace import Workspace


# (table, key column, {identifier kind: column}) — the columns each table links on.
@dataclass(frozen=True)
class ResolveSummary:
    customers: int
    records_linked: int
    anonymous_records: int
    blocked_identifiers: int
    shared_identifiers: int = 0
    probabilistic_links: int = 0
    dob_conflict_clusters: int = 0
    retired_ids: int = 0
    notes: tuple[str, ...] = ()  # what matching changed on this data (dropped values, budgeted rules, EM)

    def to_dict(self) -> dict:
        out = self.__dict__.copy()
        out["notes"] = list(self.notes)
        return out


def _probabilistic_edges(
    profiles: pd.DataFrame, config: ResolveConfig, model: dict | None
) -> tuple[pd.DataFrame, dict, list[str]]:
    """Scored profile pairs >= threshold with the guard verdict (`accepted`, `guard`)."""
    result = matching.train_and_predict(profiles, floor_probability=config.score_floor, seed=config.seed, model=model)
    return guard_scored_edges(result.edges, profiles, config, result.model), result.model, list(result.notes)


def guard_scored_edges(
    edges: pd.DataFrame, profiles: pd.DataFrame, config: ResolveConfig = ResolveConfig(), model: dict | None = None
) -> pd.DataFrame:
    """Add the verdict to scored pairs (`accepted`, `guard` says why not): a pair below
    `match_threshold` needs the postcode corroboration (see ResolveConfig); with household guards,
    first names must not disagree (gamma_first_name == 0) and dates of birth must not conflict."""
    if edges.empty:
        return edges.assign(accepted=pd.Series(dtype=bool), guard=pd.Series(dtype=str))
    p = edges["match_probability"].astype(float).to_numpy()
    level = lambda c: edges.get(c, pd.Series(-1, index=edges.index)).fillna(-1).astype(int).to_numpy()
    corroborated = (
        (p >= config.corroborated_threshold)
        & (level("gamma_postcode") == matching.POSTCODE_EXACT_LEVEL)
        # close first names, unless the model learned first names are noisy in this data
        & (
            (level("gamma_first_name") >= matching.FIRST_NAME_CLOSE_LEVEL)
            | (not matching.reliable(model, "first_name"))
        )
    )
    below = (p < config.match_threshold) & ~corroborated
    guard = np.where(below, "below threshold without postcode and close first names", "")
    if config.household_guards:
        # Disagreeing first names and dates of birth are evidence in the match weight; the guard
        # refuses only a strong contradiction: first names disagree and the dates of birth are not
        # close (or unknown): a household's Ann and Bob; or the dates of birth conflict (more than
        # a year apart and no typo, transposition, day/month swap or other-year slip: a parent and
        # a child of the same name).
        by_id = profiles.set_index("unique_id")
        first = level("gamma_first_name")
        dob_close = level("gamma_dob") >= matching.DOB_CLOSE_LEVEL
        # `model`: a field whose true matches often disagree (matching.reliable) is never a veto
        first_disagrees = (first == 0) & ~dob_close & matching.reliable(model, "first_name")
        conflict = matching.dob_conflict(edges["unique_id_l"].map(by_id["dob"]), edges["unique_id_r"].map(by_id["dob"]))
        conflict &= matching.reliable(model, "dob")
        guard = np.where(first_disagrees, "first names disagree", np.where(conflict, "dates of birth conflict", guard))
    return edges.assign(accepted=guard == "", guard=guard)


def guard_links(
    links: pd.DataFrame, profiles: pd.DataFrame, config: ResolveConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, tuple[pd.DataFrame, pd.DataFrame]]:
    """Apply the identifier guards to record -> identifier links.

    Returns (blocked nodes, shared nodes, name-agreeing record edges on shared nodes,
    usable links with a `record` column = "<table>|<key>", `node_counts(links)` for the state)."""
    counts = node_counts(links)
    blocked = blocked_nodes(*counts, config)
    con = duckdb.connect()
    usable = links[~links["node"].isin(set(blocked["node"]))].reset_index(drop=True)
    con.register("links", usable)
    con.register("profiles", profiles)
    if config.household_guards:
        shared, shared_edges = shared_nodes(con, config)
    else:
        shared, shared_edges = (
            pd.DataFrame(columns=["node", "kind", "reason"]),
            pd.DataFrame(columns=["uid_l", "uid_r", "node"]),
        )
    con.close()
    usable = usable[~usable["node"].isin(set(shared["node"]))].reset_index(drop=True)
    if "record" not in usable:
        usable["record"] = usable["source_table"] + "|" + usable["source_key"]
    return blocked, shared, shared_edges, usable, counts


def _components(
    record_keys: np.ndarray, node_links: pd.DataFrame, record_edges: pd.DataFrame
) -> tuple[pd.Series, pd.Series]:
    """Connected components of records + identifier nodes: (record component, node component).

    node_links: (record, node) pairs; record_edges: (uid_l, uid_r) pairs of record keys."""
    node_codes, node_index = np.unique(node_links["node"].to_numpy(), return_inverse=True)
    rec = pd.Index(record_keys)
    n_rec = len(rec)
    rows = np.concatenate([rec.get_indexer(node_links["record"]), rec.get_indexer(record_edges["uid_l"])])
    cols = np.concatenate([n_rec + node_index, rec.get_indexer(record_edges["uid_r"])])
    n = n_rec + len(node_codes)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    return pd.Series(component[:n_rec], index=rec), pd.Series(component[n_rec:], index=node_codes)


def _dob_conflicts(component: pd.Series, profiles: pd.DataFrame) -> set[int]:
    """Components holding two profile records with conflicting dates of birth."""
    dobs = profiles[["unique_id", "dob"]].dropna()
    dobs = dobs.assign(component=dobs["unique_id"].map(component)).dropna(subset=["component"])
    spread = dobs.groupby("component")["dob"].agg(["min", "max"])
    suspects = spread[spread["min"] != spread["max"]].index
    cand = dobs[dobs["component"].isin(suspects)]
    pairs = cand.merge(cand, on="component", suffixes=("_l", "_r"))
    pairs = pairs[pairs["dob_l"] < pairs["dob_r"]]
    bad = matching.dob_conflict(pairs["dob_l"], pairs["dob_r"])
    return set(pairs.loc[bad, "component"].astype(int))


def _read_previous(ws: Workspace) -> pd.DataFrame | None:
    path = ws.path("identity_map")
    return pd.read_parquet(path, columns=["source_table", "source_key", "customer_id"]) if path.exists() else None


def resolve(ws: Workspace, config: ResolveConfig = ResolveConfig(), model: dict | None = None) -> ResolveSummary:
    """Resolve all staged records into customers; previous ids are kept where clusters allow.
    `model`: a trained Splink model to reuse instead of training a new one."""
    links = record_identifiers(ws)
    profiles = matching.profile_records(ws)
    blocked, shared, shared_edges, usable, counts = guard_links(links, profiles, config)
    scored = pd.DataFrame(columns=["unique_id_l", "unique_id_r", "match_probability", "accepted", "guard"])
    notes = _common_value_notes(profiles)
    if config.probabilistic and len(profiles) > 1:
        scored, model, match_notes = _probabilistic_edges(profiles, config, model)
        notes += match_notes
    record_edges = soft_record_edges(shared_edges, scored[scored["accepted"].astype(bool)])
    record_keys = np.unique(np.concatenate([usable["record"].to_numpy(), profiles["unique_id"].to_numpy()]))
    dob_reliable = matching.reliable(model, "dob")  # on noisy DOBs a conflict is evidence, not a split
    record_edges, record_component, node_component = _split_dob_conflicts(
        record_keys, usable, record_edges, scored, profiles, config.household_guards and dob_reliable
    )
    remaining_conflicts = len(_dob_conflicts(record_component, profiles)) if dob_reliable else 0
    members, nodes, history = _customers(record_keys, record_component, node_component, _read_previous(ws))
    members["linked_by"] = _linked_by(members, usable, record_edges)
    members["match_probability"] = _match_probability(members, usable, record_edges)
    identity_map = (
        members[["source_table", "source_key", "customer_id", "linked_by", "match_probability"]]
        .sort_values(["source_table", "source_key"])
        .reset_index(drop=True)
    )
    history = _write_outputs(ws, identity_map, nodes, blocked, shared, scored, model, history)
    from cdp.identity.households import build_households
    from cdp.identity.state import write_state

    build_households(ws, identity_map, profiles, links)
    write_state(ws, links, identity_map, counts)
    all_records = links[["source_table", "source_key"]].drop_duplicates()
    return ResolveSummary(
        customers=int(members["customer_id"].nunique()),
        records_linked=len(identity_map),
        anonymous_records=_count_without_identifiers(ws) + max(len(all_records) - len(identity_map), 0),
        blocked_identifiers=len(blocked),
        shared_identifiers=len(shared),
        probabilistic_links=int(scored["accepted"].sum()) if len(scored) else 0,
        dob_conflict_clusters=remaining_conflicts,
        retired_ids=int((history["event"] == "merged").sum()) if len(history) else 0,
        notes=tuple(notes),
    )


def _common_value_notes(profiles: pd.DataFrame) -> list[str]:
    return [
        f"{v['column']} '{v['value']}' on {v['records']} profile records ({v['share']:.0%}): "
        "placeholder or near-constant, not used as evidence"
        for v in profiles.attrs.get("common_values", [])
    ]


def soft_record_edges(shared_edges: pd.DataFrame, accepted: pd.DataFrame) -> pd.DataFrame:
    """Record-to-record edges (uid_l, uid_r, kind, p): name-agreeing pairs on a shared identifier
    and accepted probabilistic matches (full and incremental runs alike)."""
    probabilistic = pd.DataFrame(
        {
            "uid_l": accepted["unique_id_l"],
            "uid_r": accepted["unique_id_r"],
            "kind": "probabilistic",
            "p": accepted["match_probability"].astype(float),
        }
    )
    shared = shared_edges[["uid_l", "uid_r"]].assign(kind="shared_identifier+name", p=1.0)
    return pd.concat([shared, probabilistic], ignore_index=True)


def edges_by_record(edges: pd.DataFrame) -> pd.DataFrame:
    """Each soft edge once per end: record, kind, p."""
    ends = [edges[[side, "kind", "p"]].set_axis(["record", "kind", "p"], axis=1) for side in ("uid_l", "uid_r")]
    return pd.concat(ends, ignore_index=True)


def joined_kinds(frame: pd.DataFrame) -> pd.Series:
    """record -> its distinct link kinds, sorted and comma-joined."""
    return frame.groupby("record")["kind"].agg(lambda k: ",".join(sorted(set(k))))


def combine_linked_by(hard: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """'hard kinds,soft kinds' per record (either part may be empty)."""
    return hard + np.where((hard != "") & (soft != ""), ",", "").astype(object) + soft


def _split_dob_conflicts(
    record_keys: np.ndarray,
    usable: pd.DataFrame,
    record_edges: pd.DataFrame,
    scored: pd.DataFrame,
    profiles: pd.DataFrame,
    guard: bool,
) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Components; with the guard on, a cluster holding conflicting dates of birth loses its soft
    edges (marked in `scored`, in place) and is re-split. Returns (edges, record and node components)."""
    record_component, node_component = _components(record_keys, usable, record_edges)
    conflicted = _dob_conflicts(record_component, profiles) if guard else set()
    if not conflicted:
        return record_edges, record_component, node_component
    soft = record_edges["uid_l"].map(record_component).isin(conflicted)
    record_edges = record_edges[~soft].reset_index(drop=True)
    scored.loc[scored["unique_id_l"].map(record_component).isin(conflicted) & scored["accepted"], "guard"] = (
        "cut: cluster had conflicting dates of birth"
    )
    scored["accepted"] = scored["guard"].eq("")
    record_component, node_component = _components(record_keys, usable, record_edges)
    return record_edges, record_component, node_component


def _customers(
    record_keys: np.ndarray, record_component: pd.Series, node_component: pd.Series, previous: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Components holding a customer-table record become customers (ids kept from `previous` where
    clusters allow): (member records, identifier nodes -> customer_id, id history events)."""
    members = pd.DataFrame({"record": record_keys, "component": record_component.to_numpy()})
    split = members["record"].str.split("|", n=1, expand=True)
    members["source_table"], members["source_key"] = split[0], split[1]
    anchors = pd.concat(
        [
            pd.DataFrame({"component": node_component.to_numpy(), "anchor": node_component.index}),
            members[["component", "record"]].rename(columns={"record": "anchor"}),
        ]
    )
    # smallest node/record per component (sort + first: a string min in groupby is pure Python)
    anchor = anchors.sort_values("anchor").drop_duplicates("component").set_index("component")["anchor"]
    is_customer = members["source_table"].isin(CUSTOMER_TABLES).groupby(members["component"]).any()
    members = members[members["component"].map(is_customer).to_numpy(bool)].reset_index(drop=True)
    members["anchor"] = members["component"].map(anchor)
    ids, history = assign_ids(members, previous)
    members["customer_id"] = members["component"].map(ids)
    nodes = pd.DataFrame({"node": node_component.index, "component": node_component.to_numpy()})
    nodes = nodes[nodes["component"].isin(set(members["component"]))]
    nodes["customer_id"] = nodes["component"].map(ids)
    return members, nodes[["node", "customer_id"]].reset_index(drop=True), history


def _linked_by(members: pd.DataFrame, usable: pd.DataFrame, record_edges: pd.DataFrame) -> np.ndarray:
    # string_agg over millions of links: DuckDB, not a Python lambda per group. Closed here, not left
    # to interpreter exit (a `cdp resolve` once aborted at exit under load: "terminate called without
    # an active exception"; the cause is not pinned down)
    with duckdb.connect() as con:
        con.register("usable_links", usable)
        kinds = (
            con.execute(
                "SELECT record, string_agg(DISTINCT kind, ',' ORDER BY kind) AS k FROM usable_links GROUP BY record"
            )
            .df()
            .set_index("record")["k"]
        )
    soft_kinds = joined_kinds(edges_by_record(record_edges))
    hard = members["record"].map(kinds).fillna("").to_numpy(dtype=object)
    return combine_linked_by(hard, members["record"].map(soft_kinds).fillna("").to_numpy(dtype=object))


def _write_outputs(
    ws: Workspace,
    identity_map: pd.DataFrame,
    nodes: pd.DataFrame,
    blocked: pd.DataFrame,
    shared: pd.DataFrame,
    scored: pd.DataFrame,
    model: dict | None,
    history: pd.DataFrame,
) -> pd.DataFrame:
    """identity/ files; returns the full id history (earlier events + this run's)."""
    ws.identity.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(identity_map, ws.path("identity_map"))
    write_parquet_atomic(nodes, ws.path("identifier_map"))
    write_parquet_atomic(
        pd.concat([blocked, shared.assign(guard="shared")], ignore_index=True),
        ws.path("blocked_identifiers"),
    )
    write_parquet_atomic(scored, ws.path("match_edges"))
    if model:
        write_text_atomic(ws.path("splink_model"), json.dumps(model, indent=1, default=str))
    history_path = ws.path("id_history")
    if history_path.exists():
        history = pd.concat([pd.read_parquet(history_path), history], ignore_index=True)
    write_parquet_atomic(history, history_path)
    return history


def _match_probability(members: pd.DataFrame, usable: pd.DataFrame, record_edges: pd.DataFrame) -> np.ndarray:
    """1.0 where an identifier node binds the record to another record (or the record stands
    alone); otherwise the best probability of the soft edges that bind it."""
    degree = usable.groupby("node")["record"].nunique()
    hard = set(usable.loc[usable["node"].map(degree) > 1, "record"])
    best = edges_by_record(record_edges).groupby("record")["p"].max()
    p = members["record"].map(best).fillna(1.0).to_numpy(float)
    p[members["record"].isin(hard).to_numpy()] = 1.0
    return p


def _count_without_identifiers(ws: Workspace) -> int:
    """Records of linkable tables that carry no identifier at all (e.g. cash store receipts)."""
    total = 0
    for table, _key, columns in LINK_SOURCES:
        path = ws.staged / f"{table}.parquet"
        if path.exists() and table not in PROFILE_TABLES:
            staged = pd.read_parquet(path, columns=list(columns.values()))
            total += int(staged.isna().all(axis=1).sum())
    return total
