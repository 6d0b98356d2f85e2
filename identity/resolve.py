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
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cdp.atomic import write_parquet_atomic, write_text_atomic
from cdp.identity import matching
from cdp.identity.ids import assign_ids, customer_id_for  # noqa: F401  (re-exported)
from cdp.workspace import Workspace

# (table, key column, {identifier kind: column}) — the columns each table links on.
LINK_SOURCES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("crm_contacts", "record_id", {"email": "email_norm", "phone": "phone_e164"}),
    ("loyalty_members", "card_id", {"card": "card_id", "email": "email_norm", "phone": "phone_e164"}),
    ("online_accounts", "account_id", {"account": "account_id", "email": "email_norm", "phone": "phone_e164"}),
    ("orders", "order_id", {"card": "card_id", "account": "account_id", "email": "email_norm", "phone": "phone_e164"}),
    (
        "service_interactions",
        "interaction_id",
        {"account": "account_id", "card": "card_id", "email": "email_norm", "phone": "phone_e164"},
    ),
    ("marketing_sends", "send_id", {"account": "account_id", "email": "email_norm", "device": "device_id"}),
    ("web_events", "event_id", {"account": "account_id", "device": "device_id"}),
)
# Records that are a person's own profile: each is a node of its own, so it is never lost.
PROFILE_TABLES = {"crm_contacts": "crm", "loyalty_members": "card", "online_accounts": "account"}
CUSTOMER_TABLES = (*PROFILE_TABLES, "orders")
# +10000000000, +15555555555 ... (DuckDB's RE2 has no back-references, so spell the digits out)
PLACEHOLDER_PHONE = r"^\+\d?(" + "|".join(f"{d}{{7,}}" for d in range(10)) + r")$"


@dataclass(frozen=True)
class ResolveConfig:
    max_fanout: int = 12  # distinct cards/accounts/emails one phone/email may join
    max_accounts_per_device: int = 2  # a device logged into more accounts is shared
    # A phone/email never seen on a profile record but on more orders than nearly any
    # profiled person (this multiple of the `order_cap_quantile` of orders per profile-attached
    # identifier, and at least `min_orders_cap`) is a checkout placeholder, e.g. a store's own number.
    # Heavy shoppers who check out as guests reach 2-3x the 99th percentile (at 100k people: 104
    # orders vs 47); store placeholders carry thousands.
    order_cap_multiple: float = 2.0
    order_cap_quantile: float = 0.999
    min_orders_cap: int = 20
    probabilistic: bool = True  # Splink edges between profile records
    match_threshold: float = 0.999  # match_probability a probabilistic edge needs
    # ... or this much when the postcodes agree exactly and the first names agree closely (exact,
    # nickname, Jaro-Winkler >= 0.9 or swapped): a loyalty card or an account without a date of
    # birth, email or phone in common with the CRM record has little else than name + postcode.
    corroborated_threshold: float = 0.99
    first_name_jw: float = 0.88  # first names "agree" at or above this Jaro-Winkler similarity
    # Household guards (shared phones/emails link only name-agreeing records; a probabilistic link
    # needs agreeing first names and no date-of-birth conflict; conflicting clusters are re-split).
    # Off only for data whose identifiers are personal and that has no households (e.g. FEBRL).
    household_guards: bool = True
    seed: int = 1

    @property
    def score_floor(self) -> float:
        """Lowest match_probability any scored pair can be accepted at."""
        return min(self.match_threshold, self.corroborated_threshold)


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


