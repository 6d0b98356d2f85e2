"""Households: customers who live together.

In:  this run's identity_map (source_table, source_key, customer_id), profile records
     (`cdp.identity.matching.profile_records`: last_name, address, postcode) and the record ->
     identifier links (source_table, source_key, kind, node).
Out: `identity/households.parquet` (customer_id, household_id), one row per customer.
Two customers share a household when they share a street address + postcode + surname, or
a phone number (a shared home phone). Phones on more than `max_household` customers are not
homes (call centres, placeholders) and are ignored. household_id = "hh_" + sha1(smallest
member customer_id)[:12], so it is stable while the membership's smallest id is.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cdp.atomic import write_parquet_atomic
from cdp.workspace import Workspace


def all_household_keys(identity_map: pd.DataFrame, profiles: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    """Every distinct (customer_id, key) pair of the mapped records, before the size filter."""
    keyed = identity_map[["source_table", "source_key", "customer_id"]]
    prof = profiles.dropna(subset=["address", "postcode", "last_name"])
    addr = prof.assign(key="addr:" + prof["address"] + "|" + prof["postcode"] + "|" + prof["last_name"]).merge(
        keyed, on=["source_table", "source_key"]
    )[["customer_id", "key"]]
    phones = (
        links[links["kind"] == "phone"][["source_table", "source_key", "node"]]
        .merge(keyed, on=["source_table", "source_key"])
        .rename(columns={"node": "key"})[["customer_id", "key"]]
    )
    return pd.concat([addr, phones], ignore_index=True).drop_duplicates().reset_index(drop=True)


def shared_keys(keys: pd.DataFrame, max_household: int = 8) -> pd.DataFrame:
    """The keys held by more than one and at most `max_household` customers."""
    size = keys.groupby("key")["customer_id"].transform("nunique")
    return keys[(size > 1) & (size <= max_household)].reset_index(drop=True)


def households(customers: pd.Series, keys: pd.DataFrame) -> pd.DataFrame:
    """Connected components of customers linked by shared keys -> (customer_id, household_id)."""
    ids = pd.Index(pd.unique(customers))
    key_codes, key_index = (
        np.unique(keys["key"].to_numpy(), return_inverse=True) if len(keys) else (np.array([]), np.array([], int))
    )
    n = len(ids) + len(key_codes)
    graph = coo_matrix(
        (np.ones(len(keys), dtype=np.int8), (ids.get_indexer(keys["customer_id"]), len(ids) + key_index)), shape=(n, n)
    )
    _, component = connected_components(graph, directed=False)
    frame = pd.DataFrame({"customer_id": ids, "component": component[: len(ids)]})
    # smallest customer_id per component (sort + first: string min in groupby is pure Python)
    first = frame.sort_values("customer_id").drop_duplicates("component").set_index("component")["customer_id"]
    hh = {c: "hh_" + hashlib.sha1(cid.encode()).hexdigest()[:12] for c, cid in first.items()}
    frame["household_id"] = frame["component"].map(hh)
    return frame[["customer_id", "household_id"]].sort_values("customer_id").reset_index(drop=True)


def build_households(
    ws: Workspace,
    identity_map: pd.DataFrame,
    profiles: pd.DataFrame | None = None,
    links: pd.DataFrame | None = None,
    keys: pd.DataFrame | None = None,
) -> int:
    """Write identity/households.parquet; returns the number of multi-person households.
    `keys`: all (customer_id, key) pairs when already known (incremental linking keeps them up
    to date instead of re-deriving them from every record); else derived from profiles + links.
    The pairs are saved in the incremental state (identity/incremental_state/household_keys.parquet)."""
    from cdp.identity.ids import state_dir

    if keys is None:
        keys = all_household_keys(identity_map, profiles, links)
    frame = households(identity_map["customer_id"], shared_keys(keys))
    write_parquet_atomic(frame, ws.path("households"))
    state_dir(ws).mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(keys, state_dir(ws) / "household_keys.parquet")
    return int((frame.groupby("household_id").size() > 1).sum())
