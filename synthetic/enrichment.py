"""Second/third-party enrichment from two vendors, keyed by a hashed email.

In: `Population`, `Identities`. Out: the raw `enrichment` table (Arrow, hidden `_person`).
Each vendor covers part of the people; each covered person has 1-4 records with different
`as_of` dates (some years old, so stale facts must age out). email_sha256 is the SHA-256 of
the trimmed, lower-cased email as written in one of the person's identity records. Facts are
true as of `as_of` (age, postcode before a move) with vendor-specific noise.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from .common import DAY, bools, floats, iso_timestamps, rng_for, strings, where_or_none
from .identities import Identities
from .people import Population
from .reference import ENRICHMENT_VENDORS, INCOME_BANDS

COVERAGE = {"acme_data": 0.42, "datacorp": 0.32}
ACCURACY = {"acme_data": 0.92, "datacorp": 0.78}
LIFE_STAGES = (
    "young_single",
    "young_couple",
    "single",
    "couple",
    "family_young_kids",
    "family_teens",
    "empty_nester",
    "retired",
)


def _life_stage(age: np.ndarray, size: np.ndarray) -> np.ndarray:
    young, mid, late = age < 30, (age >= 30) & (age < 45), (age >= 45) & (age < 62)
    stage = np.where(age >= 70, 7, 6)
    stage = np.where(late, np.where(size >= 3, 5, np.where(size == 2, 6, 2)), stage)
    stage = np.where(mid, np.where(size >= 3, 4, np.where(size == 2, 3, 2)), stage)
    return np.where(young, np.where(size >= 3, 4, np.where(size == 2, 1, 0)), stage)


def make_enrichment(pop: Population, ids: Identities, seed: int, start_s: int, stop_s: int) -> pa.Table:
    rng = rng_for(seed, "enrichment")
    n = pop.n
    wp = np.array([p for p, _ in ids.written_emails], dtype=np.int64)
    we = np.array([e for _, e in ids.written_emails], dtype=object)
    order = np.argsort(wp, kind="stable")
    wp, we = wp[order], we[order]
    count = np.bincount(wp, minlength=n)
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    # latent household facts
    age_now = (stop_s // DAY - pop.dob_day) / 365.25
    hh_size = np.where(
        age_now < 30,
        rng.choice([1, 2, 3], n, p=[0.6, 0.3, 0.1]),
        np.where(
            age_now < 50,
            rng.choice([1, 2, 3, 4, 5], n, p=[0.25, 0.25, 0.25, 0.17, 0.08]),
            rng.choice([1, 2, 3], n, p=[0.35, 0.55, 0.10]),
        ),
    )
    in_house = pop.household >= 0
    hh_size[in_house] = np.maximum(hh_size[in_house], 2)
    income = np.clip(
        np.round(2.3 + 1.1 * rng.standard_normal(n) - 1.5 * (pop.price_sens - 0.5) + 0.02 * (age_now - 40)), 0, 5
    ).astype(int)
    owner_p = 1 / (1 + np.exp(-(-1.5 + 0.07 * (age_now - 30) + 0.4 * (income - 2.5))))
    home_owner = rng.random(n) < owner_p
    car_owner = rng.random(n) < np.where(np.isin(pop.metro, (0, 8)), 0.45, 0.82)
    parts = []
    for vendor in ENRICHMENT_VENDORS:
        person = np.flatnonzero((rng.random(n) < COVERAGE[vendor]) & (count > 0))
        reps = rng.choice([1, 2, 3, 4], len(person), p=[0.35, 0.30, 0.20, 0.15])
        p = np.repeat(person, reps)
        k = len(p)
        pick = first[person] + (rng.random(len(person)) * count[person]).astype(np.int64)
        email = np.repeat(we[pick], reps)  # one email per (person, vendor)
        oldest = start_s - 4 * 365 * DAY  # some facts are years old
        as_of = oldest + (rng.random(k) * (stop_s - oldest)).astype(np.int64)
        as_of = as_of // DAY * DAY
        age = (as_of // DAY - pop.dob_day[p]) / 365.25
        wrong = rng.random(k) > ACCURACY[vendor]
        size = np.where(wrong, rng.integers(1, 6, k), hh_size[p])
        inc = np.clip(income[p] - ((stop_s - as_of) / DAY / 365 / 6).astype(int), 0, 5)
        inc = np.where(rng.random(k) > ACCURACY[vendor], rng.integers(0, 6, k), inc)
        stage = np.where(rng.random(k) > ACCURACY[vendor], rng.integers(0, len(LIFE_STAGES), k), _life_stage(age, size))
        stale_addr = pop.moved[p] & (as_of < pop.move_s[p])
        postcode = np.where(stale_addr, pop.old_postcode[p], pop.postcode[p])
        flip = rng.random(k) > ACCURACY[vendor]
        parts.append(
            {
                "vendor": np.full(k, vendor, dtype=object),
                "as_of": as_of,
                "email": email,
                "person": p,
                "postcode": postcode,
                "household_size": size.astype(float),
                "income_band": np.array(INCOME_BANDS, dtype=object)[inc],
                "life_stage": np.array(LIFE_STAGES, dtype=object)[stage],
                "home_owner": home_owner[p] ^ flip,
                "car_owner": car_owner[p] ^ (rng.random(k) > ACCURACY[vendor]),
            }
        )
    cols = {key: np.concatenate([x[key] for x in parts]) for key in parts[0]}
    order = np.lexsort((cols["person"], cols["as_of"]))
    cols = {key: v[order] for key, v in cols.items()}
    k = len(order)
    sha = np.array([hashlib.sha256(e.strip().lower().encode()).hexdigest() for e in cols["email"]], dtype=object)
    present = lambda share: rng.random(k) > share
    return pa.table(
        {
            "vendor": strings(cols["vendor"]),
            "as_of": iso_timestamps(cols["as_of"]),
            "email_sha256": strings(sha),
            "postcode": strings(where_or_none(present(0.1), cols["postcode"])),
            "household_size": floats(cols["household_size"], present(0.08)),
            "income_band": strings(where_or_none(present(0.12), cols["income_band"])),
            "life_stage": strings(where_or_none(present(0.1), cols["life_stage"])),
            "home_owner": bools(cols["home_owner"], present(0.15)),
            "car_owner": bools(cols["car_owner"], present(0.2)),
            "_person": pa.array(cols["person"].astype(np.int32)),
        }
    )
