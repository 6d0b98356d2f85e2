"""Ranked churn lists for retention teams: scores, the reasons behind each, and whether each
customer may be contacted on each channel (consent per purpose, at the scoring snapshot).

Ids only, no names/emails/phones: the team joins the list to its CRM by customer_id, so the file
can travel without carrying PII.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cdp.workspace import Workspace

CHANNELS = ("email", "sms")


def churn_list(ws: Workspace, top: int, min_probability: float = 0.0) -> pd.DataFrame:
    """The `top` customers by their latest churn score, with reasons and contactability."""
    from cdp.features.build import load_snapshots
    from cdp.features.consent import contactable
    from cdp.featurestore.latest import latest_service_features
    from cdp.featurestore.store import open_store
    from cdp.models.churn import CHURN
    from cdp.serving.churn_scorer import ChurnScorer
    from cdp.training.tracking import load_champion

    path = ws.features / "churn_scores.parquet"
    scores = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    if scores.empty:
        raise FileNotFoundError(f"no churn scores in {path}: run `cdp score` first")
    if top < 1:
        raise ValueError(f"top: must be at least 1, got {top}")
    latest = scores.sort_values("event_timestamp").drop_duplicates("customer_id", keep="last")
    latest = latest[latest["churn_probability"] >= min_probability]
    ranked = latest.sort_values(["churn_probability", "customer_id"], ascending=[False, True]).head(top)
    as_of = load_snapshots(ws)[0][-1]
    model, version = load_champion(ws, CHURN.name)
    scorer = ChurnScorer.from_model(model, version)
    entities = pd.DataFrame(
        {"customer_id": ranked["customer_id"].to_numpy(), "event_timestamp": pd.Timestamp(as_of).tz_convert("UTC")}
    )
    features = latest_service_features(ws, open_store(ws), CHURN.feature_service, entities, as_of)
    reasons = scorer.reasons(scorer.matrix(features))
    out = pd.DataFrame(
        {
            "rank": range(1, len(ranked) + 1),
            "customer_id": ranked["customer_id"].to_numpy(),
            "churn_probability": ranked["churn_probability"].round(6).to_numpy(),
            "scored_with_model_version": ranked["churn_model_version"].to_numpy(),
            "scored_as_of": ranked["churn_scored_at"].to_numpy(),
        }
    )
    for i in range(3):
        out[f"reason_{i + 1}"] = [r[i]["text"] if len(r) > i else None for r in reasons]
    for channel in CHANNELS:
        out[f"contactable_{channel}"] = (
            contactable(ws, out["customer_id"], channel, as_of).reindex(out["customer_id"]).fillna(False).to_numpy()
        )
    out["contactable_any"] = out[[f"contactable_{c}" for c in CHANNELS]].any(axis=1)
    return out


def write_list(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        raise ValueError(f"out: use a .csv or .parquet file name, got '{path.name}'")
    return path
