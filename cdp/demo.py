"""`cdp demo`: every stage end to end on embedded defaults, then a real call to the server.

Writes reports/demo_summary.json: row and quarantine counts, customers found vs. people in
truth, churn AUC vs. oracle AUC, the MLflow run, the served URL, and each stage's wall time.
"""
from __future__ import annotations

import json
import time

import pandas as pd
from rich.console import Console
from rich.table import Table

from cdp import pipeline
from cdp.cli import progress_bar
from cdp.paths import Workspace


def _people_in_truth(ws: Workspace) -> int | None:
    path = ws.truth / "record_persons.parquet"
    return int(pd.read_parquet(path, columns=["person_id"])["person_id"].nunique()) if path.exists() else None


def _call_server(ws: Workspace, port: int, sample_ids: list[str]) -> dict:
    import httpx

    from serving.server import running_server

    started = time.perf_counter()
    with running_server(ws, port, log_path=ws.reports / "bentoml.log") as url:
        ready = time.perf_counter() - started
        response = httpx.post(f"{url}/churn", json={"customer_ids": [*sample_ids, "cus_does_not_exist"]}, timeout=30)
        response.raise_for_status()
        body = response.json()
    return {"url": f"{url}/churn", "ready_seconds": round(ready, 1), "scored": len(body["scores"]),
            "errors": body["errors"], "example": body["scores"][:2]}


def run_demo(ws: Workspace, customers: int, seed: int, port: int, console: Console) -> dict:
    started = time.perf_counter()
    ws.ensure()
    stages: dict[str, dict] = {}
    with progress_bar("generate") as update:
        stages["generate"] = pipeline.generate(ws, customers, seed, progress=update)
    with progress_bar("ingest") as update:
        stages["ingest"] = pipeline.ingest(ws, progress=update)
    with console.status("resolve identities"):
        stages["resolve"] = pipeline.resolve(ws)
    with progress_bar("features") as update:
        stages["features"] = pipeline.build_features(ws, progress=update)
    with progress_bar("train churn") as update:
        stages["train"] = pipeline.train(ws, "churn", progress=update)
    with console.status("score + push back"):
        stages["score"] = pipeline.score(ws)
    scored = pd.read_parquet(ws.features / "churn_scores.parquet", columns=["customer_id"])
    with console.status("serve + call /churn"):
        serve_started = time.perf_counter()
        serving = _call_server(ws, port, scored["customer_id"].head(3).tolist())
        serving["seconds"] = round(time.perf_counter() - serve_started, 2)

    ingest = stages["ingest"]
    train = stages["train"]
    summary = {
        "customers_requested": customers,
        "rows_read": {t: c["read"] for t, c in ingest["tables"].items()},
        "rows_quarantined": {t: c["quarantined"] for t, c in ingest["tables"].items()},
        "people_in_truth": _people_in_truth(ws),
        "customers_found": stages["resolve"]["customers"],
        "churn_roc_auc": round(train["metrics"]["roc_auc"], 4),
        "churn_oracle_roc_auc": round(train["oracle"]["roc_auc"], 4) if train["oracle"] else None,
        "identity_clean_rows": {  # customer == one whole person: where the oracle is the ceiling
            "rows": train["oracle"]["clean_rows"],
            "model_roc_auc": round(train["oracle"]["model_clean_rows_roc_auc"], 4),
            "oracle_roc_auc": round(train["oracle"]["clean_rows_roc_auc"], 4)} if train["oracle"] else None,
        "churn_pr_auc": round(train["metrics"]["pr_auc"], 4),
        "churn_brier": round(train["metrics"]["brier"], 4),
        "churn_lift_top_decile": round(train["metrics"]["lift_top_decile"], 2),
        "mlflow": {"tracking_uri": ws.mlflow_uri, "run_id": train["run_id"],
                   "model": f"models:/{train['model_name']}@champion (version {train['version']})"},
        "served": serving,
        "customers_scored_and_pushed": stages["score"]["customers_scored"],
        "stage_seconds": {name: s["seconds"] for name, s in {**stages, "serve": serving}.items()},
        "total_seconds": round(time.perf_counter() - started, 1),
        "stages": stages,
    }
    ws.reports.mkdir(parents=True, exist_ok=True)
    (ws.reports / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    table = Table(title="cdp demo", show_header=False)
    for key in ("people_in_truth", "customers_found", "churn_roc_auc", "churn_oracle_roc_auc", "identity_clean_rows", "churn_pr_auc",
                "churn_brier", "churn_lift_top_decile", "customers_scored_and_pushed", "total_seconds"):
        table.add_row(key, str(summary[key]))
    table.add_row("quarantined rows", str(sum(summary["rows_quarantined"].values())))
    table.add_row("served", serving["url"])
    table.add_row("mlflow", f"{ws.mlflow_uri}  run {train['run_id']}")
    table.add_row("stage seconds", json.dumps(summary["stage_seconds"]))
    console.print(table)
    return summary
