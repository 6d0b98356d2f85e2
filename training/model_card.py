"""A one-page HTML model card per training run, logged to MLflow as `model_card.html`.

In:  a `ModelCard` of plain run facts (data window, population, metrics of the model, a baseline
     and the champion on the same out-of-time rows, the top reasons, charts as PNG bytes).
Out: one self-contained HTML page (Jinja2, autoescaped; charts embedded as base64 PNG), readable
     in the MLflow UI's artifact viewer or any browser. Only counts, dates, metrics and feature
     labels: no customer id or other identifier is ever put on the card.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cdp.training.evaluate import binary_metrics

CARD_ARTIFACT = "model_card.html"
TOP_REASONS = 5
METRIC_LABELS = {  # metric -> (what it means in words, which way is better)
    "roc_auc": ("Ranking quality: ROC AUC (0.5 = random, 1 = perfect)", "higher"),
    "pr_auc": ("Precision-recall AUC (average precision)", "higher"),
    "lift_top_decile": ("Lift in the top 10% (times the average churn rate)", "higher"),
    "brier": ("Brier score: probability error (lower is better)", "lower"),
    "positive_rate": ("Churn rate among the customers scored", "n/a"),
    "qini": ("Qini coefficient: extra conversions per contacted customer", "higher"),
}


@dataclass
class MetricRow:
    name: str
    model: float
    baseline: float | None = None
    champion: float | None = None

    @property
    def label(self) -> str:
        return METRIC_LABELS.get(self.name, (self.name.replace("_", " "), "higher"))[0]

    @property
    def better(self) -> str:
        return METRIC_LABELS.get(self.name, ("", "higher"))[1]


@dataclass
class ModelCard:
    model: str
    version: str
    run_id: str
    question: str  # what the model answers, in the users' words
    data_window: dict[str, str]
    population: dict[str, str]
    metrics: list[MetricRow]
    baseline: str  # what the baseline is, in words
    champion: str  # which champion the model was compared with, and on which rows
    verdict: str  # the promotion gate's outcome
    reasons: list[tuple[str, float]] = field(default_factory=list)  # (feature label, share of mean |SHAP|)
    calibration: str = ""  # one sentence on predicted vs observed
    figures: dict[str, bytes] = field(default_factory=dict)  # caption -> PNG bytes


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Model card: {{ card.model }} v{{ card.version }}</title>
<style>
 body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
        max-width: 1040px; margin: 24px auto; padding: 0 16px; }
 h1 { font-size: 22px; margin: 0 0 2px; } h2 { font-size: 16px; margin: 18px 0 6px; }
 .question { font-size: 16px; color: #0b5cad; margin: 0 0 6px; }
 .meta { color: #59636e; font-size: 12px; }
 .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 8px 28px; }
 table { border-collapse: collapse; width: 100%; }
 th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
 td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
 .verdict { background: #f0f6ff; border-left: 4px solid #0b5cad; padding: 6px 10px; margin: 8px 0; }
 .bar { display: inline-block; height: 10px; background: #0b5cad; vertical-align: middle; }
 figure { margin: 0; } figure img { width: 100%; } figcaption { color: #59636e; font-size: 12px; }
</style></head>
<body>
<h1>Model card: {{ card.model }} v{{ card.version }}</h1>
<p class="question">{{ card.question }}</p>
<p class="meta">MLflow run {{ card.run_id }}</p>
<div class="verdict">{{ card.verdict }}</div>
<div class="grid">
 <section><h2>Data window</h2><table>
 {% for k, v in card.data_window.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}
 </table></section>
 <section><h2>Population</h2><table>
 {% for k, v in card.population.items() %}<tr><th>{{ k }}</th><td class="num">{{ v }}</td></tr>{% endfor %}
 </table></section>
</div>
<h2>How well it works on held-out customers</h2>
<table>
 <tr><th>metric</th><th class="num">this model</th><th class="num">baseline</th><th class="num">champion</th></tr>
 {% for m in card.metrics %}<tr><td>{{ m.label }}</td><td class="num"><b>{{ fmt(m.model) }}</b></td>
 <td class="num">{{ fmt(m.baseline) }}</td><td class="num">{{ fmt(m.champion) }}</td></tr>{% endfor %}
</table>
<p class="meta">Baseline: {{ card.baseline }}. Champion: {{ card.champion }}.</p>
<div class="grid">
 <section><h2>Top reasons behind the score</h2><table>
 {% for label, share in card.reasons %}<tr><td>{{ label }}</td><td class="num">{{ "%.0f%%" % (100 * share) }}</td>
 <td><span class="bar" style="width: {{ (160 * share) | round | int }}px"></span></td></tr>{% endfor %}
 </table><p class="meta">Share of the model's explanation (mean |SHAP| on held-out customers).</p></section>
 <section><h2>Calibration</h2><p>{{ card.calibration }}</p></section>
 {% for caption, png in card.figures.items() %}
 <figure><img alt="{{ caption }}" src="data:image/png;base64,{{ b64(png) }}"><figcaption>{{ caption }}</figcaption></figure>
 {% endfor %}
</div>
</body></html>
"""


