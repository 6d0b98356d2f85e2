"""Drift measures for monitoring a scored population against the champion's training set.

Only feature names and numbers leave this module (no customer rows), so its output is safe to log.
"""

import numpy as np
import pandas as pd

_EPS = 1e-4  # floor for empty bins so PSI stays finite when a bin empties out


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """Population stability index of `current` vs `reference`; bins come from the reference only.

    Numeric: quantile edges of the reference (ties collapsed), open-ended outer bins.
    Categorical: the reference's categories plus one bucket for unseen ones. Nulls are excluded
    here and reported by `null_share`.
    """
    ref, cur = reference.dropna(), current.dropna()
    if ref.empty or cur.empty:
        return float("nan")
    if pd.api.types.is_numeric_dtype(ref) and not pd.api.types.is_bool_dtype(ref):
        edges = np.unique(np.quantile(ref.astype(float), np.linspace(0, 1, bins + 1))[1:-1])
        ref_counts = np.bincount(np.searchsorted(edges, ref.astype(float), side="right"), minlength=len(edges) + 1)
        cur_counts = np.bincount(np.searchsorted(edges, cur.astype(float), side="right"), minlength=len(edges) + 1)
    else:
        cats = pd.Index(ref.astype(str).unique())
        ref_counts = np.append(ref.astype(str).value_counts().reindex(cats).to_numpy(), 0)
        cur_str = cur.astype(str)
        cur_counts = np.append(
            cur_str.value_counts().reindex(cats, fill_value=0).to_numpy(), (~cur_str.isin(cats)).sum()
        )
    p = np.maximum(ref_counts / ref_counts.sum(), _EPS)
    q = np.maximum(cur_counts / cur_counts.sum(), _EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def null_share(values: pd.Series) -> float:
    """Share of missing values (0 for an empty series)."""
    return float(values.isna().mean()) if len(values) else 0.0
