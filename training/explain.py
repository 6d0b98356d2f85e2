"""Model explanations for the MLflow model report: SHAP summary + feature importance.

In:  a fitted model (churn's calibrated LightGBM, the LightGBM ranker, the uplift model) and
     out-of-time rows of its features (never training rows, never identifiers).
Out: `shap_summary.png` (beeswarm), `feature_importance.png` (gain, top 20) and
     `feature_importance.json` (per feature: plain label, gain share and mean |SHAP|). Only
     feature names and numbers: no customer ids, emails, phones or names ever reach these files.
Charts name features in words: the short form of each Feast field's description
(features/definitions.py), so a marketer reads "Orders in the last 90 days", not `orders_90d`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cdp.training.evaluate import plt, save_figure

MAX_ROWS = 1000  # SHAP rows (a sample of the out-of-time rows keeps this ~1 s)
TOP = 20
# What a SHAP value to the right means, per model output (the keys are lightgbm_parts' outputs).
DIRECTIONS = {
    "churn": ("less likely to churn", "more likely to churn"),
    "uplift": ("smaller campaign effect", "larger campaign effect"),
    "response": ("less likely to order if contacted", "more likely to order if contacted"),
    "ranking": ("ranked lower", "ranked higher"),
}


def short_description(description: str) -> str:
    """A chart label from a field description: the first clause, value codings and asides in
    parentheses dropped, a time window such as "(365 days)" kept.
    "Mean contact sentiment, -1..1 (365 days)." -> "Mean contact sentiment (365 days)"."""

    def window(match: re.Match) -> str:
        days = re.fullmatch(r"\((?:[^()]*, )?(\d+) days\)", match.group(1))
        return f" ({days.group(1)} days)" if days else ""

    text = re.sub(r"\s*(\([^()]*\))", window, description.strip().rstrip("."))
    kept = re.search(r"\s*\(\d+ days\)$", text)
    head = text[: kept.start()] if kept else text
    head = re.split(r":\s(?=[\d-])", re.split(r"[;,]\s", head)[0])[0]
    return head + (kept.group(0) if kept else "")


def feature_labels() -> dict[str, str]:
    """Feature name -> plain label, from the Feast field descriptions and the ranker's candidate features."""
    from cdp.features.definitions import FEATURES
    from cdp.models.next_best_product import CANDIDATE_DESCRIPTIONS

    labels = {name: short_description(text) for fields in FEATURES.values() for name, text in fields.items()}
    return labels | CANDIDATE_DESCRIPTIONS


def feature_label(name: str, labels: dict[str, str] | None = None) -> str:
    """The plain label of a feature; features without a Feast description (campaign and candidate
    features computed at training time) read as their name in words: "channel_email" -> "Channel email"."""
    labels = feature_labels() if labels is None else labels
    if name in labels:
        return labels[name]
    words = re.sub(r"_(\d+)d$", r" (\1 days)", name).replace("_", " ")
    return words[:1].upper() + words[1:]


def lightgbm_parts(model) -> list[tuple[float, Any, str]]:
    """The LightGBM estimators behind a model as (weight, estimator, output) tuples, so that
    weight-summed SHAP values explain the model's score (`output` names the SHAP scale)."""
    from sklearn.calibration import CalibratedClassifierCV

    if isinstance(model, CalibratedClassifierCV):  # churn: isotonic on top of one frozen booster
        inner = model.calibrated_classifiers_[0].estimator
        return [(1.0, getattr(inner, "estimator", inner), "churn log-odds (before isotonic calibration)")]
    if hasattr(model, "mu1_"):  # UpliftModel
        learner = getattr(model, "learner", "t")
        if learner == "x":
            return [(model.e_, model.tau0_, "uplift"), (1 - model.e_, model.tau1_, "uplift")]
        if learner == "transformed_outcome":
            return [(1.0, model.tau_, "uplift")]
        if learner == "logistic_t":  # no trees to explain (its coefficients are in the pipeline)
            return []
        return [(1.0, model.mu1_, "response log-odds if contacted (T-learner treated arm)")]
    if hasattr(model, "booster_"):  # plain LightGBM sklearn model (ranker, regressor, classifier)
        return [(1.0, model, "ranking score" if type(model).__name__ == "LGBMRanker" else "model output")]
    return []


