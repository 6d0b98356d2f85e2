"""Next-best-product training and out-of-time evaluation against baselines and the oracle.

In:  Feast store (FeatureService next_best_product_v1), customer order lines, catalogue, snapshots.
Out: a fitted LGBMRanker logged + registered in MLflow (alias `champion` through the promotion
     gate) and metrics at 10 (hit rate, NDCG, MAP, catalogue coverage) for the model and, on the
     same customers, global popularity, the customer's own most-bought items, item-item
     co-purchase, and (with truth/) the oracle: P(category | person) x popularity in category.
Validation: the last snapshot whose 30-day window is complete; training snapshots end their
label window before it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cdp.models.next_best_product import (
    CANDIDATE_FEATURES,
    NEXT_BEST_PRODUCT,
    ItemStats,
    candidates,
    fit_ranker,
    item_stats,
    label_candidates,
    purchases_after,
    top_k,
)
from cdp.training.explain import explain
from cdp.training.gate import Reference
from cdp.training.model_card import log_model_card, next_best_product_card
from cdp.training.train import TrainResult, build_training_set
from cdp.workspace import Workspace

K = 10
TRAIN_SNAPSHOTS = 2
MAX_TRAIN_CUSTOMERS = 2000  # per training snapshot (keeps the 20k demo fit well under a minute)
MAX_VALID_CUSTOMERS = 4000


def rank_metrics(recs: pd.DataFrame, bought: pd.DataFrame, n_items: int, k: int = K) -> dict[str, float]:
    """hit_rate/ndcg/map at k and catalogue coverage; recs = (customer_id, product_id, rank),
    bought = the (customer_id, product_id) truth; customers are those in `bought`."""
    customers = bought["customer_id"].unique()
    recs = recs[(recs["rank"] <= k) & recs["customer_id"].isin(customers)]
    hits = recs.merge(bought.assign(hit=1), on=["customer_id", "product_id"], how="left").fillna({"hit": 0})
    hits = hits.sort_values(["customer_id", "rank"])
    hits["gain"] = hits["hit"] / np.log2(hits["rank"] + 1)
    hits["prec"] = hits.groupby("customer_id")["hit"].cumsum() / hits["rank"] * hits["hit"]
    per = hits.groupby("customer_id").agg(hit=("hit", "max"), dcg=("gain", "sum"), ap=("prec", "sum"))
    n_rel = bought.groupby("customer_id").size().clip(upper=k)
    ideal = n_rel.map(lambda n: float(np.sum(1 / np.log2(np.arange(2, n + 2)))))
    per = per.reindex(customers).fillna(0)
    return {
        f"hit_rate_at_{k}": float(per["hit"].mean()),
        f"ndcg_at_{k}": float((per["dcg"] / ideal.reindex(customers)).mean()),
        f"map_at_{k}": float((per["ap"] / n_rel.reindex(customers)).mean()),
        "coverage": float(recs["product_id"].nunique() / n_items),
    }


def _with_fill(primary: pd.DataFrame, customers: np.ndarray, popular: list[str], k: int = K) -> pd.DataFrame:
    """Top k per customer by `score`, filled with globally popular items (below any primary score)."""
    fill = pd.DataFrame(
        {
            "customer_id": np.repeat(customers, len(popular)),
            "product_id": np.tile(popular, len(customers)),
            "score": np.tile(-np.arange(1, len(popular) + 1, dtype=float), len(customers)),
        }
    )
    both = pd.concat([primary[["customer_id", "product_id", "score"]], fill]) if len(primary) else fill
    both = both.sort_values("score", ascending=False).drop_duplicates(["customer_id", "product_id"])
    return top_k(both, both["score"].to_numpy(), k)


def baselines(lines: pd.DataFrame, stats, customers: np.ndarray, as_of: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Global popularity (90 days), own most-bought (all history), item-item co-purchase."""
    popular = (
        stats.items.sort_values(["item_pop_90d", "product_id"], ascending=[False, True])["product_id"].head(K).tolist()
    )
    empty = pd.DataFrame(columns=["customer_id", "product_id", "score"])
    past = lines[(lines["ordered_at"] < as_of) & lines["customer_id"].isin(customers)]
    own = past.groupby(["customer_id", "product_id"]).size().rename("score").reset_index().astype({"score": float})
    recent = past[past["ordered_at"] >= as_of - pd.Timedelta(days=365)]
    owned = recent.groupby(["customer_id", "product_id"]).size().rename("n").reset_index()
    cooc = (
        owned.merge(stats.neighbours, on="product_id")
        .assign(score=lambda f: f["similarity"] * np.log1p(f["n"]))
        .groupby(["customer_id", "neighbour_id"])["score"]
        .sum()
        .reset_index()
        .rename(columns={"neighbour_id": "product_id"})
    )
    return {
        "popularity": _with_fill(empty, customers, popular),
        "own_most_bought": _with_fill(own, customers, popular),
        "item_item": _with_fill(cooc, customers, popular),
    }


