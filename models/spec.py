"""What every model is: a small frozen spec. Artifacts live in MLflow, not here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    name: str  # registered MLflow model name
    feature_service: str  # the one Feast FeatureService training and serving both read
    label: str
    objective: str
    horizon_days: int
    primary_metric: str  # out-of-time metric the champion gate compares (higher is better)
    # estimator settings, read by the family's model code and logged as MLflow params (hp.*)
    hyperparameters: dict[str, Any] = field(default_factory=dict, compare=False)

    def logged_hyperparameters(self) -> dict[str, Any]:
        """hp.<name> (nested estimators: hp.<estimator>.<name>) for mlflow.log_params."""
        out: dict[str, Any] = {}
        for key, value in self.hyperparameters.items():
            if isinstance(value, dict):
                out.update({f"hp.{key}.{k}": v for k, v in value.items()})
            else:
                out[f"hp.{key}"] = value
        return out
