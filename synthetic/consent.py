"""Consent events: grants or refusals at signup per purpose, later withdrawals and re-grants.

In: `Population`, `Identities`. Out: a `ConsentLog` (events recorded against identifiers as
written: email, phone, account_id, card_id) and per-person state per purpose, which campaign
targeting reads and campaign unsubscribes update. The latest event at or before t decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .common import bools, iso_timestamps, number_ids, present, rng_for, strings
from .identities import NEVER, Identities
from .people import Population
from .variants import PHONE_FORM, phones_as_written

GRANT_RATE = {"email_marketing": 0.70, "sms_marketing": 0.40, "profiling": 0.90, "third_party_sharing": 0.30}
SIGNUP_SOURCE = np.array(["store", "web_form", "app"], dtype=object)


@dataclass
class ConsentState:
    """Per person: consent holds at t iff granted_s <= t and not withdraw_s <= t < regrant_s."""

    granted_s: np.ndarray
    withdraw_s: np.ndarray
    regrant_s: np.ndarray

    def ok(self, t: np.ndarray | int) -> np.ndarray:
        return (self.granted_s <= t) & ~((self.withdraw_s <= t) & (t < self.regrant_s))


@dataclass
class ConsentLog:
    states: dict[str, ConsentState]
    parts: list[dict[str, np.ndarray]] = field(default_factory=list)

    def add(
        self,
        person: np.ndarray,
        time_s: np.ndarray,
        identifier: np.ndarray,
        id_type: str,
        purpose: str,
        granted: np.ndarray | bool,
        source: np.ndarray | str,
    ) -> None:
        k = len(person)
        self.parts.append(
            {
                "person": np.asarray(person),
                "time": np.asarray(time_s, dtype=np.int64),
                "identifier": np.asarray(identifier, dtype=object),
                "type": np.full(k, id_type, dtype=object),
                "purpose": np.full(k, purpose, dtype=object),
                "granted": np.broadcast_to(np.asarray(granted, dtype=bool), (k,)).copy(),
                "source": np.broadcast_to(np.asarray(source, dtype=object), (k,)).copy(),
            }
        )

    def table(self) -> pa.Table:
        """The raw consent_events table (sorted by time) with a hidden `_person` column."""
        cols = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        order = np.lexsort((cols["person"], cols["time"]))
        return pa.table(
            {
                "event_id": number_ids("CE", np.arange(1, len(order) + 1), 9),
                "occurred_at": iso_timestamps(cols["time"][order]),
                "identifier": strings(cols["identifier"][order]),
                "identifier_type": strings(cols["type"][order]),
                "purpose": strings(cols["purpose"][order]),
                "granted": bools(cols["granted"][order]),
                "source": strings(cols["source"][order]),
                "_person": pa.array(cols["person"][order].astype(np.int32)),
            }
        )


def make_consent(pop: Population, ids: Identities, seed: int, stop_s: int) -> ConsentLog:
    """Signup-time grants/refusals per purpose and identifier, plus withdrawals and re-grants."""
    rng = rng_for(seed, "consent")
    n = pop.n
    source = SIGNUP_SOURCE[pop.pref_channel].copy()
    source[rng.random(n) < 0.05] = "call_center"
    in_crm = present(ids.crm_email)
    email = np.where(in_crm, ids.crm_email, ids.account_email)
    email_s = np.where(in_crm, pop.signup_s, ids.account_s)
    phone = phones_as_written(rng, pop.mobile, PHONE_FORM)
    has_acct = present(ids.account)
    has_card = present(ids.card1)
    prof_id = np.where(has_acct, ids.account, np.where(has_card, ids.card1, email))
    prof_type = np.where(has_acct, "account_id", np.where(has_card, "card_id", "email"))
    prof_s = np.where(has_acct, ids.account_s, np.where(has_card, ids.card1_s, email_s))
    targets = {
        "email_marketing": (email, "email", email_s),
        "sms_marketing": (phone, "phone", pop.signup_s),
        "profiling": (prof_id, prof_type, prof_s),
        "third_party_sharing": (email, "email", email_s),
    }
    log = ConsentLog(states={})
    for purpose, (ident, id_type, t0) in targets.items():
        has_id = present(ident)
        granted = has_id & (rng.random(n) < GRANT_RATE[purpose])
        refused = has_id & ~granted & (rng.random(n) < 0.5)
        withdrawn = granted & (rng.random(n) < 0.10)
        w_s = t0 + (rng.random(n) * np.maximum(stop_s - t0, 1)).astype(np.int64)
        regranted = withdrawn & (rng.random(n) < 0.20)
        r_s = w_s + (rng.random(n) * np.maximum(stop_s - w_s, 1)).astype(np.int64)
        types = np.broadcast_to(np.asarray(id_type, dtype=object), (n,))
        for mask, when, value, src in (
            (granted | refused, t0, granted, source),
            (withdrawn, w_s, False, "web_form"),
            (regranted, r_s, True, "web_form"),
        ):
            for t in np.unique(types[mask]):
                m = mask & (types == t)
                val = value[m] if isinstance(value, np.ndarray) else value
                s = src[m] if isinstance(src, np.ndarray) else src
                log.add(np.flatnonzero(m), when[m], ident[m], str(t), purpose, val, s)
        if purpose == "profiling":  # card holders with an account also consent on the card
            both = granted & has_acct & has_card & (rng.random(n) < 0.5)
            log.add(np.flatnonzero(both), ids.card1_s[both], ids.card1[both], "card_id", purpose, True, "store")
        log.states[purpose] = ConsentState(
            np.where(granted, t0, NEVER), np.where(withdrawn, w_s, NEVER), np.where(regranted, r_s, NEVER)
        )
    return log


def record_unsubscribe(
    log: ConsentLog, purpose: str, person: np.ndarray, time_s: np.ndarray, identifier: np.ndarray, id_type: np.ndarray
) -> None:
    """A campaign unsubscribe: a withdrawal event and the person's state updated from then on."""
    for t in np.unique(id_type):
        m = id_type == t
        log.add(person[m], time_s[m], identifier[m], str(t), purpose, False, "web_form")
    st = log.states[purpose]
    st.regrant_s[person] = np.where(st.regrant_s[person] > time_s, st.regrant_s[person], NEVER)
    st.withdraw_s[person] = time_s
