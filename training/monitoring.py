"""Drift measures for monitoring a scored population against the champion's training set.

Only feature names and numbers leave this module (no customer rows), so its output is safe to log.
A reference distribution is kept as a compact `profile` (bin edges and shares, category shares,
null share): that is what is stored with a model, never the training rows themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

_EPS = 1e-4  # floor for empty bins so PSI stays finite when a bin empties out
MIN_CATEGORY_ROWS = 10  # rarer categories are not named in a stored profile (folded into "other")


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def profile(reference: pd.Series, bins: int = 10) -> dict[str, Any]:
    """The reference distribution as JSON-safe numbers. Numeric: interior quantile edges (ties
    collapsed; the outer bins are open, so no minimum or maximum is stored) and the share per bin.
    Categorical: the share of each category seen at least MIN_CATEGORY_ROWS times, the rest as
    `other` (also the bucket of categories never seen). Nulls are excluded and counted apart."""
    ref = reference.dropna()
    out: dict[str, Any] = {"null_share": null_share(reference), "rows": len(reference)}
    if ref.empty:
        return {**out, "kind": "empty"}
    if _is_numeric(ref):
        values = ref.astype(float).to_numpy()
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1))[1:-1])
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        return {**out, "kind": "numeric", "edges": edges.tolist(), "shares": (counts / counts.sum()).tolist()}
    counts = ref.astype(str).value_counts()
    named = counts[counts >= MIN_CATEGORY_ROWS]
    return {
        **out,
        "kind": "categorical",
        "categories": named.index.tolist(),
        "shares": (named / counts.sum()).tolist(),
        "other": float(1 - named.sum() / counts.sum()),
    }


def psi_against(reference: dict[str, Any], current: pd.Series) -> float:
    """PSI of `current` vs a stored `profile` (bins from the reference only); NaN when either side
    has no non-null value."""
    cur = current.dropna()
    if reference["kind"] == "empty" or cur.empty:
        return float("nan")
    if reference["kind"] == "numeric":
        edges = np.asarray(reference["edges"], dtype=float)
        if not _is_numeric(cur):
            return float("nan")
        counts = np.bincount(np.searchsorted(edges, cur.astype(float), side="right"), minlength=len(edges) + 1)
        p = np.asarray(reference["shares"], dtype=float)
    else:
        cats = pd.Index(reference["categories"])
        cur_str = cur.astype(str)
        counts = np.append(cur_str.value_counts().reindex(cats, fill_value=0).to_numpy(), (~cur_str.isin(cats)).sum())
        p = np.append(np.asarray(reference["shares"], dtype=float), reference["other"])
    p = np.maximum(p, _EPS)
    q = np.maximum(counts / counts.sum(), _EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """Population stability index of `current` vs `reference`; bins come from the reference only.

    Numeric: quantile edges of the reference (ties collapsed), open-ended outer bins.
    Categorical: the reference's categories plus one bucket for unseen ones. Nulls are excluded
    here and reported by `null_share`.
    """
    return psi_against(profile(reference, bins), current)


def null_share(values: pd.Series) -> float:
    """Share of missing values (0 for an empty series)."""
    return float(values.isna().mean()) if len(values) else 0.0