def _record_identifiers(
    ws: Workspace, tables: tuple[str, ...] | None = None, exclude: Path | None = None
) -> pd.DataFrame:
    """Long table: one row per (source_table, source_key, kind, node) a record carries, with
    `record` = "<table>|<key>"; rows in table, column, file order; repeats of a (record, node)
    dropped (first kept). One DuckDB query over the staged Parquet files.
    `tables`: only these tables; `exclude`: a Parquet file of (source_table, source_key), e.g.
    identity_map: only the records not in it (the same rows, in the same order, as filtering
    the full table)."""
    parts = []
    for t, (table, key, columns) in enumerate(LINK_SOURCES):
        path = ws.staged / f"{table}.parquet"
        if not path.exists() or (tables is not None and table not in tables):
            continue
        source = "read_parquet('" + path.as_posix().replace("'", "''") + "', file_row_number = true)"
        k = f'CAST("{key}" AS VARCHAR)'
        if table in PROFILE_TABLES:
            own = PROFILE_TABLES[table]
            parts.append(
                f"SELECT {t} AS t, -1 AS c, file_row_number AS r, '{table}' AS source_table, {k} AS source_key, "
                f"'{own}' AS kind, '{own}:' || {k} AS node FROM {source}"
            )
        present = set(pq.read_schema(path).names)
        for c, (kind, column) in enumerate(columns.items()):
            if column not in present:  # a staged table without this identifier column
                continue
            value = f'trim(CAST("{column}" AS VARCHAR), {_WHITESPACE})'
            parts.append(
                f"SELECT {t}, {c}, file_row_number, '{table}', {k}, '{kind}', '{kind}:' || {value} "
                f"FROM {source} WHERE {value} <> ''"
            )
    if not parts:
        raise FileNotFoundError(f"no staged tables in {ws.staged}: run `cdp ingest` first")
    rows = f"({' UNION ALL '.join(parts)})"
    if exclude is not None:
        known = "read_parquet('" + Path(exclude).as_posix().replace("'", "''") + "')"
        rows = (
            f"(SELECT * FROM {rows} ANTI JOIN (SELECT source_table, source_key FROM {known}) "
            f"USING (source_table, source_key))"
        )
    con = duckdb.connect()
    try:
        return con.execute(f"""
            SELECT source_table, source_key, kind, node, source_table || '|' || source_key AS record
            FROM {rows}
            QUALIFY row_number() OVER (PARTITION BY source_table, source_key, node ORDER BY t, c, r) = 1
            ORDER BY t, c, r""").df()
    finally:
        con.close()


# what Python's str.strip() removes from ASCII text, as a DuckDB string literal
_WHITESPACE = "' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"


# Per identifier node, from record -> identifier links (relation `links`): records carrying it,
# orders among them, whether a profile record does. Incremental linking saves and adds these up.
NODE_COUNTS_SQL = f"""
    SELECT node, any_value(kind) AS kind, count(*)::BIGINT AS records,
           (count(*) FILTER (source_table = 'orders'))::BIGINT AS orders,
           bool_or(source_table IN {tuple(PROFILE_TABLES)}) AS on_profile
    FROM links GROUP BY node"""
# Which strong identifiers (cards, accounts, emails) appear beside each phone/email/device.
STRONG_PAIRS_SQL = """
    SELECT DISTINCT a.node, a.kind, b.node AS other, b.kind AS other_kind
    FROM (SELECT DISTINCT source_table, source_key, node, kind FROM links
          WHERE kind IN ('phone', 'email', 'device')) a
    JOIN links b USING (source_table, source_key)
    WHERE b.kind IN ('card', 'account', 'email') AND b.node <> a.node"""


def _blocking_sql(config: ResolveConfig) -> str:
    """The hard guards as one query over relations `nodes` (NODE_COUNTS_SQL's columns) and
    `pairs` (STRONG_PAIRS_SQL's)."""
    return f"""
        WITH fanout AS (
          SELECT node, kind, count(*) AS n, count(*) FILTER (other_kind = 'account') AS accounts
          FROM pairs GROUP BY ALL),
        on_profiles AS (SELECT node FROM nodes WHERE on_profile AND kind IN ('phone', 'email')),
        per_order AS (SELECT node, orders FROM nodes WHERE orders > 0 AND kind IN ('phone', 'email')),
        cap AS (SELECT greatest({config.min_orders_cap}, {config.order_cap_multiple} * coalesce(
                  quantile_cont(orders, {config.order_cap_quantile}) FILTER (node IN (SELECT node FROM on_profiles)), 0))::INT AS cap
                FROM per_order),
        reasons AS (
          SELECT node, kind, 'placeholder pattern' AS reason FROM nodes
            WHERE kind = 'phone' AND regexp_matches(split_part(node, ':', 2), '{PLACEHOLDER_PHONE}')
          UNION ALL
          SELECT node, kind, 'shared by ' || n || ' cards/accounts/emails (cap {config.max_fanout})'
            FROM fanout WHERE kind IN ('phone', 'email') AND n > {config.max_fanout}
          UNION ALL
          SELECT node, kind, 'device used by ' || accounts || ' accounts (cap {config.max_accounts_per_device})'
            FROM fanout WHERE kind = 'device' AND accounts > {config.max_accounts_per_device}
          UNION ALL
          SELECT p.node, split_part(p.node, ':', 1),
                 'on ' || p.orders || ' orders but on no profile record (plausible person <= ' || c.cap || ')'
            FROM per_order p, cap c
            WHERE p.orders > c.cap AND p.node NOT IN (SELECT node FROM on_profiles))
        SELECT node, first(kind) AS kind, string_agg(reason, '; ') AS reason FROM reasons GROUP BY node ORDER BY node
    """


