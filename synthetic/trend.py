"""The trend process (opt-in, `generate(..., trend=True)` / `cdp generate --trend`): churn that
follows change, as in real retail, instead of static traits alone.

In: a `Population` (static traits and the base churn hazard), seed, window. Out: the population
with trend state (disengagement time, redrawn churn time) and a `PricePlan` (category price rises).

Each person is a three-state Markov chain: engaged -> disengaged -> churned (engaged -> churned
directly too).
- Engaged: orders at `lam`, web sessions at the usual rate; disengages at rate `rho` (faster for
  low engagement); churns at hazard h * m(t).
- Disengaged: orders at DISENGAGED_ORDER_SHARE * lam, sessions at DISENGAGED_WEB_SHARE of the
  rate; churns at DISENGAGED_HAZARD_MULT * h * m(t).
- m(t) = exp(B_PRICE_RISE * price_sensitivity * exposure(t)), exposure(t) = the person's affinity
  mass in categories whose price has risen by t: price rises hit price-sensitive buyers of those
  categories from the rise onwards. Orders after a rise pay `price_factor` x list price.
The oracle (synthetic/oracle.py) computes P(no order in the horizon) of exactly this chain.
Streams are separate ("trend:*"), so the people, identity and consent draws do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from .chain import p_no_order_chain
from .common import DAY, rng_for
from .people import Population
from .reference import CATEGORY_NAMES

DISENGAGE_RATE = 1 / 500  # per day, at engagement 0.45
B_DISENGAGE = 2.0  # rho = DISENGAGE_RATE * exp(B_DISENGAGE * (0.45 - engagement))
DISENGAGED_ORDER_SHARE = 0.30
DISENGAGED_WEB_SHARE = 0.25
DISENGAGED_HAZARD_MULT = 5.0
B_PRICE_RISE = 3.0
PRICE_RISES = 4  # categories whose price rises once inside the window
RISE_MARGIN_DAYS = 120  # rises fall inside [start + margin, stop - margin]: before and after are observed
MAX_LIFE_DAYS = 36_500


@dataclass(frozen=True)
class PricePlan:
    category: np.ndarray  # category index per rise
    risen_s: np.ndarray  # epoch seconds of each rise (sorted)
    factor: np.ndarray  # unit price multiplier from the rise on

    def table(self) -> pa.Table:
        return pa.table(
            {
                "category": pa.array([CATEGORY_NAMES[c] for c in self.category], type=pa.string()),
                "risen_at": pa.array(self.risen_s * 1_000_000, type=pa.timestamp("us", tz="UTC")),
                "price_factor": pa.array(self.factor),
            }
        )

    def unit_factor(self, category: np.ndarray, time_s: np.ndarray) -> np.ndarray:
        """Price multiplier of lines in `category` bought at `time_s`."""
        out = np.ones(len(category))
        for c, at, f in zip(self.category, self.risen_s, self.factor):
            out[(category == c) & (time_s >= at)] *= f
        return out


def make_price_plan(seed: int, start_s: int, stop_s: int) -> PricePlan:
    rng = rng_for(seed, "trend:prices")
    lo, hi = start_s + RISE_MARGIN_DAYS * DAY, stop_s - RISE_MARGIN_DAYS * DAY
    category = rng.choice(len(CATEGORY_NAMES), PRICE_RISES, replace=False)
    risen = np.sort(rng.integers(lo, max(hi, lo + 1), PRICE_RISES)).astype(np.int64)
    return PricePlan(category, risen, np.round(rng.uniform(1.10, 1.25, PRICE_RISES), 3))


def rise_log_multiplier(price_sens: np.ndarray, affinity: np.ndarray, plan: PricePlan) -> np.ndarray:
    """(n, rises + 1): log hazard multiplier per person before the first rise, after each rise."""
    steps = np.cumsum(affinity[:, plan.category], axis=1)
    return B_PRICE_RISE * price_sens[:, None] * np.concatenate([np.zeros((len(price_sens), 1)), steps], axis=1)


def _first_passage(t0: np.ndarray, target: np.ndarray, base: np.ndarray, logm: np.ndarray, breaks: np.ndarray):
    """Earliest t >= t0 (seconds) where the integral of base*exp(logm[k]) from t0 reaches `target`;
    interval k is [breaks[k-1], breaks[k]) with breaks[-1] = -inf, breaks[K] = +inf."""
    edges = np.concatenate([[-np.inf], breaks.astype(float), [np.inf]])
    t = np.full(len(t0), np.inf)
    left = target.astype(float).copy()
    for k in range(len(edges) - 1):
        rate = base * np.exp(logm[:, k]) / DAY
        lo = np.maximum(t0, edges[k])
        length = np.maximum(edges[k + 1] - lo, 0.0)
        cap = rate * length
        hit = np.isinf(t) & (left <= cap)
        t[hit] = lo[hit] + left[hit] / rate[hit]
        left = np.where(np.isinf(t), left - np.where(np.isfinite(cap), cap, 0.0), left)
    return t


def apply_trend(pop: Population, seed: int, start_s: int, stop_s: int) -> PricePlan:
    """Draw disengagement and churn under the trend process into `pop` (in place); the plan."""
    rng = rng_for(seed, "trend:people")
    plan = make_price_plan(seed, start_s, stop_s)
    n = pop.n
    rho = DISENGAGE_RATE * np.exp(B_DISENGAGE * (0.45 - pop.engagement))
    logm = rise_log_multiplier(pop.price_sens, pop.affinity, plan)
    signup = pop.signup_s.astype(float)
    onset = signup + rng.exponential(1.0, n) / rho * DAY
    churn_engaged = _first_passage(signup, rng.exponential(1.0, n), pop.hazard, logm, plan.risen_s)
    disengaged = onset < churn_engaged
    churn_after = _first_passage(
        onset, rng.exponential(1.0, n), DISENGAGED_HAZARD_MULT * pop.hazard, logm, plan.risen_s
    )
    churn = np.where(disengaged, churn_after, churn_engaged)
    churn = np.minimum(churn, signup + MAX_LIFE_DAYS * DAY)
    never = np.iinfo(np.int64).max // 2
    pop.churn_s = churn.astype(np.int64)
    pop.disengage_s = np.where(disengaged & (onset < churn), onset, never).astype(np.int64)
    pop.disengage_rate = rho
    return plan


def p_no_order_from(
    pop: Population, plan: PricePlan, person: np.ndarray, at_s: np.ndarray, days: float, rate_mult: np.ndarray | float
) -> np.ndarray:
    """P(no order in (at, at + days]) under the trend process for `person` from their state at
    `at_s` (order rates x `rate_mult` throughout): the campaign truth's p_control / p_treated."""
    assert pop.disengage_s is not None and pop.disengage_rate is not None, "needs the trend process"
    n = len(person)
    rise_off = (plan.risen_s[None, :] - at_s[:, None]) / DAY  # (n, R), rises sorted in time
    edges = np.sort(np.concatenate([np.zeros((n, 1)), np.clip(rise_off, 0, days), np.full((n, 1), days)], axis=1))
    mid = (edges[:, 1:] + edges[:, :-1]) / 2
    risen = (rise_off[:, None, :] <= mid[:, :, None]).sum(axis=2)  # rises before each segment
    steps = rise_log_multiplier(pop.price_sens[person], pop.affinity[person], plan)
    lam, h = pop.lam[person], pop.hazard[person]
    state = np.where(pop.churn_s[person] <= at_s, 2, np.where(pop.disengage_s[person] <= at_s, 1, 0))
    return p_no_order_chain(
        lam,
        DISENGAGED_ORDER_SHARE * lam,
        pop.r_dead[person],
        h,
        DISENGAGED_HAZARD_MULT * h,
        pop.disengage_rate[person],
        state,
        edges,
        np.take_along_axis(steps, risen, axis=1),
        np.broadcast_to(
            np.asarray(rate_mult, dtype=float).reshape(-1, 1) if np.ndim(rate_mult) else rate_mult, mid.shape
        ),
    )


