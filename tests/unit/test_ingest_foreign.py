"""Foreign data through `cdp ingest` (issue 15): one small fixture per variation of real exports.

Every fixture row is clean except for the variation, so each test asserts through the CLI that
no row is quarantined for a non-key field, accepted + quarantined = read, no identifier is lost
silently, and the choice or warning is printed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cdp.cli.app import app
from cdp.ingest.contract import TABLES
from cdp.ingest.normalize import default_region, e164_phone
from cdp.workspace import Workspace

N = 12
GB_PHONES = [f"07911 1234{i:02d}" for i in range(N)]  # valid UK mobiles, national form
US_PHONES = [f"(212) 734-12{i:02d}" for i in range(N)]


def base(phones: list[str] = US_PHONES, created: list[str] | None = None, dob: list[str] | None = None) -> dict:
    """The smallest clean contract: the required tables, N people, ISO dates unless given."""
    ids = range(N)
    created = created or [f"2024-03-{i + 1:02d}T10:00:00Z" for i in ids]
    crm = pd.DataFrame(
        {
            "record_id": [f"R{i}" for i in ids],
            "first_name": [f"Ann{i}" for i in ids],
            "last_name": "Smith",
            "email": [f"ann{i}@example.com" for i in ids],
            "phone": phones,
            "date_of_birth": dob or [f"19{60 + i}-0{1 + i % 9}-1{i % 10}" for i in ids],
            "postcode": "SW1A 1AA",
            "created_at": created,
        }
    )
    loyalty = pd.DataFrame(
        {
            "card_id": [f"C{i}" for i in ids],
            "email": crm["email"],
            "phone": phones,
            "enrolled_at": created,
            "tier": "gold",
            "status": ["active", "inactive", "closed"] * (N // 3),
        }
    )
    accounts = pd.DataFrame({"account_id": [f"A{i}" for i in ids], "email": crm["email"], "created_at": created})
    orders = pd.DataFrame(
        {
            "order_id": [f"O{i}" for i in ids],
            "channel": "store",
            "ordered_at": created,
            "card_id": loyalty["card_id"],
            "phone": phones,
            "total_amount": "10.50",
        }
    )
    lines = pd.DataFrame({"order_id": orders["order_id"], "line_no": "1", "product_id": "P1", "quantity": "1"})
    lines["unit_price"] = "10.50"
    products = pd.DataFrame({"product_id": ["P1"], "category": ["food"], "price": ["10.50"]})
    return {
        "crm_contacts": crm,
        "loyalty_members": loyalty,
        "online_accounts": accounts,
        "orders": orders,
        "order_lines": lines,
        "products": products,
    }


def run(
    tmp_path: Path,
    tables: dict[str, pd.DataFrame],
    *args: str,
    sep: str = ",",
    rename: Callable[[str], str] = str,
    env: dict[str, str] | None = None,
) -> tuple[Workspace, str, int]:
    """Write the tables as CSV, run `cdp ingest`; (workspace, output with whitespace collapsed, exit code)."""
    ws = Workspace(tmp_path)
    ws.raw.mkdir(parents=True)
    for name, frame in tables.items():
        frame.rename(columns=rename).to_csv(ws.raw / f"{name}.csv", index=False, sep=sep)
    result = CliRunner().invoke(app, ["ingest", "--home", str(tmp_path), *args], env=env or {})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return ws, " ".join(result.output.split()), result.exit_code


def assert_nothing_lost(ws: Workspace, tables: dict[str, pd.DataFrame]) -> None:
    """No row quarantined, every row staged, every raw email/phone normalized to a key."""
    quarantine = pd.read_parquet(ws.quarantine)
    assert quarantine.empty, quarantine[["table", "row", "reason"]].to_string()
    for name, raw in tables.items():
        staged = pd.read_parquet(ws.staged / f"{name}.parquet")
        assert len(staged) == len(raw), name  # accepted + quarantined (0) = read
        for col in TABLES[name].phones:
            if col in raw:
                assert staged[f"{col}_e164"].notna().sum() == raw[col].notna().sum(), (name, col)
        for col in TABLES[name].emails:
            if col in raw:
                assert staged[f"{col}_norm"].notna().sum() == raw[col].notna().sum(), (name, col)


def test_national_phones_of_another_country(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tables = base(GB_PHONES)
    ws, out, code = run(tmp_path, tables)
    assert code == 0, out
    assert "phone region GB detected from the data" in out
    assert_nothing_lost(ws, tables)
    crm = pd.read_parquet(ws.staged / "crm_contacts.parquet")
    assert crm["phone_e164"].iloc[0] == "+447911123400"
    monkeypatch.delenv("CDP_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("CDP_HOME", str(tmp_path))  # later lookups (cdp privacy) parse alike
    assert default_region() == "GB" and e164_phone("07911 123400") == "+447911123400"


def test_region_override_and_invalid_numbers_are_field_issues(tmp_path: Path) -> None:
    tables = base(GB_PHONES)
    ws, out, code = run(tmp_path, tables, env={"CDP_DEFAULT_REGION": "US"})
    assert code == 0 and "phone region US (CDP_DEFAULT_REGION)" in out
    assert pd.read_parquet(ws.quarantine).empty  # rows kept
    issues = pd.read_parquet(ws.staged / "field_issues.parquet")
    phone = issues[issues["column"] == "phone"]
    assert len(phone) == 3 * N  # crm, loyalty, orders: each number reported, none silently nulled
    assert not phone["reason"].str.contains("07911").any() and not phone["value"].str.contains("07911").any()
    assert "crm_contacts.phone" in out and "100.0%" in out  # the nulled share, in the column summary


@pytest.mark.parametrize(
    ("order", "created", "dob", "first_day"),
    [
        ("dmy", [f"{13 + i}/03/2024 19:48" for i in range(N)], [f"{13 + i}/09/1963" for i in range(N)], 13),
        ("mdy", [f"03/{13 + i}/2024 19:48" for i in range(N)], [f"09/{13 + i}/1963" for i in range(N)], 13),
    ],
)
def test_day_first_and_month_first_dates(tmp_path: Path, order: str, created, dob, first_day: int) -> None:
    tables = base(created=created, dob=dob)
    ws, out, code = run(tmp_path, tables)
    assert code == 0, out
    assert f"orders.ordered_at: {N} day/month value(s) read as {order} (detected" in out
    assert f"crm_contacts.date_of_birth: {N} day/month value(s) read as {order}" in out
    assert_nothing_lost(ws, tables)
    crm = pd.read_parquet(ws.staged / "crm_contacts.parquet")
    assert crm["created_at"].iloc[0] == pd.Timestamp(f"2024-03-{first_day} 19:48", tz="UTC")
    assert crm["date_of_birth"].iloc[0] == pd.Timestamp(f"1963-09-{first_day}")


def test_twelve_hour_clock_and_month_names(tmp_path: Path) -> None:
    """US spreadsheet times (3/14/2024 7:48 PM) and dates with a month name (Mar 14, 2024)."""
    created = [f"3/{13 + i}/2024 {1 + i % 11}:48 {'PM' if i % 2 else 'AM'}" for i in range(N)]
    created[0], created[1] = "3/13/2024 12:05 AM", "3/14/2024 12:05 PM"
    dob = [f"Sep {13 + i}, 1963" for i in range(N - 2)] + ["13 September 1963", "Fri, 13 Sep 1963 10:00:00 GMT"]
    tables = base(created=created, dob=dob)
    tables["orders"]["ordered_at"] = ["3/13/2024 13:05 PM", "3/13/2024 25:00"] + created[2:]  # impossible clocks
    ws, out, code = run(tmp_path, tables)
    assert code == 0, out
    crm = pd.read_parquet(ws.staged / "crm_contacts.parquet")
    hours = crm["created_at"].dt.hour.tolist()
    assert hours[:2] == [0, 12] and hours[2:] == [(1 + i % 11) + (12 if i % 2 else 0) for i in range(2, N)]
    assert crm["created_at"].dt.day.tolist() == [13 + i for i in range(N)]
    assert (crm["date_of_birth"].dt.month == 9).all() and (crm["date_of_birth"].dt.year == 1963).all()
    refused = pd.read_parquet(ws.quarantine)
    assert refused[refused["table"] == "orders"]["reason"].tolist() == [
        "ordered_at: unparseable timestamp '3/13/2024 13:05 PM'",
        "ordered_at: unparseable timestamp '3/13/2024 25:00'",  # never carried into the next day
    ]


def test_ambiguous_dates_follow_cdp_date_order(tmp_path: Path) -> None:
    created = [f"02/03/2024 1{i % 10}:00" for i in range(N)]  # 2 March or 3 February?
    tables = base(created=created)
    ws, out, code = run(tmp_path, tables, env={"CDP_DATE_ORDER": "mdy"})
    assert code == 0 and "read as mdy (CDP_DATE_ORDER)" in out
    orders = pd.read_parquet(ws.staged / "orders.parquet")
    assert orders["ordered_at"].dt.month.eq(2).all() and orders["ordered_at"].dt.day.eq(3).all()
    ws, out, code = run(tmp_path / "detect", tables)
    assert code == 0 and "assumed: no value shows the order; set CDP_DATE_ORDER" in out


def test_semicolon_csv(tmp_path: Path) -> None:
    tables = base()
    tables["orders"]["total_amount"] = "10,50"  # decimal comma rides along with ';' exports
    ws, out, code = run(tmp_path, tables, sep=";")
    assert code == 0, out
    assert "crm_contacts: crm_contacts.csv read with delimiter ';' (sniffed)" in out
    assert_nothing_lost(ws, tables)
    assert pd.read_parquet(ws.staged / "orders.parquet")["total_amount"].eq(10.5).all()


def test_windows_1252_and_byte_order_mark_csv(tmp_path: Path) -> None:
    """Excel's CSV exports: Windows-1252 text (accented names), or UTF-8 with a byte-order mark."""
    tables = base()
    names = ["José", "Zoë", "François", "Jürgen", "Siân", "Renée"] * (N // 6)
    tables["crm_contacts"]["first_name"] = names
    ws = Workspace(tmp_path / "w")
    ws.raw.mkdir(parents=True)
    for name, frame in tables.items():
        frame.to_csv(ws.raw / f"{name}.csv", index=False, encoding="utf-8-sig" if name == "orders" else "utf-8")
    tables["crm_contacts"].to_csv(ws.raw / "crm_contacts.csv", index=False, encoding="cp1252", lineterminator="\r\n")
    result = CliRunner().invoke(app, ["ingest", "--home", str(ws.root)], env={})
    out = " ".join(result.output.split())
    assert result.exit_code == 0, out
    assert "crm_contacts: crm_contacts.csv is not UTF-8: read as Windows-1252" in out
    assert "orders.csv is not UTF-8" not in out  # a byte-order mark is UTF-8
    assert pd.read_parquet(ws.staged / "crm_contacts.parquet")["first_name"].tolist() == names
    assert pd.read_parquet(ws.staged / "orders.parquet")["order_id"].tolist() == tables["orders"]["order_id"].tolist()
    assert_nothing_lost(ws, tables)
    tables["online_accounts"].to_csv(ws.raw / "online_accounts.csv", index=False, encoding="utf-16")  # with its BOM
    result = CliRunner().invoke(app, ["ingest", "--home", str(ws.root)], env={})
    assert result.exit_code == 0, result.output
    accounts = pd.read_parquet(ws.staged / "online_accounts.parquet")
    assert accounts["account_id"].tolist() == tables["online_accounts"]["account_id"].tolist()
    # told the encoding: no guess, no note; an unknown encoding is refused naming the value
    for name in ("orders", "online_accounts"):  # ASCII: the same in latin-1
        tables[name].to_csv(ws.raw / f"{name}.csv", index=False)
    result = CliRunner().invoke(app, ["ingest", "--check", "--home", str(ws.root)], env={"CDP_CSV_ENCODING": "latin-1"})
    assert result.exit_code == 0 and "Windows-1252" not in result.output, result.output
    result = CliRunner().invoke(app, ["ingest", "--check", "--home", str(ws.root)], env={"CDP_CSV_ENCODING": "klingon"})
    assert result.exit_code != 0 and "'klingon' is not a text encoding" in " ".join(result.output.split())


def test_amounts_formatted_by_a_spreadsheet(tmp_path: Path) -> None:
    """Currency signs and codes, thousands separators: read as the numbers they show, with a note."""
    tables = base()
    shown = ["$1,234.50", "USD 12.00", "1,299.99", "$ 10.50", "£7", "2,000", "9.99 EUR", "€ 3", "$0.50", "1", "2", "3"]
    tables["orders"]["total_amount"] = shown
    tables["order_lines"]["unit_price"] = ["(1.00)"] + ["$1.00"] * (N - 1)  # an accounting negative
    ws, out, code = run(tmp_path, tables)
    assert code == 0, out
    assert "orders.total_amount: 9 value(s) formatted as amounts" in out
    totals = pd.read_parquet(ws.staged / "orders.parquet")["total_amount"].tolist()
    assert totals == [1234.5, 12.0, 1299.99, 10.5, 7.0, 2000.0, 9.99, 3.0, 0.5, 1.0, 2.0, 3.0]
    refused = pd.read_parquet(ws.quarantine)["reason"].tolist()
    assert refused == ["unit_price: negative value '(1.00)'"]  # read as -1.00, then refused as a price


def test_title_case_headers(tmp_path: Path) -> None:
    tables = base()
    ws, out, code = run(tmp_path, tables, rename=lambda c: " " + c if c == "phone" else c.title())
    assert code == 0, out
    assert "header name(s) matched ignoring case/spaces" in out and "'Email' as email" in out
    assert_nothing_lost(ws, tables)


def test_unknown_category_values_are_kept(tmp_path: Path) -> None:
    tables = base()
    tables["loyalty_members"]["status"] = ["active", "Lapsed", "lapsed"] * (N // 3)
    ws, out, code = run(tmp_path, tables)
    assert code == 0, out
    assert "loyalty_members.status: 8 value(s) outside (active, inactive, closed) kept as given: 'lapsed' (8)" in out
    assert_nothing_lost(ws, tables)
    loyalty = pd.read_parquet(ws.staged / "loyalty_members.parquet")
    assert loyalty["status"].value_counts().to_dict() == {"lapsed": 8, "active": 4}


def test_non_iso_date_of_birth_keeps_the_row(tmp_path: Path) -> None:
    dob = ["26/09/1963", "O9/24/2002"] + [f"1{i}/01/1970" for i in range(N - 2)]  # a letter O typo
    tables = base(dob=dob)
    ws, out, code = run(tmp_path, tables, "--strict")
    assert code == 1  # 1 of 12 values nulled (8.3%) is above 5%: --strict makes it an error
    assert "crm_contacts.date_of_birth: 1 of 12 values nulled (8.3%)" in out
    assert_nothing_lost(ws, tables)  # the row with the bad DOB keeps its name, email, phone
    crm = pd.read_parquet(ws.staged / "crm_contacts.parquet").set_index("record_id")
    assert pd.isna(crm.loc["R1", "date_of_birth"]) and crm.loc["R1", "email_norm"] == "ann1@example.com"
    assert crm.loc["R0", "date_of_birth"] == pd.Timestamp("1963-09-26")
    issue = pd.read_parquet(ws.staged / "field_issues.parquet").query("column == 'date_of_birth'")
    assert issue["row"].tolist() == [1] and issue["value"].tolist() == ["x9/99/9999"]  # shape, not the DOB


def test_fully_quarantined_table_is_an_error_unless_allowed(tmp_path: Path) -> None:
    tables = base()
    tables["orders"]["ordered_at"] = "yesterday"
    ws, out, code = run(tmp_path, tables)
    assert code == 1 and f"error: orders: all {N:,} rows quarantined" in out
    _, out, code = run(tmp_path / "allowed", tables, "--allow-empty")
    assert code == 0, out


def test_check_writes_nothing(tmp_path: Path) -> None:
    tables = base(GB_PHONES)
    ws, out, code = run(tmp_path, tables, "--check")
    assert code == 0 and "--check: nothing written" in out and "phone region GB" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_unknown_send_arm_is_quarantined(tmp_path: Path) -> None:
    """A send's randomized arm is what the row means: 'holdout' is neither arm, so uplift cannot use it."""
    tables = base()
    tables["marketing_sends"] = pd.DataFrame(
        {"send_id": ["S1", "S2"], "campaign_id": "K1", "sent_at": "2024-03-01", "group": ["Control", "holdout"]}
    )
    ws, out, code = run(tmp_path, tables)
    assert code == 0, out
    quarantine = pd.read_parquet(ws.quarantine)
    assert quarantine["reason"].tolist() == ["group: value 'holdout' not one of (treatment, control)"]
    assert pd.read_parquet(ws.staged / "marketing_sends.parquet")["group"].tolist() == ["control"]
