"""The charts speak the users' words: plain feature labels from the Feast descriptions, readable
legend names, the recommended depth on the Qini chart, depth markers with counts on the gain chart."""

from __future__ import annotations

import numpy as np
import pytest

from cdp.features.definitions import FEATURES
from cdp.models.next_best_product import CANDIDATE_DESCRIPTIONS
from cdp.training.evaluate import gain_figure, qini_figure, qini_points
from cdp.training.explain import feature_label, feature_labels, short_description


def texts(fig) -> str:
    ax = fig.axes[0]
    legend = ax.get_legend()
    parts = [ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), *(t.get_text() for t in ax.texts)]
    parts += [t.get_text() for t in legend.get_texts()] if legend else []
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("description", "label"),
    [
        ("Mean contact sentiment, -1..1 (365 days).", "Mean contact sentiment (365 days)"),
        ("Email marketing consent: 1 granted, 0 withdrawn, null never asked.", "Email marketing consent"),
        (
            "Vendor enrichment: household size (freshest fact not older than 730 days).",
            "Vendor enrichment: household size",
        ),
        ("Campaign messages received (treatment sends, 365 days).", "Campaign messages received (365 days)"),
        ("Age of the enrichment fact used; null when none is fresh enough.", "Age of the enrichment fact used"),
    ],
)
def test_short_description_keeps_the_first_clause_and_the_window(description, label):
    assert short_description(description) == label


def test_every_feast_feature_has_a_distinct_plain_label():
    labels = feature_labels()
    assert set(labels) == {f for fields in FEATURES.values() for f in fields} | set(CANDIDATE_DESCRIPTIONS)
    assert len(set(labels.values())) == len(labels)  # no two features read the same on a chart
    assert all("_" not in label and label[0].isupper() for label in labels.values())
    assert feature_label("orders_90d") == "Orders in the last 90 days"
    assert feature_label("target_category_share_365d") == "Target category share (365 days)"  # no Feast field
    assert feature_label("cooc_score") == "Bought together with the customer's products"  # a ranker candidate feature


def test_gain_chart_marks_10_and_20_percent_with_customer_counts():
    y = np.array([1] * 30 + [0] * 170)
    score = np.linspace(1, 0, 200)  # perfect ranking: the top 10% (20 customers) are all churners
    text = texts(gain_figure(y, score))
    assert "top 10%: 20 customers\nreach 20 of 30 churners (67%)" in text
    assert "top 20%: 40 customers\nreach 30 of 30 churners (100%)" in text


def test_qini_chart_names_the_chosen_model_random_and_the_recommended_depth():
    rng = np.random.default_rng(0)
    n = 2000
    treated = rng.random(n) < 0.5
    persuadable = np.arange(n) < 600  # contact helps only these: +30 points order rate
    y = (rng.random(n) < 0.1 + 0.3 * (treated & persuadable)).astype(int)
    uplift = np.where(persuadable, 0.3, -0.01) + rng.normal(0, 0.001, n)
    fig = qini_figure(y, treated.astype(int), {"t_learner": uplift, "random": rng.random(n)}, "t_learner")
    text = texts(fig)
    assert "Two-model (T-learner) (chosen)" in text and "Random targeting" in text
    assert "t_learner" not in text
    assert "recommended: contact 30%\n(600 of 2,000 sends)" in text
    depths, gains = qini_points(y, treated.astype(int), uplift)
    assert len(depths) == 51 and gains[0] == 0
    assert gains[15] > gains[-1] * 0.3 + 20  # at 30% depth the model is well above random targeting
