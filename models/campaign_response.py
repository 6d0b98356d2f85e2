"""Campaign response and uplift: does contacting a customer make an order more likely?

In:  marketing sends with randomized treatment/control (customer_id, campaign_id, sent_at,
     group), the campaigns table, customer order lines and orders.
Label: 1 when the customer places an order in (sent_at, sent_at + 14 days]; the same for
     treatment and control (control = recorded, not contacted). We use a fixed 14-day window
     after each send rather than campaigns.end_at: end_at is start + send spread + 14 days,
     so it would give the campaign's early sends a longer window than its late ones.
Features at sent_at: customer features from Feast (FeatureService campaign_response_v1, point
     in time with event_timestamp = sent_at) + campaign features computed here from lines
     and web events strictly before sent_at (channel, whether the campaign targets a category, the
     customer's share of order lines and of category-naming web events in that category over the
     past 365 days: browsing interest in the promoted category is the strongest effect modifier
     on our generator after purchases, benchmarks/uplift_oracle.py).
Out: `UpliftModel`: P(order | contacted), P(order | not contacted) and the uplift (T- or
     X-learner on LightGBM, logistic T-learner, transformed outcome, DR-learner), a targeting decision
     and expected incremental conversions.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.base import BaseEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from cdp.models.spec import ModelSpec

CAMPAIGN_RESPONSE = ModelSpec(
    name="campaign_response",
    feature_service="campaign_response_v1",
    label="ordered_14d",
    objective="uplift (T/X/DR-learners on LightGBM, shallow-tree and logistic T-learners, transformed outcome; "
    "chosen by held-out Qini)",
    horizon_days=14,
    primary_metric="qini",
    hyperparameters={
        "outcome": {  # P(order | contacted) and P(order | not contacted)
            "n_estimators": 150,
            "learning_rate": 0.03,
            "num_leaves": 15,
            "min_child_samples": 80,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.8,
            "reg_lambda": 5.0,
        },
        "shallow": {  # the shallow-tree T-learner's outcome models: 4-leaf trees, large leaves (small effects)
            "n_estimators": 200,
            "learning_rate": 0.03,
            "num_leaves": 4,
            "min_child_samples": 300,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.8,
            "reg_lambda": 5.0,
        },
        "logistic": {"C": 0.1, "max_iter": 2000},  # the logistic T-learner's outcome models (standardized)
        "effect": {  # the X-learner's imputed-effect regressors and the transformed-outcome regressor
            "n_estimators": 100,
            "learning_rate": 0.03,
            "num_leaves": 7,
            "min_child_samples": 80,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.8,
            "reg_lambda": 5.0,
        },
    },
)
CHANNELS = ["email", "sms", "push", "paid_display"]
CAMPAIGN_FEATURES = [
    *(f"channel_{c}" for c in CHANNELS),
    "has_target_category",
    "target_category_share_365d",
    "target_category_lines_365d",
    "target_category_view_share_365d",
    "target_category_views_365d",
]
MIN_UPLIFT = 0.0  # default targeting threshold: contact when the expected incremental conversion is positive


def customer_category_views(ws) -> pd.DataFrame:
    """(customer_id, category, occurred_at) of the resolved customers' web events that name a
    category (product and category views, searches, carts); empty without web_events or a
    `category` column."""
    import pyarrow.parquet as pq

    from cdp.features.timeline import attach_customers

    empty = pd.DataFrame({"customer_id": [], "category": [], "occurred_at": pd.Series([], dtype="datetime64[us, UTC]")})
    path = ws.staged / "web_events.parquet"
    if not path.exists() or "category" not in pq.read_schema(path).names:
        return empty
    identity_map = pd.read_parquet(ws.identity / "identity_map.parquet")
    web = attach_customers(ws, "web_events", "event_id", ["occurred_at", "category"], identity_map)
    return web.loc[web["category"].notna(), ["customer_id", "category", "occurred_at"]].reset_index(drop=True)


def campaign_features(
    pairs: pd.DataFrame, campaigns: pd.DataFrame, lines: pd.DataFrame, views: pd.DataFrame
) -> pd.DataFrame:
    """pairs (customer_id, campaign_id, event_timestamp) -> the same rows + CAMPAIGN_FEATURES,
    from the campaign row, the customer's order lines and category views (`customer_category_views`)
    strictly before event_timestamp, within 365 days. Shares are smoothed toward 1/8 ((n + 1) / (N + 8)):
    a customer with two lines, both in the category, is not certain to love it."""
    con = duckdb.connect()
    con.register("pairs", pairs[["customer_id", "campaign_id", "event_timestamp"]].drop_duplicates())
    con.register("campaigns", campaigns[["campaign_id", "channel", "target_category"]])
    con.register("lines", lines[["customer_id", "category", "ordered_at"]].rename(columns={"ordered_at": "at"}))
    con.register("views", views[["customer_id", "category", "occurred_at"]].rename(columns={"occurred_at": "at"}))
    channels = ", ".join(f"(c.channel = '{ch}')::INT AS channel_{ch}" for ch in CHANNELS)

    def in_category(source: str, alias: str) -> str:  # the customer's rows of `source`, and those in the category
        return f"""{alias} AS (
          SELECT p.customer_id, p.campaign_id, p.event_timestamp, count(x.category) AS n,
                 count(x.category) FILTER (x.category = c.target_category) AS target
          FROM pairs p JOIN campaigns c USING (campaign_id)
          LEFT JOIN {source} x ON x.customer_id = p.customer_id AND x.at < p.event_timestamp
           AND x.at >= p.event_timestamp - INTERVAL 365 DAY
          GROUP BY 1, 2, 3)"""

    targeted = lambda value: f"CASE WHEN c.target_category IS NULL THEN NULL ELSE {value} END"
    frame = con.execute(f"""
        WITH {in_category("lines", "h")}, {in_category("views", "v")}
        SELECT p.customer_id, p.campaign_id, p.event_timestamp, {channels},
          (c.target_category IS NOT NULL)::INT AS has_target_category,
          {targeted("(h.target + 1.0) / (h.n + 8.0)")} AS target_category_share_365d,
          {targeted("h.target")} AS target_category_lines_365d,
          {targeted("(v.target + 1.0) / (v.n + 8.0)")} AS target_category_view_share_365d,
          {targeted("v.target")} AS target_category_views_365d
        FROM pairs p JOIN campaigns c USING (campaign_id)
        LEFT JOIN h USING (customer_id, campaign_id, event_timestamp)
        LEFT JOIN v USING (customer_id, campaign_id, event_timestamp)""").df()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def labelled_sends(
    sends: pd.DataFrame, orders: pd.DataFrame, spec: ModelSpec = CAMPAIGN_RESPONSE, data_end: pd.Timestamp | None = None
) -> pd.DataFrame:
    """(send_id, customer_id, campaign_id, event_timestamp = sent_at, treated, label) for sends whose
    window (sent_at, sent_at + horizon] ends by `data_end` (the latest event in any table; default:
    the last order). Sends whose window is not fully observed are counted in
    `out.attrs["unobserved_sends"]`, never dropped silently."""
    end = orders["ordered_at"].max() if data_end is None else data_end
    horizon = pd.Timedelta(days=spec.horizon_days)
    observed = sends["sent_at"] + horizon <= end
    frame = sends.loc[observed, ["send_id", "customer_id", "campaign_id", "sent_at", "group"]]
    con = duckdb.connect()
    con.register("s", frame)
    con.register("o", orders[["customer_id", "ordered_at"]])
    out = con.execute(f"""
        SELECT s.send_id, s.customer_id, s.campaign_id, s.sent_at AS event_timestamp,
               (s."group" = 'treatment')::INT AS treated,
               (count(o.ordered_at) > 0)::INT AS {spec.label}
        FROM s LEFT JOIN o ON o.customer_id = s.customer_id AND o.ordered_at > s.sent_at
         AND o.ordered_at <= s.sent_at + INTERVAL {spec.horizon_days} DAY
        GROUP BY ALL ORDER BY event_timestamp, send_id""").df()
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    out.attrs["unobserved_sends"] = int((~observed).sum())
    out.attrs["data_end"] = str(end)
    return out


def _classifier(seed: int, kind: str = "outcome") -> LGBMClassifier:
    return LGBMClassifier(
        **CAMPAIGN_RESPONSE.hyperparameters[kind],
        random_state=seed,
        n_jobs=1,
        verbose=-1,
    )


def _positive(classifier: LGBMClassifier | Pipeline, X: pd.DataFrame) -> np.ndarray:
    """P(y = 1 | X) as an array (LightGBM's stubs allow lists and sparse matrices)."""
    return np.asarray(classifier.predict_proba(X))[:, 1]


def _regressor(seed: int) -> LGBMRegressor:
    return LGBMRegressor(
        **CAMPAIGN_RESPONSE.hyperparameters["effect"],
        random_state=seed,
        n_jobs=1,
        verbose=-1,
    )


def _logistic() -> Pipeline:
    """A well-regularized logistic outcome model: what a practitioner fits first on a randomized
    experiment (median-imputed, standardized features)."""
    return make_pipeline(
        SimpleImputer(strategy="median"),
        StandardScaler(),
        LogisticRegression(**CAMPAIGN_RESPONSE.hyperparameters["logistic"]),
    )


LEARNERS = {
    "t": "T-learner on LightGBM",
    "x": "X-learner on LightGBM",
    "logistic_t": "T-learner on regularized logistic regression",
    "shallow_t": "T-learner on shallow LightGBM trees (4 leaves, >= 300 rows a leaf)",
    "transformed_outcome": "transformed-outcome (class transformation) regression on LightGBM",
    "dr": "DR-learner (doubly robust pseudo-outcome on cross-fitted LightGBM outcome models)",
}
DR_FOLDS = 3  # the DR-learner's nuisance cross-fitting: each row's mu0/mu1 come from models that never saw it


class UpliftModel(BaseEstimator):
    """An uplift learner (`LEARNERS`); fit(X, treated, y), predict(X) -> uplift,
    predict_outcomes(X) -> DataFrame p_treated, p_control, uplift.

    Every learner fits mu1_ = P(y | X, contacted) and mu0_ = P(y | X, not contacted) (LightGBM, or
    logistic regression for "logistic_t", 4-leaf trees for "shallow_t"); "t"/"logistic_t"/"shallow_t":
    uplift = mu1 - mu0. "x" also fits
    tau1_ on y - mu0_(X) (treated rows) and tau0_ on mu1_(X) - y (control rows), blended with the
    randomized treatment share e_: uplift = e_ * tau0 + (1 - e_) * tau1. "transformed_outcome"
    regresses z = y (t - e) / (e (1 - e)), whose expectation given X is the uplift; "dr" regresses
    the doubly robust pseudo-outcome built from cross-fitted mu0/mu1 (`_dr_pseudo_outcome`).
    """

    def __init__(self, learner: str = "x", seed: int = 0) -> None:
        self.learner = learner
        self.seed = seed

    def fit(self, X: pd.DataFrame, treated: np.ndarray, y: np.ndarray) -> UpliftModel:
        if self.learner not in LEARNERS:
            raise ValueError(f"learner: unknown '{self.learner}' (choose one of {', '.join(LEARNERS)})")
        treated, y = np.asarray(treated).astype(bool), np.asarray(y).astype(int)
        if y[treated].min() == y[treated].max() or y[~treated].min() == y[~treated].max():
            raise ValueError("uplift: both groups need both outcomes")
        self.feature_names_in_ = np.array(list(X.columns), dtype=object)
        self.e_ = float(treated.mean())
        kind = "shallow" if self.learner == "shallow_t" else "outcome"
        outcome = _logistic if self.learner == "logistic_t" else None
        self.mu1_ = (outcome() if outcome else _classifier(self.seed, kind)).fit(X[treated], y[treated])
        self.mu0_ = (outcome() if outcome else _classifier(self.seed + 1, kind)).fit(X[~treated], y[~treated])
        if self.learner == "x":
            d1 = y[treated] - _positive(self.mu0_, X[treated])
            d0 = _positive(self.mu1_, X[~treated]) - y[~treated]
            self.tau1_ = _regressor(self.seed + 2).fit(X[treated], d1)
            self.tau0_ = _regressor(self.seed + 3).fit(X[~treated], d0)
        if self.learner == "transformed_outcome":
            z = y * (treated - self.e_) / (self.e_ * (1 - self.e_))
            self.tau_ = _regressor(self.seed + 4).fit(X, z)
        if self.learner == "dr":
            self.tau_ = _regressor(self.seed + 5).fit(X, self._dr_pseudo_outcome(X, treated, y))
        return self

    def _dr_pseudo_outcome(self, X: pd.DataFrame, treated: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Kennedy's DR-learner pseudo-outcome mu1 - mu0 + t (y - mu1) / e - (1 - t)(y - mu0) / (1 - e),
        with mu0/mu1 cross-fitted (DR_FOLDS folds) and e the randomized treatment share: its
        expectation given X is the uplift even where an outcome model is wrong."""
        from sklearn.model_selection import StratifiedKFold

        mu1, mu0 = np.zeros(len(y)), np.zeros(len(y))
        strata = treated * 2 + y  # every fold keeps both groups and both outcomes
        folds = StratifiedKFold(DR_FOLDS, shuffle=True, random_state=self.seed)
        for k, (fit_rows, held) in enumerate(folds.split(X, strata)):
            t_fit, c_fit = fit_rows[treated[fit_rows]], fit_rows[~treated[fit_rows]]
            arm1 = _classifier(self.seed + 10 + k).fit(X.iloc[t_fit], y[t_fit])
            arm0 = _classifier(self.seed + 20 + k).fit(X.iloc[c_fit], y[c_fit])
            mu1[held], mu0[held] = _positive(arm1, X.iloc[held]), _positive(arm0, X.iloc[held])
        e = self.e_
        return mu1 - mu0 + treated * (y - mu1) / e - (~treated) * (y - mu0) / (1 - e)

    def predict_outcomes(self, X: pd.DataFrame) -> pd.DataFrame:
        X = X[list(self.feature_names_in_)]
        p_t, p_c = _positive(self.mu1_, X), _positive(self.mu0_, X)
        uplift = p_t - p_c
        if self.learner == "x":
            uplift = self.e_ * np.asarray(self.tau0_.predict(X)) + (1 - self.e_) * np.asarray(self.tau1_.predict(X))
        elif self.learner in ("transformed_outcome", "dr"):
            uplift = np.asarray(self.tau_.predict(X))
        return pd.DataFrame({"p_treated": p_t, "p_control": p_c, "uplift": uplift}, index=X.index)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_outcomes(X)["uplift"].to_numpy()


def decisions(outcomes: pd.DataFrame, min_uplift: float = MIN_UPLIFT, contactable=None) -> pd.DataFrame:
    """Adds `target` (contact when uplift > min_uplift and, when given, the channel's consent allows:
    `contactable` is a bool array aligned with `outcomes`) and `expected_incremental_conversions`
    (the uplift of a targeted customer, 0 for one not contacted)."""
    out = outcomes.copy()
    out["target"] = out["uplift"] > min_uplift
    if contactable is not None:
        out["target"] &= np.asarray(contactable, dtype=bool)
    out["expected_incremental_conversions"] = np.where(out["target"], out["uplift"], 0.0)
    return out
