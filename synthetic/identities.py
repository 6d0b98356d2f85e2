"""Identity records: CRM contacts (with duplicates), loyalty cards, online accounts, devices.

In: a `Population`. Out: `Identities` with the three identity tables (Arrow, plus a hidden
`_person` column) and per-person lookups (cards, account, devices, written email/phone) that
orders, web events, consent and sends use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .common import iso_dates, iso_timestamps, number_ids, present, rng_for, strings
from .people import Population
from .variants import (
    EMAIL_STYLE_CRM,
    EMAIL_STYLE_FORM,
    PHONE_CRM,
    PHONE_FORM,
    PHONE_POS,
    emails_as_written,
    name_variant,
    phones_as_written,
)


@dataclass
class Identities:
    crm: pa.Table
    loyalty: pa.Table
    accounts: pa.Table
    card1: np.ndarray  # card id or None
    card1_s: np.ndarray  # enrolment time (int64; huge when no card)
    card2: np.ndarray
    card2_s: np.ndarray
    account: np.ndarray  # account id or None
    account_s: np.ndarray
    account_email: np.ndarray  # the account's email as written
    devices: np.ndarray  # (n, 3) device ids, None padded
    n_devices: np.ndarray
    crm_email: np.ndarray  # email as written on the primary CRM record (or None)
    written_emails: list[tuple[int, str]]  # (person, email as written) in identity tables


NEVER = np.iinfo(np.int64).max // 2
NAME_KINDS = ("nickname", "typo", "swap", "case", "none")


def _pick(rng: np.random.Generator, *options: np.ndarray, p: tuple[float, ...]) -> np.ndarray:
    """Per row, choose among aligned object arrays (None falls back to the first option)."""
    k = rng.choice(len(options), len(options[0]), p=np.array(p) / sum(p))
    out = options[0].copy()
    for j, opt in enumerate(options[1:], start=1):
        m = (k == j) & present(opt)
        out[m] = opt[m]
    return out


def _null(rng: np.random.Generator, values: np.ndarray, share: float) -> np.ndarray:
    out = values.copy()
    out[rng.random(len(out)) < share] = None
    return out


def _crm(rng: np.random.Generator, pop: Population, stop_s: int) -> tuple[pa.Table, np.ndarray]:
    n = pop.n
    extra = np.where(rng.random(n) < 0.10, rng.choice([1, 2], n, p=[0.75, 0.25]), 0)
    dup_person = np.repeat(np.arange(n), extra)
    m = len(dup_person)
    person = np.concatenate([np.arange(n), dup_person])
    primary = np.arange(n + m) < n
    # names
    first, last = pop.first[person].copy(), pop.last[person].copy()
    kinds = np.where(
        primary, np.where(rng.random(n + m) < 0.03, 3, 4), rng.choice(5, n + m, p=[0.35, 0.25, 0.10, 0.15, 0.15])
    )
    for i in np.flatnonzero(kinds != 4):
        first[i], last[i] = name_variant(rng, first[i], last[i], NAME_KINDS[kinds[i]])
    # contacts
    home_or_mobile = np.where(present(pop.home_phone) & (rng.random(n) < 0.5), pop.home_phone, pop.mobile)
    email = np.where(
        primary,
        _pick(rng, pop.email[person], pop.email2[person], p=(0.96, 0.04)),
        _pick(rng, pop.email[person], pop.email2[person], p=(0.55, 0.45)),
    )
    email[primary & (rng.random(n + m) < 0.06)] = None
    email[~primary & (rng.random(n + m) < 0.30)] = None
    email = np.where(
        primary, emails_as_written(rng, email, EMAIL_STYLE_CRM), emails_as_written(rng, email, EMAIL_STYLE_FORM)
    )
    phone = _pick(rng, home_or_mobile[person], pop.phone2[person], p=(0.85, 0.15))
    phone[primary & (rng.random(n + m) < 0.10)] = None
    phone[~primary & (rng.random(n + m) < 0.35)] = None
    phone = phones_as_written(rng, phone, PHONE_CRM)
    dob = pop.dob_day[person].copy()
    dob_ok = np.where(primary, rng.random(n + m) < 0.85, rng.random(n + m) < 0.60)
    dob[~primary & (rng.random(n + m) < 0.05)] -= 365
    # addresses and times
    signup = pop.signup_s[person]
    span = np.maximum(stop_s - signup, 1)
    created = np.where(primary, signup, signup + (rng.random(n + m) * span).astype(np.int64))
    old = ~primary & pop.moved[person] & (rng.random(n + m) < 0.6)
    move = pop.move_s[person]
    before_move = np.maximum(move[old] - signup[old], 1)
    created[old] = signup[old] + (rng.random(old.sum()) * before_move).astype(np.int64)
    updated = created + (rng.random(n + m) * (stop_s - created)).astype(np.int64)
    moved_primary = primary & pop.moved[person] & (move < stop_s)
    updated[moved_primary] = np.maximum(move[moved_primary], created[moved_primary])
    # a mover's record created before the move and never updated keeps the old address
    stale = old | (pop.moved[person] & (updated < move))
    address = np.where(stale, pop.old_address[person], pop.address[person])
    city = np.where(stale, pop.old_city[person], pop.city[person])
    postcode = np.where(stale, pop.old_postcode[person], pop.postcode[person])

    order = np.lexsort((person, created))
    ids = number_ids("CRM", np.arange(1, n + m + 1), 7)
    cols = {
        "record_id": ids,
        "first_name": strings(first[order]),
        "last_name": strings(last[order]),
        "email": strings(email[order]),
        "phone": strings(phone[order]),
        "date_of_birth": iso_dates(dob[order], dob_ok[order]),
        "address_line": strings(address[order]),
        "city": strings(city[order]),
        "postcode": strings(postcode[order]),
        "created_at": iso_timestamps(created[order]),
        "updated_at": iso_timestamps(updated[order]),
        "_person": pa.array(person[order].astype(np.int32)),
    }
    crm_email = np.full(n, None, dtype=object)
    crm_email[person[primary]] = email[primary]
    return pa.table(cols), crm_email


def _loyalty(rng: np.random.Generator, pop: Population, stop_s: int):
    n = pop.n
    has = rng.random(n) < np.where(pop.pref_channel == 0, 0.72, 0.45)
    signup = pop.signup_s
    enrol1 = np.where(rng.random(n) < 0.5, signup, signup + (rng.random(n) * 0.6 * (stop_s - signup)).astype(np.int64))
    second = has & (rng.random(n) < 0.08)
    enrol2 = enrol1 + (rng.random(n) * (stop_s - enrol1)).astype(np.int64)
    person = np.concatenate([np.flatnonzero(has), np.flatnonzero(second)])
    enrolled = np.concatenate([enrol1[has], enrol2[second]])
    is_second = np.arange(len(person)) >= has.sum()
    k = len(person)
    first, last = pop.first[person].copy(), pop.last[person].copy()
    for i in np.flatnonzero(rng.random(k) < 0.08):
        first[i], last[i] = name_variant(rng, first[i], last[i], NAME_KINDS[int(rng.integers(0, 4))])
    email = _null(rng, _pick(rng, pop.email[person], pop.email2[person], p=(0.85, 0.15)), 0.30)
    email = emails_as_written(rng, email, EMAIL_STYLE_FORM)
    home_or_mobile = np.where(
        present(pop.home_phone[person]) & (rng.random(k) < 0.5), pop.home_phone[person], pop.mobile[person]
    )
    phone = phones_as_written(rng, _null(rng, home_or_mobile, 0.20), PHONE_POS)
    stale = pop.moved[person] & (enrolled < pop.move_s[person])
    postcode = np.where(stale, pop.old_postcode[person], pop.postcode[person])
    q = np.searchsorted(np.quantile(pop.lam, [0.5, 0.8, 0.95]), pop.lam[person])
    tier = np.array(["bronze", "silver", "gold", "platinum"], dtype=object)[q]
    # status never looks at the (future) churn time: it would leak labels into a current snapshot
    status = np.where(rng.random(k) < 0.08, "inactive", "active").astype(object)
    status[~is_second & second[person]] = "closed"
    order = np.lexsort((person, enrolled))
    card_ids = number_ids("L", np.arange(1, k + 1), 9)
    table = pa.table(
        {
            "card_id": card_ids,
            "first_name": strings(first[order]),
            "last_name": strings(last[order]),
            "email": strings(email[order]),
            "phone": strings(phone[order]),
            "postcode": strings(postcode[order]),
            "enrolled_at": iso_timestamps(enrolled[order]),
            "tier": strings(tier[order]),
            "status": strings(status[order]),
            "_person": pa.array(person[order].astype(np.int32)),
        }
    )
    ids_by_row = np.empty(k, dtype=object)
    ids_by_row[order] = np.array(card_ids.to_pylist(), dtype=object)
    card1, card2 = np.full(n, None, dtype=object), np.full(n, None, dtype=object)
    card1[person[~is_second]] = ids_by_row[~is_second]
    card2[person[is_second]] = ids_by_row[is_second]
    c1s = np.where(has, enrol1, NEVER)
    c2s = np.where(second, enrol2, NEVER)
    return table, card1, c1s, card2, c2s, [(int(p), e) for p, e in zip(person, email) if e is not None]


def _accounts(rng: np.random.Generator, pop: Population, stop_s: int):
    n = pop.n
    has = rng.random(n) < np.where(pop.pref_channel == 0, 0.30, 0.85)
    person = np.flatnonzero(has)
    k = len(person)
    signup = pop.signup_s[person]
    created = np.where(
        rng.random(k) < 0.45, signup, signup + (rng.random(k) * 0.7 * (stop_s - signup)).astype(np.int64)
    )
    email = emails_as_written(rng, _pick(rng, pop.email[person], pop.email2[person], p=(0.85, 0.15)), EMAIL_STYLE_FORM)
    first, last = pop.first[person].copy(), pop.last[person].copy()
    for i in np.flatnonzero(rng.random(k) < 0.05):
        first[i], last[i] = name_variant(rng, first[i], last[i], "case")
    name_ok = rng.random(k) < 0.92
    first[~name_ok] = None
    last[~name_ok] = None
    phone = phones_as_written(rng, _null(rng, pop.mobile[person], 0.5), PHONE_FORM)
    stale = pop.moved[person] & (created < pop.move_s[person])
    postcode = _null(rng, np.where(stale, pop.old_postcode[person], pop.postcode[person]), 0.3)
    order = np.lexsort((person, created))
    ids = number_ids("A", np.arange(1, k + 1), 8)
    table = pa.table(
        {
            "account_id": ids,
            "email": strings(email[order]),
            "first_name": strings(first[order]),
            "last_name": strings(last[order]),
            "phone": strings(phone[order]),
            "postcode": strings(postcode[order]),
            "created_at": iso_timestamps(created[order]),
            "_person": pa.array(person[order].astype(np.int32)),
        }
    )
    account = np.full(n, None, dtype=object)
    account[person[order]] = np.array(ids.to_pylist(), dtype=object)
    account_s = np.full(n, NEVER, dtype=np.int64)
    account_s[person] = created
    account_email = np.full(n, None, dtype=object)
    account_email[person] = email
    return table, account, account_s, account_email


def make_identities(pop: Population, seed: int, stop_s: int) -> Identities:
    """Build CRM records, loyalty cards, online accounts and devices for everyone."""
    rng = rng_for(seed, "identities")
    crm, crm_email = _crm(rng, pop, stop_s)
    loyalty, card1, c1s, card2, c2s, loyalty_emails = _loyalty(rng, pop, stop_s)
    accounts, account, account_s, account_email = _accounts(rng, pop, stop_s)
    n_dev = rng.choice([1, 2, 3], pop.n, p=[0.5, 0.35, 0.15])
    raw = rng.integers(0, 2**52, (pop.n, 3), dtype=np.int64)
    dev_ids = np.array(number_ids("dv-", raw.ravel(), 13, base=16).to_pylist(), dtype=object).reshape(pop.n, 3)
    dev_ids[np.arange(3)[None, :] >= n_dev[:, None]] = None
    written = [
        (int(p), e) for p, e in zip(crm.column("_person").to_numpy(), crm.column("email").to_pylist()) if e is not None
    ]
    written += loyalty_emails
    written += [
        (int(p), e)
        for p, e in zip(accounts.column("_person").to_numpy(), accounts.column("email").to_pylist())
        if e is not None
    ]
    return Identities(
        crm,
        loyalty,
        accounts,
        card1,
        c1s,
        card2,
        c2s,
        account,
        account_s,
        account_email,
        dev_ids,
        n_dev,
        crm_email,
        written,
    )
