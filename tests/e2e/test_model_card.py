"""`cdp train churn` logs a one-page model card to its MLflow run: the real run's facts, in words,
with no identifier on it, drawn by a real headless browser."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.browser import needs_chromium, screenshot, share_of_colour


@pytest.fixture(scope="module")
def card_html(pipeline_ws, tmp_path_factory) -> Path:
    import mlflow
    from mlflow import MlflowClient

    from cdp.training.model_card import CARD_ARTIFACT
    from cdp.training.tracking import CHAMPION
    from cdp.workspace import use_workspace

    use_workspace(pipeline_ws)
    run_id = MlflowClient().get_model_version_by_alias("churn", CHAMPION).run_id
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=CARD_ARTIFACT, dst_path=str(tmp_path_factory.mktemp("card"))
        )
    )


def test_churn_run_logs_a_card_in_plain_words_without_identifiers(card_html, pipeline_ws):
    html = card_html.read_text()
    for text in (
        "Model card: churn v1",
        "Training snapshots",
        "Held-out churn rate",
        "recency rule",
        "Ranking quality: ROC AUC",
        "Top reasons",
        "mean predicted churn probability",
    ):
        assert text in html, text
    assert "days_since_last_order" not in html and "orders_90d" not in html  # labels, not column names
    assert html.count("data:image/png;base64,") == 2
    customers = pd.read_parquet(pipeline_ws.identity / "identity_map.parquet", columns=["customer_id"])
    assert not any(c in html for c in customers["customer_id"].unique()[:500])


@needs_chromium
def test_churn_card_renders_in_headless_chromium(card_html, tmp_path):
    pixels = screenshot(card_html, tmp_path / "card.png")
    assert share_of_colour(pixels, (255, 255, 255)) < 0.97
    assert share_of_colour(pixels, (31, 119, 180)) > 0.0002  # the charts' model line was drawn


def _latest_card(ws, model: str, folder: Path) -> str:
    """The card of the model's latest registered version (champion or not)."""
    import mlflow
    from mlflow import MlflowClient

    from cdp.training.model_card import CARD_ARTIFACT
    from cdp.workspace import use_workspace

    use_workspace(ws)
    versions = MlflowClient().search_model_versions(f"name='{model}'")
    latest = max(versions, key=lambda v: int(v.version))
    path = mlflow.artifacts.download_artifacts(run_id=latest.run_id, artifact_path=CARD_ARTIFACT, dst_path=str(folder))
    return Path(path).read_text()


def test_next_best_product_run_logs_a_card_against_its_simple_rankings(pipeline_ws, tmp_path):
    html = _latest_card(pipeline_ws, "next_best_product", tmp_path)
    for text in (
        "Model card: next_best_product v",
        "Held-out snapshot",
        "popularity (top sellers of the last 90 days)",
        "Ranking quality of the 10 recommendations: NDCG@10",
        "Catalogue products",
        "Top reasons",
    ):
        assert text in html, text
    assert html.count("data:image/png;base64,") == 1  # the comparison chart
    customers = pd.read_parquet(pipeline_ws.identity / "identity_map.parquet", columns=["customer_id"])
    assert not any(c in html for c in customers["customer_id"].unique()[:500])


def test_campaign_response_run_logs_a_card_against_random_targeting(pipeline_ws, tmp_path):
    """The card's figures are the run's logged metrics: the Qini, its interval, the recommended
    depth, each in words beside random targeting."""
    import mlflow

    from cdp.workspace import use_workspace

    html = _latest_card(pipeline_ws, "campaign_response", tmp_path)
    for text in (
        "Model card: campaign_response v",
        "Held-out sends",
        "Contacted / control",
        "random targeting (Qini: its 97.5th percentile",
        "Qini as a share of the perfect ranking",
        "Extra conversions per 1,000 contacts at the recommended depth",
        "held-out Qini of the other learners",
    ):
        assert text in html, text
    use_workspace(pipeline_ws)
    run = mlflow.search_runs(experiment_names=["campaign_response"], order_by=["start_time DESC"]).iloc[0]
    assert f"{run['metrics.qini_low']:.4f} .. {run['metrics.qini_high']:.4f}" in html
    assert f"{run['metrics.qini']:.3f}" in html and f"{run['metrics.normalized_qini']:.3f}" in html
    assert html.count("data:image/png;base64,") >= 1  # the Qini chart
    customers = pd.read_parquet(pipeline_ws.identity / "identity_map.parquet", columns=["customer_id"])
    assert not any(c in html for c in customers["customer_id"].unique()[:500])