def oracle_recs(ws: Workspace, stats, customers: np.ndarray) -> pd.DataFrame | None:
    """Top k by the true next-purchase probability P(category | person) x popularity_in_category."""
    if not (ws.truth / "next_purchase.parquet").exists():
        return None
    from cdp.training.oracle import customer_persons

    persons = customer_persons(ws)["person_id"]
    truth = pd.read_parquet(ws.truth / "next_purchase.parquet")
    products = pd.read_parquet(
        ws.truth / "products_truth.parquet", columns=["product_id", "category", "popularity_in_category"]
    )
    products = products[products["product_id"].isin(stats.items["product_id"])]
    who = pd.DataFrame({"customer_id": customers, "person_id": pd.Series(customers).map(persons).to_numpy()}).dropna()
    frame = who.merge(truth, on="person_id").merge(products, on="category")
    frame["score"] = frame["probability"] * frame["popularity_in_category"]
    return top_k(frame, frame["score"].to_numpy(), K)


def snapshot_frame(store, lines, products, as_of, customers, label) -> tuple[pd.DataFrame, ItemStats]:
    stats = item_stats(lines, products, as_of)
    frame = candidates(lines, stats, customers)
    frame = label_candidates(frame, purchases_after(lines, as_of, NEXT_BEST_PRODUCT.horizon_days), label)
    entities = pd.DataFrame({"customer_id": sorted(frame["customer_id"].unique())})
    entities["event_timestamp"] = pd.Timestamp(as_of).tz_convert("UTC")
    entities["event_timestamp"] = entities["event_timestamp"].astype("datetime64[us, UTC]")
    customer_features = build_training_set(store, NEXT_BEST_PRODUCT, entities)
    frame = frame.merge(customer_features, on="customer_id", how="left")
    return frame, stats


def eligible_customers(lines: pd.DataFrame, as_of: pd.Timestamp, limit: int, seed: int) -> np.ndarray:
    """Customers with a line in the year before as_of and one in the label window (sampled)."""
    before = lines[(lines["ordered_at"] < as_of) & (lines["ordered_at"] >= as_of - pd.Timedelta(days=365))]
    after = purchases_after(lines, as_of, NEXT_BEST_PRODUCT.horizon_days)
    both = np.intersect1d(before["customer_id"].unique(), after["customer_id"].unique())
    if len(both) > limit:
        both = np.sort(np.random.default_rng(seed).choice(both, limit, replace=False))
    return both


def customer_feature_columns(frame: pd.DataFrame) -> list[str]:
    skip = {"customer_id", "product_id", "category", "event_timestamp", NEXT_BEST_PRODUCT.label, *CANDIDATE_FEATURES}
    return [c for c in frame.columns if c not in skip]


