"""The model card renders as one self-contained page, escapes what it is given, and a real
headless browser (Debian's chromium) draws it with its embedded charts."""

from __future__ import annotations

import io

import numpy as np

from cdp.training.evaluate import calibration_figure, gain_figure
from cdp.training.model_card import MetricRow, ModelCard, render_model_card
from tests.browser import needs_chromium, screenshot, share_of_colour

MATPLOTLIB_BLUE = (31, 119, 180)  # C0: the model's line and dots in both charts


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def card() -> ModelCard:
    rng = np.random.default_rng(0)
    score = rng.random(400)
    y = (rng.random(400) < score).astype(int)
    return ModelCard(
        model="churn",
        version="3",
        run_id="abc123",
        question="Which active customers will place no order in the next 90 days?",
        data_window={"Training snapshots": "2024-01-31 .. 2024-06-30 (6 monthly)", "Held-out snapshot": "2024-10-31"},
        population={"Training customers": "1,234", "Held-out churn rate": "41.0%"},
        metrics=[MetricRow("roc_auc", 0.8123, 0.7456, 0.8001), MetricRow("brier", 0.1612, None, 0.1650)],
        baseline="rank by days since the last order",
        champion="v2, same out-of-time rows (champion re-scored)",
        verdict="Promoted to champion (roc_auc 0.812).",
        reasons=[("Orders in the last 90 days", 0.31), ("<b>Recency</b> & more", 0.12)],
        calibration="Mean predicted 50.1%, observed 49.8%.",
        figures={"Calibration": png(calibration_figure(y, score)), "Gain": png(gain_figure(y, score))},
    )


def test_card_has_every_section_and_escapes_labels():
    html = render_model_card(card())
    for text in (
        "Model card: churn v3",
        "Data window",
        "Population",
        "Held-out churn rate",
        "Top reasons",
        "Calibration",
        "Promoted to champion",
        "0.812",
        "0.746",
        "0.800",
        "rank by days since",
    ):
        assert text in html, text
    assert html.count('src="data:image/png;base64,') == 2
    assert "<b>Recency</b>" not in html and "&lt;b&gt;Recency&lt;/b&gt; &amp; more" in html
    assert '<td class="num">-</td>' in html  # a metric without a baseline shows a dash, not "None"


@needs_chromium
def test_card_renders_in_headless_chromium_with_its_charts(tmp_path):
    with_charts, without = card(), card()
    without.figures = {}
    shots = {}
    for name, facts in (("with", with_charts), ("without", without)):
        path = tmp_path / f"{name}.html"
        path.write_text(render_model_card(facts))
        shots[name] = screenshot(path, tmp_path / f"{name}.png")
    assert shots["with"].shape[:2] == (1500, 1100)
    assert share_of_colour(shots["without"], (255, 255, 255)) < 0.99  # the text was drawn
    # the model's line colour appears only where the embedded PNG charts were decoded and drawn
    blue = {name: share_of_colour(pixels, MATPLOTLIB_BLUE) for name, pixels in shots.items()}
    assert blue["without"] < 0.0001 and blue["with"] > blue["without"] + 0.0002, blue
