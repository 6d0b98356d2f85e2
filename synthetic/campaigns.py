"""Campaigns, randomized sends (20% holdout), responses and the true uplift of every send.

In: `Population`, `Identities`, `ConsentLog`, natural `OrderEvents`. Out: `CampaignResult`:
raw campaigns / marketing_sends / marketing_responses, truth per send, and the order events
after campaign effects. A treated send with effect e > 0 adds one order with probability
q = e in its 14-day window; e < 0 ("sleeping dogs") thins natural orders in the window by
k = -2.5e. tau = P(order in window | treated) - P(order in window | control), exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .common import DAY, RESPONSE_WINDOW_DAYS, iso_timestamps, number_ids, present, rng_for, strings, where_or_none
from .consent import ConsentLog, record_unsubscribe
from .identities import Identities
from .oracle import p_no_order
from .orders import CAMPAIGN, OrderEvents
from .people import Population
from .reference import CAMPAIGN_OBJECTIVES, CATEGORY_NAMES
from .trend import DISENGAGED_WEB_SHARE, disengaged_at, make_price_plan, p_no_order_from

N_CAMPAIGNS = 16
CONTROL_SHARE = 0.2
WINDOW_S = RESPONSE_WINDOW_DAYS * DAY
SEND_SPREAD_S = 6 * 3600  # sends go out within 6 hours of the campaign start


@dataclass
class CampaignResult:
    campaigns: pa.Table
    sends: pa.Table
    responses: pa.Table
    truth: dict[str, np.ndarray]  # per send: person, campaign, sent_s, treated, tau, p_t, p_c, q, k
    orders: OrderEvents
    category: np.ndarray  # target category index per campaign, -1 = all


def _schedule(rng: np.random.Generator, start_s: int, stop_s: int):
    usable = (stop_s - start_s) / DAY - 20 - RESPONSE_WINDOW_DAYS - 2
    spacing = usable / N_CAMPAIGNS
    day = 20 + spacing * np.arange(N_CAMPAIGNS) + rng.uniform(-0.15, 0.15, N_CAMPAIGNS) * spacing
    t0 = start_s + (day * DAY).astype(np.int64) // 3600 * 3600 + 9 * 3600
    channel = rng.choice(np.array(["email", "sms", "push"], dtype=object), N_CAMPAIGNS, p=[0.55, 0.2, 0.25])
    objective = rng.choice(np.array(CAMPAIGN_OBJECTIVES, dtype=object), N_CAMPAIGNS)
    category = np.where(rng.random(N_CAMPAIGNS) < 0.7, rng.integers(0, len(CATEGORY_NAMES), N_CAMPAIGNS), -1)
    strength = rng.uniform(0.7, 1.3, N_CAMPAIGNS)
    reach = rng.uniform(0.2, 0.45, N_CAMPAIGNS)
    return t0, channel, objective, category, strength, reach


def send_effect(pop: Population, person: np.ndarray, category: int, strength: float) -> np.ndarray:
    """Effect index e per person: engagement, price sensitivity and category match help;
    service pain above 0.28 hurts (negative e = the send suppresses natural orders)."""
    match = pop.affinity[person, category] if category >= 0 else np.full(len(person), 0.25)
    e = strength * (0.08 * pop.engagement[person] + 0.06 * pop.price_sens[person] + 0.30 * match)
    return e - 0.9 * np.maximum(pop.pain[person] - 0.28, 0)


def run_campaigns(
    pop: Population, ids: Identities, consent: ConsentLog, natural: OrderEvents, seed: int, start_s: int, stop_s: int
) -> CampaignResult:
    rng = rng_for(seed, "campaigns")
    prices = None if pop.disengage_s is None else make_price_plan(seed, start_s, stop_s)
    t0s, channels, objectives, categories, strengths, reaches = _schedule(rng, start_s, stop_s)
    mk_email = np.where(present(ids.crm_email), ids.crm_email, ids.account_email)
    has_email = present(mk_email)
    keep = np.ones(len(natural.person), dtype=bool)
    sends: list[dict[str, np.ndarray]] = []
    resp: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    extra: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    n_sent = 0
    for c, (t0, chan) in enumerate(zip(t0s, channels)):
        acct = ids.account_s <= t0
        ok = (pop.signup_s < t0) & (has_email | acct)
        if chan == "email":
            ok &= has_email & consent.states["email_marketing"].ok(t0)
        elif chan == "sms":
            ok &= consent.states["sms_marketing"].ok(t0)
        else:
            ok &= acct & consent.states["email_marketing"].ok(t0)
        person = np.flatnonzero(ok & (rng.random(pop.n) < reaches[c]))
        k = len(person)
        treated = rng.random(k) >= CONTROL_SHARE
        sent = t0 + rng.integers(0, SEND_SPREAD_S, k)
        e = send_effect(pop, person, int(categories[c]), float(strengths[c]))
        q = np.clip(e, 0, 0.5)
        thin = np.clip(-2.5 * e, 0, 0.9)
        lam, r, h = pop.lam[person], pop.r_dead[person], pop.hazard[person]
        alive = pop.churn_s[person] > sent
        if prices is None:
            p_c = 1 - p_no_order(lam, r, h, RESPONSE_WINDOW_DAYS, alive)
            p_thinned = 1 - p_no_order(lam * (1 - thin), r * (1 - thin), h, RESPONSE_WINDOW_DAYS, alive)
        else:  # the trend process: from each person's state at the send (synthetic/trend.py)
            p_c = 1 - p_no_order_from(pop, prices, person, sent, RESPONSE_WINDOW_DAYS, 1.0)
            p_thinned = 1 - p_no_order_from(pop, prices, person, sent, RESPONSE_WINDOW_DAYS, 1 - thin)
        p_t = np.where(e >= 0, 1 - (1 - p_c) * (1 - q), p_thinned)
        # realise: extra orders for positive effects, thinning of natural orders for negative ones
        got_extra = treated & (rng.random(k) < q)
        extra.append(
            (
                person[got_extra],
                sent[got_extra] + 1 + rng.integers(0, WINDOW_S, got_extra.sum()),
                np.full(got_extra.sum(), c),
                n_sent + np.flatnonzero(got_extra),
            )
        )
        k_of = np.zeros(pop.n)
        sent_of = np.zeros(pop.n, dtype=np.int64)
        neg = treated & (thin > 0)
        k_of[person[neg]], sent_of[person[neg]] = thin[neg], sent[neg]
        cand = np.flatnonzero(keep & (k_of[natural.person] > 0))
        tp, tt = natural.person[cand], natural.time_s[cand]
        inside = (tt > sent_of[tp]) & (tt <= sent_of[tp] + WINDOW_S)
        drop = cand[inside & (rng.random(len(cand)) < k_of[tp])]
        keep[drop] = False
        # identifiers on the send
        email = where_or_none(has_email[person] & ((chan == "email") | (rng.random(k) < 0.4)), mk_email[person])
        account = where_or_none(acct[person] & ((chan != "email") | (rng.random(k) < 0.6)), ids.account[person])
        email = np.where(~present(email) & ~present(account), mk_email[person], email)
        dev = ids.devices[person, (rng.random(k) * ids.n_devices[person]).astype(int)]
        device = where_or_none(np.full(k, chan == "push"), dev)
        sends.append(
            {
                "person": person,
                "campaign": np.full(k, c),
                "sent_s": sent,
                "treated": treated,
                "tau": p_t - p_c,
                "p_t": p_t,
                "p_c": p_c,
                "q": q,
                "k": thin,
                "email": email,
                "account": account,
                "device": device,
            }
        )
        # responses (treatment only) and unsubscribes -> consent withdrawals
        eng, pain = pop.engagement[person], pop.pain[person]
        eng = np.where(disengaged_at(pop, person, sent), DISENGAGED_WEB_SHARE * eng, eng)  # opens/clicks fall too
        bounced = treated & (rng.random(k) < (0.03 if chan == "email" else 0.01))
        delivered = treated & ~bounced
        opened = delivered & (chan != "sms") & (rng.random(k) < 0.08 + 0.45 * eng)
        open_s = sent + 60 + (np.minimum(rng.exponential(0.7, k), 10) * DAY).astype(np.int64)
        clicked = (opened | (delivered & (chan == "sms"))) & (rng.random(k) < 0.03 + 0.25 * eng + 0.4 * got_extra)
        click_s = np.where(opened, open_s, sent + (rng.exponential(0.2, k) * DAY).astype(np.int64)) + rng.integers(
            10, 1800, k
        )
        unsub = (
            delivered & (chan != "push") & (rng.random(k) < 0.003 + 0.10 * np.maximum(pain - 0.3, 0) + 0.02 * (e < 0))
        )
        unsub_s = np.where(opened, open_s, sent) + rng.integers(60, 3 * DAY, k)
        deliver_s = sent + rng.integers(5, 600, k)
        for mask, kind, when in (
            (delivered, "delivered", deliver_s),
            (bounced, "bounced", deliver_s),
            (opened, "opened", open_s),
            (clicked, "clicked", click_s),
            (unsub, "unsubscribed", unsub_s),
        ):
            m = mask & (when < stop_s)
            resp.append((n_sent + np.flatnonzero(m), np.full(m.sum(), kind, dtype=object), when[m]))
        u = unsub & (unsub_s < stop_s)
        by_email = present(email[u])
        ident = np.where(by_email, email[u], account[u])
        id_type = np.where(by_email, "email", "account_id")
        purpose = "sms_marketing" if chan == "sms" else "email_marketing"
        record_unsubscribe(consent, purpose, person[u], unsub_s[u], ident, id_type)
        n_sent += k

    cols = {key: np.concatenate([s[key] for s in sends]) for key in sends[0]}
    ex = [np.concatenate(x) for x in zip(*extra)]
    orders = OrderEvents(
        np.concatenate([natural.person[keep], ex[0]]),
        np.concatenate([natural.time_s[keep], ex[1]]),
        np.concatenate([natural.origin[keep], np.full(len(ex[0]), CAMPAIGN)]),
        np.concatenate([natural.campaign[keep], ex[2]]),
        np.concatenate([natural.send[keep], ex[3]]),
    )
    campaign_ids = np.array([f"CMP{c + 1:02d}" for c in range(N_CAMPAIGNS)], dtype=object)
    cat_names = np.array(CATEGORY_NAMES + (None,), dtype=object)
    names = [
        f"{o.replace('_', ' ').title()} {np.datetime64(int(t), 's').astype('datetime64[M]')} {cat_names[g] or 'all'}"
        for o, t, g in zip(objectives, t0s, categories)
    ]
    campaigns = pa.table(
        {
            "campaign_id": strings(campaign_ids),
            "name": strings(names),
            "channel": strings(channels),
            "start_at": iso_timestamps(t0s),
            "end_at": iso_timestamps(t0s + SEND_SPREAD_S + WINDOW_S),
            "objective": strings(objectives),
            "target_category": strings(cat_names[categories]),
        }
    )
    send_ids = number_ids("MS", np.arange(1, n_sent + 1), 9)
    group = np.where(cols["treated"], "treatment", "control").astype(object)
    sends_table = pa.table(
        {
            "send_id": send_ids,
            "campaign_id": strings(campaign_ids[cols["campaign"]]),
            "sent_at": iso_timestamps(cols["sent_s"]),
            "group": strings(group),
            "email": strings(cols["email"]),
            "account_id": strings(cols["account"]),
            "device_id": strings(cols["device"]),
            "_person": pa.array(cols["person"].astype(np.int32)),
        }
    )
    r_idx, r_kind, r_time = (np.concatenate(x) for x in zip(*resp))
    order = np.lexsort((r_idx, r_time))
    responses = pa.table(
        {
            "send_id": send_ids.take(pa.array(r_idx[order])),
            "event_type": strings(r_kind[order]),
            "occurred_at": iso_timestamps(r_time[order]),
        }
    )
    cols["send_id"] = send_ids
    return CampaignResult(campaigns, sends_table, responses, cols, orders, categories)
