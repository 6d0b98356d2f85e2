"""The product catalogue and the product sampler shared by orders and web events.

In: a seed. Out: a `Catalog` (products table + arrays) where a person's purchase is drawn as
category ~ affinity, then product ~ popularity within that category. truth/products_truth
holds `popularity_in_category`, so P(product) = affinity[category] * popularity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .common import floats, number_ids, rng_for, strings
from .reference import CATEGORIES, CATEGORY_NAMES, PRODUCT_WORDS

N_PRODUCTS = 400


@dataclass
class Catalog:
    table: pa.Table  # the raw products table
    product_id: pa.StringArray
    category: np.ndarray  # category index per product
    subcategory: np.ndarray  # subcategory name per product
    brand: np.ndarray
    price: np.ndarray
    popularity: np.ndarray  # within its category, sums to 1 per category
    offsets: np.ndarray  # products of category c are offsets[c]:offsets[c+1]
    cum_pop: list[np.ndarray]  # per category cumulative popularity


def make_catalog(seed: int) -> Catalog:
    """~400 products in 8 categories with subcategories, brands, prices and popularity."""
    rng = rng_for(seed, "catalog")
    shares = np.array([c[0] for c in CATEGORIES.values()])
    counts = np.floor(shares / shares.sum() * N_PRODUCTS).astype(int)
    counts[0] += N_PRODUCTS - counts.sum()
    cat, sub, brand, name, price, pop = [], [], [], [], [], []
    for c, (_name, (_, subs, brands, (lo, hi))) in enumerate(CATEGORIES.items()):
        k = counts[c]
        s = rng.integers(0, len(subs), k)
        b = rng.integers(0, len(brands), k)
        w = rng.integers(0, len(PRODUCT_WORDS), k)
        p = np.exp(rng.uniform(np.log(lo), np.log(hi), k))
        cat += [c] * k
        sub += [subs[i] for i in s]
        brand += [brands[i] for i in b]
        name += [
            f"{brands[bi]} {subs[si].title()} {PRODUCT_WORDS[wi]} {j + 1}"
            for j, (bi, si, wi) in enumerate(zip(b, s, w))
        ]
        price += list(np.where(p > 2, np.floor(p) + 0.99, np.round(p, 2)))
        zipf = 1.0 / np.arange(1, k + 1) ** 0.9
        pop += list(rng.permutation(zipf / zipf.sum()))
    category = np.array(cat)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    popularity = np.array(pop)
    ids = number_ids("SKU", np.arange(1, N_PRODUCTS + 1), 5)
    table = pa.table(
        {
            "product_id": ids,
            "name": strings(name),
            "category": strings([CATEGORY_NAMES[c] for c in category]),
            "subcategory": strings(sub),
            "brand": strings(brand),
            "price": floats(np.array(price)),
        }
    )
    cum = [np.cumsum(popularity[offsets[c] : offsets[c + 1]]) for c in range(len(CATEGORY_NAMES))]
    return Catalog(
        table,
        ids,
        category,
        np.array(sub, dtype=object),
        np.array(brand, dtype=object),
        np.array(price),
        popularity,
        offsets,
        cum,
    )


def sample_categories(rng: np.random.Generator, affinity: np.ndarray, person: np.ndarray) -> np.ndarray:
    """One category index per row, drawn from the row's person affinity."""
    u = rng.random(len(person))
    out = np.zeros(len(person), dtype=np.int64)
    acc = np.zeros(len(person))
    for c in range(affinity.shape[1] - 1):
        acc += affinity[person, c]
        out += u >= acc
    return out


def sample_in_category(rng: np.random.Generator, catalog: Catalog, category: np.ndarray) -> np.ndarray:
    """One product index per row, drawn by popularity within the row's category."""
    out = np.zeros(len(category), dtype=np.int64)
    u = rng.random(len(category))
    for c, cum in enumerate(catalog.cum_pop):
        m = np.flatnonzero(category == c)
        out[m] = catalog.offsets[c] + np.minimum(np.searchsorted(cum, u[m] * cum[-1], side="right"), len(cum) - 1)
    return out


def sample_products(rng: np.random.Generator, catalog: Catalog, affinity: np.ndarray, person: np.ndarray) -> np.ndarray:
    """Product index per row: category by the person's affinity, then popularity."""
    return sample_in_category(rng, catalog, sample_categories(rng, affinity, person))


def products_truth(catalog: Catalog) -> pa.Table:
    return pa.table(
        {
            "product_id": catalog.product_id,
            "category": strings([CATEGORY_NAMES[c] for c in catalog.category]),
            "popularity_in_category": floats(catalog.popularity),
            "price": floats(catalog.price),
        }
    )