def disengaged_at(pop: Population, person: np.ndarray, at_s: np.ndarray) -> np.ndarray:
    """Whether each person had disengaged by `at_s` (all False without the trend process)."""
    if pop.disengage_s is None:
        return np.zeros(len(person), dtype=bool)
    return pop.disengage_s[person] <= at_s


def trend_persons_columns(pop: Population) -> dict[str, pa.Array]:
    """Extra truth/persons columns of the trend process (null disengaged_at = never disengaged)."""
    assert pop.disengage_s is not None and pop.disengage_rate is not None, "needs the trend process"
    never = pop.disengage_s >= np.iinfo(np.int64).max // 4
    return {
        "disengaged_at": pa.array(
            np.where(never, 0, pop.disengage_s) * 1_000_000, mask=never, type=pa.timestamp("us", tz="UTC")
        ),
        "disengage_rate": pa.array(pop.disengage_rate),
        "disengaged_order_rate": pa.array(DISENGAGED_ORDER_SHARE * pop.lam),
        "disengaged_hazard": pa.array(DISENGAGED_HAZARD_MULT * pop.hazard),
        "price_rise_coefficient": pa.array(B_PRICE_RISE * pop.price_sens),
    }


@dataclass(frozen=True)
class TrendTruth:
    """What the oracle needs beyond truth/persons: the price rises and each person's affinity."""

    price_rises: pd.DataFrame  # category, risen_at, price_factor
    affinity: pd.DataFrame  # person_id x category (truth/next_purchase pivoted)
