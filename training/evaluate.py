"""Binary-classifier metrics and plots for out-of-time validation rows."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)


def lift_at(y_true: np.ndarray, score: np.ndarray, fraction: float = 0.1) -> float:
    """Positive rate among the top `fraction` by score, divided by the overall positive rate."""
    top = np.argsort(-score, kind="stable")[: max(1, int(len(score) * fraction))]
    return float(np.mean(y_true[top]) / np.mean(y_true))


def binary_metrics(y_true: np.ndarray, score: np.ndarray) -> dict[str, float]:
    return {
        "roc_auc": float(roc_auc_score(y_true, score)),
        "pr_auc": float(average_precision_score(y_true, score)),
        "brier": float(brier_score_loss(y_true, score)),
        "lift_top_decile": lift_at(y_true, score, 0.1),
        "positive_rate": float(np.mean(y_true)),
    }


def binary_plots(y_true: np.ndarray, score: np.ndarray, out_dir: Path) -> list[Path]:
    """ROC, precision-recall, calibration and cumulative-gain charts as PNG files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 4))
    fpr, tpr, _ = roc_curve(y_true, score)
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y_true, score):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC (out-of-time)")
    ax.legend()
    paths.append(save_figure(fig, out_dir / "roc.png"))

    fig, ax = plt.subplots(figsize=(5, 4))
    precision, recall, _ = precision_recall_curve(y_true, score)
    ax.plot(recall, precision)
    ax.axhline(np.mean(y_true), ls="--", color="grey", label="base rate")
    ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall (out-of-time)")
    ax.legend()
    paths.append(save_figure(fig, out_dir / "pr.png"))

    fig, ax = plt.subplots(figsize=(5, 4))
    observed, predicted = calibration_curve(y_true, score, n_bins=10, strategy="quantile")
    ax.plot(predicted, observed, "o-")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="Predicted probability", ylabel="Observed rate", title="Calibration")
    paths.append(save_figure(fig, out_dir / "calibration.png"))

    fig, ax = plt.subplots(figsize=(5, 4))
    order = np.argsort(-score, kind="stable")
    gains = np.cumsum(y_true[order]) / y_true.sum()
    share = np.arange(1, len(score) + 1) / len(score)
    ax.plot(share, gains, label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.set(xlabel="Share of customers contacted", ylabel="Share of churners reached", title="Cumulative gain")
    ax.legend()
    paths.append(save_figure(fig, out_dir / "gain.png"))
    return paths


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
