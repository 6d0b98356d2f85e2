"""Identity resolution v1 on hand-made staged tables."""

from __future__ import annotations

import pandas as pd
import pytest

from cdp.identity.links import ResolveConfig
from cdp.identity.resolve import customer_id_for, resolve
from cdp.workspace import Workspace


def _write(ws: Workspace, table: str, rows: list[dict]) -> None:
    ws.staged.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(ws.staged / f"{table}.parquet", index=False)


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path)
    _write(
        ws,
        "crm_contacts",
        [
            {"record_id": "R1", "email_norm": "ann@x.com", "phone_e164": "+12127341234"},
            {"record_id": "R2", "email_norm": None, "phone_e164": "+12127341234"},  # same phone -> Ann
            {"record_id": "R3", "email_norm": "bob@x.com", "phone_e164": None},
            {"record_id": "R4", "email_norm": None, "phone_e164": None},  # nothing to link on
        ],
    )
    _write(
        ws,
        "loyalty_members",
        [
            {"card_id": "L1", "email_norm": "bob@x.com", "phone_e164": None},
        ],
    )
    _write(
        ws,
        "online_accounts",
        [
            {"account_id": "A1", "email_norm": "ann@x.com", "phone_e164": None},
        ],
    )
    # A store's placeholder phone on 30 different people's cards must not merge them.
    orders = [
        {"order_id": f"O{i}", "card_id": f"LX{i}", "account_id": None, "email_norm": None, "phone_e164": "+12129990000"}
        for i in range(30)
    ]
    orders += [
        {"order_id": "O-bob", "card_id": "L1", "account_id": None, "email_norm": None, "phone_e164": None},
        {"order_id": "O-anon", "card_id": None, "account_id": None, "email_norm": None, "phone_e164": None},
        {"order_id": "O-zero", "card_id": None, "account_id": None, "email_norm": None, "phone_e164": "+10000000000"},
    ]
    _write(ws, "orders", orders)
    _write(
        ws,
        "web_events",
        [
            {"event_id": "W1", "account_id": "A1", "device_id": "D1"},
            {"event_id": "W2", "account_id": None, "device_id": "D1"},  # anonymous event on Ann's device
        ],
    )
    return ws


def _customers(ws: Workspace) -> dict[tuple[str, str], str]:
    frame = pd.read_parquet(ws.identity / "identity_map.parquet")
    return {(t, k): c for t, k, c in zip(frame["source_table"], frame["source_key"], frame["customer_id"])}


def test_links_on_shared_identifiers(ws):
    resolve(ws)
    ids = _customers(ws)
    ann = ids[("crm_contacts", "R1")]
    assert ids[("crm_contacts", "R2")] == ann
    assert ids[("online_accounts", "A1")] == ann
    assert ids[("web_events", "W2")] == ann  # device seen logged in as Ann
    assert ids[("loyalty_members", "L1")] == ids[("crm_contacts", "R3")] == ids[("orders", "O-bob")]
    assert ids[("crm_contacts", "R3")] != ann
    assert ids[("crm_contacts", "R4")] not in {ann, ids[("crm_contacts", "R3")]}


def test_placeholder_and_shared_phone_do_not_merge(ws):
    summary = resolve(ws, ResolveConfig(max_fanout=5))
    ids = _customers(ws)
    placeholder_customers = {ids[("orders", f"O{i}")] for i in range(30)}
    assert len(placeholder_customers) == 30
    blocked = pd.read_parquet(ws.identity / "blocked_identifiers.parquet")
    assert "phone:+12129990000" in set(blocked["node"])
    assert summary.blocked_identifiers >= 1


def test_unlinkable_records_are_counted_not_mapped(ws):
    summary = resolve(ws)
    ids = _customers(ws)
    assert ("orders", "O-anon") not in ids
    assert ("orders", "O-zero") not in ids  # only a placeholder phone: never merged with anyone
    assert summary.anonymous_records >= 2