def fmt(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"


def render_model_card(card: ModelCard) -> str:
    """The card as one self-contained HTML page (autoescaped: labels cannot inject markup)."""
    from jinja2 import Environment

    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    b64 = lambda png: base64.b64encode(png).decode("ascii")
    return env.from_string(TEMPLATE).render(card=card, fmt=fmt, b64=b64)


def log_model_card(card: ModelCard) -> str:
    """Inside an active MLflow run: render the card and log it as `model_card.html`."""
    import mlflow

    mlflow.log_text(render_model_card(card), CARD_ARTIFACT)
    return CARD_ARTIFACT


def _champion_comparison(run_id: str) -> dict:
    """The comparison register_run_model logged for this run (reports/champion_comparison.json)."""
    import mlflow

    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/reports/champion_comparison.json")
    except Exception:  # a run logged without the comparison: the card says "no champion"
        return {}


def churn_card(
    run_id: str,
    version: str,
    gate: dict,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    score: np.ndarray,
    metrics: dict[str, float],
    plots: list[Path],
) -> ModelCard:
    """The churn run's facts: `train`/`valid` are the out-of-time split (label `churned_90d`),
    `score` the model's probabilities on `valid`, `plots` the files binary_plots/explain wrote.
    Baseline: rank by days since the last order, on the same held-out rows."""
    from cdp.models.churn import CHURN

    y = valid[CHURN.label].to_numpy()
    recency = valid["days_since_last_order"].fillna(np.inf).rank(pct=True).to_numpy()
    baseline = binary_metrics(y, recency)
    baseline.pop("brier")  # a rank is not a probability: its Brier score would mean nothing
    comparison = _champion_comparison(run_id)
    champion = comparison.get("champion_metrics", {}) if comparison.get("champion_version") else {}
    files = {Path(p).name: Path(p) for p in plots}
    reasons: list[tuple[str, float]] = []
    if "feature_importance.json" in files:
        table = pd.DataFrame(json.loads(files["feature_importance.json"].read_text())["features"])
        share = table["mean_abs_shap"] / max(table["mean_abs_shap"].sum(), 1e-12)
        reasons = list(zip(table["label"].head(TOP_REASONS), share.head(TOP_REASONS).astype(float), strict=True))
    snapshots = sorted(train["event_timestamp"].unique())
    champion_version = comparison.get("champion_version")
    return ModelCard(
        model=CHURN.name,
        version=str(version),
        run_id=run_id,
        question=f"Which active customers will place no order in the next {CHURN.horizon_days} days?",
        data_window={
            "Training snapshots": f"{pd.Timestamp(snapshots[0]):%Y-%m-%d} .. {pd.Timestamp(snapshots[-1]):%Y-%m-%d} "
            f"({len(snapshots)} monthly)",
            "Held-out snapshot": f"{valid['event_timestamp'].max():%Y-%m-%d} (never trained on)",
            "Label": f"no order in the {CHURN.horizon_days} days after the snapshot",
            "Features": f"Feast FeatureService {CHURN.feature_service}, point in time",
        },
        population={
            "Training customers": f"{train['customer_id'].nunique():,}",
            "Training rows (customer x snapshot)": f"{len(train):,}",
            "Held-out customers": f"{valid['customer_id'].nunique():,}",
            "Held-out churn rate": f"{np.mean(y):.1%}",
        },
        metrics=[
            MetricRow(name, float(value), baseline.get(name), champion.get(name))
            for name, value in metrics.items()
            if name != "positive_rate"
        ],
        baseline="rank by days since the last order (recency rule), same held-out customers",
        champion=(
            f"v{champion_version}, {comparison.get('compared_on', '')}" if champion_version else "none before this run"
        ),
        verdict=gate.get("verdict")
        or (
            f"Promoted to champion ({gate['metric']} {gate['value']:.3f})."
            if gate.get("promoted")
            else f"Not promoted: the champion v{gate.get('champion_version')} stays "
            f"({gate['metric']} {gate['value']:.3f} vs {fmt(gate.get('previous_value'))})."
        ),
        reasons=reasons,
        calibration=(
            f"On held-out customers the mean predicted churn probability is {np.mean(score):.1%} and the "
            f"observed churn rate {np.mean(y):.1%}; Brier score {metrics.get('brier', float('nan')):.3f}."
        ),
        figures={
            caption: files[name].read_bytes()
            for name, caption in (
                ("calibration.png", "Calibration: predicted vs observed churn, per tenth of customers"),
                ("gain.png", "Churners reached by contact depth"),
            )
            if name in files
        },
    )
