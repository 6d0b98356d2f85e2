"""Subject access: everything the platform holds about the person behind an identifier.

In:  a workspace and a `Subject` (`cdp.privacy.subjects.find_subject`).
Out: one JSON-ready dict: source records (every staged table that links to them, including
     order lines, campaign responses, consent events and vendor enrichment), quarantined raw
     records carrying their identifiers, identity links with their evidence, offline feature
     rows (all snapshots) and the online row of every feature view, model scores (every
     `*_scores` view, offline and online), consent history and current state, and the MLflow model versions trained on them.
"""

from __future__ import annotations

import json

import pandas as pd

from cdp.privacy.subjects import Subject, runs_trained_on, staged_rows_carrying
from cdp.workspace import Workspace


def _rows(frame: pd.DataFrame) -> list[dict]:
    """JSON-safe records (timestamps ISO-8601, NaN/NA -> null)."""
    return json.loads(frame.to_json(orient="records", date_format="iso", default_handler=str))


def source_records(ws: Workspace, subject: Subject) -> dict[str, list[dict]]:
    out = {}
    for table, _, frame, mask in staged_rows_carrying(ws, subject.nodes):
        if mask.any():
            out[table] = _rows(frame[mask])
    for table, _, frame, mask in staged_rows_carrying(ws, subject.nodes, history=True):
        if mask.any():  # earlier versions of their updated records, with the file each came from
            out[f"{table} (superseded versions)"] = _rows(frame[mask])
    return out


def quarantined_records(ws: Workspace, subject: Subject) -> tuple[list[dict], list[dict]]:
    """(the person's quarantined raw records, conflicts): a conflict is a quarantined row that
    reuses one of the person's keys but carries another customer's identifiers; only its table,
    row and reason are listed, never its content (cdp.privacy.erasure.quarantine_matches)."""
    from cdp.privacy.erasure import quarantine_matches

    if not ws.quarantine.exists():
        return [], []
    quarantine = pd.read_parquet(ws.quarantine)
    mine, conflicts = quarantine_matches(ws, set(subject.nodes))
    chosen, other = quarantine[mine], quarantine[conflicts]
    records = [
        {"table": t, "row": int(r), "reason": why, "record": json.loads(rec)}
        for t, r, why, rec in zip(chosen["table"], chosen["row"], chosen["reason"], chosen["record"])
    ]
    return records, [
        {
            "table": t,
            "row": int(r),
            "reason": why,
            "note": "reuses one of this person's keys; another customer's record",
        }
        for t, r, why in zip(other["table"], other["row"], other["reason"])
    ]


def identity_links(ws: Workspace, subject: Subject) -> dict[str, list[dict]]:
    cid, keys = subject.customer_id, {n[4:] for n in subject.nodes if n.startswith("key:")}
    out: dict[str, list] = {"records": _rows(subject.records), "identifiers": subject.identifier_nodes()}
    for name, pick in (
        ("households", lambda f: f["customer_id"] == cid),
        ("id_history", lambda f: (f["old_id"] == cid) | (f["new_id"] == cid)),
        ("match_edges", lambda f: f["unique_id_l"].isin(keys) | f["unique_id_r"].isin(keys)),
    ):
        path = ws.identity / f"{name}.parquet"
        if path.exists():
            frame = pd.read_parquet(path)
            out[name] = _rows(frame[pick(frame)])
    return out


def features(ws: Workspace, subject: Subject) -> dict[str, list[dict]]:
    """Offline feature rows (every snapshot) per view, including churn_scores."""
    out = {}
    for path in sorted(ws.features.glob("*.parquet")):
        frame = pd.read_parquet(path)
        out[path.stem] = _rows(frame[frame["customer_id"] == subject.customer_id])
    return out


def online_row(ws: Workspace, subject: Subject) -> dict:
    """The customer's row in the online store: every feature of every view (nulls if absent)."""
    from cdp.featurestore.store import open_store

    store = open_store(ws)
    refs = [f"{view.name}:{f.name}" for view in store.list_feature_views() for f in view.features]
    frame = store.get_online_features(
        features=refs, entity_rows=[{"customer_id": subject.customer_id}], full_feature_names=True
    ).to_df()
    return _rows(frame)[0]


def export_subject(ws: Workspace, subject: Subject, online: bool = True, models: bool = True) -> dict:
    """Everything held about `subject`, as one JSON-ready dict."""
    from cdp.features.consent import consent_history, current_consent

    history = consent_history(ws, [subject.customer_id])
    quarantined, conflicts = quarantined_records(ws, subject)
    report = {
        "customer_id": subject.customer_id,
        "exported_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "source_records": source_records(ws, subject),
        "quarantined_records": quarantined,
        "quarantine_conflicts": conflicts,
        "identity": identity_links(ws, subject),
        "features_offline": features(ws, subject),
        "consent": {
            "history": _rows(history.drop(columns="customer_id")),
            "now": current_consent(ws, subject.customer_id, pd.Timestamp.now(tz="UTC")),
        },
    }
    report["scores_offline"] = {
        view: report["features_offline"].pop(view)
        for view in list(report["features_offline"])
        if view.endswith("_scores")
    }
    if online:
        report["features_online"] = online_row(ws, subject)
    if models:
        report["models_trained_on_subject"] = runs_trained_on(ws, [subject.customer_id])
    return report