def node_counts(links: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(nodes, pairs): NODE_COUNTS_SQL and STRONG_PAIRS_SQL over these record -> identifier links.
    The guards read them, and a run saves them for incremental linking (identity/state.py)."""
    con = duckdb.connect()
    try:
        con.register("links", links[["source_table", "source_key", "kind", "node"]])
        return con.execute(NODE_COUNTS_SQL).df(), con.execute(STRONG_PAIRS_SQL).df()
    finally:
        con.close()


def blocked_nodes(nodes: pd.DataFrame, pairs: pd.DataFrame, config: ResolveConfig) -> pd.DataFrame:
    """Identifiers that must not link, each with the guard that refused it (guard='blocked'),
    from `node_counts` of every record: computed from the links or from saved state alike."""
    con = duckdb.connect()
    try:
        con.register("nodes", nodes)
        con.register("pairs", pairs)
        return con.execute(_blocking_sql(config)).df().assign(guard="blocked")
    finally:
        con.close()


def _names_agree_sql(config: ResolveConfig) -> str:
    """SQL (over l./r. profile columns) for 'first names agree' (nickname, typo or swap, also a
    swap with a typo in one of the names)."""
    nick = matching.nickname_sql("l.first_name", "r.first_name", "l.first_nicks", "r.first_nicks")
    jw = lambda a, b: f"jaro_winkler_similarity({a}, {b}) >= {config.first_name_jw}"
    return (
        f"(l.first_canon = r.first_canon OR {nick} OR {jw('l.first_name', 'r.first_name')} OR "
        f"(l.first_name = r.last_name AND {jw('l.last_name', 'r.first_name')}) OR "
        f"(l.last_name = r.first_name AND {jw('l.first_name', 'r.last_name')}))"
    )


def _name_groups(pairs: pd.DataFrame) -> pd.Series:
    """Per node: how many groups its named profile records form when records whose first names
    agree (and dates of birth do not conflict) are joined transitively: one person's records
    (Aaron, Erin, "Aarn") form one group although Erin and Aarn do not agree with each other;
    a household's Ann and Bob form two."""
    named = (
        pd.concat(
            [
                pairs.loc[pairs["known_l"], ["node", "uid_l"]].set_axis(["node", "uid"], axis=1),
                pairs.loc[pairs["known_r"], ["node", "uid_r"]].set_axis(["node", "uid"], axis=1),
            ]
        )
        .drop_duplicates()
        .reset_index(drop=True)
    )
    if named.empty:
        return pd.Series(dtype=int)
    vertex = pd.Series(np.arange(len(named)), index=pd.MultiIndex.from_frame(named))
    agree = pairs[pairs["agree"]]
    a = vertex.reindex(pd.MultiIndex.from_arrays([agree["node"], agree["uid_l"]])).to_numpy()
    b = vertex.reindex(pd.MultiIndex.from_arrays([agree["node"], agree["uid_r"]])).to_numpy()
    n = len(named)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a.astype(np.int64), b.astype(np.int64))), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    return pd.Series(group).groupby(named["node"].to_numpy()).nunique()


