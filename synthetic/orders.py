"""Orders and order lines.

In: `Population`, `Identities`, `Catalog`, and order events (person, time, origin, campaign).
Out: the raw `orders` and `order_lines` tables (Arrow; orders with a hidden `_person`) and
truth/orders_truth. Natural order times come from `natural_orders`: a Poisson process at the
alive rate from signup to churn and at the residual rate after churn, inside the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .catalog import Catalog, sample_in_category, sample_products
from .common import DAY, floats, iso_timestamps, number_ids, present, strings, take, where_or_none
from .identities import Identities
from .people import CHANNELS, Population
from .reference import COUPON_CODES
from .trend import DISENGAGED_ORDER_SHARE, PricePlan
from .variants import EMAIL_STYLE_FORM, PHONE_POS, emails_as_written, phones_as_written

ALIVE, RESIDUAL, CAMPAIGN = 0, 1, 2
ORIGINS = ("alive", "residual", "campaign")


@dataclass
class OrderEvents:
    person: np.ndarray
    time_s: np.ndarray
    origin: np.ndarray
    campaign: np.ndarray  # campaign index for campaign-driven orders, else -1
    send: np.ndarray  # send number for campaign-driven orders, else -1


def _poisson_times(rng: np.random.Generator, rate: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    length = np.maximum(hi - lo, 0)
    count = rng.poisson(rate * length / DAY)
    person = np.repeat(np.arange(len(rate)), count)
    t = lo[person] + (rng.random(len(person)) * length[person]).astype(np.int64)
    return person, t


def natural_orders(rng: np.random.Generator, pop: Population, start_s: int, stop_s: int) -> OrderEvents:
    """Order times of the latent process inside [start, stop)."""
    begin = np.maximum(pop.signup_s, start_s)
    end_alive = np.clip(pop.churn_s, begin, stop_s)
    # trend process: engaged orders until disengagement, then at a lower rate until churn
    end_engaged = end_alive if pop.disengage_s is None else np.clip(pop.disengage_s, begin, end_alive)
    pa_, ta = _poisson_times(rng, pop.lam, begin, end_engaged)
    pd_, td = _poisson_times(rng, pop.r_dead, end_alive, np.full(pop.n, stop_s))
    parts_p, parts_t = [pa_, pd_], [ta, td]
    origin = [np.full(len(pa_), ALIVE), np.full(len(pd_), RESIDUAL)]
    if pop.disengage_s is not None:
        pg, tg = _poisson_times(rng, DISENGAGED_ORDER_SHARE * pop.lam, end_engaged, end_alive)
        parts_p.append(pg)
        parts_t.append(tg)
        origin.append(np.full(len(pg), ALIVE))
    person = np.concatenate(parts_p)
    k = len(person)
    return OrderEvents(person, np.concatenate(parts_t), np.concatenate(origin), np.full(k, -1), np.full(k, -1))


def build_orders(
    rng: np.random.Generator,
    pop: Population,
    ids: Identities,
    catalog: Catalog,
    ev: OrderEvents,
    campaign_category: np.ndarray,
    prices: PricePlan | None = None,
) -> tuple[pa.Table, pa.Table, dict]:
    """Render order events as orders + lines; returns (orders, order_lines, truth columns)."""
    order = np.lexsort((ev.person, ev.time_s))
    p, t, origin = ev.person[order], ev.time_s[order], ev.origin[order]
    camp, send = ev.campaign[order], ev.send[order]
    k = len(p)
    # channel: the preferred one 70% of the time; app needs an account
    pref = pop.pref_channel[p]
    channel = np.where(rng.random(k) < 0.7, pref, (pref + rng.integers(1, 3, k)) % 3)
    channel[(origin == CAMPAIGN) & (rng.random(k) < 0.5)] = 1
    has_acct = ids.account_s[p] <= t
    channel[(channel == 2) & ~has_acct] = 1
    store = channel == 0
    stores = pop.stores
    same_metro = pop.metro[p] * 3 + rng.integers(0, 3, k)
    store_idx = np.where(rng.random(k) < 0.85, pop.home_store[p], same_metro)
    # identifiers: online/app orders carry the account and an email; store orders a card, a
    # phone given at checkout, a store placeholder phone, or nothing
    n = pop.n
    acct_used = ~store & has_acct & ((channel == 2) | (rng.random(k) < 0.9))
    account = pa.array(ids.account, type=pa.string()).take(pa.array(p, mask=~acct_used))
    email = np.full(k, None, dtype=object)
    acct_email = acct_used & (rng.random(k) < 0.9)
    email[acct_email] = ids.account_email[p[acct_email]]
    guest = np.flatnonzero(~store & ~acct_email)
    has_e2 = present(pop.email2)
    alt = has_e2[p[guest]] & (rng.random(len(guest)) < 0.15)
    email[guest] = emails_as_written(rng, np.where(alt, pop.email2[p[guest]], pop.email[p[guest]]), EMAIL_STYLE_FORM)
    email[rng.random(k) < 0.01] = None
    second = ids.card2_s[p] <= t
    card_used = store & (ids.card1_s[p] <= t) & (rng.random(k) < 0.8)
    card = pa.array(np.concatenate([ids.card1, ids.card2]), type=pa.string()).take(
        pa.array(p + n * second, mask=~card_used)
    )
    placeholder = np.array(stores.placeholder, dtype=object)
    is_ph_store = present(placeholder)[store_idx]
    u = rng.random(k)
    give_phone = store & ~card_used & np.where(is_ph_store, (u >= 0.70) & (u < 0.85), u < 0.72)
    use_placeholder = store & ~card_used & is_ph_store & (u < 0.70)
    g = np.flatnonzero(give_phone)
    pg = p[g]
    has_home = present(pop.home_phone)
    has_p2 = present(pop.phone2)
    digits = np.where(has_home[pg] & (rng.random(len(g)) < 0.4), pop.home_phone[pg], pop.mobile[pg])
    digits = np.where(has_p2[pg] & (rng.random(len(g)) < 0.1), pop.phone2[pg], digits)
    phone = np.full(k, None, dtype=object)
    phone[g] = phones_as_written(rng, digits, PHONE_POS)
    phone[use_placeholder] = placeholder[store_idx[use_placeholder]]
    # lines: 1-5 lines, products by affinity (campaign orders start in the target category)
    n_lines = rng.choice(5, k, p=[0.42, 0.27, 0.16, 0.10, 0.05]) + 1
    line_order = np.repeat(np.arange(k), n_lines)
    line_no = np.arange(len(line_order)) - np.repeat(np.cumsum(n_lines) - n_lines, n_lines) + 1
    product = sample_products(rng, catalog, pop.affinity, p[line_order])
    target = np.where(camp >= 0, campaign_category[np.maximum(camp, 0)], -1)[line_order]
    forced = (line_no == 1) & (target >= 0)
    product[forced] = sample_in_category(rng, catalog, target[forced])
    qty = 1 + rng.poisson(np.where(catalog.category[product] == 0, 1.0, 0.25))
    unit = catalog.price[product].copy()
    drift = rng.random(len(unit)) < 0.10
    unit[drift] = np.round(unit[drift] * rng.uniform(0.85, 1.05, drift.sum()), 2)
    if prices is not None:  # after a category's price rise its lines pay the risen price
        unit = np.round(unit * prices.unit_factor(catalog.category[product], t[line_order]), 2)
    promo = rng.random(k) < np.clip(0.04 + 0.30 * pop.price_sens[p] + 0.5 * (origin == CAMPAIGN), 0, 0.95)
    pct = rng.choice([0.10, 0.15, 0.20, 0.25], k)
    disc = np.where(promo[line_order], np.round(qty * unit * pct[line_order], 2), 0.0)
    gross = np.bincount(line_order, qty * unit, minlength=k)
    discount = np.round(np.bincount(line_order, disc, minlength=k), 2)
    coupon = where_or_none(
        promo & (rng.random(k) < 0.75), np.array(COUPON_CODES, dtype=object)[rng.integers(0, len(COUPON_CODES), k)]
    )
    camp_code = np.array([f"CMP{c + 1:02d}" for c in range(max(int(camp.max()) + 1, 1))], dtype=object)
    coupon = np.where((origin == CAMPAIGN) & promo, camp_code[np.maximum(camp, 0)], coupon)

    order_id = number_ids("O", np.arange(1, k + 1), 9)
    orders = pa.table(
        {
            "order_id": order_id,
            "channel": take(CHANNELS, channel),
            "store_id": take(stores.store_id, store_idx, store),
            "ordered_at": iso_timestamps(t),
            "card_id": card,
            "phone": strings(phone),
            "account_id": account,
            "email": strings(email),
            "total_amount": floats(np.round(gross - discount, 2)),
            "discount_amount": floats(discount),
            "coupon_code": strings(coupon),
            "_person": pa.array(p.astype(np.int32)),
        }
    )
    lines = pa.table(
        {
            "order_id": order_id.take(pa.array(line_order)),
            "line_no": floats(line_no),
            "product_id": catalog.product_id.take(pa.array(product)),
            "quantity": floats(qty),
            "unit_price": floats(unit),
            "discount": floats(disc),
        }
    )
    truth = {"order_id": order_id, "person": p, "time_s": t, "origin": origin, "send": send}
    return orders, lines, truth
