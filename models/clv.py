"""Customer lifetime value: expected spend in the next 12 months (BG/NBD + Gamma-Gamma).

In:  purchase features at a snapshot, from Feast FeatureService `clv_v1` (view purchase_behaviour):
     orders_lifetime, days_since_first_order, days_since_last_order, orders_365d,
     avg_order_value_365d. Only orders strictly before the snapshot feed them.
Model: BG/NBD (Fader, Hardie & Lee 2005) for the number of future orders: while "alive" a
     customer orders at a Poisson rate lambda ~ Gamma(r, alpha); after each order they drop out
     with probability p ~ Beta(a, b). Gamma-Gamma for the value of an order: a customer's mean
     order value has a Gamma prior (p, q, gamma), shrunk towards the population mean by how
     many orders we saw. CLV(12 months) = E[orders in 365 days | history] x E[order value | history].
     Both parts are fitted by maximum likelihood on the history *before* the snapshot only: the
     future spend is never a training input, so evaluating on the next 12 months is out-of-time.
Label (evaluation only): spend in [snapshot, snapshot + 365 days).
Out: `CLVModel` (sklearn-style: fit(X) learns params_ ending in `_`; predict(X) -> expected spend).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1
from sklearn.base import BaseEstimator

from cdp.models.spec import ModelSpec

CLV = ModelSpec(
    name="clv",
    feature_service="clv_v1",
    label="spend_next_365d",
    objective="BG/NBD + Gamma-Gamma (maximum likelihood on pre-snapshot history)",
    horizon_days=365,
    primary_metric="gini",
)
FEATURES = ["orders_lifetime", "days_since_first_order", "days_since_last_order", "orders_365d", "avg_order_value_365d"]


def rfm(X: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """(x repeat orders, t_x days from first to last order, T days from first order to snapshot,
    n orders behind the mean value, m mean order value) from the Feast purchase features."""
    orders = X["orders_lifetime"].fillna(0).to_numpy(float)
    first = X["days_since_first_order"].fillna(0).to_numpy(float)
    last = X["days_since_last_order"].fillna(0).to_numpy(float)
    x = np.maximum(orders - 1, 0)
    T = np.maximum(first, 1.0)
    t_x = np.clip(first - last, 0, T)
    n = X["orders_365d"].fillna(0).to_numpy(float)
    m = X["avg_order_value_365d"].fillna(0).to_numpy(float)
    return x, t_x, T, n, m


def bgnbd_log_likelihood(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    r, alpha, a, b = params
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    alive = betaln(a, b + x) - betaln(a, b) + common - (r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        dropped = np.where(
            x > 0,
            betaln(a + 1, np.maximum(b + x - 1, 1e-12)) - betaln(a, b) + common - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return np.logaddexp(alive, dropped)


def gamma_gamma_log_likelihood(params: np.ndarray, n: np.ndarray, m: np.ndarray) -> np.ndarray:
    p, q, gamma = params
    return (
        gammaln(p * n + q)
        - gammaln(p * n)
        - gammaln(q)
        + q * np.log(gamma)
        + (p * n - 1) * np.log(m)
        + p * n * np.log(n)
        - (p * n + q) * np.log(gamma + n * m)
    )


def _fit(neg_ll, start: np.ndarray, penalty: float) -> np.ndarray:
    """Maximum likelihood over log-parameters (all positive), with a small L2 penalty on the
    parameters for numerical stability on small populations."""

    def objective(log_params: np.ndarray) -> float:
        params = np.exp(log_params)
        return float(neg_ll(params) + penalty * np.sum(params**2))

    result = minimize(objective, np.log(start), method="L-BFGS-B", bounds=[(-10, 10)] * len(start))
    return np.exp(result.x)


class CLVModel(BaseEstimator):
    """BG/NBD x Gamma-Gamma expected spend over `horizon_days` after the snapshot of X's features."""

    def __init__(self, horizon_days: int = 365, penalty: float = 1e-4) -> None:
        self.horizon_days = horizon_days
        self.penalty = penalty

    def fit(self, X: pd.DataFrame, y=None) -> CLVModel:
        """Learn BG/NBD and Gamma-Gamma parameters from pre-snapshot history only (`y` is ignored)."""
        X = X[X["orders_lifetime"].fillna(0) > 0]
        if len(X) < 20:
            raise ValueError(f"clv: need at least 20 customers with an order to fit, got {len(X)}")
        self.feature_names_in_ = np.array(FEATURES, dtype=object)
        x, t_x, T, n, m = rfm(X)
        scale = float(np.mean(T))  # fit in units of the mean age: better conditioned
        self.bgnbd_ = _fit(
            lambda q: -bgnbd_log_likelihood(q, x, t_x / scale, T / scale).mean(),
            np.array([1.0, 1.0, 1.0, 1.0]),
            self.penalty,
        )
        self.bgnbd_[1] *= scale  # alpha back in days
        repeat = (n > 0) & (m > 0)
        if repeat.sum() < 10:
            raise ValueError("clv: need at least 10 customers with an order value to fit Gamma-Gamma")
        value_scale = float(np.mean(m[repeat]))
        gg = _fit(
            lambda q: -gamma_gamma_log_likelihood(q, n[repeat], m[repeat] / value_scale).mean(),
            np.array([1.0, 2.0, 1.0]),
            self.penalty,
        )
        gg[2] *= value_scale
        if gg[1] <= 1:
            gg[1] = 1.0 + 1e-3  # the mean order value needs q > 1 to exist
        self.gamma_gamma_ = gg
        self.population_order_value_ = float(gg[0] * gg[2] / (gg[1] - 1))
        return self

    def expected_orders(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, t: float) -> np.ndarray:
        """E[orders in (T, T + t] | x, t_x, T] (BG/NBD conditional expectation)."""
        r, alpha, a, b = self.bgnbd_
        a = a if abs(a - 1) > 1e-6 else 1 + 1e-6  # the closed form holds for a != 1 (checked by simulation)
        z = t / (alpha + T + t)
        head = (a + b + x - 1) / (a - 1)
        body = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z)
        return head * body / self._odds_dropped(x, t_x, T)

    def _odds_dropped(self, x, t_x, T) -> np.ndarray:
        r, alpha, a, b = self.bgnbd_
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ratio = np.where(x > 0, a / np.maximum(b + x - 1, 1e-12) * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0)
        return 1 + ratio

    def expected_order_value(self, n: np.ndarray, m: np.ndarray) -> np.ndarray:
        p, q, gamma = self.gamma_gamma_
        seen = (n > 0) & (m > 0)
        shrunk = (p * (gamma + n * m)) / (p * n + q - 1)
        return np.where(seen, shrunk, self.population_order_value_)

    def predict_components(self, X: pd.DataFrame) -> pd.DataFrame:
        """p_alive, expected_orders, expected_order_value and clv (their product) per row."""
        x, t_x, T, n, m = rfm(X)
        orders = self.expected_orders(x, t_x, T, float(self.horizon_days))
        value = self.expected_order_value(n, m)
        never = X["orders_lifetime"].fillna(0).to_numpy(float) <= 0
        orders = np.where(never, 0.0, orders)  # no order yet: no BG/NBD history, no value predicted
        return pd.DataFrame(
            {
                "p_alive": np.where(never, np.nan, 1 / self._odds_dropped(x, t_x, T)),
                "expected_orders": orders,
                "expected_order_value": value,
                "clv": orders * value,
            },
            index=X.index,
        )

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_components(X)["clv"].to_numpy()
