"""Identity on data the project did not make: no shared identifiers, a near-constant postcode,
no email or phone at all. Small hand-made people (with typos, nicknames, swapped DOB day/month
and households that share a surname, address and postcode) staged as crm_contacts +
loyalty_members; quality is pairwise precision/recall against the known person of each record."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
import pytest

from cdp.identity.matching import budget_blocking_rules, count_rule_pairs, profile_records
from cdp.identity.resolve import resolve
from cdp.workspace import Workspace

FIRST = [
    *("robert", "elizabeth", "james", "mary", "thomas", "susan", "daniel", "karen", "peter", "helen"),
    *("andrew", "margaret", "george", "patricia", "edward", "catherine", "william", "dorothy", "richard", "joan"),
    *("francis", "irene", "harold", "gloria", "leonard", "vivian", "stanley", "marion", "walter", "yvonne"),
]
NICK = {"robert": "bob", "elizabeth": "liz", "james": "jim", "thomas": "tom", "daniel": "dan", "susan": "sue"}
LAST = ["walker", "nguyen", "okafor", "schmidt", "rossi", "kowalski", "tanaka", "hughes", "moreau", "silva"]
STREETS = ["mill lane", "station road", "church street", "park avenue", "king street", "high street"]


def _typo(word: str, rng: np.random.Generator) -> str:
    i = int(rng.integers(1, len(word) - 1))
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]  # two letters swapped


def _people(n_households: int = 60, seed: int = 3) -> pd.DataFrame:
    """Households of 1-3 people (same last name, address, postcode; own first name and DOB)."""
    rng = np.random.default_rng(seed)
    rows = []
    for h in range(n_households):
        last = LAST[h % len(LAST)] + ("" if h < len(LAST) else str(h // len(LAST)))
        address = f"{rng.integers(1, 99)} {STREETS[h % len(STREETS)]}"
        postcode = f"{2000 + h}"
        firsts = rng.choice(FIRST, size=int(rng.integers(1, 4)), replace=False)
        for first in firsts:
            dob = pd.Timestamp("1940-01-01") + pd.Timedelta(days=int(rng.integers(0, 60 * 365)))
            rows.append(
                {
                    "person": len(rows),
                    "first": first,
                    "last": last,
                    "dob": dob,
                    "address": address,
                    "postcode": postcode,
                }
            )
    return pd.DataFrame(rows)


def _records(people: pd.DataFrame, seed: int = 4) -> tuple[list[dict], list[dict]]:
    """One CRM record per person (clean) and one loyalty card (a variation on ~half of them)."""
    rng = np.random.default_rng(seed)
    crm, cards = [], []
    for p in people.itertuples():
        crm.append(
            {
                "record_id": f"R{p.person}",
                "first_name": p.first.title(),
                "last_name": p.last.title(),
                "date_of_birth": p.dob.date(),
                "address_line": p.address,
                "postcode": p.postcode,
            }
        )
        first, last, dob = p.first, p.last, p.dob
        change = rng.integers(0, 6)
        if change == 1 and first in NICK:
            first = NICK[first]
        elif change == 2:
            last = _typo(last, rng)
        elif change == 3 and dob.day <= 12 and dob.day != dob.month:
            dob = pd.Timestamp(year=dob.year, month=dob.day, day=dob.month)  # day/month swapped
        elif change == 4:
            first = _typo(first, rng)
        cards.append(
            {
                "card_id": f"L{p.person}",
                "first_name": first,
                "last_name": last,
                "date_of_birth": dob.date(),
                "address_line": p.address,
                "postcode": p.postcode,
            }
        )
    return crm, cards


def _stage(ws: Workspace, crm: list[dict], cards: list[dict], **columns) -> None:
    ws.staged.mkdir(parents=True, exist_ok=True)
    for table, rows in (("crm_contacts", crm), ("loyalty_members", cards)):
        frame = pd.DataFrame(rows)
        for column, make in columns.items():
            frame[column] = [make(table, r) for r in rows]
        frame.to_parquet(ws.staged / f"{table}.parquet", index=False)


def _quality(ws: Workspace) -> dict[str, float]:
    identity = pd.read_parquet(ws.identity / "identity_map.parquet")
    identity["person"] = identity["source_key"].str[1:].astype(int)
    pairs = lambda by: {
        tuple(sorted(p)) for _, g in identity.groupby(by) for p in itertools.combinations(g["source_key"], 2)
    }
    predicted, truth = pairs("customer_id"), pairs("person")
    tp = len(predicted & truth)
    return {"precision": tp / len(predicted) if predicted else 1.0, "recall": tp / len(truth)}


@pytest.fixture(scope="module")
def people() -> pd.DataFrame:
    logging.getLogger("splink").setLevel(logging.ERROR)
    return _people()


def test_no_shared_identifiers_at_all_resolves(tmp_path, people):
    """Every record has its own email and phone: no deterministic link, no pseudo-label, no
    prior from exact rules. Resolve must not crash (it used to exit with 'math domain error')
    and must still find the people from names + DOB + address, with m values from EM."""
    ws = Workspace(tmp_path)
    crm, cards = _records(people)
    _stage(
        ws,
        crm,
        cards,
        email_norm=lambda t, r: f"{t[:3]}{r.get('record_id', r.get('card_id'))}@example.org".lower(),
        phone_e164=lambda t, r: f"+4477009{abs(hash((t, str(r)))) % 100000:05d}",
    )
    summary = resolve(ws)
    q = _quality(ws)
    assert q["precision"] >= 0.99 and q["recall"] >= 0.9, q
    assert any("EM" in note for note in summary.notes), summary.notes


def test_no_email_or_phone_names_and_dob_match(tmp_path, people):
    """Typos, nicknames and swapped DOB day/month are evidence, not refusals; households
    (same surname, address and postcode, other first name and DOB) stay apart."""
    ws = Workspace(tmp_path)
    crm, cards = _records(people)
    _stage(ws, crm, cards)
    summary = resolve(ws)
    q = _quality(ws)
    assert q["precision"] >= 0.99 and q["recall"] >= 0.95, q
    assert summary.probabilistic_links >= 0.95 * len(people)
    edges = pd.read_parquet(ws.identity / "match_edges.parquet")
    by_person = lambda uid: uid.split("|")[1][1:]
    same = edges["unique_id_l"].map(by_person) == edges["unique_id_r"].map(by_person)
    assert not (same & edges["guard"].isin(["first names disagree", "dates of birth conflict"])).any()


def test_near_constant_postcode_costs_no_precision(tmp_path, people):
    """The same people with the postcode equal on ~98% of records: the postcode is dropped as
    evidence (said so in the notes) and precision does not drop against the clean version."""
    clean_ws, flat_ws = Workspace(tmp_path / "clean"), Workspace(tmp_path / "flat")
    crm, cards = _records(people)
    _stage(clean_ws, crm, cards)
    rng = np.random.default_rng(5)
    flat = lambda rows: [{**r, "postcode": "0000" if rng.random() < 0.98 else r["postcode"]} for r in rows]
    _stage(flat_ws, flat(crm), flat(cards))
    resolve(clean_ws)
    summary = resolve(flat_ws)
    clean, constant = _quality(clean_ws), _quality(flat_ws)
    assert constant["precision"] >= clean["precision"] - 1e-9, (clean, constant)
    assert constant["recall"] >= clean["recall"] - 0.02, (clean, constant)
    assert any(note.startswith("postcode '0000'") for note in summary.notes), summary.notes
    # no blocking on the constant value: the postcode rules pair only the few records off it
    records = profile_records(flat_ws)
    assert not records["postcode"].eq("0000").any()
    assert count_rule_pairs(records, ("first_canon", "postcode")) <= count_rule_pairs(
        profile_records(clean_ws), ("first_canon", "postcode")
    )


def test_blocking_rule_over_budget_is_tightened_and_said():
    records = pd.DataFrame(
        {
            "unique_id": [f"r{i}" for i in range(400)],
            "first_canon": ["ann"] * 200 + ["bob"] * 200,
            "last_name": [f"l{i % 40}" for i in range(400)],
            "postcode": ["2000"] * 400,
            "dob": [None] * 400,
            "email_local": [None] * 400,
            "phone": [None] * 400,
        }
    )
    assert count_rule_pairs(records, ("first_canon", "postcode")) == 2 * 200 * 199 // 2
    rules, notes = budget_blocking_rules(records, budget=5_000)
    assert ("first_canon", "postcode", "last_name") in rules and ("first_canon", "postcode") not in rules
    assert ("last_name", "postcode") in rules  # 40 groups of 10: 1,800 pairs, under budget
    assert any("first_canon+postcode" in n and "tightened to first_canon+postcode+last_name" in n for n in notes)
    _, dropped = budget_blocking_rules(records, budget=10)
    assert any(n.endswith("dropped") for n in dropped)
