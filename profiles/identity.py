"""Identity resolution v1: deterministic linking on normalized identifiers.

In:  staged tables (ingest output) with `email_norm`, `phone_e164`, card/account/device ids.
Out: `identity/identity_map.parquet`  (source_table, source_key, customer_id, linked_by)
     `identity/identifier_map.parquet` (identifier node -> customer_id), used to attach
     records that carry only an identifier (consent events, enrichment by email_sha256).
     `identity/blocked_identifiers.parquet` (identifiers the guards refused to link on).

Every identifying record becomes a node set {record, its identifiers}; connected components
over those sets are customers. Guards keep shared values from chaining strangers together:
a blocklist of placeholders and a fan-out cap (an identifier seen with too many distinct
cards/accounts/emails is a store placeholder or a shared device, not a person's).
The probabilistic matcher (Splink) plugs in as extra edges between record nodes.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cdp.paths import Workspace

# (table, key column, {identifier type: column}) — the columns each table links on.
LINK_SOURCES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("crm_contacts", "record_id", {"email": "email_norm", "phone": "phone_e164"}),
    ("loyalty_members", "card_id", {"card": "card_id", "email": "email_norm", "phone": "phone_e164"}),
    ("online_accounts", "account_id", {"account": "account_id", "email": "email_norm", "phone": "phone_e164"}),
    ("orders", "order_id", {"card": "card_id", "account": "account_id", "email": "email_norm", "phone": "phone_e164"}),
    ("service_interactions", "interaction_id", {"account": "account_id", "card": "card_id", "email": "email_norm", "phone": "phone_e164"}),
    ("marketing_sends", "send_id", {"account": "account_id", "email": "email_norm", "device": "device_id"}),
    ("web_events", "event_id", {"account": "account_id", "device": "device_id"}),
)
# Records that are a person's own profile: each becomes a customer even with no contact data.
PROFILE_TABLES = {"crm_contacts": "crm", "loyalty_members": "card", "online_accounts": "account"}
PLACEHOLDER = re.compile(r"^\+?1?(\d)\1{6,}$|^\+?1?(0123456789|1234567890)$")


@dataclass(frozen=True)
class ResolveConfig:
    max_fanout: int = 12  # distinct cards/accounts/emails one phone/email may join
    max_accounts_per_device: int = 2  # a device logged into more accounts is shared


@dataclass(frozen=True)
class ResolveSummary:
    customers: int
    records_linked: int
    anonymous_records: int
    blocked_identifiers: int

    def to_dict(self) -> dict[str, int]:
        return self.__dict__.copy()


def _record_identifiers(ws: Workspace) -> pd.DataFrame:
    """Long table: one row per (source_table, source_key, node) a record carries."""
    frames = []
    for table, key, columns in LINK_SOURCES:
        path = ws.staged / f"{table}.parquet"
        if not path.exists():
            continue
        wanted = [key, *[c for c in columns.values() if c != key]]
        staged = pd.read_parquet(path, columns=list(dict.fromkeys(wanted)))
        keys = staged[key].astype(str)
        if table in PROFILE_TABLES:  # the record itself is a node, so it never vanishes
            frames.append(pd.DataFrame({"source_table": table, "source_key": keys,
                                        "node": PROFILE_TABLES[table] + ":" + keys}))
        for kind, column in columns.items():
            values = staged[column]
            present = values.notna() & (values.astype(str).str.strip() != "")
            frames.append(pd.DataFrame({
                "source_table": table,
                "source_key": keys[present],
                "node": kind + ":" + values[present].astype(str).str.strip(),
            }))
    links = pd.concat(frames, ignore_index=True).drop_duplicates()
    return links


def _blocked_nodes(links: pd.DataFrame, config: ResolveConfig) -> pd.DataFrame:
    """Identifiers that must not link: placeholders and values shared by too many people."""
    kind = links["node"].str.split(":", n=1).str[0]
    value = links["node"].str.split(":", n=1).str[1]
    reasons: dict[str, str] = {}
    for node in links.loc[(kind == "phone") & value.str.match(PLACEHOLDER), "node"].unique():
        reasons[node] = "placeholder pattern"
    # Fan-out: distinct strong identifiers (card/account/email) co-occurring with each node.
    record_nodes = links[["source_table", "source_key", "node"]]
    strong = record_nodes[kind.isin(["card", "account", "email"])]
    pairs = record_nodes.merge(strong, on=["source_table", "source_key"], suffixes=("", "_other"))
    pairs = pairs[pairs["node"] != pairs["node_other"]]
    fanout = pairs.groupby("node")["node_other"].nunique()
    pair_kind = fanout.index.str.split(":", n=1).str[0]
    for node in fanout[(pair_kind.isin(["phone", "email"])) & (fanout > config.max_fanout)].index:
        reasons.setdefault(node, f"shared by more than {config.max_fanout} identities")
    accounts = pairs[pairs["node_other"].str.startswith("account:")]
    per_device = accounts[accounts["node"].str.startswith("device:")].groupby("node")["node_other"].nunique()
    for node in per_device[per_device > config.max_accounts_per_device].index:
        reasons.setdefault(node, f"device used by more than {config.max_accounts_per_device} accounts")
    blocked = pd.DataFrame({"node": list(reasons), "reason": list(reasons.values())})
    blocked["kind"] = blocked["node"].str.split(":", n=1).str[0]
    return blocked


def customer_id_for(anchor: str) -> str:
    """Deterministic id from the smallest node of a component (stable across re-runs)."""
    return "cus_" + hashlib.sha1(anchor.encode()).hexdigest()[:12]


def resolve(ws: Workspace, config: ResolveConfig = ResolveConfig()) -> ResolveSummary:
    links = _record_identifiers(ws)
    blocked = _blocked_nodes(links, config)
    usable = links[~links["node"].isin(set(blocked["node"]))]

    record_ids, record_index = np.unique(
        usable["source_table"].to_numpy() + "\x1f" + usable["source_key"].to_numpy(), return_inverse=True)
    node_ids, node_index = np.unique(usable["node"].to_numpy(), return_inverse=True)
    # Bipartite graph record <-> identifier; components are customers.
    n_records, n_nodes = len(record_ids), len(node_ids)
    graph = coo_matrix((np.ones(len(usable)), (record_index, n_records + node_index)),
                       shape=(n_records + n_nodes, n_records + n_nodes))
    _, component = connected_components(graph, directed=False)

    nodes = pd.DataFrame({"node": node_ids, "component": component[n_records:]})
    anchors = nodes.groupby("component")["node"].min()
    ids = anchors.map(customer_id_for)
    nodes["customer_id"] = nodes["component"].map(ids)

    records = pd.DataFrame({"record": record_ids, "component": component[:n_records]})
    records[["source_table", "source_key"]] = records["record"].str.split("\x1f", n=1, expand=True)
    records["customer_id"] = records["component"].map(ids)
    linked_by = (usable.assign(kind=usable["node"].str.split(":", n=1).str[0])
                 .groupby(["source_table", "source_key"])["kind"]
                 .agg(lambda kinds: ",".join(sorted(set(kinds)))))
    identity_map = records.merge(linked_by.rename("linked_by").reset_index(),
                                 on=["source_table", "source_key"], how="left")
    identity_map = identity_map[["source_table", "source_key", "customer_id", "linked_by"]]
    identity_map = identity_map.sort_values(["source_table", "source_key"], ignore_index=True)

    ws.identity.mkdir(parents=True, exist_ok=True)
    identity_map.to_parquet(ws.identity / "identity_map.parquet", index=False)
    nodes[["node", "customer_id"]].to_parquet(ws.identity / "identifier_map.parquet", index=False)
    blocked.to_parquet(ws.identity / "blocked_identifiers.parquet", index=False)

    all_records = links[["source_table", "source_key"]].drop_duplicates()
    anonymous = _count_anonymous(ws)
    return ResolveSummary(
        customers=int(identity_map["customer_id"].nunique()),
        records_linked=len(identity_map),
        anonymous_records=anonymous + (len(all_records) - len(identity_map)),
        blocked_identifiers=len(blocked),
    )


def _count_anonymous(ws: Workspace) -> int:
    """Records of linkable tables that carry no identifier at all (e.g. cash store receipts)."""
    total = 0
    for table, key, columns in LINK_SOURCES:
        path = ws.staged / f"{table}.parquet"
        if not path.exists() or table in PROFILE_TABLES:
            continue
        staged = pd.read_parquet(path, columns=list(dict.fromkeys([key, *columns.values()])))
        total += int(staged[list(columns.values())].isna().all(axis=1).sum())
    return total


def load_identity_map(ws: Workspace) -> pd.DataFrame:
    return pd.read_parquet(ws.identity / "identity_map.parquet")


def load_identifier_map(ws: Workspace) -> pd.DataFrame:
    return pd.read_parquet(ws.identity / "identifier_map.parquet")
