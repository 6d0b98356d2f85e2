"""Record -> identifier links and the guards on them: which identifiers may join records.

In:  staged/ tables (a workspace after `cdp ingest`), a ResolveConfig.
Out: `record_identifiers` (record -> identifier node rows), per-node counts and strong pairs,
     `blocked_nodes` (placeholders, fan-out identifiers), `shared_nodes` (identifiers several
     name-agreeing groups carry). Used by the full resolve, the incremental run and its saved state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

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
    # match_probability a probabilistic edge needs; chosen on FEBRL4 and one generator workspace
    # (20k people), checked on FEBRL1-3 and the generator at 100k: benchmarks/README.md. At 0.999
    # the product refused true FEBRL pairs plain Splink EM accepts (F1 0.9939 vs 0.9956); at 0.99
    # the generator's profile precision at 100k fell to 0.99499 (0.99514 at 0.995).
    match_threshold: float = 0.995
    # ... or this much when the postcodes agree exactly and the first names agree closely (exact,
    # nickname, Jaro-Winkler >= 0.9 or swapped): a loyalty card or an account without a date of
    # birth, email or phone in common with the CRM record has little else than name + postcode.
    # Lower (0.5) accepts household members' fragments: generator profile precision 0.994.
    corroborated_threshold: float = 0.9
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


def record_identifiers(
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


def shared_nodes(con: duckdb.DuckDBPyConnection, config: ResolveConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
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
