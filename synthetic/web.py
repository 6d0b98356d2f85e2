"""Web and app events: sessions on a person's devices, logged in or anonymous.

In: `Population`, `Identities`, `Catalog`. Out: the raw `web_events` table (Arrow, hidden
`_person`). Sessions arrive at a rate rising with engagement while the person is alive and
at a much lower rate after churn; events inside a session are product views (by category
affinity), searches, carts (often abandoned), wishlists and checkout starts.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .catalog import Catalog, sample_categories, sample_products
from .common import DAY, iso_timestamps, number_ids, rng_for, take, where_or_none
from .identities import Identities
from .people import Population
from .reference import CATEGORIES, CATEGORY_NAMES
from .trend import DISENGAGED_WEB_SHARE

EVENT_TYPES = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "wishlist_add",
    "checkout_start",
)
NEXT_EVENT_P = (0.18, 0.42, 0.12, 0.12, 0.03, 0.05, 0.08)
PRODUCT_EVENTS = (1, 3, 4, 5)
DEAD_SESSION_SHARE = 0.12


def _search_terms() -> tuple[list[str], np.ndarray]:
    terms, cat = [], []
    for c, (_, subs, brands, _) in enumerate(CATEGORIES.values()):
        for t in list(subs) + [b.lower() for b in brands] + [f"{CATEGORY_NAMES[c]} deals"]:
            terms.append(t)
            cat.append(c)
    return terms, np.array(cat)


def make_web_events(
    pop: Population, ids: Identities, catalog: Catalog, seed: int, start_s: int, stop_s: int
) -> pa.Table:
    rng = rng_for(seed, "web")
    begin = np.maximum(pop.signup_s, start_s)
    churn = np.clip(pop.churn_s, begin, stop_s)
    rate = 0.007 + 0.058 * pop.engagement
    # trend process: engaged sessions until disengagement, then fewer until churn
    engaged = churn if pop.disengage_s is None else np.clip(pop.disengage_s, begin, churn)
    n_alive = rng.poisson(rate * (engaged - begin) / DAY)
    n_dead = rng.poisson(DEAD_SESSION_SHARE * rate * (stop_s - churn) / DAY)
    idx = np.arange(pop.n)
    sp = np.concatenate([np.repeat(idx, n_alive), np.repeat(idx, n_dead)])
    lo = np.concatenate([np.repeat(begin, n_alive), np.repeat(churn, n_dead)])
    hi = np.concatenate([np.repeat(engaged, n_alive), np.full(n_dead.sum(), stop_s)])
    if pop.disengage_s is not None:
        n_dis = rng.poisson(DISENGAGED_WEB_SHARE * rate * (churn - engaged) / DAY)
        sp = np.concatenate([sp, np.repeat(idx, n_dis)])
        lo = np.concatenate([lo, np.repeat(engaged, n_dis)])
        hi = np.concatenate([hi, np.repeat(churn, n_dis)])
    s_start = lo + (rng.random(len(sp)) * (hi - lo)).astype(np.int64)
    order = np.lexsort((sp, s_start))
    sp, s_start = sp[order], s_start[order]
    n_s = len(sp)
    device = ids.devices[sp, (rng.random(n_s) * ids.n_devices[sp]).astype(int)]
    logged = (ids.account_s[sp] <= s_start) & (rng.random(n_s) < 0.55)
    n_ev = rng.geometric(0.28, n_s)
    ev_s = np.repeat(np.arange(n_s), n_ev)
    first = np.ones(len(ev_s), dtype=bool)
    first[1:] = ev_s[1:] != ev_s[:-1]
    gaps = np.where(first, 0, rng.exponential(70.0, len(ev_s)).astype(np.int64) + 1)
    cum = np.cumsum(gaps)
    t = s_start[ev_s] + cum - np.repeat(cum[np.cumsum(n_ev) - n_ev], n_ev)
    t = np.minimum(t, stop_s - 1)
    etype = rng.choice(len(EVENT_TYPES), len(ev_s), p=NEXT_EVENT_P)
    etype[first] = np.where(rng.random(first.sum()) < 0.8, 0, 2)
    person = sp[ev_s]
    product = np.full(len(ev_s), -1)
    is_prod = np.isin(etype, PRODUCT_EVENTS)
    product[is_prod] = sample_products(rng, catalog, pop.affinity, person[is_prod])
    category = np.where(is_prod, catalog.category[np.maximum(product, 0)], -1)
    cat_page = (etype == 0) & (rng.random(len(ev_s)) < 0.3)
    category[cat_page] = sample_categories(rng, pop.affinity, person[cat_page])
    terms, term_cat = _search_terms()
    is_search = etype == 2
    s_cat = sample_categories(rng, pop.affinity, person[is_search])
    count = np.bincount(term_cat, minlength=len(CATEGORY_NAMES))
    offset = np.concatenate([[0], np.cumsum(count)[:-1]])  # terms are grouped by category
    term = np.zeros(len(ev_s), dtype=np.int64)
    term[is_search] = offset[s_cat] + rng.integers(0, 1000, is_search.sum()) % count[s_cat]
    session_ids = number_ids("WS", np.arange(1, n_s + 1), 9)
    account = where_or_none(logged, ids.account[sp])
    return pa.table(
        {
            "event_id": number_ids("E", np.arange(1, len(ev_s) + 1), 10),
            "occurred_at": iso_timestamps(t),
            "device_id": pa.array(device, type=pa.string()).take(pa.array(ev_s)),
            "account_id": pa.array(account, type=pa.string()).take(pa.array(ev_s)),
            "session_id": session_ids.take(pa.array(ev_s)),
            "event_type": take(EVENT_TYPES, etype),
            "product_id": catalog.product_id.take(pa.array(np.maximum(product, 0), mask=product < 0)),
            "category": take(CATEGORY_NAMES, np.maximum(category, 0), category >= 0),
            "search_query": take(terms, term, is_search),
            "_person": pa.array(person.astype(np.int32)),
        }
    )
