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
