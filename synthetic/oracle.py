"""The exact churn oracle: P(no order in (s, s+T] | latent state at s).

In: truth/persons.parquet (order_rate, dead_order_rate, churn_hazard per day, signup_at,
churn_at) and optionally truth/sends_truth.parquet (the campaign plan). Out: probabilities.

The order process of a person: alive orders at rate lam until churn, which comes at hazard h
(exponential lifetime), then residual orders at rate r. Alive at s and no campaign effect:

    P0 = exp(-(lam+h)T) + h exp(-rT) (1 - exp(-(lam+h-r)T)) / (lam+h-r)

(no churn and no order, plus churn at u with no alive order before u and no residual order
after). Churned at s: P0 = exp(-rT). Campaign effects (treated sends only) are exact too:
a negative send thins natural orders in its 14-day window by a factor (1-k) (piecewise rates),
a positive send adds one extra order with probability q at a uniform time in its window.

With the trend process (synthetic/trend.py) a person is a Markov chain engaged -> disengaged ->
churned whose hazards step up at category price rises; P0 is then the product of the segment
matrices exp((Q - Lambda) L) (piecewise constant rates between rises and send-window edges)
applied to a vector of ones, read at the person's state at s (`p_no_order_chain`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .chain import p_no_order_chain
from .common import DAY, RESPONSE_WINDOW_DAYS
from .trend import TrendTruth


def p_no_order(
    lam: np.ndarray, r: np.ndarray, h: np.ndarray, days: float | np.ndarray, alive: np.ndarray
) -> np.ndarray:
    """Closed form P(no order in the next `days`) with constant rates (see module docstring)."""
    lam, r, h = (np.asarray(x, dtype=float) for x in (lam, r, h))
    t = np.broadcast_to(np.asarray(days, dtype=float), lam.shape)
    c = lam + h - r
    small = np.abs(c * t) < 1e-9
    integral = np.where(small, t, -np.expm1(-c * t) / np.where(small, 1.0, c))
    p_alive = np.exp(-(lam + h) * t) + h * np.exp(-r * t) * integral
    return np.where(np.asarray(alive, dtype=bool), p_alive, np.exp(-r * t))


def p_no_order_piecewise(
    lam: np.ndarray,
    r: np.ndarray,
    h: np.ndarray,
    days: float,
    alive: np.ndarray,
    win_lo: np.ndarray,
    win_hi: np.ndarray,
    mult: np.ndarray,
) -> np.ndarray:
    """Like `p_no_order` with natural rates multiplied by `mult` inside windows.

    win_lo, win_hi, mult: (n, W) offsets in days within [0, days], windows sorted and not
    overlapping (empty windows have lo == hi). Rates: lam*m(u) alive, r*m(u) after churn.
    """
    n, w = win_lo.shape
    # segments: gap_0, win_0, gap_1, win_1, ..., gap_W
    edges = np.empty((n, 2 * w + 2))
    edges[:, 0] = 0.0
    edges[:, 1:-1:2] = win_lo
    edges[:, 2:-1:2] = win_hi
    edges[:, -1] = days
    seg_mult = np.ones((n, 2 * w + 1))
    seg_mult[:, 1::2] = mult
    big_m = np.zeros(n)  # integral of m from 0 to the segment start
    integral = np.zeros(n)  # integral_0^u e^{-h u' - (lam-r) M(u')} du'
    for j in range(2 * w + 1):
        length = np.maximum(edges[:, j + 1] - edges[:, j], 0.0)
        m = seg_mult[:, j]
        c = h + (lam - r) * m
        small = np.abs(c * length) < 1e-12
        part = np.where(small, length, -np.expm1(-c * length) / np.where(small, 1.0, c))
        integral += np.exp(-h * edges[:, j] - (lam - r) * big_m) * part
        big_m = big_m + m * length
    p_alive = np.exp(-h * days - lam * big_m) + h * np.exp(-r * big_m) * integral
    return np.where(alive, p_alive, np.exp(-r * big_m))


def load_trend_truth(truth_dir) -> TrendTruth | None:
    """The trend process's truth (price rises + affinity) when the data was generated with it."""
    from pathlib import Path

    rises = Path(truth_dir) / "price_rises.parquet"
    if not rises.exists():
        return None
    mix = pd.read_parquet(Path(truth_dir) / "next_purchase.parquet")
    return TrendTruth(pd.read_parquet(rises), mix.pivot(index="person_id", columns="category", values="probability"))


def true_churn_probability(
    persons: pd.DataFrame,
    person_ids: np.ndarray | pd.Series | list,
    snapshot_ts: str | pd.Timestamp | np.ndarray | pd.Series,
    horizon_days: float = 90,
    sends: pd.DataFrame | None = None,
    trend: TrendTruth | None = None,
) -> np.ndarray:
    """P(no order in (s, s+horizon] | latent state at s) for each person id.

    `snapshot_ts` is one timestamp or one per id. NaN for people who signed up after s.
    Pass `sends` (truth/sends_truth.parquet) to include the exact effect of treated campaign
    sends whose response window overlaps the horizon; without it the answer is exact for
    people with no treated send in the horizon. Pass `trend` (`load_trend_truth`) for data
    generated with the trend process (required then: persons has `disengaged_at`). Orders exist
    only up to the window end, so use snapshots with s + horizon <= window end.
    """
    ids = pd.Index(persons["person_id"]).get_indexer(pd.Series(person_ids))
    if (ids < 0).any():
        raise KeyError("unknown person_id")
    p = persons.iloc[ids]
    n = len(ids)
    s = _seconds(snapshot_ts, n)
    signup = _seconds(p["signup_at"], n)
    churn = _seconds(p["churn_at"], n)
    lam, r, h = (p[c].to_numpy(float) for c in ("order_rate", "dead_order_rate", "churn_hazard"))
    alive = churn > s
    has_trend = "disengaged_at" in p.columns
    if has_trend != (trend is not None):
        raise ValueError(
            "trend: truth/persons has the trend process's columns but no trend truth was given"
            if has_trend
            else "trend: given, but truth/persons has no `disengaged_at` (generated without --trend)"
        )
    pid = p["person_id"].to_numpy()
    if trend is None and (sends is None or sends.empty):
        out = p_no_order(lam, r, h, horizon_days, alive)
    elif trend is None:
        win_lo, win_hi, mult, extra = _send_windows(s, horizon_days, pid, sends)
        out = p_no_order_piecewise(lam, r, h, horizon_days, alive, win_lo, win_hi, mult) * extra
    else:
        out = _with_trend(p, s, alive, horizon_days, pid, sends, trend)
    return np.where(signup > s, np.nan, out)


