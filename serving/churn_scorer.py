"""Churn scores and their reasons, fast enough for one customer per HTTP call.

The champion is an isotonic-calibrated LightGBM (models/churn.py). sklearn's `predict_proba`
spends most of a single-row call validating input; here the booster scores a float matrix
directly and the isotonic map is applied with `np.interp` (the same piecewise-linear function
sklearn applies; tests check equality with `predict_proba`). Reasons are LightGBM's own per-row
feature contributions (TreeSHAP values in log-odds), turned into plain words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

TOP_REASONS = 3


@dataclass
class ChurnScorer:
    model: Any  # CalibratedClassifierCV(FrozenEstimator(LGBMClassifier), method="isotonic")
    version: str
    features: list[str]
    descriptions: dict[str, str]

    @classmethod
    def from_model(cls, model, version: str) -> ChurnScorer:
        from cdp.featurestore.store import repo_definitions

        definitions = repo_definitions()
        descriptions = {f: d for fields in definitions.FEATURES.values() for f, d in fields.items()}
        return cls(model, version, [str(f) for f in model.feature_names_in_], descriptions)

    def _parts(self):
        calibrated = self.model.calibrated_classifiers_
        if len(calibrated) != 1 or getattr(self.model, "method", None) != "isotonic":
            return None  # not the layout this fast path knows: use sklearn's own path
        estimator = calibrated[0].estimator
        booster = getattr(getattr(estimator, "estimator", estimator), "booster_", None)
        # sklearn calibrates on decision_function (log-odds) when the estimator has one.
        raw = hasattr(estimator, "decision_function")
        return None if booster is None else (booster, calibrated[0].calibrators[0], raw)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[self.features].to_numpy(dtype=np.float64, na_value=np.nan)

    def probabilities(self, matrix: np.ndarray, threads: int = 1) -> np.ndarray:
        """threads: 1 for online calls (no pool wake-up per request), 0 (all cores) for batches."""
        parts = self._parts()
        if parts is None:
            return self.model.predict_proba(pd.DataFrame(matrix, columns=self.features))[:, 1]
        booster, isotonic, raw_score = parts
        response = booster.predict(matrix, raw_score=raw_score, num_threads=threads)
        return np.interp(response, isotonic.X_thresholds_, isotonic.y_thresholds_)

    def reasons(self, matrix: np.ndarray, top: int = TOP_REASONS) -> list[list[dict]]:
        """Per row, the `top` features that raise the risk most (positive contributions), in words."""
        parts = self._parts()
        estimator = self.model.calibrated_classifiers_[0].estimator
        booster = parts[0] if parts else getattr(estimator, "estimator", estimator).booster_
        # TreeSHAP costs ~1.6 ms a row here: one row stays on the calling thread, batches use all cores
        threads = 1 if len(matrix) == 1 else 0
        contributions = booster.predict(matrix, pred_contrib=True, num_threads=threads)[:, :-1]  # last column: bias
        out = []
        for row, values in zip(contributions, matrix):
            order = np.argsort(-row)[:top]
            out.append([self._reason(self.features[j], values[j], row[j]) for j in order if row[j] > 0])
        return out

    def _reason(self, feature: str, value: float, contribution: float) -> dict:
        shown = "unknown" if np.isnan(value) else (f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}")
        text = f"{self.descriptions.get(feature, feature).rstrip('.')}: {shown}"
        return {
            "feature": feature,
            "value": None if np.isnan(value) else float(value),
            "contribution": round(float(contribution), 4),
            "text": text,
        }
