"""The people behind the data: latent traits, churn times, names, addresses, phones, emails.

In: number of people, seed, the window (epoch seconds). Out: a `Population` of numpy arrays
(one row per person) that every other generator reads; truth/persons.parquet is written from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from faker.providers.person.en_US import Provider as NameProvider

from .common import DAY, rng_for, where_or_none
from .reference import (
    CATEGORIES,
    DOT_INSENSITIVE,
    EMAIL_DOMAINS,
    METROS,
    PLACEHOLDER_STORES,
    STORES_PER_METRO,
    STREET_BASES,
    STREET_SUFFIXES,
)

# churn hazard h = BASE_HAZARD * exp(B_PAIN*pain + B_PRICE*price - B_ENGAGEMENT*engagement), per day
BASE_HAZARD = 0.0008
B_PAIN, B_PRICE, B_ENGAGEMENT = 1.8, 0.6, 1.6
MEDIAN_ORDER_RATE = 1 / 40  # orders per day while alive
DEAD_RATE_SHARE = 0.03  # residual order rate after churn, as a share of the alive rate
TENURED_SHARE = 0.40  # share of people who signed up before the window
HOUSEHOLD_SHARE = 0.15
MOVER_SHARE = 0.12
CHANNELS = ("store", "online", "app")


@dataclass
class Stores:
    store_id: list[str]
    metro: np.ndarray
    phone: list[str]  # the store's own 10-digit number
    placeholder: list[str | None]  # phone typed at checkout when the customer gives none


@dataclass
class Population:
    n: int
    person_id: np.ndarray
    first: np.ndarray
    last: np.ndarray
    dob_day: np.ndarray
    metro: np.ndarray
    city: np.ndarray
    postcode: np.ndarray
    address: np.ndarray
    moved: np.ndarray
    move_s: np.ndarray
    old_city: np.ndarray
    old_postcode: np.ndarray
    old_address: np.ndarray
    household: np.ndarray  # household number, -1 for people living alone
    home_phone: np.ndarray  # 10 digits or None (shared by a household)
    mobile: np.ndarray
    phone2: np.ndarray
    email: np.ndarray  # the address as the person uses it (lower case)
    email2: np.ndarray
    signup_s: np.ndarray
    churn_s: np.ndarray
    lam: np.ndarray  # alive order rate, per day
    r_dead: np.ndarray  # residual order rate after churn, per day
    hazard: np.ndarray  # churn hazard, per day
    engagement: np.ndarray
    price_sens: np.ndarray
    pain: np.ndarray
    affinity: np.ndarray  # (n, n_categories), rows sum to 1
    pref_channel: np.ndarray  # index into CHANNELS
    home_store: np.ndarray
    stores: Stores
    # the trend process (synthetic/trend.py), None when it is off
    disengage_s: np.ndarray | None = None  # when the person disengaged (far future: never)
    disengage_rate: np.ndarray | None = None  # per day, while engaged


def _weighted(d: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    names = np.array(list(d), dtype=object)
    w = np.array(list(d.values()), dtype=float)
    return names, w / w.sum()


def _phone_numbers(rng: np.random.Generator, area_codes: np.ndarray, taken: set[int]) -> np.ndarray:
    """Unique valid US numbers (10 digits) for the given area codes; no 555 or N11 exchanges."""
    n = len(area_codes)
    out = np.zeros(n, dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        ex = rng.integers(200, 1000, todo.size)
        bad = (ex == 555) | (ex % 100 == 11)
        ex[bad] = 734
        sub = rng.integers(1, 10_000, todo.size)
        out[todo] = area_codes[todo].astype(np.int64) * 10_000_000 + ex * 10_000 + sub
        _, first = np.unique(out[todo], return_index=True)
        keep = np.zeros(todo.size, dtype=bool)
        keep[first] = True
        keep &= np.array([v not in taken for v in out[todo]])
        taken.update(out[todo][keep].tolist())
        todo = todo[~keep]
    return out.astype(str).astype(object)


def _emails(
    rng: np.random.Generator, first: np.ndarray, last: np.ndarray, birth_year: np.ndarray, taken: set[str]
) -> np.ndarray:
    """One plausible, globally unique email per person (unique up to case, gmail dots)."""
    names = np.array([d for d, _ in EMAIL_DOMAINS], dtype=object)
    w = np.array([w for _, w in EMAIL_DOMAINS])
    n = len(first)
    domain = names[rng.choice(len(names), n, p=w / w.sum())]
    pat = rng.integers(0, 8, n)
    nn = rng.integers(1, 1000, n)
    f = np.array([x.lower() for x in first], dtype=object)
    l = np.array([x.lower() for x in last], dtype=object)
    local = np.empty(n, dtype=object)
    builders = (
        lambda a, b, k, y: f"{a}.{b}",
        lambda a, b, k, y: f"{a}{b}",
        lambda a, b, k, y: f"{a[0]}{b}",
        lambda a, b, k, y: f"{a}_{b}",
        lambda a, b, k, y: f"{a}{b}{k}",
        lambda a, b, k, y: f"{a}.{b}{k}",
        lambda a, b, k, y: f"{b}.{a}",
        lambda a, b, k, y: f"{a}{y % 100:02d}",
    )
    for p, build in enumerate(builders):
        m = np.flatnonzero(pat == p)
        local[m] = [build(a, b, k, y) for a, b, k, y in zip(f[m], l[m], nn[m], birth_year[m])]
    out = np.empty(n, dtype=object)
    for i, (loc, dom, k) in enumerate(zip(local, domain, nn)):
        key = (loc.replace(".", "") if dom in DOT_INSENSITIVE else loc) + "@" + dom
        bump = int(k)
        while key in taken:
            bump = bump * 7 + 3
            loc = f"{loc.rstrip('0123456789')}{bump % 9973}"
            key = (loc.replace(".", "") if dom in DOT_INSENSITIVE else loc) + "@" + dom
        taken.add(key)
        out[i] = loc + "@" + dom
    return out


_CITY_METRO = np.array([i for i, m in enumerate(METROS) for _ in m[4]])
_CITY_NAMES = np.array([c for m in METROS for c in m[4]], dtype=object)
_CITY_OFFSET = np.concatenate([[0], np.cumsum([len(m[4]) for m in METROS])[:-1]])
_CITY_COUNT = np.array([len(m[4]) for m in METROS])
_STREETS = np.array([f"{b} {s}" for b in STREET_BASES for s, _ in STREET_SUFFIXES], dtype=object)


def _addresses(
    rng: np.random.Generator, metro: np.ndarray, zips: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(city, postcode, street line) for people living in `metro`; zips is (n_cities, 6)."""
    n = len(metro)
    city_i = _CITY_OFFSET[metro] + (rng.random(n) * _CITY_COUNT[metro]).astype(np.int64)
    postcode = zips[city_i, rng.integers(0, zips.shape[1], n)]
    num = rng.integers(1, 9_999, n)
    street = _STREETS[rng.integers(0, len(_STREETS), n)]
    addr = np.array([f"{a} {s}" for a, s in zip(num.tolist(), street)], dtype=object)
    return _CITY_NAMES[city_i], postcode, addr