@dataclass
class Holdout:
    """The out-of-time snapshot: candidate rows, item stats, customers and what they bought next."""

    at: pd.Timestamp
    valid: pd.DataFrame
    stats: ItemStats
    customers: np.ndarray
    bought: pd.DataFrame

    def evaluate(self, ranker) -> dict[str, float]:
        scores = ranker.predict(self.valid[list(ranker.feature_name_)])
        return rank_metrics(top_k(self.valid, scores, K), self.bought, len(self.stats.items))


def train_next_best_product(
    ws: Workspace,
    store,
    lines: pd.DataFrame,
    products: pd.DataFrame,
    snapshots: list[pd.Timestamp],
    data_end: pd.Timestamp,
    progress=None,
    seed: int = 0,
) -> TrainResult:
    """Candidates + LGBMRanker trained on earlier snapshots, evaluated on the latest complete one
    against popularity, own-most-bought, item-item and (synthetic data) the oracle; gated, registered."""
    spec, step = NEXT_BEST_PRODUCT, progress or (lambda *_: None)
    train_at, valid_at = _snapshots(snapshots, data_end)
    step("candidates + point-in-time features", 1, 4)
    train = _training_rows(store, lines, products, train_at, seed)
    holdout = _holdout(store, lines, products, valid_at, seed)
    features = CANDIDATE_FEATURES + customer_feature_columns(holdout.valid)
    step("fit LGBMRanker (lambdarank)", 2, 4)
    started = time.perf_counter()
    model = fit_ranker(train, features, spec.label, seed)
    fit_seconds = time.perf_counter() - started
    metrics = holdout.evaluate(model)
    compared = _compared(ws, lines, holdout)
    candidate_recall = float(holdout.valid[spec.label].sum() / len(holdout.bought))
    step("log to MLflow", 3, 4)
    run_id, version, gate = _log_and_register(
        ws, model, train, holdout, features, train_at, metrics, compared, candidate_recall, fit_seconds
    )
    step("registered", 4, 4)
    return TrainResult(
        model_name=spec.name,
        version=version,
        run_id=run_id,
        metrics=metrics,
        train_rows=len(train),
        valid_rows=len(holdout.valid),
        train_snapshots=[f"{t:%Y-%m-%d}" for t in train_at],
        valid_snapshot=f"{valid_at:%Y-%m-%d}",
        oracle=compared.pop("oracle", {}),
        extra={"baselines": compared, "candidate_recall": candidate_recall, "promotion": gate},
    )


def _snapshots(snapshots: list[pd.Timestamp], data_end: pd.Timestamp) -> tuple[list[pd.Timestamp], pd.Timestamp]:
    """(training snapshots, the held-out one): the latest snapshot whose 30-day window is observed."""
    horizon = pd.Timedelta(days=NEXT_BEST_PRODUCT.horizon_days)
    complete = [s for s in snapshots if s + horizon <= data_end]
    if len(complete) < 2:
        raise ValueError("next_best_product: need two snapshots with a complete 30-day window")
    valid_at = complete[-1]
    return [s for s in complete if s + horizon <= valid_at][-TRAIN_SNAPSHOTS:], valid_at


def _training_rows(store, lines, products, train_at: list[pd.Timestamp], seed: int) -> pd.DataFrame:
    """Candidate rows per training snapshot; only customers with a bought candidate (a ranking needs one)."""
    label = NEXT_BEST_PRODUCT.label
    parts = []
    for i, as_of in enumerate(train_at):
        customers = eligible_customers(lines, as_of, MAX_TRAIN_CUSTOMERS, seed + i)
        frame, _ = snapshot_frame(store, lines, products, as_of, customers, label)
        parts.append(frame.assign(event_timestamp=as_of))
    train = pd.concat(parts, ignore_index=True)
    return train[train.groupby(["event_timestamp", "customer_id"])[label].transform("max") > 0]


