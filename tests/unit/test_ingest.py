"""Ingest: dirty raw tables -> typed staged tables, quarantine with reasons, field issues."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from cdp.ingest.contract import TABLES
from cdp.ingest.staging import ContractError, IngestReport, ingest
from cdp.workspace import Workspace

TS = "2024-03-01T10:00:00Z"
HASH = hashlib.sha256(b"jane@example.com").hexdigest()


def _rows(table: str, *rows: dict[str, str]) -> pd.DataFrame:
    """Rows with every contract column present (blank unless given), plus extras."""
    columns = list(TABLES[table].columns)
    extra = [c for row in rows for c in row if c not in columns]
    return pd.DataFrame([{c: row.get(c, "") for c in columns + extra} for row in rows], dtype=object)


def dirty_tables() -> dict[str, pd.DataFrame]:
    return {
        "crm_contacts": _rows(
            "crm_contacts",
            dict(
                record_id=" R1 ",
                first_name="Jane",
                last_name="Doe",
                created_at=TS,
                email="Jane.Doe+shop@Gmail.com",
                phone="(212) 734-1234",
                date_of_birth="1980-05-17",
                crm_segment="vip",
            ),
            dict(record_id="R2", email="not-an-email", phone="call me", created_at=TS),
            dict(record_id="R3", created_at="not a date"),
            dict(record_id="", created_at=TS),
            dict(record_id="R4", created_at=TS, date_of_birth="31/02/1980"),
        ),
        "loyalty_members": _rows(
            "loyalty_members",
            dict(card_id="C1", enrolled_at=TS, tier="Gold", status="active"),
            dict(card_id="C1", enrolled_at=TS, tier="Gold", status="active"),
            dict(card_id="C1", enrolled_at=TS, tier="silver", status="active"),
            dict(card_id="C2", enrolled_at=TS, tier="diamond", status="active"),
            dict(card_id="C3", enrolled_at="yesterday", tier="gold", status="active"),
            dict(card_id="C3", enrolled_at=TS, tier="gold", status="active"),
        ),
        "online_accounts": _rows(
            "online_accounts", dict(account_id="A1", created_at="2024-03-01 10:00:00+02:00", email="a1@example.com")
        ),
        "orders": _rows(
            "orders",
            dict(order_id="O1", channel="store", ordered_at=TS, total_amount="10.5", card_id="C1", phone="2127341234"),
            dict(order_id="O2", channel="kiosk", ordered_at=TS, total_amount="5"),
            dict(order_id="O3", channel="online", ordered_at="not a date", total_amount="-3", discount_amount="abc"),
            dict(order_id="O4", channel="app", ordered_at=TS, total_amount=""),
            dict(order_id="   ", channel="app", ordered_at="2024-02-30T10:00:00Z", total_amount=" 1e3 "),
        ),
        "order_lines": _rows(
            "order_lines",
            dict(order_id="O1", line_no="1", product_id="P1", quantity="2", unit_price="5.25"),
            dict(order_id="O2", line_no="1", product_id="P1", quantity="1", unit_price="5"),
            dict(order_id="O1", line_no="2", product_id="P1", quantity="-1", unit_price="5"),
        ),
        "products": _rows("products", dict(product_id="P1", category="food", price="5.25")),
        "marketing_sends": _rows(
            "marketing_sends",
            dict(send_id="S1", campaign_id="K1", sent_at=TS, group="treatment", email="x@example.com"),
        ),
        "marketing_responses": _rows(
            "marketing_responses",
            dict(send_id="S1", event_type="opened", occurred_at=TS),
            dict(send_id="S9", event_type="clicked", occurred_at=TS),
        ),
        "service_interactions": _rows(
            "service_interactions",
            dict(
                interaction_id="I1", occurred_at=TS, channel="chat", reason="billing", resolved="yes", sentiment="0.5"
            ),
            dict(
                interaction_id="I2", occurred_at=TS, channel="chat", reason="billing", resolved="maybe", sentiment="3"
            ),
        ),
        "enrichment": _rows(
            "enrichment",
            dict(vendor="acme", as_of=TS, email_sha256=HASH.upper(), household_size="3", home_owner="Y"),
            dict(vendor="acme", as_of=TS, email_sha256="abc123", household_size="x"),
        ),
        "consent_events": _rows(
            "consent_events",
            dict(
                event_id="E1",
                occurred_at=TS,
                identifier="J.Doe+x@Gmail.com",
                identifier_type="email",
                purpose="profiling",
                granted="true",
            ),
            dict(
                event_id="E2",
                occurred_at=TS,
                identifier="212.734.1234",
                identifier_type="phone",
                purpose="sms_marketing",
                granted="false",
            ),
            dict(
                event_id="E3",
                occurred_at=TS,
                identifier=" C1 ",
                identifier_type="card_id",
                purpose="profiling",
                granted="1",
            ),
            dict(
                event_id="E4",
                occurred_at=TS,
                identifier="C1",
                identifier_type="card_id",
                purpose="profiling",
                granted="",
            ),
        ),
    }


def write_raw(ws: Workspace, tables: dict[str, pd.DataFrame], fmt: str) -> None:
    ws.raw.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        if fmt == "csv":
            frame.to_csv(ws.raw / f"{name}.csv", index=False)
        else:
            frame.to_parquet(ws.raw / f"{name}.parquet", index=False)


@pytest.fixture(scope="module", params=["parquet", "csv"])
def ingested(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Workspace, IngestReport]:
    """One ingest per raw format, shared by the read-only tests below."""
    ws = Workspace(tmp_path_factory.mktemp(request.param))
    write_raw(ws, dirty_tables(), request.param)
    return ws, ingest(ws)


def _reasons(ws: Workspace, table: str) -> dict[int, str]:
    quarantine = pd.read_parquet(ws.quarantine)
    rows = quarantine[quarantine["table"] == table]
    return dict(zip(rows["row"], rows["reason"]))


@pytest.mark.parametrize(
    ("table", "row", "reason"),
    [
        ("crm_contacts", 3, "record_id: required value missing"),
        ("loyalty_members", 1, "duplicate row"),
        ("loyalty_members", 2, "duplicate card_id 'C1'"),
        (
            "orders",
            2,
            "ordered_at: unparseable timestamp 'not a date'; "
            "total_amount: negative value '-3'; "
            "discount_amount: unparseable number 'abc'",
        ),
        ("orders", 3, "total_amount: required value missing"),
        ("orders", 4, "order_id: required value missing; ordered_at: unparseable timestamp '2024-02-30T10:00:00Z'"),
        ("loyalty_members", 5, "duplicate card_id 'C3'"),  # C3's first row is kept (bad enrolled_at nulled)
        ("enrichment", 1, "email_sha256: not a SHA-256 hex digest 'abc123'; household_size: unparseable number 'x'"),
        ("order_lines", 2, "quantity: negative value '-1'"),
        ("marketing_responses", 1, "send_id: unknown send_id 'S9'"),
        ("consent_events", 3, "granted: required value missing"),
    ],
)
def test_dirty_rows_are_quarantined_with_reasons(ingested, table, row, reason) -> None:
    ws, _ = ingested
    assert _reasons(ws, table)[row] == reason


def test_counts_add_up_and_match_files(ingested) -> None:
    ws, report = ingested
    quarantine = pd.read_parquet(ws.quarantine)
    for entry in report.tables:
        assert entry.accepted + entry.quarantined == entry.read
        staged = pd.read_parquet(ws.staged / f"{entry.table}.parquet")
        assert len(staged) == entry.accepted
        assert (quarantine["table"] == entry.table).sum() == entry.quarantined
    counts = {t.table: (t.read, t.accepted, t.quarantined) for t in report.tables}
    assert counts["crm_contacts"] == (5, 4, 1)  # only the row without a record_id
    assert counts["orders"] == (5, 2, 3)  # channel 'kiosk' is kept
    assert counts["loyalty_members"] == (6, 3, 3)
    assert counts["order_lines"] == (3, 2, 1)  # O2 is an accepted order now
    assert counts["web_events"] == (0, 0, 0)
    assert report.to_dict()["tables"][0]["table"] == "crm_contacts"
    assert len(report.as_rows()) == len(TABLES)


def test_quarantine_record_is_the_raw_row(ingested) -> None:
    ws, _ = ingested
    quarantine = pd.read_parquet(ws.quarantine)
    record = json.loads(quarantine.query("table == 'orders' and row == 2")["record"].iloc[0])
    assert record["order_id"] == "O3" and record["total_amount"] == "-3"


def test_staged_types_extras_and_identifiers(ingested) -> None:
    ws, _ = ingested
    crm = pd.read_parquet(ws.staged / "crm_contacts.parquet")
    assert str(crm["created_at"].dtype) == "datetime64[us, UTC]"
    assert str(crm["date_of_birth"].dtype) == "datetime64[us]"
    assert crm["crm_segment"].iloc[0] == "vip"  # extra column kept (as read)
    jane = crm.iloc[0]
    assert jane["record_id"] == "R1" and jane["source_row"] == 0
    assert jane["email_norm"] == "janedoe@gmail.com"
    assert jane["email_sha256"] == hashlib.sha256(b"jane.doe+shop@gmail.com").hexdigest()
    assert jane["phone_e164"] == "+12127341234"
    orders = pd.read_parquet(ws.staged / "orders.parquet")
    assert str(orders["ordered_at"].dtype) == "datetime64[us, UTC]"
    assert orders["total_amount"].dtype == "float64"
    assert orders["phone_e164"].iloc[0] == "+12127341234"
    accounts = pd.read_parquet(ws.staged / "online_accounts.parquet")
    assert accounts["created_at"].iloc[0] == pd.Timestamp("2024-03-01 08:00", tz="UTC")
    loyalty = pd.read_parquet(ws.staged / "loyalty_members.parquet")
    assert loyalty["tier"].tolist() == ["gold", "diamond", "gold"]  # lower-cased, unknown kept
    assert loyalty["source_row"].tolist() == [0, 3, 4]  # C3: its first row, bad enrolled_at nulled
    assert loyalty["enrolled_at"].isna().tolist() == [False, False, True]
    enrichment = pd.read_parquet(ws.staged / "enrichment.parquet")
    assert enrichment["email_sha256"].tolist() == [HASH]
    assert enrichment["home_owner"].tolist() == [True] and enrichment["car_owner"].isna().all()
    assert enrichment["household_size"].tolist() == [3.0]
    service = pd.read_parquet(ws.staged / "service_interactions.parquet")
    assert (
        service["resolved"].iloc[0] and pd.isna(service["resolved"].iloc[1]) and service["sentiment"].tolist()[0] == 0.5
    )
    assert pd.isna(service["sentiment"].iloc[1])  # '3' outside [-1, 1]: nulled, the row kept
    dob = crm.set_index("record_id")["date_of_birth"]
    assert pd.isna(dob["R4"]) and dob["R1"] == pd.Timestamp("1980-05-17")


def test_malformed_identifiers_are_field_issues_without_pii(ingested) -> None:
    ws, report = ingested
    crm = pd.read_parquet(ws.staged / "crm_contacts.parquet").set_index("record_id")
    assert pd.isna(crm.loc["R2", "email_norm"]) and pd.isna(crm.loc["R2", "phone_e164"])
    issues = pd.read_parquet(ws.staged / "field_issues.parquet")
    r2 = issues[(issues["table"] == "crm_contacts") & (issues["row"] == 1)]
    assert set(r2["column"]) == {"email", "phone"}
    assert not issues["reason"].str.contains("not-an-email|call me|31/02/1980").any()
    assert not issues["value"].astype(str).str.contains("not-an-email|call me|31/02/1980").any()
    r4 = issues[(issues["table"] == "crm_contacts") & (issues["row"] == 4)].iloc[0]
    assert (r4["column"], r4["value"]) == ("date_of_birth", "99/99/9999")  # its shape only
    crm = next(t for t in report.tables if t.table == "crm_contacts")
    assert crm.field_issues == 4  # email, phone, created_at 'not a date', date_of_birth
    assert crm.columns["date_of_birth"] == {"present": 2, "nulled": 1, "unknown": 0}


def test_unknown_category_is_kept_as_a_field_issue(ingested) -> None:
    ws, report = ingested
    issues = pd.read_parquet(ws.staged / "field_issues.parquet").query("table == 'orders'")
    assert issues[["row", "column", "value"]].values.tolist() == [[1, "channel", "kiosk"]]
    orders = pd.read_parquet(ws.staged / "orders.parquet").set_index("order_id")
    assert orders.loc["O2", "channel"] == "kiosk"
    assert next(t for t in report.tables if t.table == "orders").columns["channel"]["unknown"] == 1


def test_consent_identifier_norm_by_type(ingested) -> None:
    ws, _ = ingested
    consent = pd.read_parquet(ws.staged / "consent_events.parquet").set_index("event_id")
    assert consent.loc["E1", "identifier_norm"] == "jdoe@gmail.com"
    assert consent.loc["E2", "identifier_norm"] == "+12127341234"
    assert consent.loc["E3", "identifier_norm"] == "C1"
    assert consent["granted"].tolist() == [True, False, True]


def test_missing_optional_table_is_empty_with_warning(ingested) -> None:
    ws, report = ingested
    web = pd.read_parquet(ws.staged / "web_events.parquet")
    assert web.empty and set(TABLES["web_events"].columns) <= set(web.columns)
    assert str(web["occurred_at"].dtype) == "datetime64[us, UTC]"
    assert any(w.startswith("web_events") for w in report.warnings)


def test_missing_required_column_is_a_contract_error(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    tables = dirty_tables()
    tables["orders"] = tables["orders"].drop(columns=["ordered_at"])
    write_raw(ws, tables, "csv")
    with pytest.raises(ContractError, match=r"orders.*ordered_at"):
        ingest(ws)


def test_missing_required_table_is_a_contract_error(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    tables = dirty_tables()
    del tables["products"]
    write_raw(ws, tables, "parquet")
    with pytest.raises(ContractError, match="products") as err:
        ingest(ws)
    assert str(ws.raw) in str(err.value)


def test_typed_parquet_input(tmp_path: Path) -> None:
    """Parquet written with native types (timestamps, floats, ints) ingests the same way."""
    ws = Workspace(tmp_path)
    tables = dirty_tables()
    orders = tables["orders"].iloc[:1].copy()
    orders["ordered_at"] = pd.to_datetime(orders["ordered_at"], utc=True).dt.as_unit("ns")
    orders["total_amount"] = orders["total_amount"].astype(float)
    orders["discount_amount"] = float("nan")
    tables["orders"] = orders
    lines = tables["order_lines"].iloc[:1].copy()
    lines[["line_no", "quantity"]] = lines[["line_no", "quantity"]].astype(int)
    tables["order_lines"] = lines
    write_raw(ws, tables, "parquet")
    report = ingest(ws)
    staged = pd.read_parquet(ws.staged / "orders.parquet")
    assert str(staged["ordered_at"].dtype) == "datetime64[us, UTC]"
    assert staged["total_amount"].tolist() == [10.5]
    assert pd.read_parquet(ws.staged / "order_lines.parquet")["quantity"].tolist() == [2.0]
    assert {t.table: t.quarantined for t in report.tables}["order_lines"] == 0


def test_unreadable_csv_is_a_contract_error(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    write_raw(ws, dirty_tables(), "csv")
    (ws.raw / "products.csv").write_bytes(b"product_id,category,price\n\x00\x9d\x00,food,1\n")  # binary
    with pytest.raises(ContractError, match="products"):
        ingest(ws)
    (ws.raw / "products.csv").write_bytes(b"product_id,category,price\nP\x9d,food,1\n")  # no Windows-1252 byte
    with pytest.raises(ContractError, match="products"):
        ingest(ws)


def test_progress_reports_every_table(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    write_raw(ws, dirty_tables(), "parquet")
    calls: list[tuple[str, int, int]] = []
    ingest(ws, progress=lambda name, done, total: calls.append((name, done, total)))
    assert calls[-1] == ("consent_events", len(TABLES), len(TABLES))
    assert {name for name, _, _ in calls} == set(TABLES)
