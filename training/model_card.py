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
    "normalized_qini": ("Qini as a share of the perfect ranking's", "higher"),
    "uplift_top_10": ("Extra conversion rate in the top 10% (contacted vs not)", "higher"),
    "uplift_top_30": ("Extra conversion rate in the top 30% (contacted vs not)", "higher"),
    "uplift_top_50": ("Extra conversion rate in the top 50% (contacted vs not)", "higher"),
    "incremental_per_1000_contacts": ("Extra conversions per 1,000 contacts at the recommended depth", "higher"),
    "recommended_depth": ("Recommended depth: share of customers to contact", "n/a"),
    "hit_rate_at_10": ("Customers who bought one of their 10 recommendations", "higher"),
    "ndcg_at_10": ("Ranking quality of the 10 recommendations: NDCG@10 (1 = perfect order)", "higher"),
    "map_at_10": ("Mean average precision of the 10 recommendations", "higher"),
    "coverage": ("Share of the catalogue recommended to someone", "higher"),
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


def _reasons(files: dict[str, Path]) -> list[tuple[str, float]]:
    """Top features by share of mean |SHAP| (explain()'s feature_importance.json), as labels."""
    if "feature_importance.json" not in files:
        return []
    table = pd.DataFrame(json.loads(files["feature_importance.json"].read_text())["features"])
    share = table["mean_abs_shap"] / max(table["mean_abs_shap"].sum(), 1e-12)
    return list(zip(table["label"].head(TOP_REASONS), share.head(TOP_REASONS).astype(float), strict=True))


def _verdict(gate: dict) -> str:
    return gate.get("verdict") or (
        f"Promoted to champion ({gate['metric']} {gate['value']:.3f})."
        if gate.get("promoted")
        else f"Not promoted: the champion v{gate.get('champion_version')} stays "
        f"({gate['metric']} {gate['value']:.3f} vs {fmt(gate.get('previous_value'))})."
    )


def _champion_line(comparison: dict) -> str:
    version = comparison.get("champion_version")
    return f"v{version}, {comparison.get('compared_on', '')}" if version else "none before this run"


def _champion(run_id: str) -> tuple[dict, dict[str, float]]:
    """(the run's champion comparison, the champion's metrics on the same rows; {} when none)."""
    comparison = _champion_comparison(run_id)
    return comparison, comparison.get("champion_metrics", {}) if comparison.get("champion_version") else {}


def _snapshot_span(train: pd.DataFrame, unit: str = "") -> str:
    snapshots = sorted(train["event_timestamp"].unique())
    first, last = pd.Timestamp(snapshots[0]), pd.Timestamp(snapshots[-1])
    return f"{first:%Y-%m-%d} .. {last:%Y-%m-%d} ({len(snapshots)}{unit})"