def test_ids_are_stable_across_reruns(ws):
    resolve(ws)
    first = _customers(ws)
    resolve(ws)
    assert _customers(ws) == first
    assert customer_id_for("email:ann@x.com") == customer_id_for("email:ann@x.com")


# --- v2: households, guards, stable ids, explain ------------------------------------------


def _people(ws: Workspace, crm: list[dict], orders: list[dict] | None = None) -> None:
    base = {
        "first_name": None,
        "last_name": None,
        "date_of_birth": None,
        "address_line": None,
        "postcode": None,
        "email_norm": None,
        "phone_e164": None,
    }
    _write(ws, "crm_contacts", [{**base, **r} for r in crm])
    _write(
        ws,
        "orders",
        orders or [{"order_id": "O0", "card_id": None, "account_id": None, "email_norm": None, "phone_e164": None}],
    )


HOME = "+12127345678"


@pytest.fixture()
def household(tmp_path) -> Workspace:
    ws = Workspace(tmp_path)
    _people(
        ws,
        [
            {
                "record_id": "M1",
                "first_name": "Mary",
                "last_name": "Lee",
                "date_of_birth": "1970-03-01",
                "address_line": "1 Oak St",
                "postcode": "10001",
                "phone_e164": HOME,
                "email_norm": "mary@x.com",
            },
            {
                "record_id": "M2",
                "first_name": "Mary",
                "last_name": "Lee",
                "date_of_birth": "1970-03-01",
                "address_line": "1 Oak St",
                "postcode": "10001",
                "phone_e164": HOME,
            },
            {
                "record_id": "J1",
                "first_name": "John",
                "last_name": "Lee",
                "date_of_birth": "1968-07-09",
                "address_line": "1 Oak St",
                "postcode": "10001",
                "phone_e164": HOME,
                "email_norm": "john@x.com",
            },
            {
                "record_id": "B1",
                "first_name": "Robert",
                "last_name": "Stone",
                "date_of_birth": "1980-01-02",
                "email_norm": "bob@y.com",
            },
            {
                "record_id": "B2",
                "first_name": "Bob",
                "last_name": "Stone",
                "date_of_birth": "1980-01-02",
                "email_norm": "bob@y.com",
            },
            {"record_id": "G1", "first_name": "n/a", "last_name": None, "phone_e164": "+10000000000"},
            {"record_id": "G2", "first_name": "n/a", "last_name": None, "phone_e164": "+10000000000"},
        ],
        [{"order_id": "O-home", "card_id": None, "account_id": None, "email_norm": None, "phone_e164": HOME}],
    )
    return ws


def test_shared_home_phone_links_only_name_agreeing_records(household):
    summary = resolve(household)
    ids = _customers(household)
    assert ids[("crm_contacts", "M1")] == ids[("crm_contacts", "M2")]  # same name on the home phone
    assert ids[("crm_contacts", "J1")] != ids[("crm_contacts", "M1")]  # spouse not merged
    assert ("orders", "O-home") not in ids  # whose order? unknown: not guessed
    assert ids[("crm_contacts", "B1")] == ids[("crm_contacts", "B2")]  # Bob = Robert
    assert ids[("crm_contacts", "G1")] != ids[("crm_contacts", "G2")]  # placeholder phone never merges
    assert summary.shared_identifiers >= 1
    shared = pd.read_parquet(household.identity / "blocked_identifiers.parquet")
    assert set(shared.loc[shared["node"] == f"phone:{HOME}", "guard"]) == {"shared"}
    homes = pd.read_parquet(household.identity / "households.parquet").set_index("customer_id")["household_id"]
    assert homes[ids[("crm_contacts", "M1")]] == homes[ids[("crm_contacts", "J1")]]
    assert homes[ids[("crm_contacts", "B1")]] != homes[ids[("crm_contacts", "M1")]]
    frame = pd.read_parquet(household.identity / "identity_map.parquet")
    assert frame["match_probability"].between(0, 1).all()


