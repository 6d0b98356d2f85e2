"""The retraining policy of `cdp refresh --retrain-if-decayed`: a family whose latest monitoring
run crossed a threshold (feature drift, score shift, realized metric below the promise: the same
alerts `cdp monitor` prints) gets a challenger trained on today's data; the promotion gate decides
as for any `cdp train` (it must beat its baseline and the champion on the same held-out rows), and
when a new champion was promoted everyone is rescored with it.

In:  a workspace scored at least once (monitoring runs in MLflow).
Out: {"decayed": {family: [alert, ...]}, "retrained": {family: train summary}, "rescored": ...}.
"""

from __future__ import annotations

from typing import Any

from cdp import pipeline
from cdp.training.monitor_report import Thresholds, alerts_by_family, history, latest
from cdp.workspace import Workspace


def retrain_if_decayed(ws: Workspace, limits: Thresholds | None = None, progress=None) -> dict[str, Any]:
    runs = history(ws)
    decayed = alerts_by_family(latest(runs), limits or Thresholds.from_settings()) if len(runs) else {}
    out: dict[str, Any] = {"decayed": decayed, "retrained": {}}
    for family in sorted(decayed):
        result = pipeline.train(ws, family, progress)
        gate = result.get("extra", {}).get("promotion", {})
        out["retrained"][family] = {
            "version": result.get("version"),
            "promoted": bool(gate.get("promoted")),
            "verdict": gate.get("verdict", ""),
        }
    if any(r["promoted"] for r in out["retrained"].values()):
        out["rescored"] = pipeline.score(ws)
    return out
