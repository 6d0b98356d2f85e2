"""Evaluation against the synthetic ground truth (truth/), never used for training.

The person behind a customer_id is the one most of its records belong to; the oracle is that
person's true probability of no order in the horizon given their latent state at the snapshot.
Labels are computed per *customer*, so identity errors (a person split in two, two people
merged) make labels that no person-level oracle can predict: the oracle is therefore also
reported on the identity-clean rows (customer = exactly one whole person), where it is the
ceiling a churn model can approach.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from cdp.workspace import Workspace


def customer_persons(ws: Workspace) -> pd.DataFrame:
    """Per customer_id: its majority person and whether it is identity-clean."""
    truth = pd.read_parquet(ws.truth / "record_persons.parquet")
    identity = pd.read_parquet(
        ws.identity / "identity_map.parquet", columns=["source_table", "source_key", "customer_id"]
    )
    joined = identity.merge(truth, on=["source_table", "source_key"])
    counts = joined.groupby(["customer_id", "person_id"]).size().rename("n").reset_index()
    best = (
        counts.sort_values(["customer_id", "n", "person_id"], ascending=[True, False, True])
        .drop_duplicates("customer_id")
        .set_index("customer_id")
    )
    pure = counts.groupby("customer_id")["person_id"].nunique().eq(1)
    orders = joined[joined["source_table"] == "orders"]
    whole = orders.groupby("person_id")["customer_id"].nunique().eq(1)  # all the person's orders here
    best["clean"] = pure.reindex(best.index, fill_value=False) & best["person_id"].map(whole).eq(True)
    return best[["person_id", "clean"]]


def churn_oracle(ws: Workspace, horizon_days: int = 90) -> Callable[[pd.DataFrame, np.ndarray], dict] | None:
    """A function (validation rows with `label`, model scores) -> oracle metrics; None without truth."""
    if not (ws.truth / "persons.parquet").exists():
        return None

    def evaluate(rows: pd.DataFrame, score: np.ndarray) -> dict[str, float]:
        from cdp.synthetic.oracle import load_trend_truth, true_churn_probability

        persons = pd.read_parquet(ws.truth / "persons.parquet")
        sends_path = ws.truth / "sends_truth.parquet"
        sends = pd.read_parquet(sends_path) if sends_path.exists() else None
        mapping = customer_persons(ws)
        keyed = pd.DataFrame(
            {
                "person_id": rows["customer_id"].map(mapping["person_id"]).to_numpy(),
                "event_timestamp": rows["event_timestamp"].to_numpy(),
            }
        )
        pairs = keyed.dropna().drop_duplicates(ignore_index=True)  # a split person appears twice
        pairs["p"] = true_churn_probability(
            persons,
            pairs["person_id"].to_numpy(),
            pairs["event_timestamp"],
            horizon_days,
            sends=sends,
            trend=load_trend_truth(ws.truth),
        )
        truth_p = keyed.merge(pairs, on=["person_id", "event_timestamp"], how="left")["p"].to_numpy(float)
        label = rows["label"].to_numpy()
        usable = ~np.isnan(truth_p)
        clean = usable & rows["customer_id"].map(mapping["clean"]).fillna(False).to_numpy(bool)
        from cdp.models.churn import expected_calibration_error

        return {
            "roc_auc": float(roc_auc_score(label[usable], truth_p[usable])),
            "ece": expected_calibration_error(label[usable], truth_p[usable]),
            "brier": float(np.mean((truth_p[usable] - label[usable]) ** 2)),
            "model_ece_same_rows": expected_calibration_error(label[usable], score[usable]),
            "clean_rows_ece": expected_calibration_error(label[clean], truth_p[clean]),
            "model_clean_rows_ece": expected_calibration_error(label[clean], score[clean]),
            "model_roc_auc_same_rows": float(roc_auc_score(label[usable], score[usable])),
            "clean_rows": int(clean.sum()),
            "clean_rows_roc_auc": float(roc_auc_score(label[clean], truth_p[clean])),
            "model_clean_rows_roc_auc": float(roc_auc_score(label[clean], score[clean])),
        }

    return evaluate
