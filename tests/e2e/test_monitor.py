"""`cdp monitor` on a copy of the session workspace: quiet on an unshifted scoring run, exit 1 on a
decayed model (served scores no longer rank the churners) and on an injected price change."""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from cdp import pipeline
from cdp.workspace import Workspace
from tests.e2e.test_cli import run

MONETARY = re.compile(r"spend|price|amount|value|basket|monetary|discount")


@pytest.fixture(scope="module")
def monitored(pipeline_ws, tmp_path_factory) -> Workspace:
    """The session workspace copied, scored once at a snapshot whose 90-day churn window is
    observed (as the daily job did back then), then at the latest snapshot."""
    from cdp.features.build import load_snapshots
    from cdp.features.timeline import load_timeline
    from cdp.featurestore.store import open_store
    from cdp.serving.batch import score_all

    home = tmp_path_factory.mktemp("monitor") / "ws"
    shutil.copytree(pipeline_ws.root, home)
    ws = Workspace(home)
    snapshots, data_end = load_snapshots(ws)
    past = max(s for s in snapshots if s + pd.Timedelta(days=120) <= data_end)
    score_all(ws, open_store(ws), load_timeline(ws), past)
    pipeline.score(ws)
    return ws


def _alerts(stdout: str) -> list[str]:
    return [line for line in " ".join(stdout.split()).split("alert: ")[1:]]


def test_help_explains_exit_codes_and_thresholds():
    result = run("monitor", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--psi-max" in text and "CDP_MONITOR_PSI_MAX" in text and "exits 1" in text


def test_no_scoring_run_yet_is_one_clear_line(tmp_path):
    result = run("monitor", home=tmp_path)
    assert result.returncode == 2
    assert "no monitoring runs" in result.stdout and "cdp score" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "mlflow.db").exists()  # looking creates nothing


def test_unshifted_run_passes_and_reports_the_realized_auc(monitored):
    from cdp.training.monitor_report import history, latest

    result = run("monitor", home=monitored.root)
    assert result.returncode == 0, result.stdout
    assert "ok: within thresholds" in result.stdout
    churn = latest(history(monitored)).set_index("model").loc["churn"]
    print("clean: max PSI", churn["max_psi"], churn["max_psi_feature"], "score PSI", churn["score_psi"])
    print("realized", churn["realized_value"], "promised", churn["promised_value"])
    assert churn["max_psi"] < 0.2 and churn["score_psi"] < 0.2
    assert churn["promised_value"] - churn["realized_value"] < 0.05  # an honest model keeps its promise
    nbp = latest(history(monitored)).set_index("model").loc["next_best_product"]
    print("next best product: max PSI", nbp["max_psi"], "realized", nbp["realized_value"], nbp["promised_value"])
    assert nbp["realized_metric"] == "ndcg_at_10" and nbp["realized_value"] > 0
    assert (monitored.reports / "monitoring_churn.png").exists()


def test_decayed_model_is_flagged(monitored, tmp_path):
    """The scores served back then, inverted (a model that ranks loyal customers as churners):
    the realized ROC AUC falls far below the validation promise."""
    home = tmp_path / "ws"
    shutil.copytree(monitored.root, home)
    ws = Workspace(home)
    scores = pd.read_parquet(ws.path("churn_scores"))
    past = scores["churn_scored_at"] != scores["churn_scored_at"].max()
    scores.loc[past, "churn_probability"] = 1 - scores.loc[past, "churn_probability"]
    scores.to_parquet(ws.path("churn_scores"), index=False)
    summary = pipeline.score(ws)
    print("decayed: realized", summary["monitoring"]["churn"].get("realized_value"))
    result = run("monitor", "--no-plots", home=home)
    assert result.returncode == 1, result.stdout
    decayed = [a for a in _alerts(result.stdout) if "realized roc_auc" in a]
    assert decayed and decayed[0].startswith("churn v"), result.stdout
    assert not any("drifted" in a for a in _alerts(result.stdout))  # the features did not move


def test_price_change_is_flagged_naming_the_feature(monitored, tmp_path):
    """Prices x3 on the last 60 days of orders (after every training snapshot), features rebuilt and
    scored: exit 1, the alert names a price/spend feature and its PSI."""
    from cdp.training.monitor_report import history, latest

    home = tmp_path / "ws"
    shutil.copytree(monitored.root, home)
    ws = Workspace(home)
    orders = pd.read_parquet(ws.staged / "orders.parquet")
    lines = pd.read_parquet(ws.staged / "order_lines.parquet")
    recent = orders["ordered_at"] >= orders["ordered_at"].max() - pd.Timedelta(days=60)
    orders.loc[recent, ["total_amount", "discount_amount"]] *= 3
    lines.loc[lines["order_id"].isin(orders.loc[recent, "order_id"]), "unit_price"] *= 3
    orders.to_parquet(ws.staged / "orders.parquet", index=False)
    lines.to_parquet(ws.staged / "order_lines.parquet", index=False)
    pipeline.build_features(ws)
    pipeline.score(ws)
    result = run("monitor", home=home)
    assert result.returncode == 1, result.stdout
    drifted = [a for a in _alerts(result.stdout) if "drifted, PSI" in a]
    assert drifted, result.stdout
    named = [re.search(r"feature (\S+) drifted, PSI ([0-9.]+)", a) for a in drifted]
    assert all(MONETARY.search(m.group(1)) for m in named), drifted
    churn = latest(history(ws)).set_index("model").loc["churn"]
    print("injected: max PSI", churn["max_psi"], churn["max_psi_feature"], "top", churn["top_psi"])
    assert churn["max_psi"] > 0.2


def test_refresh_retrains_a_decayed_model_and_lets_the_gate_decide(monitored, tmp_path):
    """`cdp refresh --retrain-if-decayed`: nothing new to ingest, but churn's served scores decayed;
    a challenger is trained and registered, the gate's verdict printed; the other families are
    within thresholds and not retrained."""
    from mlflow import MlflowClient

    from cdp.workspace import use_workspace

    home = tmp_path / "ws"
    shutil.copytree(monitored.root, home)
    ws = Workspace(home)
    use_workspace(ws)
    before = {m: len(MlflowClient().search_model_versions(f"name='{m}'")) for m in ("churn", "next_best_product")}
    quiet = run("refresh", "--retrain-if-decayed", home=home)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "no model decayed" in quiet.stdout
    scores = pd.read_parquet(ws.path("churn_scores"))
    past = scores["churn_scored_at"] != scores["churn_scored_at"].max()
    scores.loc[past, "churn_probability"] = 1 - scores.loc[past, "churn_probability"]
    scores.to_parquet(ws.path("churn_scores"), index=False)
    pipeline.score(ws)
    result = run("refresh", "--retrain-if-decayed", home=home)
    assert result.returncode == 0, result.stdout + result.stderr
    text = " ".join(result.stdout.split())
    assert "decayed: churn v" in text and "realized roc_auc" in text
    assert re.search(r"retrained churn: v\d+ (promoted to champion|not promoted)", text), text
    use_workspace(ws)
    after = {m: len(MlflowClient().search_model_versions(f"name='{m}'")) for m in before}
    assert after == {"churn": before["churn"] + 1, "next_best_product": before["next_best_product"]}