def test_one_persons_name_variants_do_not_make_an_email_shared(tmp_path):
    # Erin and "Aarn" do not agree with each other, but both agree with Aaron: one person's email.
    # A household's phone carried by Ann and Bob Vega stays shared.
    ws = Workspace(tmp_path)
    home = "+13125550123"
    _people(
        ws,
        [
            {
                "record_id": "V1",
                "first_name": "Aaron",
                "last_name": "Vega",
                "email_norm": "av@x.com",
                "postcode": "77098",
            },
            {"record_id": "V2", "first_name": "Erin", "last_name": "Vega", "email_norm": "av@x.com"},
            {"record_id": "V3", "first_name": "Aarn", "last_name": "Vega", "email_norm": "av@x.com"},
            {"record_id": "V4", "first_name": "Vega", "last_name": "Aaron", "email_norm": "av@x.com"},
            {"record_id": "H1", "first_name": "Ann", "last_name": "Lowe", "phone_e164": home},
            {"record_id": "H2", "first_name": "Bob", "last_name": "Lowe", "phone_e164": home},
        ],
        [
            {"order_id": "O-av", "card_id": None, "account_id": None, "email_norm": "av@x.com", "phone_e164": None},
            {"order_id": "O-home", "card_id": None, "account_id": None, "email_norm": None, "phone_e164": home},
        ],
    )
    resolve(ws, ResolveConfig(probabilistic=False))
    ids = _customers(ws)
    assert len({ids[("crm_contacts", f"V{i}")] for i in range(1, 5)} | {ids[("orders", "O-av")]}) == 1
    assert ids[("crm_contacts", "H1")] != ids[("crm_contacts", "H2")]
    assert ("orders", "O-home") not in ids
    guards = pd.read_parquet(ws.identity / "blocked_identifiers.parquet").set_index("node")["guard"]
    assert "email:av@x.com" not in guards.index and guards[f"phone:{home}"] == "shared"


def test_dob_conflict_is_a_shared_identifier(tmp_path):
    ws = Workspace(tmp_path)
    _people(
        ws,
        [
            {
                "record_id": "T1",
                "first_name": "Sam",
                "last_name": "Ray",
                "date_of_birth": "1950-01-01",
                "email_norm": "ray@x.com",
            },
            {
                "record_id": "T2",
                "first_name": "Sam",
                "last_name": "Ray",
                "date_of_birth": "1985-06-30",
                "email_norm": "ray@x.com",
            },
        ],
    )
    summary = resolve(ws)
    ids = _customers(ws)
    assert ids[("crm_contacts", "T1")] != ids[("crm_contacts", "T2")]
    assert summary.dob_conflict_clusters == 0


def test_stable_ids_merge_and_split(tmp_path):
    ws = Workspace(tmp_path)
    crm = [
        {"record_id": "A1", "email_norm": "a@x.com"},
        {"record_id": "A2", "email_norm": "a@x.com"},
        {"record_id": "A3", "email_norm": "a@x.com"},
        {"record_id": "C1", "email_norm": "c@x.com"},
        {"record_id": "D1", "email_norm": "d@x.com"},
    ]
    _people(ws, crm)
    resolve(ws)
    first = _customers(ws)
    resolve(ws)
    assert _customers(ws) == first  # re-run: same ids
    # merge: C1 and D1 now share a phone -> one id survives, the other is retired
    crm[3]["phone_e164"] = crm[4]["phone_e164"] = "+12127349999"
    crm.append({"record_id": "E1", "email_norm": "e@x.com"})  # a new person
    _people(ws, crm)
    resolve(ws)
    merged = _customers(ws)
    assert merged[("crm_contacts", "A1")] == first[("crm_contacts", "A1")]  # untouched cluster keeps its id
    assert merged[("crm_contacts", "C1")] == merged[("crm_contacts", "D1")]
    survivor = merged[("crm_contacts", "C1")]
    assert survivor in {first[("crm_contacts", "C1")], first[("crm_contacts", "D1")]}
    history = pd.read_parquet(ws.identity / "id_history.parquet")
    retired = ({first[("crm_contacts", "C1")], first[("crm_contacts", "D1")]} - {survivor}).pop()
    assert ((history["event"] == "merged") & (history["old_id"] == retired) & (history["new_id"] == survivor)).any()
    # split: A3 leaves A1/A2 -> the larger part keeps the id
    crm[2]["email_norm"] = "other@x.com"
    _people(ws, crm)
    resolve(ws)
    after = _customers(ws)
    assert after[("crm_contacts", "A1")] == first[("crm_contacts", "A1")]
    assert after[("crm_contacts", "A3")] != first[("crm_contacts", "A1")]
    history = pd.read_parquet(ws.identity / "id_history.parquet")
    assert ((history["event"] == "split") & (history["old_id"] == first[("crm_contacts", "A1")])).any()


