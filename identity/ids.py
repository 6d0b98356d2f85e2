"""Stable customer ids across runs.

In:  this run's clusters (`members`: component, source_table, source_key, anchor = smallest
     node of the component) and the previous identity_map (source_table, source_key, customer_id).
Out: component -> customer_id, and history rows (event, old_id, new_id) for ids that were
     retired by a merge ('merged'), parts that split off under a new id ('split'), and ids
     whose records all disappeared ('dropped').
Rules: each previous id lives on in the cluster holding most of its records (ties: the
cluster with the smaller anchor), so when a cluster splits the larger part keeps the id;
a cluster that receives several previous ids keeps the one with the most records here
(ties: the smaller id) and retires the others; a cluster with no previous id gets
"cus_" + sha1(anchor)[:12], made unique against every id ever issued.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

HISTORY_COLUMNS = ["event", "old_id", "new_id", "resolved_at"]


def state_dir(ws) -> Path:
    """identity/incremental_state/: what a run saves so that incremental linking need not
    re-read every record (per-identifier guard counts, unmapped records, household keys)."""
    return ws.identity / "incremental_state"


def customer_id_for(anchor: str) -> str:
    """Deterministic id from the smallest node of a component (stable across re-runs)."""
    return "cus_" + hashlib.sha1(anchor.encode()).hexdigest()[:12]


def fresh_id(anchor: str, taken: set[str]) -> str:
    candidate, k = customer_id_for(anchor), 0
    while candidate in taken:
        k += 1
        candidate = customer_id_for(f"{anchor}#{k}")
    taken.add(candidate)
    return candidate


def assign_ids(members: pd.DataFrame, previous: pd.DataFrame | None) -> tuple[pd.Series, pd.DataFrame]:
    """(component -> customer_id, history rows) for this run's `members`."""
    anchors = members.groupby("component")["anchor"].first().sort_values()
    now = pd.Timestamp.now(tz="UTC").floor("s")
    if previous is None or previous.empty:
        taken: set[str] = set()
        return pd.Series({c: fresh_id(a, taken) for c, a in anchors.items()}), pd.DataFrame(columns=HISTORY_COLUMNS)
    overlap = members.merge(previous, on=["source_table", "source_key"])
    overlap = overlap.groupby(["component", "customer_id"]).size().rename("n").reset_index()
    overlap["anchor"] = overlap["component"].map(anchors)
    home = overlap.sort_values(["customer_id", "n", "anchor"], ascending=[True, False, True]).drop_duplicates(
        "customer_id"
    )
    survivors = (
        home.sort_values(["component", "n", "customer_id"], ascending=[True, False, True])
        .drop_duplicates("component")
        .set_index("component")["customer_id"]
    )
    ids = survivors.to_dict()
    taken = set(previous["customer_id"]) | set(ids.values())
    events = []
    for _, row in home[~home["customer_id"].isin(set(survivors))].iterrows():
        events.append(("merged", row["customer_id"], ids[row["component"]]))
    olds = overlap.groupby("component")["customer_id"].agg(list).to_dict()
    for component, anchor in anchors.items():
        if component not in ids:
            ids[component] = fresh_id(anchor, taken)
            events.extend(("split", old, ids[component]) for old in olds.get(component, []))
    for gone in sorted(set(previous["customer_id"]) - set(overlap["customer_id"])):
        events.append(("dropped", gone, None))
    history = pd.DataFrame(events, columns=HISTORY_COLUMNS[:3]).assign(resolved_at=now)
    return pd.Series(ids), history