def _area_codes(rng: np.random.Generator, metro: np.ndarray) -> np.ndarray:
    """A local area code for each person's metro."""
    table = [np.array([int(c) for c in m[2]]) for m in METROS]
    out = np.zeros(len(metro), dtype=np.int64)
    for i, codes in enumerate(table):
        m = np.flatnonzero(metro == i)
        out[m] = codes[rng.integers(0, len(codes), len(m))]
    return out


def make_population(n: int, seed: int, start_s: int, stop_s: int) -> Population:
    """Draw `n` people with latent traits, churn times and contact details."""
    rng = rng_for(seed, "people")
    span = stop_s - start_s
    # stores and postcodes (six ZIPs per city)
    zips = np.array(
        [
            [METROS[m][3][rng.integers(0, len(METROS[m][3]))] + f"{rng.integers(1, 100):02d}" for _ in range(6)]
            for m in _CITY_METRO
        ],
        dtype=object,
    )
    n_stores = len(METROS) * STORES_PER_METRO
    store_metro = np.repeat(np.arange(len(METROS)), STORES_PER_METRO)
    taken: set[int] = set()
    store_phone_i = _phone_numbers(rng, np.array([int(METROS[m][2][0]) for m in store_metro]), taken)
    store_phone = [p[:6] + "0000" for p in store_phone_i]
    placeholder: list[str | None] = [None] * n_stores
    for idx, value in PLACEHOLDER_STORES:
        placeholder[idx] = value if value is not None else store_phone[idx]
    stores = Stores([f"ST{i + 1:03d}" for i in range(n_stores)], store_metro, store_phone, placeholder)

    # names and demographics
    female = rng.random(n) < 0.52
    fn_f, wf = _weighted(NameProvider.first_names_female)
    fn_m, wm = _weighted(NameProvider.first_names_male)
    ln, wl = _weighted(NameProvider.last_names)
    first = np.where(female, fn_f[rng.choice(len(fn_f), n, p=wf)], fn_m[rng.choice(len(fn_m), n, p=wm)])
    last = ln[rng.choice(len(ln), n, p=wl)]
    tenured = rng.random(n) < TENURED_SHARE
    signup_s = np.where(
        tenured,
        start_s - (rng.random(n) * 5 * 365 * DAY).astype(np.int64) - 1,
        start_s + (rng.random(n) * (span - DAY)).astype(np.int64),
    )
    age = np.minimum(18 + rng.gamma(4.0, 6.5, n), 95)
    age = np.maximum(age, 18.05 + (stop_s - signup_s) / DAY / 365.25)  # adult at signup
    dob_day = (stop_s // DAY - age * 365.25).astype(np.int64)
    mw = np.array([m[5] for m in METROS])
    metro = rng.choice(len(METROS), n, p=mw / mw.sum())
    city, postcode, address = _addresses(rng, metro, zips)

    # households: 15% of people live with another person (same surname, address, home phone)
    household = np.full(n, -1, dtype=np.int64)
    members = rng.permutation(n)[: int(HOUSEHOLD_SHARE * n)]
    sizes = rng.choice([2, 3], size=len(members), p=[0.85, 0.15])
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    bounds = bounds[bounds <= len(members)]
    home_phone = np.full(n, None, dtype=object)
    head_of = np.arange(n)
    for h, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        group = members[a:b]
        if len(group) < 2:
            continue
        household[group] = h
        head_of[group] = group[0]
    in_house = household >= 0
    heads = np.unique(head_of[in_house])
    home_numbers = _phone_numbers(rng, np.array([int(METROS[m][2][0]) for m in metro[heads]]), taken)
    home_of_head = dict(zip(heads.tolist(), home_numbers))
    for arr in (last, metro, city, postcode, address):
        arr[in_house] = arr[head_of[in_house]]
    home_phone[in_house] = [home_of_head[h] for h in head_of[in_house]]

    # contact details
    codes = _area_codes(rng, metro)
    other = rng.random(n) < 0.25  # kept a number from another city
    codes[other] = [int(c) for c in rng.choice([c for m in METROS for c in m[2]], other.sum())]
    mobile = _phone_numbers(rng, codes, taken)
    phone2 = np.full(n, None, dtype=object)
    has2 = rng.random(n) < 0.20
    phone2[has2] = _phone_numbers(rng, codes[has2], taken)
    birth_year = 1970 + dob_day // 365
    emails_taken: set[str] = set()
    email = _emails(rng, first, last, birth_year, emails_taken)
    email2 = np.full(n, None, dtype=object)
    has_e2 = rng.random(n) < 0.22
    email2[has_e2] = _emails(rng, first[has_e2], last[has_e2], birth_year[has_e2], emails_taken)

    # movers: an old address in another city, moved at move_s
    moved = (rng.random(n) < MOVER_SHARE) & ~in_house
    old_metro = np.where(rng.random(n) < 0.7, metro, rng.integers(0, len(METROS), n))
    old_city, old_postcode, old_address = _addresses(rng, old_metro, zips)
    old_city, old_postcode, old_address = (where_or_none(moved, a) for a in (old_city, old_postcode, old_address))

    # latent traits and the continuous-time churn process
    engagement = rng.beta(2.0, 2.5, n)
    price_sens = rng.beta(2.0, 2.0, n)
    pain = rng.beta(1.3, 5.0, n)
    lam = np.clip(
        MEDIAN_ORDER_RATE * np.exp(0.75 * rng.standard_normal(n) + 0.8 * (engagement - 0.45)), 1 / 2000, 1 / 3
    )
    hazard = BASE_HAZARD * np.exp(B_PAIN * pain + B_PRICE * price_sens - B_ENGAGEMENT * engagement)
    shares = np.array([c[0] for c in CATEGORIES.values()])
    affinity = rng.dirichlet(2.4 * shares / shares.sum(), n)
    affinity = np.maximum(affinity, 1e-12)
    affinity /= affinity.sum(axis=1, keepdims=True)
    p_store = np.clip(0.25 + 0.007 * (age - 18), 0, 0.8)
    p_app = np.clip(0.40 - 0.005 * (age - 18), 0.05, 1) * (1 - p_store)
    u = rng.random(n)
    pref_channel = np.where(u < p_store, 0, np.where(u < p_store + p_app, 2, 1))
    home_store = metro * STORES_PER_METRO + rng.choice(STORES_PER_METRO, n, p=[0.5, 0.3, 0.2])

    life_days = rng.exponential(1.0, n) / hazard
    churn_s = signup_s + np.minimum(life_days, 36_500) * DAY
    churn_s = churn_s.astype(np.int64)
    move_s = np.where(moved, signup_s + (rng.random(n) * (stop_s - signup_s)).astype(np.int64), 0)

    width = max(6, len(str(n)))
    person_id = np.array([f"P{i + 1:0{width}d}" for i in range(n)], dtype=object)
    return Population(
        n,
        person_id,
        first,
        last,
        dob_day,
        metro,
        city,
        postcode,
        address,
        moved,
        move_s,
        old_city,
        old_postcode,
        old_address,
        household,
        home_phone,
        mobile,
        phone2,
        email,
        email2,
        signup_s,
        churn_s,
        lam,
        DEAD_RATE_SHARE * lam,
        hazard,
        engagement,
        price_sens,
        pain,
        affinity,
        pref_channel,
        home_store,
        stores,
    )
