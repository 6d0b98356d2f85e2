"""Tests of the synthetic data generator (tiny data in tmp_path)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow.parquet as pq
import pytest

from cdp.ingest.contract import TABLES
from cdp.synthetic.common import data_window
from cdp.synthetic.generate import GenerationSummary, generate
from cdp.synthetic.oracle import p_no_order, p_no_order_piecewise, true_churn_probability

CUSTOMERS, SEED = 2000, 11
TREND_CUSTOMERS = 12_000
EVENT_TIMES = {
    "orders": "ordered_at",
    "web_events": "occurred_at",
    "service_interactions": "occurred_at",
    "marketing_sends": "sent_at",
    "marketing_responses": "occurred_at",
    "campaigns": "start_at",
}
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
EMAIL = re.compile(r"^\s*[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\s*$")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary, list]:
    root = tmp_path_factory.mktemp("synthetic")
    calls: list[tuple[str, int, int]] = []
    summary = generate(root, CUSTOMERS, SEED, progress=lambda s, d, t: calls.append((s, d, t)))
    return root, summary, calls


def raw(root: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(root / "raw" / f"{name}.parquet")


def truth(root: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(root / "truth" / f"{name}.parquet")


def dirty_rows(root: Path, table: str, row_errors_only: bool = True) -> set[int]:
    d = truth(root, "dirty_rows")
    d = d[(d["table"] == table) & (d["row_error"] | (not row_errors_only))]
    return set(d["row"].tolist())


def test_data_window_is_two_years_to_end() -> None:
    start, stop = data_window("2025-12-31")
    assert (start.isoformat(), stop.isoformat()) == ("2024-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00")
    start, stop = data_window("2025-06-30T12:00:00Z")
    assert stop == pd.Timestamp("2025-06-30T12:00:00Z") and start == pd.Timestamp("2023-06-30T12:00:00Z")


def test_deterministic_for_same_seed(tmp_path: Path) -> None:
    generate(tmp_path / "a", 500, 3)
    generate(tmp_path / "b", 500, 3)
    generate(tmp_path / "c", 500, 4)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    assert len(files) == 13 + 7
    for f in files:
        assert pq.read_table(tmp_path / "a" / f).equals(pq.read_table(tmp_path / "b" / f)), f
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    other = pq.read_table(tmp_path / "c/raw/orders.parquet")
    assert not pq.read_table(tmp_path / "a/raw/orders.parquet").equals(other)


@pytest.mark.parametrize("customers", [1, 20])
def test_tiny_populations_do_not_break(tmp_path: Path, customers: int) -> None:
    summary = generate(tmp_path, customers, 1)
    assert set(summary.rows) == set(TABLES) and summary.rows["crm_contacts"] >= customers
    with pytest.raises(ValueError):
        generate(tmp_path, 0, 1)


def test_every_contract_table_with_exact_columns_and_types(world) -> None:
    root, summary, calls = world
    for name, spec in TABLES.items():
        table = pq.read_table(root / "raw" / f"{name}.parquet")
        assert tuple(table.column_names) == spec.columns, name
        assert table.num_rows == summary.rows[name] > 0
        for field in table.schema:
            if field.name in spec.numbers:
                assert str(field.type) == "double", (name, field.name)
            elif field.name in spec.booleans:
                assert str(field.type) == "bool", (name, field.name)
            else:
                assert str(field.type) == "string", (name, field.name)
    assert summary.people == CUSTOMERS and summary.seconds > 0
    writes = [c[0] for c in calls if c[0].startswith("write ")]
    assert writes == [f"write {t}" for t in TABLES] + ["write truth"]
    assert [c[1] for c in calls] == list(range(1, len(calls) + 1)) and calls[-1][1] == calls[-1][2]


def test_clean_rows_are_clean_and_every_dirty_kind_is_listed(world) -> None:
    root, _, _ = world
    d = truth(root, "dirty_rows")
    assert set(d["kind"]) == {
        "null_required",
        "bad_date",
        "bad_enum",
        "duplicate_row",
        "duplicate_id",
        "malformed_email",
        "malformed_phone",
    }
    for name, spec in TABLES.items():
        df = raw(root, name)
        mine = d[d["table"] == name]
        bad = set(mine.loc[mine["row_error"], "row"])
        clean = df.drop(index=list(bad))
        assert clean[list(spec.required)].notna().all().all(), name
        for col in spec.timestamps:
            ok = clean[col].dropna()
            assert ok.str.match(ISO).all() and pd.to_datetime(ok, errors="coerce").notna().all(), (name, col)
        for col, domain in spec.enums.items():
            assert clean[col].dropna().isin(domain).all(), (name, col)
        if spec.primary_key:
            assert not clean.duplicated(list(spec.primary_key)).any(), name
        for _, r in mine.iterrows():
            value = df.at[r["row"], r["column"]] if r["column"] in df.columns else None
            if r["kind"] == "null_required":
                assert pd.isna(value)
            elif r["kind"] == "bad_date":
                assert pd.isna(pd.to_datetime(value, errors="coerce", format="ISO8601", utc=True))
            elif r["kind"] == "bad_enum":
                assert value not in spec.enums[r["column"]]
            elif r["kind"] == "duplicate_row":
                assert r["other_row"] < r["row"]
                assert df.iloc[r["row"]].equals(df.iloc[r["other_row"]])
            elif r["kind"] == "duplicate_id":
                key = list(spec.primary_key)
                assert df.loc[r["row"], key].tolist() == df.loc[r["other_row"], key].tolist()
                assert not df.iloc[r["row"]].equals(df.iloc[r["other_row"]])
            elif r["kind"] == "malformed_email":
                assert not EMAIL.match(str(value))
            elif r["kind"] == "malformed_phone":
                assert not _valid_phone(str(value))
    big = {n for n in TABLES if n not in ("products", "campaigns")}
    shares = d[d["row_error"]].groupby("table").size() / pd.Series({n: len(raw(root, n)) for n in big})
    assert shares[list(big)].between(0.005, 0.03).all(), shares


def _valid_phone(value: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(value, "US"))
    except phonenumbers.NumberParseException:
        return False


def test_record_persons_covers_every_record(world) -> None:
    root, _, _ = world
    rp = truth(root, "record_persons")
    keys = {
        "crm_contacts": "record_id",
        "loyalty_members": "card_id",
        "online_accounts": "account_id",
        "orders": "order_id",
        "web_events": "event_id",
        "service_interactions": "interaction_id",
        "marketing_sends": "send_id",
        "consent_events": "event_id",
        "enrichment": "email_sha256",
    }
    persons = set(truth(root, "persons")["person_id"])
    for name, key in keys.items():
        df = raw(root, name)
        mine = rp[rp["source_table"] == name].sort_values("row")
        assert mine["row"].tolist() == list(range(len(df))), name
        assert mine["source_key"].tolist() == df[key].tolist(), name
        assert mine["person_id"].isin(persons).all()
    orders = raw(root, "orders")
    anonymous = orders[orders[["card_id", "phone", "account_id", "email"]].isna().all(axis=1)]
    assert len(anonymous) > 0.05 * (orders["channel"] == "store").sum()


def test_duplicate_crm_people_and_identity_mess(world) -> None:
    root, _, _ = world
    rp = truth(root, "record_persons")
    crm = raw(root, "crm_contacts")
    crm["person_id"] = rp[rp["source_table"] == "crm_contacts"].sort_values("row")["person_id"].to_numpy()
    real = crm.drop(index=list(dirty_rows(root, "crm_contacts")))
    per_person = real.groupby("person_id").size()
    assert per_person.min() >= 1 and 0.07 <= (per_person > 1).mean() <= 0.13
    assert real["person_id"].nunique() >= 0.99 * CUSTOMERS
    multi = real[real["person_id"].isin(per_person[per_person > 1].index)]
    names = multi.groupby("person_id")["first_name"].nunique()
    assert (names > 1).mean() > 0.3  # nicknames, typos, swaps, case
    emails = pd.concat([raw(root, t)["email"] for t in ("crm_contacts", "online_accounts", "orders")])
    emails = emails.dropna()
    assert emails.str.contains(r"\+").any() and (emails != emails.str.lower()).any()
    assert (emails != emails.str.strip()).any()
    phones = pd.concat([raw(root, t)["phone"] for t in ("crm_contacts", "loyalty_members", "orders")])
    phones = phones.dropna()
    assert {"(", ".", "+1 ", "-"} <= {c for p in phones for c in ("(", ".", "+1 ", "-") if c in p}
    persons = truth(root, "persons")
    houses = persons.dropna(subset=["household_id"]).groupby("household_id")
    assert 0.12 <= persons["household_id"].notna().mean() <= 0.18
    assert (houses["last_name"].nunique() == 1).all() and (houses["home_phone"].nunique() == 1).all()


def test_clean_phones_are_valid_us_numbers(world) -> None:
    root, _, _ = world
    for name in ("crm_contacts", "loyalty_members", "online_accounts", "orders", "service_interactions"):
        df = raw(root, name).drop(index=list(dirty_rows(root, name, row_errors_only=False)))
        phones = df["phone"].dropna()
        phones = phones[phones != "0000000000"]
        assert phones.map(_valid_phone).all(), name


def test_placeholder_phone_is_shared_by_many_people(world) -> None:
    root, _, _ = world
    rp = truth(root, "record_persons")
    orders = raw(root, "orders")
    orders["person_id"] = rp[rp["source_table"] == "orders"].sort_values("row")["person_id"].to_numpy()
    people_per_phone = orders.dropna(subset=["phone"]).groupby("phone")["person_id"].nunique()
    shared = people_per_phone[people_per_phone >= 20]
    assert "0000000000" in shared.index
    assert any(_valid_phone(p) for p in shared.index)  # a store's own (valid) number
    real = people_per_phone[~people_per_phone.index.isin(shared.index)]
    assert real.quantile(0.99) <= 3  # real phones: a person or a household


@pytest.mark.parametrize(
    "lam,h,alive", [(1 / 40, 0.002, True), (1 / 10, 0.02, True), (1 / 200, 0.01, True), (1 / 30, 0.003, False)]
)
def test_oracle_formula_matches_monte_carlo(lam: float, h: float, alive: bool) -> None:
    rng = np.random.default_rng(0)
    n, horizon, r = 200_000, 90.0, 0.03 * lam
    churn = rng.exponential(1 / h, n) if alive else np.zeros(n)
    alive_days = np.minimum(churn, horizon)
    orders = rng.poisson(lam * alive_days) + rng.poisson(r * (horizon - alive_days))
    mc = (orders == 0).mean()
    exact = float(p_no_order(np.array([lam]), np.array([r]), np.array([h]), horizon, np.array([alive]))[0])
    assert abs(mc - exact) < 4 * np.sqrt(exact * (1 - exact) / n) + 1e-4


def test_piecewise_oracle_matches_monte_carlo() -> None:
    """A thinning window (rates x 0.3 on days 20-34) and an extra-order window (q=0.25)."""
    rng = np.random.default_rng(1)
    n, horizon, lam, h = 200_000, 90.0, 1 / 25, 0.004
    r = 0.03 * lam
    churn = rng.exponential(1 / h, n)

    # expected counts: integral of the rate over [0, 90] with m(u) = 0.3 on [20, 34]
    def mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        full = np.clip(b, 0, horizon) - np.clip(a, 0, horizon)
        win = np.clip(np.minimum(b, 34), 20, None) - np.clip(np.maximum(a, 20), None, 34)
        return full - 0.7 * np.clip(win, 0, None)

    alive_mass = mass(np.zeros(n), np.minimum(churn, horizon))
    dead_mass = mass(np.minimum(churn, horizon), np.full(n, horizon))
    natural = rng.poisson(lam * alive_mass) + rng.poisson(r * dead_mass)
    extra = rng.random(n) < 0.25 * (10 / 14)  # window (-4, 10]: 10 of 14 days in the horizon
    mc = ((natural == 0) & ~extra).mean()
    lo, hi, mult = np.array([[20.0, 90.0]]), np.array([[34.0, 90.0]]), np.array([[0.3, 1.0]])
    exact = p_no_order_piecewise(
        np.array([lam]), np.array([r]), np.array([h]), horizon, np.array([True]), lo, hi, mult
    )[0] * (1 - 0.25 * 10 / 14)
    assert abs(mc - exact) < 4 * np.sqrt(exact * (1 - exact) / n)


def test_oracle_is_calibrated_on_generated_orders(world) -> None:
    root, _, _ = world
    persons, orders = truth(root, "persons"), truth(root, "orders_truth")
    sends = truth(root, "sends_truth")
    _, stop = data_window("2025-12-31")
    for days_before in (90, 200):
        s = stop - pd.Timedelta(days=days_before)
        known = persons[persons["signup_at"] <= s]
        horizon = orders[(orders["ordered_at"] > s) & (orders["ordered_at"] <= s + pd.Timedelta(days=90))]
        label = ~known["person_id"].isin(horizon["person_id"])
        p = true_churn_probability(persons, known["person_id"], s, 90, sends=sends)
        assert not np.isnan(p).any()
        se = np.sqrt((p * (1 - p)).sum()) / len(p)
        assert abs(label.mean() - p.mean()) < 4 * se
        assert np.mean(p[label.to_numpy()]) > np.mean(p[~label.to_numpy()]) + 0.3
    # one row per (person, snapshot): repeated people with their own snapshot times
    some = persons.sample(300, random_state=0)["person_id"]
    ids = pd.concat([some, some], ignore_index=True)
    snaps = pd.Series([stop - pd.Timedelta(days=90)] * 300 + [stop - pd.Timedelta(days=200)] * 300)
    both = true_churn_probability(persons, ids, snaps, 90, sends=sends)
    for days_before, part in ((90, both[:300]), (200, both[300:])):
        alone = true_churn_probability(persons, some, stop - pd.Timedelta(days=days_before), 90, sends=sends)
        assert np.allclose(part, alone, equal_nan=True)
    future = persons.assign(signup_at=stop)
    before = true_churn_probability(future, future["person_id"][:3], stop - pd.Timedelta(days=1))
    assert np.isnan(before).all()


def test_campaigns_sends_and_uplift_truth(world) -> None:
    root, _, _ = world
    sends, st = raw(root, "marketing_sends"), truth(root, "sends_truth")
    campaigns = raw(root, "campaigns").drop_duplicates()
    assert 12 <= campaigns["campaign_id"].nunique() <= 20
    assert set(campaigns["channel"]) <= {"email", "sms", "push"}
    clean = sends.drop(index=list(dirty_rows(root, "marketing_sends")))
    assert 0.17 <= (clean["group"] == "control").mean() <= 0.23
    assert np.allclose(st["tau"], st["p_respond_treated"] - st["p_respond_control"])
    assert (st["tau"] < 0).mean() > 0.03 and st["tau"].mean() > 0.02
    responses = raw(root, "marketing_responses")
    control = set(st.loc[st["group"] == "control", "send_id"])
    assert not responses["send_id"].isin(control).any()
    assert {"delivered", "opened", "clicked", "unsubscribed", "bounced"} <= set(responses["event_type"])


def test_timestamps_within_window(world) -> None:
    root, _, _ = world
    start, stop = data_window("2025-12-31")
    for name, col in EVENT_TIMES.items():
        df = raw(root, name).drop(index=list(dirty_rows(root, name)))
        ts = pd.to_datetime(df[col], utc=True, format="ISO8601")
        assert ts.between(start, stop, inclusive="left").all(), name
    for name, col in (("crm_contacts", "created_at"), ("enrichment", "as_of"), ("consent_events", "occurred_at")):
        df = raw(root, name).drop(index=list(dirty_rows(root, name)))
        assert (pd.to_datetime(df[col], utc=True, format="ISO8601") < stop).all(), name
    crm = raw(root, "crm_contacts").drop(index=list(dirty_rows(root, "crm_contacts")))
    assert 0.3 <= (pd.to_datetime(crm["created_at"], utc=True) < start).mean() <= 0.5


def test_enrichment_hash_matches_an_email_of_that_person(world) -> None:
    root, _, _ = world
    rp = truth(root, "record_persons")
    written = []
    for name in ("crm_contacts", "loyalty_members", "online_accounts", "orders"):
        df = raw(root, name)
        df["person_id"] = rp[rp["source_table"] == name].sort_values("row")["person_id"].to_numpy()
        written.append(df[["person_id", "email"]].dropna())
    hashes = pd.concat(written)
    hashes["sha"] = [hashlib.sha256(e.strip().lower().encode()).hexdigest() for e in hashes["email"]]
    known = set(zip(hashes["person_id"], hashes["sha"]))
    enrichment = raw(root, "enrichment")
    rows = rp[rp["source_table"] == "enrichment"].sort_values("row")
    enrichment["person_id"] = rows["person_id"].to_numpy()
    enrichment = enrichment.dropna(subset=["email_sha256"])
    matched = [(p, s) in known for p, s in zip(enrichment["person_id"], enrichment["email_sha256"])]
    assert np.mean(matched) > 0.99
    covered = enrichment["person_id"].nunique() / CUSTOMERS
    assert 0.5 <= covered <= 0.7
    assert enrichment.groupby("person_id")["as_of"].nunique().max() >= 3


def test_next_purchase_truth_is_a_distribution(world) -> None:
    root, _, _ = world
    nxt, prods = truth(root, "next_purchase"), truth(root, "products_truth")
    assert np.allclose(nxt.groupby("person_id")["probability"].sum(), 1)
    assert np.allclose(prods.groupby("category")["popularity_in_category"].sum(), 1)
    assert set(prods["product_id"]) == set(raw(root, "products")["product_id"])
    assert 300 <= len(prods) <= 500 and prods["category"].nunique() == 8


def test_chain_oracle_without_trend_is_the_constant_rate_oracle() -> None:
    """The engaged/disengaged/churned chain with no disengagement and no price rise reduces to the
    closed form, with and without a thinning window."""
    from cdp.synthetic.chain import p_no_order_chain

    lam, h = np.array([1 / 40, 1 / 10, 1 / 200, 1 / 30]), np.array([0.002, 0.02, 0.01, 0.003])
    r, state = 0.03 * lam, np.array([0, 0, 0, 2])
    zero = np.zeros(4)
    edges = np.tile([0.0, 20.0, 34.0, 90.0], (4, 1))
    chain = p_no_order_chain(lam, lam, r, h, h, zero, state, edges, np.zeros((4, 3)), np.ones((4, 3)))
    assert np.allclose(chain, p_no_order(lam, r, h, 90.0, state == 0), rtol=1e-10)
    thinned = np.tile([1.0, 0.3, 1.0], (4, 1))
    chain = p_no_order_chain(lam, lam, r, h, h, zero, state, edges, np.zeros((4, 3)), thinned)
    lo, hi, mult = np.full((4, 1), 20.0), np.full((4, 1), 34.0), np.full((4, 1), 0.3)
    assert np.allclose(chain, p_no_order_piecewise(lam, r, h, 90.0, state == 0, lo, hi, mult), rtol=1e-10)


def test_chain_oracle_matches_monte_carlo() -> None:
    """Engaged -> disengaged -> churned with a hazard step (a price rise) at day 30."""
    from cdp.synthetic.chain import p_no_order_chain

    rng = np.random.default_rng(2)
    n, lam, lam_d, rho, h, h_d, step = 400_000, 1 / 20, 0.3 / 20, 1 / 60, 0.004, 0.02, np.log(2.0)
    r = 0.03 * lam

    def first(rate_before: float, start: np.ndarray) -> np.ndarray:  # hazard x2 from day 30 on
        e = rng.exponential(1.0, n)
        cap = rate_before * np.clip(30 - start, 0, None)
        return np.where(e <= cap, start + e / rate_before, np.maximum(start, 30) + (e - cap) / (2 * rate_before))

    onset, churn_e = rng.exponential(1 / rho, n), first(h, np.zeros(n))
    dis = onset < churn_e
    churn = np.where(dis, first(h_d, onset), churn_e)
    engaged_end = np.minimum(np.where(dis, onset, churn), 90)
    alive_end = np.minimum(churn, 90)
    orders = rng.poisson(lam * engaged_end + lam_d * (alive_end - engaged_end) + r * (90 - alive_end))
    mc = (orders == 0).mean()
    edges, logm = np.array([[0.0, 30.0, 90.0]]), np.array([[0.0, step]])
    one = np.ones(1)
    exact = p_no_order_chain(
        lam * one, lam_d * one, r * one, h * one, h_d * one, rho * one, np.zeros(1), edges, logm, np.ones((1, 2))
    )[0]
    assert abs(mc - exact) < 4 * np.sqrt(exact * (1 - exact) / n)


def test_trend_process_oracle_is_calibrated_and_demo_data_unchanged(tmp_path: Path, world) -> None:
    """With --trend: disengagement, price rises paid on order lines, and the chain oracle's
    probabilities match the generated orders. The trend's draws never touch the demo's streams:
    the identity tables (CRM, loyalty, accounts) are the same as without it."""
    from cdp.synthetic.oracle import load_trend_truth

    root, _, _ = world
    generate(tmp_path / "same", CUSTOMERS, SEED, trend=True)
    for name in ("crm_contacts", "loyalty_members", "online_accounts"):
        assert raw(tmp_path / "same", name).equals(raw(root, name)), name
    # big enough that the campaign truth of the constant-rate process (|z| > 4 at 20k) is rejected
    generate(tmp_path, TREND_CUSTOMERS, SEED, trend=True)
    persons, orders = truth(tmp_path, "persons"), truth(tmp_path, "orders_truth")
    rises, trend = truth(tmp_path, "price_rises"), load_trend_truth(tmp_path / "truth")
    assert 0.2 < persons["disengaged_at"].notna().mean() < 0.9
    lines = raw(tmp_path, "order_lines").merge(raw(tmp_path, "orders")[["order_id", "ordered_at"]], on="order_id")
    lines = lines.merge(raw(tmp_path, "products")[["product_id", "category", "price"]], on="product_id")
    first = rises.iloc[0]
    cat = lines[lines["category"] == first["category"]].dropna(subset=["ordered_at", "unit_price", "price"])
    after = pd.to_datetime(cat["ordered_at"], utc=True, errors="coerce") >= first["risen_at"]
    ratio = cat["unit_price"] / cat["price"]
    assert ratio[after].median() == pytest.approx(first["price_factor"], abs=0.02)
    assert ratio[~after].median() == pytest.approx(1.0, abs=0.02)
    sends = truth(tmp_path, "sends_truth")
    _, stop = data_window("2025-12-31")
    with pytest.raises(ValueError, match="trend"):
        true_churn_probability(persons, persons["person_id"][:2], stop - pd.Timedelta(days=90))
    for days_before in (90, 300):
        s = stop - pd.Timedelta(days=days_before)
        known = persons[persons["signup_at"] <= s]
        horizon = orders[(orders["ordered_at"] > s) & (orders["ordered_at"] <= s + pd.Timedelta(days=90))]
        label = ~known["person_id"].isin(horizon["person_id"])
        p = true_churn_probability(persons, known["person_id"], s, 90, sends=sends, trend=trend)
        se = np.sqrt((p * (1 - p)).sum()) / len(p)
        assert abs(label.mean() - p.mean()) < 4 * se
    # the campaign truth follows the same process: P(order in 14 days | sent) per arm matches the orders
    window = sends[["send_id", "person_id", "group", "sent_at", "p_respond_treated", "p_respond_control"]].merge(
        orders[["person_id", "ordered_at"]], on="person_id", how="left"
    )
    window["hit"] = (window["ordered_at"] > window["sent_at"]) & (
        window["ordered_at"] <= window["sent_at"] + pd.Timedelta(days=14)
    )
    per_send = window.groupby("send_id").agg(
        group=("group", "first"),
        hit=("hit", "any"),
        p_t=("p_respond_treated", "first"),
        p_c=("p_respond_control", "first"),
    )
    for arm, column in (("control", "p_c"), ("treatment", "p_t")):
        part = per_send[per_send["group"] == arm]
        se = np.sqrt((part[column] * (1 - part[column])).sum()) / len(part)
        assert abs(part["hit"].mean() - part[column].mean()) < 4 * se, arm
