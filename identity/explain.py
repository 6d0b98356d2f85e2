"""Evidence for one pair of records: `cdp explain-match`.

In:  a workspace after `resolve` and two source_keys. Out: a dict with each record's
customer_id, linked_by and match_probability; the identifier kinds both records carry and
the guard on each (usable / shared / blocked, never the value); for two profile records the
Splink comparison levels (gamma per field, from identity/match_edges.parquet or scored live
with identity/splink_model.json), the match probability and the guard verdict.
"""

from __future__ import annotations

import json

import pandas as pd

from cdp.identity import matching
from cdp.identity.links import LINK_SOURCES
from cdp.identity.resolve import guard_scored_edges
from cdp.workspace import Workspace


def _record(ws: Workspace, key: str) -> dict:
    frame = pd.read_parquet(ws.path("identity_map"), filters=[("source_key", "=", key)])
    if frame.empty:
        raise ValueError(f"record '{key}': not in identity/identity_map.parquet (anonymous or unknown)")
    frame["profile"] = frame["source_table"].isin(matching.PROFILE_SOURCES)
    return frame.sort_values("profile", ascending=False).iloc[0].drop("profile").to_dict()


def _nodes(ws: Workspace, table: str, key: str) -> set[str]:
    for name, key_col, columns in LINK_SOURCES:
        if name == table:
            staged = pd.read_parquet(
                ws.staged / f"{table}.parquet",
                columns=[key_col, *dict.fromkeys(columns.values())],
                filters=[(key_col, "=", key)],
            )
            return {f"{kind}:{v}" for kind, col in columns.items() for v in staged[col].dropna().astype(str)}
    return set()


def explain_pair(ws: Workspace, key_a: str, key_b: str) -> dict:
    """Evidence dict for two records (see module docstring)."""
    ws.require("identity_map", "identifier_map", "blocked_identifiers")
    a, b = _record(ws, key_a), _record(ws, key_b)
    guards = pd.read_parquet(ws.path("blocked_identifiers")).set_index("node")
    common = sorted(_nodes(ws, a["source_table"], key_a) & _nodes(ws, b["source_table"], key_b))
    shared_ids = [
        {
            "kind": n.split(":", 1)[0],
            "guard": guards.loc[n, "guard"] if n in guards.index else "usable",
            "reason": guards.loc[n, "reason"] if n in guards.index else "deterministic link",
        }
        for n in common
    ]
    out = {
        "same_customer": a["customer_id"] == b["customer_id"],
        "record_a": a,
        "record_b": b,
        "common_identifiers": shared_ids,
    }
    uid_a, uid_b = f"{a['source_table']}|{key_a}", f"{b['source_table']}|{key_b}"
    if a["source_table"] in matching.PROFILE_SOURCES and b["source_table"] in matching.PROFILE_SOURCES:
        out["probabilistic"] = _score(ws, min(uid_a, uid_b), max(uid_a, uid_b))
    decided = [i["kind"] for i in shared_ids if i["guard"] == "usable"]
    out["rule"] = (
        f"deterministic: shared {','.join(decided)}"
        if decided
        else "probabilistic match"
        if out.get("probabilistic", {}).get("accepted")
        else "linked through other records"
        if out["same_customer"]
        else "not linked"
    )
    return out


def _score(ws: Workspace, left: str, right: str) -> dict:
    edges_path = ws.path("match_edges")
    if edges_path.exists():
        edges = pd.read_parquet(edges_path)
        hit = edges[(edges["unique_id_l"] == left) & (edges["unique_id_r"] == right)]
        if len(hit):
            row = hit.iloc[0]
            return {
                "match_probability": round(float(row["match_probability"]), 6),
                "match_weight": round(float(row["match_weight"]), 3),
                "levels": {c[6:]: int(row[c]) for c in hit.columns if c.startswith("gamma_")},
                "accepted": bool(row["accepted"]),
                "guard": row["guard"] or "none",
                "source": "resolve run",
            }
    model_path = ws.path("splink_model")
    if not model_path.exists():
        return {"note": "no probabilistic model in this workspace"}
    records = matching.profile_records(ws)
    records = records[records["unique_id"].isin([left, right])]
    model = json.loads(model_path.read_text())
    scored = matching.score_pair(records, model, left, right).iloc[0]
    levels = {c[6:]: int(scored[c]) for c in scored.index if c.startswith("gamma_")}
    verdict = guard_scored_edges(
        pd.DataFrame(
            [
                {
                    "unique_id_l": left,
                    "unique_id_r": right,
                    "match_probability": float(scored["match_probability"]),
                    **{f"gamma_{k}": v for k, v in levels.items()},
                }
            ]
        ),
        records,
        model=model,
    ).iloc[0]
    return {
        "match_probability": round(float(scored["match_probability"]), 6),
        "match_weight": round(float(scored["match_weight"]), 3),
        "levels": levels,
        "accepted": False,
        "guard": verdict["guard"] or "none (not blocked together in the run)",
        "source": "scored now (pair below the score floor or not blocked together)",
    }