def test_explain_match_shows_evidence_without_raw_values(household):
    from cdp.identity.explain import explain_pair

    resolve(household)
    same = explain_pair(household, "M1", "M2")
    assert same["same_customer"] and same["common_identifiers"][0]["guard"] == "shared"
    assert HOME not in str(same) and "mary@x.com" not in str(same)
    other = explain_pair(household, "M1", "J1")
    assert not other["same_customer"]
    assert "levels" in other["probabilistic"] and other["rule"] == "not linked"


def test_pairs_below_threshold_need_postcode_and_close_first_names():
    from cdp.identity.resolve import guard_scored_edges

    profiles = pd.DataFrame({"unique_id": ["a", "b", "c", "d"], "dob": [None, None, "1950-01-01", "1987-06-30"]})
    edges = pd.DataFrame(
        {
            "unique_id_l": ["a", "a", "a", "a", "a", "c"],
            "unique_id_r": ["b"] * 5 + ["d"],
            "match_probability": [0.97, 0.97, 0.97, 0.8, 0.998, 1.0],
            "gamma_postcode": [4, 0, 4, 4, -1, 4],
            "gamma_first_name": [5, 5, 1, 5, 5, 5],
        }
    )
    verdict = guard_scored_edges(edges, profiles)
    # corroborated by postcode + name | postcode differs | names only loosely alike | too low | above threshold | DOBs
    assert verdict["accepted"].tolist() == [True, False, False, False, True, False]
    assert (
        verdict["guard"].iloc[1].startswith("below threshold") and verdict["guard"].iloc[5] == "dates of birth conflict"
    )
    # without household guards (FEBRL) the thresholds still hold
    loose = guard_scored_edges(edges, profiles, ResolveConfig(household_guards=False))
    assert loose["accepted"].tolist() == [True, False, False, False, True, True]


def test_heavy_guest_shopper_is_not_a_checkout_placeholder(tmp_path):
    # Profiled people order 10-12 times; a guest checking out with one email 20 times is a person
    # (under twice the busiest profiled identifiers); a number on 60 receipts and no profile is not.
    ws = Workspace(tmp_path)
    people = [{"record_id": f"P{i}", "email_norm": f"p{i}@x.com"} for i in range(5)]
    none = {"card_id": None, "account_id": None, "email_norm": None, "phone_e164": None}
    orders = [
        {**none, "order_id": f"O{i}-{j}", "email_norm": f"p{i}@x.com"}
        for i in range(5)
        for j in range(12 if i == 4 else 10)
    ]
    orders += [{**none, "order_id": f"G{j}", "email_norm": "guest@y.com"} for j in range(20)]
    orders += [{**none, "order_id": f"S{j}", "phone_e164": "+13125550000"} for j in range(60)]
    _people(ws, people, orders)
    resolve(ws, ResolveConfig(min_orders_cap=1, probabilistic=False))
    ids = _customers(ws)
    assert len({ids[("orders", f"G{j}")] for j in range(20)}) == 1
    assert not any(("orders", f"S{j}") in ids for j in range(60))
    blocked = pd.read_parquet(ws.identity / "blocked_identifiers.parquet").set_index("node")
    assert "email:guest@y.com" not in blocked.index and blocked.loc["phone:+13125550000", "guard"] == "blocked"
