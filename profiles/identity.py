"""Identity resolution v1: deterministic linking on normalized identifiers.

In:  staged tables (ingest output) with `email_norm`, `phone_e164`, card/account/device ids.
Out: `identity/identity_map.parquet`  (source_table, source_key, customer_id, linked_by)
     `identity/identifier_map.parquet` (identifier node -> customer_id), used to attach
     records that carry only an identifier (consent events, enrichment by email_sha256).
     `identity/blocked_identifiers.parquet` (identifiers the guards refused to link on).

Every identifying record is linked to its identifier nodes; connected components of that
bipartite graph are people. A component is a *customer* when it holds a profile record
(CRM, loyalty card, online account) or an order; device-only web traffic and sends to
unknown addresses stay anonymous. Guards keep shared values from chaining strangers:
a placeholder pattern, a fan-out cap (one phone/email seen with too many distinct
cards/accounts/emails), a shared-device cap, and a checkout-placeholder rule.
The probabilistic matcher (Splink) will plug in as extra edges between record nodes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cdp.paths import Workspace

# (table, key column, {identifier kind: column}) — the columns each table links on.
LINK_SOURCES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("crm_contacts", "record_id", {"email": "email_norm", "phone": "phone_e164"}),
    ("loyalty_members", "card_id", {"card": "card_id", "email": "email_norm", "phone": "phone_e164"}),
    ("online_accounts", "account_id", {"account": "account_id", "email": "email_norm", "phone": "phone_e164"}),
    ("orders", "order_id", {"card": "card_id", "account": "account_id", "email": "email_norm", "phone": "phone_e164"}),
    ("service_interactions", "interaction_id", {"account": "account_id", "card": "card_id", "email": "email_norm", "phone": "phone_e164"}),
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
    # profiled person (this multiple of the 99th percentile of orders per profile-attached identifier,
    # and at least `min_orders_cap`) is a checkout placeholder, e.g. a store's own number.
    order_cap_multiple: float = 1.0
    min_orders_cap: int = 20


@dataclass(frozen=True)
class ResolveSummary:
    customers: int
    records_linked: int
    anonymous_records: int
    blocked_identifiers: int

    def to_dict(self) -> dict[str, int]:
        return self.__dict__.copy()


def _record_identifiers(ws: Workspace) -> pd.DataFrame:
    """Long table: one row per (source_table, source_key, kind, node) a record carries,
    plus a 'none' row for records that carry no identifier at all."""
    frames = []
    for table, key, columns in LINK_SOURCES:
        path = ws.staged / f"{table}.parquet"
        if not path.exists():
            continue
        staged = pd.read_parquet(path, columns=list(dict.fromkeys([key, *columns.values()])))
        keys = staged[key].astype(str)
        if table in PROFILE_TABLES:
            own = PROFILE_TABLES[table]
            frames.append(pd.DataFrame({"source_table": table, "source_key": keys, "kind": own, "node": own + ":" + keys}))
        for kind, column in columns.items():
            values = staged[column].astype("string").str.strip()
            present = values.notna() & (values != "")
            frames.append(pd.DataFrame({"source_table": table, "source_key": keys[present], "kind": kind,
                                        "node": kind + ":" + values[present].astype(str)}))
    if not frames:
        raise FileNotFoundError(f"no staged tables in {ws.staged}: run `cdp ingest` first")
    return pd.concat(frames, ignore_index=True).drop_duplicates(["source_table", "source_key", "node"])


def _blocked_nodes(con: duckdb.DuckDBPyConnection, config: ResolveConfig) -> pd.DataFrame:
    """Identifiers that must not link, each with the guard that refused it."""
    return con.execute(f"""
        WITH strong_pairs AS (           -- which strong identifiers appear beside each node
          SELECT DISTINCT a.node, a.kind, b.node AS other, b.kind AS other_kind
          FROM (SELECT DISTINCT source_table, source_key, node, kind FROM links
                WHERE kind IN ('phone', 'email', 'device')) a
          JOIN links b USING (source_table, source_key)
          WHERE b.kind IN ('card', 'account', 'email') AND b.node <> a.node),
        fanout AS (
          SELECT node, kind, count(*) AS n, count(*) FILTER (other_kind = 'account') AS accounts
          FROM strong_pairs GROUP BY ALL),
        on_profiles AS (SELECT DISTINCT node FROM links
                        WHERE source_table IN {tuple(PROFILE_TABLES)} AND kind IN ('phone', 'email')),
        per_order AS (SELECT node, count(*) AS orders FROM links
                      WHERE source_table = 'orders' AND kind IN ('phone', 'email') GROUP BY node),
        cap AS (SELECT greatest({config.min_orders_cap}, {config.order_cap_multiple} * coalesce(
                  quantile_cont(orders, 0.99) FILTER (node IN (SELECT node FROM on_profiles)), 0))::INT AS cap
                FROM per_order),
        reasons AS (
          SELECT DISTINCT node, kind, 'placeholder pattern' AS reason FROM links
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
    """).df()


def customer_id_for(anchor: str) -> str:
    """Deterministic id from the smallest node of a component (stable across re-runs)."""
    return "cus_" + hashlib.sha1(anchor.encode()).hexdigest()[:12]


def _components(usable: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Connected components of the record <-> identifier graph: (record component, node component)."""
    record_keys = usable["source_table"] + "\x1f" + usable["source_key"]
    record_codes, record_index = np.unique(record_keys.to_numpy(), return_inverse=True)
    node_codes, node_index = np.unique(usable["node"].to_numpy(), return_inverse=True)
    n = len(record_codes) + len(node_codes)
    graph = coo_matrix((np.ones(len(usable), dtype=np.int8), (record_index, len(record_codes) + node_index)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    return (pd.Series(component[: len(record_codes)], index=record_codes),
            pd.Series(component[len(record_codes):], index=node_codes))


def resolve(ws: Workspace, config: ResolveConfig = ResolveConfig()) -> ResolveSummary:
    links = _record_identifiers(ws)
    con = duckdb.connect()
    con.register("links", links)
    blocked = _blocked_nodes(con, config)
    usable = links[~links["node"].isin(set(blocked["node"]))].reset_index(drop=True)
    record_component, node_component = _components(usable)
    usable["component"] = (usable["source_table"] + "\x1f" + usable["source_key"]).map(record_component).to_numpy()
    con.register("usable", usable)
    # Customers: components holding a profile record or an order; id from the smallest node.
    customers = con.execute(f"""
        SELECT component, min(node) AS anchor FROM usable GROUP BY component
        HAVING bool_or(source_table IN {CUSTOMER_TABLES})""").df()
    customers["customer_id"] = customers["anchor"].map(customer_id_for)
    con.register("customers", customers)
    identity_map = con.execute("""
        SELECT u.source_table, u.source_key, c.customer_id,
               string_agg(DISTINCT u.kind, ',' ORDER BY u.kind) AS linked_by
        FROM usable u JOIN customers c USING (component)
        GROUP BY ALL ORDER BY 1, 2""").df()
    nodes = pd.DataFrame({"node": node_component.index, "component": node_component.to_numpy()})
    nodes = nodes.merge(customers[["component", "customer_id"]], on="component")[["node", "customer_id"]]

    ws.identity.mkdir(parents=True, exist_ok=True)
    identity_map.to_parquet(ws.identity / "identity_map.parquet", index=False)
    nodes.to_parquet(ws.identity / "identifier_map.parquet", index=False)
    blocked.to_parquet(ws.identity / "blocked_identifiers.parquet", index=False)
    all_records = links[["source_table", "source_key"]].drop_duplicates()
    return ResolveSummary(
        customers=len(customers),
        records_linked=len(identity_map),
        anonymous_records=_count_without_identifiers(ws) + len(all_records) - len(identity_map),
        blocked_identifiers=len(blocked),
    )


def _count_without_identifiers(ws: Workspace) -> int:
    """Records of linkable tables that carry no identifier at all (e.g. cash store receipts)."""
    total = 0
    for table, key, columns in LINK_SOURCES:
        path = ws.staged / f"{table}.parquet"
        if path.exists() and table not in PROFILE_TABLES:
            staged = pd.read_parquet(path, columns=list(columns.values()))
            total += int(staged.isna().all(axis=1).sum())
    return total
