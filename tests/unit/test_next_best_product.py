"""Next best product: metrics, point-in-time candidates, business rules, the trained ranker vs.
baselines and the oracle, recommendations pushed back and served."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from cdp.models.next_best_product import (
    NEXT_BEST_PRODUCT,
    REPEATABLE_RATE,
    apply_business_rules,
    candidates,
    customer_order_lines,
    item_stats,
)
from cdp.training.ranking import rank_metrics
from cdp.training.tracking import CHAMPION
from cdp.workspace import use_workspace

T0 = pd.Timestamp("2025-03-01", tz="UTC")


def _lines(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "product_id", "category", "ordered_at"]).assign(
        ordered_at=lambda f: pd.to_datetime(f["ordered_at"], utc=True), order_id="o", quantity=1.0
    )


PRODUCTS = pd.DataFrame(
    {"product_id": ["p1", "p2", "p3", "p4"], "category": ["a", "a", "b", "b"], "price": [1.0, 2.0, 3.0, 4.0]}
)


def test_rank_metrics_by_hand():
    recs = pd.DataFrame(
        {"customer_id": ["c1", "c1", "c2", "c2"], "product_id": ["p1", "p2", "p3", "p4"], "rank": [1, 2, 1, 2]}
    )
    bought = pd.DataFrame({"customer_id": ["c1", "c2", "c2"], "product_id": ["p2", "p9", "p8"]})
    m = rank_metrics(recs, bought, n_items=8, k=10)
    assert m["hit_rate_at_10"] == pytest.approx(0.5)
    assert m["ndcg_at_10"] == pytest.approx((1 / np.log2(3)) / 2)  # c1: hit at rank 2; c2: nothing
    assert m["map_at_10"] == pytest.approx(0.5 / 2)
    assert m["coverage"] == pytest.approx(4 / 8)


def test_candidates_are_point_in_time():
    past = [("c1", "p1", "a", "2025-01-10"), ("c1", "p1", "a", "2025-02-10"), ("c2", "p3", "b", "2025-02-01")]
    future = [("c1", "p4", "b", "2025-03-05"), ("c2", "p2", "a", "2025-03-02")]
    with_future = _lines(past + future)
    stats = item_stats(with_future, PRODUCTS, T0)
    assert stats.items.set_index("product_id")["item_pop_365d"].to_dict() == pytest.approx(
        {"p1": 2 / 3, "p2": 0.0, "p3": 1 / 3, "p4": 0.0}
    )
    frame = candidates(with_future, stats, ["c1", "c2"])
    same = candidates(_lines(past), item_stats(_lines(past), PRODUCTS, T0), ["c1", "c2"])
    pd.testing.assert_frame_equal(frame, same)  # orders on or after the snapshot change nothing
    c1 = frame[frame["customer_id"] == "c1"].set_index("product_id")
    assert c1.loc["p1", "cust_item_lines_365d"] == 2 and c1.loc["p1", "src_history"] == 1
    assert c1.loc["p1", "cust_cat_share"] > c1.loc["p3", "cust_cat_share"]  # c1 buys category a


def test_business_rules():
    frame = pd.DataFrame(
        {
            "product_id": ["p1", "p2", "gone"],
            "cust_item_lines_365d": [2, 1, 0],
            "item_repeat_rate": [REPEATABLE_RATE + 0.1, REPEATABLE_RATE - 0.1, 0.5],
        }
    )
    assert apply_business_rules(frame, {"p1", "p2"}, exclude_owned=False)["product_id"].tolist() == ["p1", "p2"]
    assert apply_business_rules(frame, {"p1", "p2"}, exclude_owned=True)["product_id"].tolist() == ["p1"]


def test_ranker_beats_every_baseline_out_of_time(pipeline_ws, stage_results):
    result = stage_results["train_next_best_product"]
    ndcg = result["metrics"]["ndcg_at_10"]
    baselines = result["extra"]["baselines"]
    assert set(baselines) == {"popularity", "own_most_bought", "item_item"}
    assert all(ndcg > b["ndcg_at_10"] + 0.01 for b in baselines.values()), (ndcg, baselines)
    assert ndcg <= result["oracle"]["ndcg_at_10"] + 0.03  # the true purchase process bounds it (up to noise)
    assert all(
        pd.Timestamp(s) + pd.Timedelta(days=30) <= pd.Timestamp(result["valid_snapshot"])
        for s in result["train_snapshots"]
    )
    use_workspace(pipeline_ws)
    client = MlflowClient()
    version = client.get_model_version_by_alias(NEXT_BEST_PRODUCT.name, CHAMPION)
    assert str(version.version) == result["version"]  # first model: always champion
    assert "plots/ndcg_vs_baselines.png" in {a.path for a in client.list_artifacts(version.run_id, "plots")}


def test_top_category_shows_up_in_recommendations(pipeline_ws):
    recs = pd.read_parquet(pipeline_ws.features / "next_best_product_scores.parquet")
    as_of = pd.Timestamp(recs["event_timestamp"].iloc[0])
    lines = customer_order_lines(pipeline_ws)
    lines = lines[(lines["ordered_at"] < as_of) & (lines["ordered_at"] >= as_of - pd.Timedelta(days=365))]
    per_cat = lines.groupby(["customer_id", "category"]).size().rename("n").reset_index()
    totals = per_cat.groupby("customer_id")["n"].sum()
    top = per_cat.sort_values("n", ascending=False).drop_duplicates("customer_id").set_index("customer_id")
    clear = top[(totals.reindex(top.index) >= 8) & (top["n"] / totals.reindex(top.index) >= 0.4)]
    category = pd.read_parquet(pipeline_ws.staged / "products.parquet").set_index("product_id")["category"]
    served = recs.set_index("customer_id")["nbp_top_products"].reindex(clear.index).dropna()
    assert len(served) >= 20
    shown = [clear.loc[c, "category"] in {category[p] for p in products.split(",")} for c, products in served.items()]
    assert np.mean(shown) >= 0.95


def test_served_recommendations_match_batch_and_rules(pipeline_ws):
    os.environ["CDP_HOME"] = str(pipeline_ws.root)
    from cdp.serving.service import CustomerScores, NextBestProductRequest

    service = CustomerScores()
    batch = pd.read_parquet(pipeline_ws.features / "next_best_product_scores.parquet").sample(5, random_state=3)
    catalogue = set(pd.read_parquet(pipeline_ws.staged / "products.parquet")["product_id"])
    for customer_id, top in zip(batch["customer_id"], batch["nbp_top_products"]):
        body = service.next_best_product(NextBestProductRequest(customer_id=customer_id, k=10))
        assert [p["product_id"] for p in body["products"]] == top.split(",")  # online == offline: no skew
        short = service.next_best_product(NextBestProductRequest(customer_id=customer_id, k=3, exclude_owned=True))
        assert len(short["products"]) == 3 and {p["product_id"] for p in short["products"]} <= catalogue
    unknown = service.next_best_product(NextBestProductRequest(customer_id="cus_nobody"))
    assert unknown["products"] == [] and "unknown customer_id" in unknown["errors"][0]["error"]
