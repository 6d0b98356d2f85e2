"""`cdp demo`: every stage end to end on embedded defaults, then a real call to the server.

Writes reports/demo_summary.json: row and quarantine counts, customers found vs. people in
truth, churn AUC vs. oracle AUC, next-best-product NDCG@10 vs. baselines and oracle, campaign
uplift Qini vs. propensity/random/oracle, the MLflow run, the served URL, and each stage's wall time.
"""

from __future__ import annotations

import json
import time

import pandas as pd
from rich.console import Console
from rich.table import Table

from cdp import pipeline
from cdp.atomic import write_json_atomic
from cdp.cli.ui import progress_bar
from cdp.workspace import Workspace


def _people_in_truth(ws: Workspace) -> int | None:
    path = ws.truth / "record_persons.parquet"
    return int(pd.read_parquet(path, columns=["person_id"])["person_id"].nunique()) if path.exists() else None


def _call_server(ws: Workspace, port: int, sample_ids: list[str]) -> dict:
    import httpx

    from cdp.serving.server import running_server

    started = time.perf_counter()
    with running_server(ws, port, log_path=ws.reports / "bentoml.log") as url:
        ready = time.perf_counter() - started
        response = httpx.post(f"{url}/churn", json={"customer_ids": [*sample_ids, "cus_does_not_exist"]}, timeout=30)
        response.raise_for_status()
        body = response.json()
        nbp = httpx.post(f"{url}/next_best_product", json={"customer_id": sample_ids[0], "k": 5}, timeout=30)
        if nbp.status_code != 503:  # 503: no ranker beat popularity, the route says so
            nbp.raise_for_status()
    return {
        "next_best_product_example": nbp.json().get("products", [])[:3] if nbp.status_code == 200 else nbp.text[:300],
        "url": f"{url}/churn",
        "ready_seconds": round(ready, 1),
        "scored": len(body["scores"]),
        "errors": body["errors"],
        "example": body["scores"][:2],
    }


STAGES = ("generate", "ingest", "resolve", "features", "train", "score", "serve")
TRAIN_STAGES = ("train", "train_next_best_product", "train_campaign_response", "train_clv")


def _nbp_headline(result: dict) -> dict:
    """NDCG@10 of the ranker, each baseline and the oracle on the same out-of-time customers."""
    if "skipped" in result:
        return {"skipped": result["skipped"]}
    ndcg = {
        "model": result["metrics"]["ndcg_at_10"],
        **{name: m["ndcg_at_10"] for name, m in result["extra"]["baselines"].items()},
    }
    if result["oracle"]:
        ndcg["oracle"] = result["oracle"]["ndcg_at_10"]
    return {
        "champion": result["extra"]["promotion"]["verdict"],
        "ndcg_at_10": {k: round(v, 4) for k, v in ndcg.items()},
        "hit_rate_at_10": round(result["metrics"]["hit_rate_at_10"], 4),
        "coverage": round(result["metrics"]["coverage"], 4),
    }


def _uplift_headline(result: dict) -> dict:
    """Qini and the true uplift of the top 30% for the model, propensity, random and oracle targeting."""
    if "skipped" in result:
        return {"skipped": result["skipped"]}
    rankings = {
        "model": result["metrics"],
        "propensity": result["extra"]["compared"]["propensity"],
        "random": result["extra"]["compared"]["random"],
    }
    if result["oracle"]:
        rankings["oracle"] = result["oracle"]
    return {
        "champion": result["extra"]["promotion"]["verdict"],
        "learner": result["extra"]["learner"],
        "qini": {k: round(m["qini"], 4) for k, m in rankings.items()},
        "true_uplift_top_30": {
            k: round(m["true_uplift_top_30"], 4) for k, m in rankings.items() if "true_uplift_top_30" in m
        },
    }


def run_demo(ws: Workspace, customers: int, seed: int, port: int, console: Console) -> dict:
    started = time.perf_counter()
    ws.ensure()
    stages, serving = _run_stages(ws, customers, seed, port, console)
    summary = _summary(ws, customers, stages, serving, started)
    write_json_atomic(ws.path("demo_summary"), summary, indent=2)
    _print_summary(console, ws, summary)
    return summary