def _figures(files: dict[str, Path], captions: dict[str, str]) -> dict[str, bytes]:
    return {caption: files[name].read_bytes() for name, caption in captions.items() if name in files}


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
    comparison, champion = _champion(run_id)
    files = {Path(p).name: Path(p) for p in plots}
    return ModelCard(
        model=CHURN.name,
        version=str(version),
        run_id=run_id,
        question=f"Which active customers will place no order in the next {CHURN.horizon_days} days?",
        data_window={
            "Training snapshots": _snapshot_span(train, " monthly"),
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
        champion=_champion_line(comparison),
        verdict=_verdict(gate),
        reasons=_reasons(files),
        calibration=(
            f"On held-out customers the mean predicted churn probability is {np.mean(score):.1%} and the "
            f"observed churn rate {np.mean(y):.1%}; Brier score {metrics.get('brier', float('nan')):.3f}."
        ),
        figures=_figures(
            files,
            {
                "calibration.png": "Calibration: predicted vs observed churn, per tenth of customers",
                "gain.png": "Churners reached by contact depth",
            },
        ),
    )


def next_best_product_card(
    run_id: str,
    version: str,
    gate: dict,
    train: pd.DataFrame,
    holdout,
    metrics: dict[str, float],
    compared: dict[str, dict[str, float]],
    plots: list[Path],
) -> ModelCard:
    """The next-best-product run's facts: `train` the candidate rows of the training snapshots,
    `holdout` the out-of-time snapshot (cdp.training.ranking.Holdout), `compared` the simple
    rankings on the same customers. Baseline: popularity (top sellers of the last 90 days)."""
    from cdp.models.next_best_product import NEXT_BEST_PRODUCT as SPEC

    comparison, champion = _champion(run_id)
    popular = compared.get("popularity", {})
    files = {Path(p).name: Path(p) for p in plots}
    others = ", ".join(
        f"{name.replace('_', ' ')} {values.get(SPEC.primary_metric, float('nan')):.3f}"
        for name, values in compared.items()
        if name != "popularity"
    )
    return ModelCard(
        model=SPEC.name,
        version=str(version),
        run_id=run_id,
        question=f"Which products will each customer buy in the next {SPEC.horizon_days} days? (10 per customer)",
        data_window={
            "Training snapshots": _snapshot_span(train),
            "Held-out snapshot": f"{holdout.at:%Y-%m-%d} (never trained on)",
            "Label": f"bought the candidate product in the {SPEC.horizon_days} days after the snapshot",
            "Features": f"Feast FeatureService {SPEC.feature_service} + candidate history/co-purchase signals",
        },
        population={
            "Training customers": f"{train['customer_id'].nunique():,}",
            "Training rows (customer x candidate)": f"{len(train):,}",
            "Held-out customers who bought": f"{holdout.bought['customer_id'].nunique():,}",
            "Catalogue products": f"{len(holdout.stats.items):,}",
        },
        metrics=[
            MetricRow(name, float(value), popular.get(name), champion.get(name)) for name, value in metrics.items()
        ],
        baseline="popularity (top sellers of the last 90 days), same held-out customers"
        + (f"; other simple rankings ({SPEC.primary_metric}): {others}" if others else ""),
        champion=_champion_line(comparison),
        verdict=_verdict(gate),
        reasons=_reasons(files),
        calibration="A ranking, not a probability: calibration does not apply; see the comparison chart.",
        figures=_figures(files, {"ndcg_vs_baselines.png": "Out-of-time NDCG@10: the model vs simple rankings"}),
    )


CAMPAIGN_ROWS = (
    "qini",
    "normalized_qini",
    "uplift_top_10",
    "uplift_top_30",
    "uplift_top_50",
    "incremental_per_1000_contacts",
    "recommended_depth",
)


def campaign_response_card(
    run_id: str,
    version: str,
    gate: dict,
    valid: pd.DataFrame,
    chosen: str,
    metrics: dict[str, float],
    compared: dict[str, dict[str, float]],
    random_qini: float,
    split: dict[str, str],
    plots: list[Path],
) -> ModelCard:
    """The campaign-response run's facts: `valid` the held-out sends (label, `treated`), `chosen`
    the learner kept, `compared` every ranking's metrics on those sends, `random_qini` random
    targeting's 97.5th percentile there. Baseline: random targeting, whose uplift at any depth is
    the overall uplift (contacting a random share of customers)."""
    from cdp.models.campaign_response import CAMPAIGN_RESPONSE as SPEC
    from cdp.models.campaign_response import LEARNERS

    comparison, champion = _champion(run_id)
    files = {Path(p).name: Path(p) for p in plots}
    treated = valid["treated"].to_numpy().astype(bool)
    overall = float(metrics.get("uplift_all", float("nan")))
    random = {"qini": random_qini, "uplift_top_10": overall, "uplift_top_30": overall, "uplift_top_50": overall}
    learners = ", ".join(
        f"{name.replace('_', ' ')} {compared[f'{name}_learner']['qini']:.4f}"
        for name in LEARNERS
        if f"{name}_learner" in compared and name != chosen
    )
    interval = f"{metrics.get('qini_low', float('nan')):.4f} .. {metrics.get('qini_high', float('nan')):.4f}"
    return ModelCard(
        model=SPEC.name,
        version=str(version),
        run_id=run_id,
        question=f"Who orders because we contacted them (within {SPEC.horizon_days} days of the send)?",
        data_window={
            "Held out": f"{split.get('split', '')}: {split.get('valid_campaigns', '')}".strip(": "),
            "Trained on": str(split.get("train_campaigns", "")),
            "Label": f"ordered within {SPEC.horizon_days} days of the send (contacted and control groups)",
            "Learner": f"{LEARNERS.get(chosen, chosen)} (best held-out Qini)",
        },
        population={
            "Held-out sends": f"{len(valid):,}",
            "Contacted / control": f"{int(treated.sum()):,} / {int((~treated).sum()):,}",
            "Conversion contacted / control": f"{valid.loc[treated, SPEC.label].mean():.2%} / "
            f"{valid.loc[~treated, SPEC.label].mean():.2%}",
            "Qini 95% interval (bootstrap)": interval,
        },
        metrics=[
            MetricRow(name, float(metrics[name]), random.get(name), champion.get(name))
            for name in CAMPAIGN_ROWS
            if name in metrics
        ],
        baseline="random targeting (Qini: its 97.5th percentile over 200 random orders; uplift: the overall uplift)"
        + (f"; held-out Qini of the other learners: {learners}" if learners else ""),
        champion=_champion_line(comparison),
        verdict=_verdict(gate),
        reasons=_reasons(files),
        calibration="An uplift ranking: compare the Qini curve with random targeting and the recommended depth.",
        figures=_figures(files, {"qini.png": "Qini: extra conversions by contact depth vs random targeting"}),
    )
