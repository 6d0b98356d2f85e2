"""The one champion gate, for every model family, at training time and at `cdp promote`.

A model becomes `champion` only when its out-of-time (or out-of-fold) primary metric
  1. beats its simple baseline measured on the same rows in the same run (churn: recency,
     next best product: popularity, campaign response: random targeting's 97.5th percentile,
     CLV: last year's spend), and
  2. beats the current champion on the same rows (re-scored; its logged metric when it cannot be).
A first model must pass 1 too: "first model" is no reason to trust it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

LOWER_IS_BETTER = ("brier", "mae", "rmse", "log_loss", "seconds", "ece")  # metric names containing these
INFORMATIONAL = ("positive_rate", "uplift_all", "actual_total", "predicted_total", "customers")


def better_direction(metric: str) -> str:
    if metric in INFORMATIONAL:
        return "n/a"
    return "lower" if any(word in metric for word in LOWER_IS_BETTER) else "higher"


def beats(metric: str, value: float, other: float) -> bool:
    if not np.isfinite(value):
        return False
    return value < other if better_direction(metric) == "lower" else value > other


@dataclass(frozen=True)
class Reference:
    """What a challenger is measured against: a baseline or the champion, on named rows."""

    name: str
    value: float


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    reason: str
    metric: str
    value: float
    baseline: Reference | None
    champion: Reference | None

    def to_dict(self) -> dict:
        return asdict(self)


def decide(metric: str, value: float, baseline: Reference | None, champion: Reference | None) -> GateDecision:
    """Champion or not, and why, in words a user can act on."""

    def verdict(promoted: bool, reason: str) -> GateDecision:
        return GateDecision(promoted, reason, metric, float(value), baseline, champion)

    if baseline is not None and not beats(metric, value, baseline.value):
        return verdict(
            False, f"no model better than {baseline.name}: {metric} {value:.4f} vs {baseline.value:.4f} (not promoted)"
        )
    if champion is not None and not beats(metric, value, champion.value):
        return verdict(False, f"{metric} {value:.4f} is not better than {champion.name} {champion.value:.4f}")
    against = [f"{r.name} {r.value:.4f}" for r in (baseline, champion) if r is not None]
    return verdict(True, f"{metric} {value:.4f} beats " + (" and ".join(against) if against else "nothing to compare"))