def _run_stages(ws: Workspace, customers: int, seed: int, port: int, console: Console) -> tuple[dict, dict]:
    """generate -> ingest -> resolve -> features -> train every model -> score -> serve + call."""
    from cdp.training.capability import CapabilityOff

    stages: dict[str, dict] = {}
    with progress_bar("generate") as update:
        stages["generate"] = pipeline.generate(ws, customers, seed, progress=update)
    with progress_bar("ingest") as update:
        stages["ingest"] = pipeline.ingest(ws, progress=update)
    with console.status("resolve identities"):
        stages["resolve"] = pipeline.resolve(ws)
    with progress_bar("features") as update:
        stages["features"] = pipeline.build_features(ws, progress=update)
    for stage, model in zip(TRAIN_STAGES, ("churn", "next-best-product", "campaign-response", "clv"), strict=True):
        with progress_bar(f"train {model}") as update:
            try:
                stages[stage] = pipeline.train(ws, model, progress=update)
            except CapabilityOff as off:  # e.g. no campaigns in the data: that model is skipped, not fatal
                console.print(f"[yellow]skipped:[/yellow] {off}", soft_wrap=True)
                stages[stage] = {"skipped": str(off), "seconds": 0.0}
    with console.status("score + push back"):
        stages["score"] = pipeline.score(ws)
    scored = pd.read_parquet(ws.path("churn_scores"), columns=["customer_id"])
    with console.status("serve + call /churn"):
        serve_started = time.perf_counter()
        serving = _call_server(ws, port, scored["customer_id"].head(3).tolist())
        serving["seconds"] = round(time.perf_counter() - serve_started, 2)
    return stages, serving


def _churn_headline(train: dict) -> dict:
    oracle = train["oracle"]
    return {
        "churn_roc_auc": round(train["metrics"]["roc_auc"], 4),
        "churn_oracle_roc_auc": round(oracle["roc_auc"], 4) if oracle else None,
        "identity_clean_rows": {  # customer == one whole person: where the oracle is the ceiling
            "rows": oracle["clean_rows"],
            "model_roc_auc": round(oracle["model_clean_rows_roc_auc"], 4),
            "oracle_roc_auc": round(oracle["clean_rows_roc_auc"], 4),
        }
        if oracle
        else None,
        "churn_pr_auc": round(train["metrics"]["pr_auc"], 4),
        "churn_brier": round(train["metrics"]["brier"], 4),
        "churn_lift_top_decile": round(train["metrics"]["lift_top_decile"], 2),
    }


def _summary(ws: Workspace, customers: int, stages: dict, serving: dict, started: float) -> dict:
    ingest, train, clv = stages["ingest"], stages["train"], stages["train_clv"]
    return {
        "customers_requested": customers,
        "rows_read": {t: c["read"] for t, c in ingest["tables"].items()},
        "rows_quarantined": {t: c["quarantined"] for t, c in ingest["tables"].items()},
        "people_in_truth": _people_in_truth(ws),
        "customers_found": stages["resolve"]["customers"],
        **_churn_headline(train),
        "next_best_product": _nbp_headline(stages["train_next_best_product"]),
        "campaign_response": _uplift_headline(stages["train_campaign_response"]),
        "clv_12_months": {
            "model": {k: round(v, 4) for k, v in clv["metrics"].items()},
            **{name: {k: round(v, 4) for k, v in m.items()} for name, m in clv["extra"]["baselines"].items()},
        },
        "mlflow": {
            "tracking_uri": ws.mlflow_uri,
            "run_id": train["run_id"],
            "model": f"models:/{train['model_name']}@champion (version {train['version']})",
        },
        "served": serving,
        "customers_scored_and_pushed": stages["score"]["customers_scored"],
        # "train" is every model's training; the per-model split follows
        "stage_seconds": {name: s["seconds"] for name, s in {**stages, "serve": serving}.items() if name in STAGES}
        | {"train": round(sum(stages[k]["seconds"] for k in TRAIN_STAGES), 2)},
        "train_seconds_per_model": {
            k.removeprefix("train_") if k != "train" else "churn": stages[k]["seconds"] for k in TRAIN_STAGES
        },
        "total_seconds": round(time.perf_counter() - started, 1),
        "stages": stages,
    }


HEADLINES = (
    "people_in_truth",
    "customers_found",
    "churn_roc_auc",
    "churn_oracle_roc_auc",
    "identity_clean_rows",
    "churn_pr_auc",
    "churn_brier",
    "churn_lift_top_decile",
    "next_best_product",
    "campaign_response",
    "clv_12_months",
    "customers_scored_and_pushed",
    "total_seconds",
)


def _print_summary(console: Console, ws: Workspace, summary: dict) -> None:
    table = Table(title="cdp demo", show_header=False)
    for key in HEADLINES:
        table.add_row(key, str(summary[key]))
    table.add_row("quarantined rows", str(sum(summary["rows_quarantined"].values())))
    table.add_row("served", summary["served"]["url"])
    table.add_row("mlflow", f"{ws.mlflow_uri}  run {summary['mlflow']['run_id']}")
    table.add_row("stage seconds", json.dumps(summary["stage_seconds"]))
    console.print(table)