def _with_trend(
    p: pd.DataFrame,
    s: np.ndarray,
    alive: np.ndarray,
    horizon: float,
    pid: np.ndarray,
    sends: pd.DataFrame | None,
    trend: TrendTruth,
) -> np.ndarray:
    n = len(pid)
    extra: np.ndarray | float
    if sends is None or sends.empty:
        win_lo, win_hi, mult, extra = (np.full((n, 1), horizon), np.full((n, 1), horizon), np.ones((n, 1)), 1.0)
    else:
        win_lo, win_hi, mult, extra = _send_windows(s, horizon, pid, sends)
    rises = trend.price_rises
    rise_at = (_seconds(rises["risen_at"], len(rises))[None, :] - s[:, None]) / DAY  # (n, R) offsets
    aff = trend.affinity.reindex(index=pid, columns=rises["category"]).to_numpy(float)  # (n, R)
    edges = np.sort(
        np.concatenate(
            [np.zeros((n, 1)), np.full((n, 1), horizon), win_lo, win_hi, np.clip(rise_at, 0, horizon)], axis=1
        ),
        axis=1,
    )
    mid = (edges[:, 1:] + edges[:, :-1]) / 2  # (n, P-1)
    risen = rise_at[:, None, :] <= mid[:, :, None]  # (n, P-1, R)
    coef = p["price_rise_coefficient"].to_numpy(float)
    log_mult = coef[:, None] * (risen * aff[:, None, :]).sum(axis=2)
    inside = (win_lo[:, None, :] <= mid[:, :, None]) & (mid[:, :, None] < win_hi[:, None, :])  # (n, P-1, W)
    rate_mult = np.where(inside, mult[:, None, :], 1.0).prod(axis=2)
    dis_at = pd.to_datetime(p["disengaged_at"], utc=True)
    dis = dis_at.notna().to_numpy() & (_seconds(dis_at.fillna(pd.Timestamp(0, tz="UTC")), n) <= s)
    state = np.where(~alive, 2, np.where(dis, 1, 0))
    base = p_no_order_chain(
        p["order_rate"].to_numpy(float),
        p["disengaged_order_rate"].to_numpy(float),
        p["dead_order_rate"].to_numpy(float),
        p["churn_hazard"].to_numpy(float),
        p["disengaged_hazard"].to_numpy(float),
        p["disengage_rate"].to_numpy(float),
        state,
        edges,
        log_mult,
        rate_mult,
    )
    return base * extra


def _seconds(ts: str | pd.Timestamp | np.ndarray | pd.Series, n: int) -> np.ndarray:
    """Timestamps (scalar or array-like, naive = UTC) -> int64 epoch seconds of length n."""
    series = pd.Series([ts] * n) if isinstance(ts, (str, pd.Timestamp)) else pd.Series(np.asarray(ts))
    values = pd.to_datetime(series, utc=True)
    return ((values - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def _send_windows(
    s: np.ndarray, horizon: float, pid: np.ndarray, sends: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Treated sends' windows per row as offsets in days (win_lo, win_hi, rate multiplier, each
    (n, W), padded with empty windows at the horizon) and the no-extra-order factor per row.
    Rows may repeat a person (one row per snapshot): sends are matched to every row."""
    treated = sends.loc[sends["group"] == "treatment", ["person_id", "sent_at", "extra_order_prob", "natural_thinning"]]
    rows = pd.DataFrame({"person_id": pid, "pos": np.arange(len(pid))})
    t = rows.merge(treated, on="person_id", how="inner")
    pos = t["pos"].to_numpy()
    lo = (_seconds(t["sent_at"], len(t)) - s[pos]) / DAY
    hi = lo + RESPONSE_WINDOW_DAYS
    overlap = (hi > 0) & (lo < horizon)
    pos, lo, hi = pos[overlap], lo[overlap], hi[overlap]
    q = t["extra_order_prob"].to_numpy(float)[overlap]
    k = t["natural_thinning"].to_numpy(float)[overlap]
    lo_c, hi_c = np.clip(lo, 0, horizon), np.clip(hi, 0, horizon)
    extra = np.ones(len(pid))
    np.multiply.at(extra, pos, 1 - q * (hi_c - lo_c) / RESPONSE_WINDOW_DAYS)
    order = np.lexsort((lo_c, pos))
    pos, lo_c, hi_c, k = pos[order], lo_c[order], hi_c[order], k[order]
    rank = np.arange(len(pos)) - np.searchsorted(pos, pos)
    width = int(rank.max()) + 1 if len(pos) else 1
    win_lo = np.full((len(pid), width), float(horizon))
    win_hi = np.full((len(pid), width), float(horizon))
    mult = np.ones((len(pid), width))
    win_lo[pos, rank], win_hi[pos, rank], mult[pos, rank] = lo_c, hi_c, 1 - k
    return win_lo, win_hi, mult, extra
