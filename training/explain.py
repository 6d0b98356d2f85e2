"""Model explanations for the MLflow model report: SHAP summary + feature importance.

In:  a fitted model (churn's calibrated LightGBM, the LightGBM ranker, the uplift model) and
     out-of-time rows of its features (never training rows, never identifiers).
Out: `shap_summary.png` (beeswarm), `feature_importance.png` (gain, top 20) and
     `feature_importance.json` (per feature: gain share and mean |SHAP|). Only feature names
     and numbers: no customer ids, emails, phones or names ever reach these files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cdp.training.evaluate import plt, save_figure

MAX_ROWS = 1000  # SHAP rows (a sample of the out-of-time rows keeps this ~1 s)
TOP = 20


def lightgbm_parts(model) -> list[tuple[float, object, str]]:
    """The LightGBM estimators behind a model as (weight, estimator, output) tuples, so that
    weight-summed SHAP values explain the model's score (`output` names the SHAP scale)."""
    from sklearn.calibration import CalibratedClassifierCV

    if isinstance(model, CalibratedClassifierCV):  # churn: isotonic on top of one frozen booster
        inner = model.calibrated_classifiers_[0].estimator
        return [(1.0, getattr(inner, "estimator", inner), "churn log-odds (before isotonic calibration)")]
    if hasattr(model, "mu1_"):  # UpliftModel
        if getattr(model, "learner", "t") == "x":
            return [(model.e_, model.tau0_, "uplift"), (1 - model.e_, model.tau1_, "uplift")]
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


def explain(model, X: pd.DataFrame, out_dir: Path, title: str, seed: int = 0) -> list[Path]:
    """SHAP summary, gain importance chart and JSON for `model` on rows `X` (feature columns only).
    Returns [] for models without LightGBM parts (e.g. the CLV model)."""
    import shap

    parts = lightgbm_parts(model)
    if not parts or X.empty:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = X.sample(min(MAX_ROWS, len(X)), random_state=seed) if len(X) > MAX_ROWS else X
    features = list(parts[0][1].booster_.feature_name())
    rows = rows[features].astype(float)
    values = sum(w * _shap_matrix(est, rows) for w, est, _ in parts)
    gain = sum(w * est.booster_.feature_importance("gain") for w, est, _ in parts)
    gain = gain / gain.sum() if gain.sum() > 0 else gain
    table = pd.DataFrame(
        {"feature": features, "gain_share": gain, "mean_abs_shap": np.abs(values).mean(axis=0)}
    ).sort_values("mean_abs_shap", ascending=False, ignore_index=True)

    shap.summary_plot(values, rows, feature_names=features, max_display=TOP, show=False, plot_size=(7, 6))
    fig = plt.gcf()
    fig.suptitle(f"{title}: SHAP on out-of-time rows ({parts[0][2]})", fontsize=9)
    paths = [save_figure(fig, out_dir / "shap_summary.png")]

    top = table.sort_values("gain_share", ascending=False).head(TOP).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.barh(top["feature"], top["gain_share"])
    ax.set(xlabel="Share of total split gain", title=f"{title}: feature importance (gain)")
    ax.tick_params(axis="y", labelsize=7)
    paths.append(save_figure(fig, out_dir / "feature_importance.png"))

    path = out_dir / "feature_importance.json"
    path.write_text(
        json.dumps(
            {"shap_output": parts[0][2], "rows": len(rows), "features": table.round(6).to_dict(orient="records")},
            indent=1,
        )
    )
    paths.append(path)
    return paths
