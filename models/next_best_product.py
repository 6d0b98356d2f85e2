"""Next best product: two-stage recommender (candidate generation + LightGBM lambdarank).

In:  customer-attached order lines (customer_id, order_id, ordered_at, product_id, category,
     quantity), the product catalogue, an `as_of` time. Everything is computed from lines
     strictly before `as_of` (point in time), so training, evaluation and serving share it.
Out: `ItemStats` (item popularity, co-purchase neighbours, repeatability) and a candidate frame:
     one row per (customer_id, product_id) with the candidate features the ranker reads.
     Customer features come from Feast (FeatureService `next_best_product_v1`) and are joined
     on customer_id by the caller. Label: the customer buys the product in [as_of, as_of + 30d).

Candidate sources per customer: their own items (last 365 days), item-item co-purchase
neighbours of those items, the most popular items of their top categories, global popularity.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from lightgbm import LGBMRanker

from cdp.models.spec import ModelSpec

NEXT_BEST_PRODUCT = ModelSpec(
    name="next_best_product",
    feature_service="next_best_product_v1",
    label="purchased_30d",
    objective="lambdarank",
    horizon_days=30,
    primary_metric="ndcg_at_10",
    hyperparameters={
        "objective": "lambdarank",
        "n_estimators": 150,
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_child_samples": 50,
        "colsample_bytree": 0.8,
        "lambdarank_truncation_level": 20,
    },
)
HISTORY_DAYS = 365
NEIGHBOURS = 20  # co-purchase neighbours kept per item
COOC_CANDIDATES = 25  # neighbour candidates per customer
TOP_CATEGORIES = 3  # categories per customer for category-affinity candidates
PER_CATEGORY = 15  # popular items per affinity category
POPULAR = 20  # global popularity candidates
REPEATABLE_RATE = 0.15  # an item is "repeatable" when >= this share of its buyers bought it twice
# the ranker's candidate features (computed at training and request time, not Feast fields), in words
CANDIDATE_DESCRIPTIONS = {
    "cust_item_lines_365d": "Times the customer bought this product (365 days)",
    "cust_item_days_since": "Days since the customer last bought this product",
    "cooc_score": "Bought together with the customer's products",
    "cust_cat_share": "Customer's share of purchases in this category",
    "cust_cat_lines_365d": "Customer's purchases in this category (365 days)",
    "cust_lines_365d": "Customer's purchases (365 days)",
    "item_pop_90d": "Product's share of all purchases (90 days)",
    "item_pop_365d": "Product's share of all purchases (365 days)",
    "item_pop_in_cat": "Product's share of its category's purchases",
    "item_price": "Product's price",
    "item_repeat_rate": "Share of the product's buyers who buy it again",
    "cat_pop_365d": "Category's share of all purchases (365 days)",
    "src_history": "Candidate from the customer's own history",
    "src_cooc": "Candidate from co-purchases",
    "src_category": "Candidate from the customer's favourite categories",
    "src_popular": "Candidate from the best sellers",
}
CANDIDATE_FEATURES = list(CANDIDATE_DESCRIPTIONS)


@dataclass
class ItemStats:
    """Item-level facts as of a time (from lines before it)."""

    as_of: pd.Timestamp
    items: pd.DataFrame  # product_id, category, item_price, item_pop_90d, item_pop_365d, item_pop_in_cat, ...
    neighbours: pd.DataFrame  # product_id, neighbour_id, similarity (top NEIGHBOURS per item)


def customer_order_lines(ws) -> pd.DataFrame:
    """(customer_id, order_id, ordered_at, product_id, category, quantity) for resolved customers."""
    from cdp.features.timeline import attach_customers

    identity_map = pd.read_parquet(ws.identity / "identity_map.parquet")
    orders = attach_customers(ws, "orders", "order_id", ["ordered_at"], identity_map)
    lines = pd.read_parquet(ws.staged / "order_lines.parquet", columns=["order_id", "product_id", "quantity"])
    products = catalogue(ws)[["product_id", "category"]]
    return (
        lines.astype({"order_id": str, "product_id": str})
        .merge(products, on="product_id", how="left")
        .merge(orders[["order_id", "customer_id", "ordered_at"]], on="order_id")
    )


def catalogue(ws) -> pd.DataFrame:
    """The products on sale (product_id, category, price): what may be recommended."""
    products = pd.read_parquet(ws.staged / "products.parquet", columns=["product_id", "category", "price"])
    return products.astype({"product_id": str}).drop_duplicates("product_id")


def _con(lines: pd.DataFrame, as_of: pd.Timestamp) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    past = lines.loc[
        (lines["ordered_at"] < as_of) & (lines["ordered_at"] >= as_of - pd.Timedelta(days=HISTORY_DAYS)),
        ["customer_id", "product_id", "category", "ordered_at"],
    ]
    con.register("hist", past)
    return con


def item_stats(lines: pd.DataFrame, products: pd.DataFrame, as_of: pd.Timestamp) -> ItemStats:
    """Popularity (90/365 days, within category), repeat rate and co-purchase neighbours."""
    as_of = pd.Timestamp(as_of)
    con = _con(lines, as_of)
    con.register("products", products)
    items = con.execute(f"""
        WITH counts AS (
          SELECT product_id, count(*) AS n365,
                 count(*) FILTER (ordered_at >= TIMESTAMP '{as_of:%Y-%m-%d %H:%M:%S}' - INTERVAL 90 DAY) AS n90
          FROM hist GROUP BY 1),
        buyers AS (
          SELECT product_id, avg((n > 1)::INT) AS item_repeat_rate
          FROM (SELECT product_id, customer_id, count(*) AS n FROM hist GROUP BY 1, 2) GROUP BY 1)
        SELECT p.product_id, p.category, p.price AS item_price,
          coalesce(c.n90, 0) / greatest(sum(coalesce(c.n90, 0)) OVER (), 1) AS item_pop_90d,
          coalesce(c.n365, 0) / greatest(sum(coalesce(c.n365, 0)) OVER (), 1) AS item_pop_365d,
          coalesce(c.n365, 0) / greatest(sum(coalesce(c.n365, 0)) OVER (PARTITION BY p.category), 1) AS item_pop_in_cat,
          sum(coalesce(c.n365, 0)) OVER (PARTITION BY p.category)
            / greatest(sum(coalesce(c.n365, 0)) OVER (), 1) AS cat_pop_365d,
          coalesce(b.item_repeat_rate, 0) AS item_repeat_rate
        FROM products p LEFT JOIN counts c USING (product_id) LEFT JOIN buyers b USING (product_id)
        ORDER BY item_pop_365d DESC, product_id""").df()
    neighbours = con.execute(f"""
        WITH owned AS (SELECT DISTINCT customer_id, product_id FROM hist),
        n AS (SELECT product_id, count(*) AS buyers FROM owned GROUP BY 1),
        pairs AS (
          SELECT a.product_id, b.product_id AS neighbour_id, count(*) AS both_
          FROM owned a JOIN owned b ON a.customer_id = b.customer_id AND a.product_id <> b.product_id
          GROUP BY 1, 2)
        SELECT product_id, neighbour_id, similarity FROM (
          SELECT p.product_id, p.neighbour_id, p.both_ / sqrt(na.buyers * nb.buyers) AS similarity,
                 row_number() OVER (PARTITION BY p.product_id ORDER BY p.both_ / sqrt(na.buyers * nb.buyers) DESC,
                                    p.neighbour_id) AS rk
          FROM pairs p JOIN n na ON na.product_id = p.product_id JOIN n nb ON nb.product_id = p.neighbour_id)
        WHERE rk <= {NEIGHBOURS}""").df()
    return ItemStats(as_of=as_of, items=items, neighbours=neighbours)


def candidates(lines: pd.DataFrame, stats: ItemStats, customer_ids: list[str] | pd.Index) -> pd.DataFrame:
    """One row per (customer_id, product_id) candidate with CANDIDATE_FEATURES (as of stats.as_of).

    Customers without history before as_of still get category-free popularity candidates."""
    con = _con(lines, stats.as_of)
    con.register("items", stats.items)
    con.register("nbrs", stats.neighbours)
    con.register("customers", pd.DataFrame({"customer_id": pd.Index(customer_ids).astype(str).unique()}))
    return con.execute(_candidate_sql(stats.as_of)).df()


class CandidateIndex:
    """`candidates()` answered from memory, for online serving.

    Candidate features depend only on order lines before `stats.as_of`, so they are computed once,
    in one batch query, for every customer with lines in the history window. Customers without
    lines all get the same rows (popularity and catalogue-mix categories): one template serves
    them. A call is then a slice, not a query (~30 ms per DuckDB query here -> well under 1 ms)."""

    NO_HISTORY = "\x00no-history"

    def __init__(self, lines: pd.DataFrame, stats: ItemStats) -> None:
        history = lines.loc[
            (lines["ordered_at"] < stats.as_of)
            & (lines["ordered_at"] >= stats.as_of - pd.Timedelta(days=HISTORY_DAYS)),
            "customer_id",
        ]
        customers = sorted(history.astype(str).unique())
        table = candidates(lines, stats, [*customers, self.NO_HISTORY])
        ids = table["customer_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        stops = np.r_[starts[1:], len(ids)]
        self.table = table
        self.rows = {ids[a]: (a, b) for a, b in zip(starts, stops)}
        self.numeric = {c: table[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in CANDIDATE_FEATURES}
        self.product_ids = table["product_id"].to_numpy()
        self.categories = table["category"].to_numpy()

    def recommend_one(
        self,
        ranker,
        customer_id: str,
        customer_features: dict[str, float],
        k: int,
        catalogue_ids: set[str],
        exclude_owned: bool = False,
    ) -> pd.DataFrame:
        """`recommend()` for one customer without building frames: the ranker's input matrix is
        sliced from precomputed columns plus the customer's features broadcast (same result, ~1 ms).
        Returns (product_id, category, score, rank)."""
        return self.recommend_many(ranker, {customer_id: customer_features}, k, catalogue_ids, exclude_owned)[
            customer_id
        ]

    def recommend_many(
        self,
        ranker,
        customer_features: dict[str, dict[str, float]],
        k: int,
        catalogue_ids: set[str],
        exclude_owned: bool = False,
    ) -> dict[str, pd.DataFrame]:
        """`recommend_one` for several customers with one ranker call over their stacked candidates."""
        names = list(ranker.feature_name_)
        blocks = {c: self._candidate_rows(c, catalogue_ids, exclude_owned) for c in customer_features}
        total = sum(len(rows) for rows in blocks.values())
        matrix = np.empty((total, len(names)), dtype=np.float64)
        at = 0
        for customer_id, rows in blocks.items():
            for j, name in enumerate(names):
                matrix[at : at + len(rows), j] = (
                    self.numeric[name][rows]
                    if name in self.numeric
                    else customer_features[customer_id].get(name, np.nan)
                )
            at += len(rows)
        scores = ranker.booster_.predict(matrix, num_threads=1) if total else np.empty(0)
        out, at = {}, 0
        for customer_id, rows in blocks.items():
            score, at = scores[at : at + len(rows)], at + len(rows)
            # top_k's order: score descending, then product_id ascending
            order = np.lexsort((self.product_ids[rows], -score))[:k]
            out[customer_id] = pd.DataFrame(
                {
                    "product_id": self.product_ids[rows][order],
                    "category": self.categories[rows][order],
                    "score": score[order],
                    "rank": np.arange(1, len(order) + 1),
                }
            )
        return out

    def _candidate_rows(self, customer_id: str, catalogue_ids: set[str], exclude_owned: bool) -> np.ndarray:
        a, b = self.rows.get(customer_id) or self.rows[self.NO_HISTORY]
        keep = np.fromiter((p in catalogue_ids for p in self.product_ids[a:b]), dtype=bool, count=b - a)
        if exclude_owned:
            keep &= ~(
                (self.numeric["cust_item_lines_365d"][a:b] > 0)
                & (self.numeric["item_repeat_rate"][a:b] < REPEATABLE_RATE)
            )
        return np.flatnonzero(keep) + a

    def candidates(self, customer_ids: list[str]) -> pd.DataFrame:
        parts = []
        for customer_id in dict.fromkeys(customer_ids):
            a, b = self.rows.get(customer_id) or self.rows[self.NO_HISTORY]
            part = self.table.iloc[a:b]
            parts.append(part if customer_id in self.rows else part.assign(customer_id=customer_id))
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)


def _candidate_sql(as_of: pd.Timestamp) -> str:
    """The candidate query over tables hist, items, nbrs and customers (see `candidates`)."""
    ts = f"TIMESTAMP '{as_of:%Y-%m-%d %H:%M:%S}'"
    return f"""
        WITH h AS (SELECT hist.* FROM hist JOIN customers USING (customer_id)),
        own AS (SELECT customer_id, product_id, count(*) AS cust_item_lines_365d,
                       date_diff('day', max(ordered_at), {ts}) AS cust_item_days_since
                FROM h GROUP BY 1, 2),
        tot AS (SELECT customer_id, count(*) AS cust_lines_365d FROM h GROUP BY 1),
        cat AS (SELECT customer_id, category, count(*) AS cust_cat_lines_365d FROM h GROUP BY 1, 2),
        cat_pop AS (SELECT DISTINCT category, cat_pop_365d FROM items),
        cat_share AS (  -- smoothed towards the catalogue mix with 5 pseudo-lines
          SELECT c.customer_id, p.category, coalesce(k.cust_cat_lines_365d, 0) AS cust_cat_lines_365d,
                 (coalesce(k.cust_cat_lines_365d, 0) + 5 * p.cat_pop_365d) / (coalesce(t.cust_lines_365d, 0) + 5)
                   AS cust_cat_share
          FROM customers c CROSS JOIN cat_pop p LEFT JOIN cat k ON k.customer_id = c.customer_id AND k.category = p.category
          LEFT JOIN tot t ON t.customer_id = c.customer_id),
        cooc AS (SELECT o.customer_id, n.neighbour_id AS product_id, sum(n.similarity * ln(1 + o.cust_item_lines_365d)) AS cooc_score
                 FROM own o JOIN nbrs n ON n.product_id = o.product_id GROUP BY 1, 2),
        cand_cooc AS (SELECT customer_id, product_id FROM (
                        SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY cooc_score DESC, product_id) AS rk
                        FROM cooc) WHERE rk <= {COOC_CANDIDATES}),
        top_cat AS (SELECT customer_id, category FROM (
                      SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY cust_cat_share DESC, category) AS rk
                      FROM cat_share) WHERE rk <= {TOP_CATEGORIES}),
        cat_items AS (SELECT product_id, category FROM (
                        SELECT *, row_number() OVER (PARTITION BY category ORDER BY item_pop_365d DESC, product_id) AS rk
                        FROM items) WHERE rk <= {PER_CATEGORY}),
        cand_cat AS (SELECT t.customer_id, i.product_id FROM top_cat t JOIN cat_items i USING (category)),
        popular AS (SELECT product_id FROM items ORDER BY item_pop_90d DESC, product_id LIMIT {POPULAR}),
        cand AS (
          SELECT customer_id, product_id, max(s = 1)::INT AS src_history, max(s = 2)::INT AS src_cooc,
                 max(s = 3)::INT AS src_category, max(s = 4)::INT AS src_popular
          FROM (SELECT customer_id, product_id, 1 AS s FROM own
                UNION ALL SELECT customer_id, product_id, 2 FROM cand_cooc
                UNION ALL SELECT customer_id, product_id, 3 FROM cand_cat
                UNION ALL SELECT c.customer_id, p.product_id, 4 FROM customers c CROSS JOIN popular p)
          GROUP BY 1, 2)
        SELECT c.customer_id, c.product_id, i.category,
          coalesce(o.cust_item_lines_365d, 0) AS cust_item_lines_365d, o.cust_item_days_since,
          coalesce(x.cooc_score, 0) AS cooc_score, s.cust_cat_share, s.cust_cat_lines_365d,
          coalesce(t.cust_lines_365d, 0) AS cust_lines_365d,
          i.item_pop_90d, i.item_pop_365d, i.item_pop_in_cat, i.item_price, i.item_repeat_rate, i.cat_pop_365d,
          c.src_history, c.src_cooc, c.src_category, c.src_popular
        FROM cand c JOIN items i USING (product_id)
        LEFT JOIN own o USING (customer_id, product_id)
        LEFT JOIN cooc x USING (customer_id, product_id)
        LEFT JOIN cat_share s ON s.customer_id = c.customer_id AND s.category = i.category
        LEFT JOIN tot t ON t.customer_id = c.customer_id
        ORDER BY c.customer_id, c.product_id"""


def purchases_after(lines: pd.DataFrame, as_of: pd.Timestamp, days: int) -> pd.DataFrame:
    """Distinct (customer_id, product_id) bought in [as_of, as_of + days): the out-of-time truth."""
    window = lines[(lines["ordered_at"] >= as_of) & (lines["ordered_at"] < as_of + pd.Timedelta(days=days))]
    return window[["customer_id", "product_id"]].drop_duplicates(ignore_index=True)


def label_candidates(frame: pd.DataFrame, bought: pd.DataFrame, label: str) -> pd.DataFrame:
    marked = bought.assign(**{label: 1})
    out = frame.merge(marked, on=["customer_id", "product_id"], how="left")
    out[label] = out[label].fillna(0).astype(int)
    return out


def build_ranker(seed: int = 0) -> LGBMRanker:
    # n_jobs=1: on a busy 2-core machine LightGBM's two OpenMP threads were ~6x slower than one.
    return LGBMRanker(
        **NEXT_BEST_PRODUCT.hyperparameters,
        random_state=seed,
        n_jobs=1,
        verbose=-1,
    )


def fit_ranker(train: pd.DataFrame, features: list[str], label: str, seed: int = 0) -> LGBMRanker:
    """Lambdarank over groups = (snapshot, customer); rows must be sorted by group."""
    train = train.sort_values(["event_timestamp", "customer_id"], kind="stable")
    groups = train.groupby(["event_timestamp", "customer_id"], sort=False).size().to_numpy()
    return build_ranker(seed).fit(train[features], train[label].to_numpy(), group=groups)


def top_k(frame: pd.DataFrame, score: np.ndarray, k: int) -> pd.DataFrame:
    """(customer_id, product_id, score, rank) for each customer's k best rows by score."""
    ranked = frame[["customer_id", "product_id"]].assign(score=score)
    ranked = ranked.sort_values(["customer_id", "score", "product_id"], ascending=[True, False, True], kind="stable")
    ranked["rank"] = ranked.groupby("customer_id").cumcount() + 1
    return ranked[ranked["rank"] <= k].reset_index(drop=True)


def apply_business_rules(frame: pd.DataFrame, catalogue_ids: set[str], exclude_owned: bool) -> pd.DataFrame:
    """Drop out-of-catalogue candidates; with exclude_owned also owned items that are not repeat buys."""
    keep = frame["product_id"].isin(catalogue_ids)
    if exclude_owned:
        keep &= ~((frame["cust_item_lines_365d"] > 0) & (frame["item_repeat_rate"] < REPEATABLE_RATE))
    return frame[keep]


def recommend(
    ranker, frame: pd.DataFrame, k: int, catalogue_ids: set[str], exclude_owned: bool = False
) -> pd.DataFrame:
    """Candidate rows with customer features -> each customer's top k after the business rules:
    (customer_id, product_id, score, rank). Shared by batch scoring and the HTTP service."""
    allowed = apply_business_rules(frame, catalogue_ids, exclude_owned)
    if allowed.empty:
        return pd.DataFrame(columns=["customer_id", "product_id", "score", "rank"])
    return top_k(allowed, ranker.predict(allowed[list(ranker.feature_name_)]), k)