def _shared_nodes(con: duckdb.DuckDBPyConnection, config: ResolveConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Phones/emails on profile records of different people -> (shared nodes, name-agreeing edges).

    A node is shared when two of its profile records have conflicting dates of birth, or when
    its named records fall into more than one group of (transitively) agreeing first names.
    Reads the registered `links` (usable only) and `profiles` views."""
    pairs = con.execute(f"""
        WITH p AS (SELECT k.node, k.kind, pr.* FROM links k
                   JOIN profiles pr ON pr.unique_id = k.source_table || '|' || k.source_key
                   WHERE k.kind IN ('phone', 'email'))
        SELECT l.node, l.kind, l.unique_id AS uid_l, r.unique_id AS uid_r, l.dob AS dob_l, r.dob AS dob_r,
               l.first_name IS NOT NULL AS known_l, r.first_name IS NOT NULL AS known_r,
               coalesce({_names_agree_sql(config)}, false) AS names_agree
        FROM p l JOIN p r ON l.node = r.node AND l.unique_id < r.unique_id""").df()
    if pairs.empty:
        return (pd.DataFrame(columns=["node", "kind", "reason"]), pd.DataFrame(columns=["uid_l", "uid_r", "node"]))
    conflict = matching.dob_conflict(pairs["dob_l"], pairs["dob_r"])
    pairs["agree"] = pairs["known_l"] & pairs["known_r"] & pairs["names_agree"] & ~conflict
    groups = _name_groups(pairs)
    nodes = pairs.drop_duplicates("node")[["node", "kind"]].reset_index(drop=True)
    conflicted = set(pairs.loc[conflict, "node"])
    is_shared = nodes["node"].map(groups).fillna(1).gt(1) | nodes["node"].isin(conflicted)
    shared = nodes[is_shared.to_numpy()].reset_index(drop=True)
    shared["reason"] = "on profile records whose first names or dates of birth disagree: links only agreeing records"
    edges = pairs[pairs["node"].isin(set(shared["node"])) & pairs["agree"]][["uid_l", "uid_r", "node"]]
    return shared, edges.reset_index(drop=True)


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
        shared, shared_edges = _shared_nodes(con, config)
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
    path = ws.identity / "identity_map.parquet"
    return pd.read_parquet(path, columns=["source_table", "source_key", "customer_id"]) if path.exists() else None


def resolve(ws: Workspace, config: ResolveConfig = ResolveConfig(), model: dict | None = None) -> ResolveSummary:
    """Resolve all staged records into customers; previous ids are kept where clusters allow.
    `model`: a trained Splink model to reuse instead of training a new one."""
    links = _record_identifiers(ws)
    previous = _read_previous(ws)
    profiles = matching.profile_records(ws)
    blocked, shared, shared_edges, usable, counts = guard_links(links, profiles, config)
    con = duckdb.connect()
    con.register("usable_links", usable)

    scored = pd.DataFrame(columns=["unique_id_l", "unique_id_r", "match_probability", "accepted", "guard"])
    notes = [
        f"{v['column']} '{v['value']}' on {v['records']} profile records ({v['share']:.0%}): "
        "placeholder or near-constant, not used as evidence"
        for v in profiles.attrs.get("common_values", [])
    ]
    if config.probabilistic and len(profiles) > 1:
        scored, model, match_notes = _probabilistic_edges(profiles, config, model)
        notes += match_notes
    prob = scored[scored["accepted"].astype(bool)]
    record_edges = pd.concat(
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
    record_keys = np.unique(np.concatenate([usable["record"].to_numpy(), profiles["unique_id"].to_numpy()]))
    record_component, node_component = _components(record_keys, usable, record_edges)
    dob_reliable = matching.reliable(model, "dob")  # on noisy DOBs a conflict is evidence, not a split
    conflicted = _dob_conflicts(record_component, profiles) if config.household_guards and dob_reliable else set()
    if conflicted:  # cut the soft edges inside conflicting clusters and re-split
        soft = record_edges["uid_l"].map(record_component).isin(conflicted)
        record_edges = record_edges[~soft].reset_index(drop=True)
        scored.loc[scored["unique_id_l"].map(record_component).isin(conflicted) & scored["accepted"], "guard"] = (
            "cut: cluster had conflicting dates of birth"
        )
        scored["accepted"] = scored["guard"].eq("")
        record_component, node_component = _components(record_keys, usable, record_edges)
    remaining_conflicts = len(_dob_conflicts(record_component, profiles)) if dob_reliable else 0

    # records of the graph: every identifying record + every profile record
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

    kinds = (
        con.execute(
            "SELECT record, string_agg(DISTINCT kind, ',' ORDER BY kind) AS k FROM usable_links GROUP BY record"
        )
        .df()
        .set_index("record")["k"]
    )
    soft_kinds = pd.concat(
        [
            record_edges[["uid_l", "kind"]].set_axis(["record", "kind"], axis=1),
            record_edges[["uid_r", "kind"]].set_axis(["record", "kind"], axis=1),
        ]
    )
    soft_kinds = soft_kinds.groupby("record")["kind"].agg(lambda k: ",".join(sorted(set(k))))
    linked_by = pd.Series(members["record"].map(kinds).fillna(""), index=members.index)
    extra = members["record"].map(soft_kinds).fillna("")
    members["linked_by"] = (linked_by + np.where((linked_by != "") & (extra != ""), ",", "") + extra).to_numpy()
    members["match_probability"] = _match_probability(members, usable, record_edges)
    identity_map = (
        members[["source_table", "source_key", "customer_id", "linked_by", "match_probability"]]
        .sort_values(["source_table", "source_key"])
        .reset_index(drop=True)
    )
    nodes = pd.DataFrame({"node": node_component.index, "component": node_component.to_numpy()})
    nodes = nodes[nodes["component"].isin(set(members["component"]))]
    nodes["customer_id"] = nodes["component"].map(ids)

    ws.identity.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(identity_map, ws.identity / "identity_map.parquet")
    write_parquet_atomic(nodes[["node", "customer_id"]].reset_index(drop=True), ws.identity / "identifier_map.parquet")
    write_parquet_atomic(
        pd.concat([blocked, shared.assign(guard="shared")], ignore_index=True),
        ws.identity / "blocked_identifiers.parquet",
    )
    write_parquet_atomic(scored, ws.identity / "match_edges.parquet")
    if model:
        write_text_atomic(ws.identity / "splink_model.json", json.dumps(model, indent=1, default=str))
    history_path = ws.identity / "id_history.parquet"
    if history_path.exists():
        history = pd.concat([pd.read_parquet(history_path), history], ignore_index=True)
    write_parquet_atomic(history, history_path)
    from cdp.identity.households import build_households

    build_households(ws, identity_map, profiles, links)
    from cdp.identity.state import write_state

    write_state(ws, links, identity_map, counts)

    all_records = links[["source_table", "source_key"]].drop_duplicates()
    linked_all = len(identity_map)
    return ResolveSummary(
        customers=int(members["customer_id"].nunique()),
        records_linked=linked_all,
        anonymous_records=_count_without_identifiers(ws) + max(len(all_records) - linked_all, 0),
        blocked_identifiers=len(blocked),
        shared_identifiers=len(shared),
        probabilistic_links=int(scored["accepted"].sum()) if len(scored) else 0,
        dob_conflict_clusters=remaining_conflicts,
        retired_ids=int((history["event"] == "merged").sum()) if len(history) else 0,
        notes=tuple(notes),
    )


def _match_probability(members: pd.DataFrame, usable: pd.DataFrame, record_edges: pd.DataFrame) -> np.ndarray:
    """1.0 where an identifier node binds the record to another record (or the record stands
    alone); otherwise the best probability of the soft edges that bind it."""
    degree = usable.groupby("node")["record"].nunique()
    hard = set(usable.loc[usable["node"].map(degree) > 1, "record"])
    best = (
        pd.concat(
            [
                record_edges[["uid_l", "p"]].set_axis(["record", "p"], axis=1),
                record_edges[["uid_r", "p"]].set_axis(["record", "p"], axis=1),
            ]
        )
        .groupby("record")["p"]
        .max()
    )
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
