"""What every model is: a small frozen spec. Artifacts live in MLflow, not here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    name: str  # registered MLflow model name
    feature_service: str  # the one Feast FeatureService training and serving both read
    label: str
    objective: str
    horizon_days: int
    primary_metric: str  # out-of-time metric the champion gate compares (higher is better)
