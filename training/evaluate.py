"""Binary-classifier metrics and plots for out-of-time validation rows, and the Qini chart.

The `*_figure` functions are pure (arrays in, a matplotlib Figure out, no pyplot state), so
notebooks show inline (`display(fig)`) the same charts that training logs to MLflow;
`binary_plots` saves them as PNG files.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND"):  # Jupyter sets it (inline); elsewhere never open a window
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

DEPTHS = (0.1, 0.2)  # contact depths marked on the gain chart (top 10% / 20% by score)
QINI_POINTS = 50  # depths at which a Qini curve is drawn: smooth, not one step per send
RANKING_LABELS = {  # ranking keys used by training -> the names people read in a legend
    "t_learner": "Two-model (T-learner)",
    "x_learner": "Cross-learner (X-learner)",
    "logistic_t_learner": "Two-model, logistic (T-learner)",
    "shallow_t_learner": "Two-model, shallow trees (T-learner)",
    "transformed_outcome_learner": "Transformed outcome",
    "dr_learner": "Doubly robust (DR-learner)",
    "propensity": "Likely buyers (response propensity)",
    "random": "Random targeting",
    "oracle": "True effect (synthetic truth)",
}


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


def roc_figure(y_true: np.ndarray, score: np.ndarray) -> Figure:
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    fpr, tpr, _ = roc_curve(y_true, score)
    ax.plot(fpr, tpr, label=f"model (AUC {roc_auc_score(y_true, score):.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random (AUC 0.5)")
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC (out-of-time)")
    ax.legend()
    fig.tight_layout()
    return fig


def pr_figure(y_true: np.ndarray, score: np.ndarray) -> Figure:
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    precision, recall, _ = precision_recall_curve(y_true, score)
    ax.plot(recall, precision, label="model")
    ax.axhline(np.mean(y_true), ls="--", color="grey", label="base rate")
    ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall (out-of-time)")
    ax.legend()
    fig.tight_layout()
    return fig


def calibration_figure(y_true: np.ndarray, score: np.ndarray, what: str = "churn") -> Figure:
    """Predicted probability vs the observed rate, per tenth of customers by score."""
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    observed, predicted = calibration_curve(y_true, score, n_bins=10, strategy="quantile")
    ax.plot(predicted, observed, "o-", label="model (each dot: a tenth of customers)")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax.set(
        xlabel=f"Predicted {what} probability",
        ylabel=f"Observed {what} rate",
        title="Does a predicted 30% mean 30%? (out-of-time)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gain_figure(y_true: np.ndarray, score: np.ndarray, who: str = "churners", depths=DEPTHS) -> Figure:
    """Share of all positives reached when contacting the top x% by score, with the depths marked
    and the customer counts behind them (how many to contact, how many positives that reaches)."""
    n, total = len(score), int(np.sum(y_true))
    order = np.argsort(-score, kind="stable")
    reached = np.cumsum(y_true[order])
    share = np.arange(1, n + 1) / n
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.subplots()
    ax.plot(share, reached / max(total, 1), label="contact by model score")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="contact at random")
    for depth in depths:
        k = max(1, round(n * depth))
        hit = reached[k - 1] / max(total, 1)
        ax.axvline(depth, color="C1", lw=0.8, ls=":")
        ax.plot([depth], [hit], "o", color="C1")
        ax.annotate(
            f"top {depth:.0%}: {k:,} customers\nreach {int(reached[k - 1]):,} of {total:,} {who} ({hit:.0%})",
            (depth, hit),
            xytext=(8, -28 if depth == depths[0] else -4),
            textcoords="offset points",
            fontsize=7.5,
        )
    ax.set(
        xlabel=f"Share of customers contacted (of {n:,}, highest score first)",
        ylabel=f"Share of {who} reached",
        title=f"Cumulative gain: {who} reached by contact depth",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def binary_plots(y_true: np.ndarray, score: np.ndarray, out_dir: Path) -> list[Path]:
    """ROC, precision-recall, calibration and cumulative-gain charts as PNG files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "roc": roc_figure(y_true, score),
        "pr": pr_figure(y_true, score),
        "calibration": calibration_figure(y_true, score),
        "gain": gain_figure(y_true, score),
    }
    return [save_figure(fig, out_dir / f"{name}.png") for name, fig in figures.items()]


def qini_points(y: np.ndarray, treated: np.ndarray, score: np.ndarray, points: int = QINI_POINTS):
    """(depths, incremental conversions) at `points` evenly spaced depths: when the top share
    `depth` of sends by `score` is contacted, the treated conversions minus the control conversions
    scaled to the treated count (the Qini curve, pooled over all sends given)."""
    order = np.argsort(-score, kind="stable")
    t, yy = treated[order].astype(bool), y[order]
    n_t, n_c, y_t, y_c = np.cumsum(t), np.cumsum(~t), np.cumsum(yy * t), np.cumsum(yy * ~t)
    depths = np.linspace(0, 1, points + 1)
    idx = np.maximum((depths[1:] * len(y)).astype(int) - 1, 0)
    gains = y_t[idx] - y_c[idx] * n_t[idx] / np.maximum(n_c[idx], 1)
    return depths, np.concatenate([[0.0], gains])


def qini_figure(
    y: np.ndarray,
    treated: np.ndarray,
    scores: dict[str, np.ndarray],
    chosen: str,
    min_uplift: float = 0.0,
    what: str = "orders",
) -> Figure:
    """Qini chart for the chosen ranking of `scores` against random targeting, with the depth the
    targeting rule recommends (contact when the predicted uplift > `min_uplift`) marked."""
    depths, gains = qini_points(y, treated, scores[chosen])
    label = RANKING_LABELS.get(chosen, chosen.replace("_", " "))
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    ax.plot(depths, gains, lw=2, label=f"{label} (chosen)")
    ax.plot([0, 1], [0, gains[-1]], "--", color="grey", label=RANKING_LABELS["random"])
    if "oracle" in scores:
        ax.plot(*qini_points(y, treated, scores["oracle"]), ":", color="C2", label=RANKING_LABELS["oracle"])
    contacted = int(np.sum(scores[chosen] > min_uplift))
    share = contacted / len(y)
    extra = float(np.interp(share, depths, gains))
    ax.axvline(share, color="C3", lw=1, ls="-.")
    ax.plot([share], [extra], "o", color="C3")
    right = share > 0.6  # the note goes to the side of the line away from the plot's edge, at the bottom
    ax.annotate(
        f"recommended: contact {share:.0%}\n({contacted:,} of {len(y):,} sends)\nabout {extra:,.0f} extra {what}",
        (share, extra),
        xytext=(share - 0.02 if right else share + 0.02, 0.04),
        textcoords=("data", "axes fraction"),
        ha="right" if right else "left",
        va="bottom",
        fontsize=8,
        color="C3",
        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"},
    )
    ax.set(
        xlabel="Share of customers contacted (highest predicted uplift first)",
        ylabel=f"Extra {what} caused by the campaign",
        title="Campaign response on held-out campaigns (Qini)",
        xlim=(0, 1),
    )
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