def _holdout(store, lines, products, valid_at: pd.Timestamp, seed: int) -> Holdout:
    spec = NEXT_BEST_PRODUCT
    customers = eligible_customers(lines, valid_at, MAX_VALID_CUSTOMERS, seed + 99)
    valid, stats = snapshot_frame(store, lines, products, valid_at, customers, spec.label)
    bought = purchases_after(lines, valid_at, spec.horizon_days)
    return Holdout(valid_at, valid, stats, customers, bought[bought["customer_id"].isin(customers)])


def _compared(ws: Workspace, lines: pd.DataFrame, holdout: Holdout) -> dict[str, dict[str, float]]:
    """The simple rankings (and the oracle on synthetic data) on the same customers."""
    n_items = len(holdout.stats.items)
    compared = {
        name: rank_metrics(recs, holdout.bought, n_items)
        for name, recs in baselines(lines, holdout.stats, holdout.customers, holdout.at).items()
    }
    oracle = oracle_recs(ws, holdout.stats, holdout.customers)
    if oracle is not None:
        compared["oracle"] = rank_metrics(oracle, holdout.bought, n_items)
    return compared


def _log_and_register(
    ws: Workspace,
    model,
    train: pd.DataFrame,
    holdout: Holdout,
    features: list[str],
    train_at: list[pd.Timestamp],
    metrics: dict[str, float],
    compared: dict[str, dict[str, float]],
    candidate_recall: float,
    fit_seconds: float,
) -> tuple[str, str, dict]:
    """The MLflow run: params, metrics vs baselines, plots, then the gate. -> (run id, version, gate)."""
    import mlflow

    from cdp.training.tracking import register_run_model, set_experiment
    from cdp.workspace import use_workspace

    spec, valid = NEXT_BEST_PRODUCT, holdout.valid
    use_workspace(ws)
    set_experiment(ws, spec.name)
    with mlflow.start_run(run_name=f"{spec.name}-{holdout.at:%Y%m%d}") as run:
        mlflow.log_params(
            {
                "feature_service": spec.feature_service,
                "label": spec.label,
                "horizon_days": spec.horizon_days,
                "estimator": "LGBMRanker(lambdarank) over candidates: history, co-purchase, category, popularity",
                "n_features": len(features),
                "train_rows": len(train),
                "valid_rows": len(valid),
                "train_snapshots": ",".join(f"{t:%Y-%m-%d}" for t in train_at),
                "valid_snapshot": f"{holdout.at:%Y-%m-%d}",
                "valid_customers": len(holdout.customers),
            }
        )
        mlflow.log_metrics(
            {
                **metrics,
                "candidate_recall": candidate_recall,
                "fit_seconds": fit_seconds,
                **{f"{name}_{m}": v for name, ms in compared.items() for m, v in ms.items()},
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            plot = _comparison_plot({"model": metrics, **compared}, Path(tmp) / "ndcg_vs_baselines.png")
            plots = [plot, *explain(model, valid[features], Path(tmp), "next best product")]
            sample = valid[features].head(50)
            version, gate = register_run_model(
                spec,
                model,
                metrics[spec.primary_metric],
                features,
                plots,
                sample,
                model.predict(sample),
                lambda champion: holdout.evaluate(champion)[spec.primary_metric],
                train["customer_id"],
                ws=ws,
                metrics=metrics,
                evaluate_model=holdout.evaluate,
                baseline=Reference(
                    "popularity (top sellers of the last 90 days)", compared["popularity"][spec.primary_metric]
                ),
            )
            log_model_card(
                next_best_product_card(run.info.run_id, version, gate, train, holdout, metrics, compared, plots)
            )
    return run.info.run_id, version, gate


def _comparison_plot(results: dict[str, dict[str, float]], path: Path) -> Path:
    from cdp.training.evaluate import plt, save_figure

    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(results)
    ax.bar(names, [results[n][f"ndcg_at_{K}"] for n in names], color=["C0"] + ["grey"] * (len(names) - 1))
    ax.set(ylabel=f"NDCG@{K}", title="Next best product: out-of-time NDCG@10")
    ax.tick_params(axis="x", rotation=30)
    return save_figure(fig, path)
