"""Customer service interactions: calls, emails, chats driven by the static service-pain trait.

In: `Population`, `Identities`. Out: the raw `service_interactions` table (Arrow, hidden
`_person`). The contact rate, complaint/cancellation share, unresolved share and negative
sentiment all rise with service_pain; nothing depends on the future churn time (the rate only
drops after churn has happened), so the churn oracle stays an upper bound.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .common import DAY, bools, floats, iso_timestamps, number_ids, present, rng_for, strings, take, where_or_none
from .identities import Identities
from .people import Population
from .variants import EMAIL_STYLE_FORM, PHONE_CRM, emails_as_written, phones_as_written

CHANNELS = ("call", "email", "chat")
REASONS = ("inquiry", "complaint", "billing", "delivery", "cancellation", "product_question")
BASE_REASON_P = np.array([0.30, 0.12, 0.14, 0.18, 0.04, 0.22])


def make_service(pop: Population, ids: Identities, seed: int, start_s: int, stop_s: int) -> pa.Table:
    rng = rng_for(seed, "service")
    begin = np.maximum(pop.signup_s, start_s)
    churn = np.clip(pop.churn_s, begin, stop_s)
    rate = (0.2 + 3.0 * pop.pain**1.3) / 365
    n_alive = rng.poisson(rate * (churn - begin) / DAY)
    n_dead = rng.poisson(0.4 * rate * (stop_s - churn) / DAY)
    p = np.concatenate([np.repeat(np.arange(pop.n), n_alive), np.repeat(np.arange(pop.n), n_dead)])
    lo = np.concatenate([np.repeat(begin, n_alive), np.repeat(churn, n_dead)])
    hi = np.concatenate([np.repeat(churn, n_alive), np.full(n_dead.sum(), stop_s)])
    t = lo + (rng.random(len(p)) * (hi - lo)).astype(np.int64)
    order = np.lexsort((p, t))
    p, t = p[order], t[order]
    k = len(p)
    pain = pop.pain[p]
    channel = rng.choice(3, k, p=[0.45, 0.25, 0.30])
    w = np.tile(BASE_REASON_P, (k, 1))
    w[:, 1] += 0.35 * pain
    w[:, 4] += 0.12 * pain
    cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    reason = (rng.random(k)[:, None] >= cum[:, :-1]).sum(axis=1)
    bad = np.isin(reason, (1, 4))
    resolved = rng.random(k) < 0.92 - 0.55 * pain - 0.10 * (reason == 1)
    sentiment = np.clip(rng.normal(0.35 - 1.1 * pain - 0.3 * bad - 0.2 * ~resolved, 0.25), -1, 1).round(3)
    handle = np.exp(rng.normal(np.log(np.where(channel == 0, 420, 300)) + 0.5 * pain, 0.6)).round()
    # identifiers depend on the channel
    household = present(pop.home_phone[p])
    digits = np.where(household & (rng.random(k) < 0.5), pop.home_phone[p], pop.mobile[p])
    phone = where_or_none((channel == 0) & (rng.random(k) < 0.85), digits)
    phone = phones_as_written(rng, phone, PHONE_CRM)
    acct = where_or_none(ids.account_s[p] <= t, ids.account[p])
    account = where_or_none((channel == 2) & (rng.random(k) < 0.7), acct)
    no_account = ~present(account)
    want_email = ((channel == 1) & (rng.random(k) < 0.95)) | ((channel == 2) & no_account)
    email = emails_as_written(rng, where_or_none(want_email, pop.email[p]), EMAIL_STYLE_FORM)
    card = where_or_none(ids.card1_s[p] <= t, ids.card1[p])
    card = where_or_none(rng.random(k) < 0.15, card)
    return pa.table(
        {
            "interaction_id": number_ids("SI", np.arange(1, k + 1), 8),
            "occurred_at": iso_timestamps(t),
            "channel": take(CHANNELS, channel),
            "reason": take(REASONS, reason),
            "resolved": bools(resolved, rng.random(k) > 0.03),
            "sentiment": floats(sentiment, rng.random(k) > 0.05),
            "handle_seconds": floats(handle),
            "phone": strings(phone),
            "email": strings(email),
            "account_id": strings(account),
            "card_id": strings(card),
            "_person": pa.array(p.astype(np.int32)),
        }
    )