def _shap_matrix(estimator, X: pd.DataFrame) -> np.ndarray:
    import warnings

    import shap

    with warnings.catch_warnings():  # shap notes its binary-LightGBM output convention on every call
        warnings.simplefilter("ignore", UserWarning)
        values = shap.TreeExplainer(estimator.booster_).shap_values(X)
    if isinstance(values, list):  # older binary-classifier convention: one matrix per class
        values = values[-1]
    values = np.asarray(values)
    return values[..., -1] if values.ndim == 3 else values


def directions(output: str) -> tuple[str, str]:
    """(left, right) in words for a SHAP scale named by lightgbm_parts."""
    for key, words in DIRECTIONS.items():
        if output.startswith(key) or f" {key}" in output:
            return words
    return ("lower score", "higher score")


def explanation(model, X: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, str] | None:
    """(importance table, SHAP matrix, the rows explained, SHAP output scale) for `model` on rows
    `X`, or None for models without LightGBM parts (e.g. the CLV model). The table has one row per
    feature (feature, label, gain_share, mean_abs_shap), largest mean |SHAP| first."""
    parts = lightgbm_parts(model)
    if not parts or X.empty:
        return None
    rows = X.sample(min(MAX_ROWS, len(X)), random_state=seed) if len(X) > MAX_ROWS else X
    features = list(parts[0][1].booster_.feature_name())
    rows = rows[features].astype(float)
    values = np.sum([w * _shap_matrix(est, rows) for w, est, _ in parts], axis=0)
    gain = np.sum([w * est.booster_.feature_importance("gain") for w, est, _ in parts], axis=0)
    gain = gain / gain.sum() if gain.sum() > 0 else gain
    labels = feature_labels()
    table = pd.DataFrame(
        {
            "feature": features,
            "label": [feature_label(f, labels) for f in features],
            "gain_share": gain,
            "mean_abs_shap": np.abs(values).mean(axis=0),
        }
    ).sort_values("mean_abs_shap", ascending=False, ignore_index=True)
    return table, values, rows, parts[0][2]


def shap_figure(values: np.ndarray, rows: pd.DataFrame, title: str, output: str):
    """SHAP beeswarm with plain feature labels and a title saying how to read it."""
    import shap

    left, right = directions(output)
    labels = feature_labels()
    shap.summary_plot(
        values,
        rows,
        feature_names=[feature_label(f, labels) for f in rows.columns],
        max_display=TOP,
        show=False,
        plot_size=(8.5, 6.5),
    )
    fig = plt.gcf()
    ax = fig.axes[0]
    ax.set_xlabel(f"<- {left}     |     {right} ->", fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(
        f"{title.capitalize()}: what moves the score\n"
        "one dot per customer (held-out rows); colour = the customer's value (red high, blue low, grey unknown)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def importance_figure(table: pd.DataFrame, title: str):
    """The top features by share of the model's split gain, labelled in words."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    top = table.sort_values("gain_share", ascending=False).head(TOP).iloc[::-1]
    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.subplots()
    ax.barh(top["label"], top["gain_share"])
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(
        xlabel="Share of the model's learning (split gain)",
        title=f"{title.capitalize()}: top features",
    )
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def explain(model, X: pd.DataFrame, out_dir: Path, title: str, seed: int = 0) -> list[Path]:
    """SHAP summary, gain importance chart and JSON for `model` on rows `X` (feature columns only).
    Returns [] for models without LightGBM parts (e.g. the CLV model)."""
    found = explanation(model, X, seed)
    if found is None:
        return []
    table, values, rows, output = found
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        save_figure(shap_figure(values, rows, title, output), out_dir / "shap_summary.png"),
        save_figure(importance_figure(table, title), out_dir / "feature_importance.png"),
    ]
    path = out_dir / "feature_importance.json"
    path.write_text(
        json.dumps(
            {"shap_output": output, "rows": len(rows), "features": table.round(6).to_dict(orient="records")},
            indent=1,
        )
    )
    paths.append(path)
    return paths
