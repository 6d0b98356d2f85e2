"""Incremental ingest (issue 18): after each new drop, staged/ is exactly what a full ingest of all the
raw files writes (same rows, values, types and order), and anything unusual means a full ingest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cdp import pipeline
from cdp.ingest import ledger
from cdp.ingest.contract import TABLES
from cdp.ingest.incremental import ingest
from cdp.ingest.staging import ingest as full_ingest
from cdp.workspace import Workspace


def assert_same_staged(ws: Workspace, tmp_path: Path) -> None:
    """staged/ of `ws` equals a full ingest of the same raw/ in a fresh workspace, file by file
    (Arrow tables with their schema metadata), the ledgers included."""
    ref = Workspace(tmp_path / f"reference-{len(list(tmp_path.glob('reference-*')))}")
    shutil.copytree(ws.raw, ref.raw)
    full_ingest(ref)
    for folder in (Path("."), Path(ledger.STATE_DIR)):
        names = sorted(p.name for p in (ref.staged / folder).glob("*.parquet"))
        assert names == sorted(p.name for p in (ws.staged / folder).glob("*.parquet"))
        for name in names:
            mine, theirs = pq.read_table(ws.staged / folder / name), pq.read_table(ref.staged / folder / name)
            assert mine.schema.metadata == theirs.schema.metadata, name
            assert mine.equals(theirs), name
    for name in ("phone_regions.json", "ingested_files.json"):
        assert json.loads((ws.staged / name).read_text()) == json.loads((ref.staged / name).read_text())


def _write(ws: Workspace, table: str, rows: list[dict], day: str | None = None) -> None:
    path = ws.raw / (f"{table}.csv" if day is None else f"{table}/{day}.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{**dict.fromkeys(TABLES[table].columns), **r} for r in rows], dtype=object).to_csv(path, index=False)


def _crm(record_id: str, address: str, dob: str = "1970-01-01", **more) -> dict:
    return {
        "record_id": record_id,
        "address_line": address,
        "date_of_birth": dob,
        "phone": f"(415) 867-{5300 + int(record_id[1:]):04d}",
        "created_at": "2024-03-01T10:00:00Z",
        **more,
    }


def _order(order_id: str, total: str = "10", at: str = "2024-05-01T10:00:00Z") -> dict:
    return {"order_id": order_id, "channel": "store", "ordered_at": at, "total_amount": total}


def _line(order_id: str, line_no: str = "1") -> dict:
    return {"order_id": order_id, "line_no": line_no, "product_id": "P1", "quantity": "1", "unit_price": "10"}


@pytest.fixture
def shop(tmp_path) -> Workspace:
    """A small shop: a duplicate CRM record, an order with a bad date, an order line whose order
    has not arrived yet; day/month dates and national phone numbers to decide on."""
    ws = Workspace(tmp_path / "shop")
    _write(
        ws,
        "crm_contacts",
        [_crm("R1", "1 Old Road", "26/09/1963"), _crm("R2", "2 Road", "02/03/1980"), _crm("R2", "2b Road")],
    )
    _write(ws, "orders", [_order("O1"), _order("O2", "20"), _order("O5", at="not a date")])
    _write(ws, "order_lines", [_line("O1"), _line("O2"), _line("O3")])
    _write(ws, "products", [{"product_id": "P1", "category": "food", "price": "10"}])
    return ws


def test_each_drop_ingested_incrementally_equals_a_full_ingest(shop, tmp_path):
    first = ingest(shop)
    assert first.mode == "full" and any("no state" in n for n in first.notes)
    assert_same_staged(shop, tmp_path)
    # drop 1: the order line's parent arrives, an order and two CRM records are updated (R2's
    # quarantined duplicate goes to history with it), an order line arrives before its order
    _write(shop, "orders", [_order("O3"), _order("O1", "15")], "2025-01-01")
    _write(
        shop,
        "crm_contacts",
        [_crm("R1", "9 New Road", "26/09/1963"), _crm("R3", "3 Road"), _crm("R2", "2c Road")],
        "2025-01-01",
    )
    _write(shop, "order_lines", [_line("O4")], "2025-01-01")
    # drop 2: the late order arrives; O3's new version is unreadable (quarantined), so its line
    # is rejected again and O4's accepted, although order_lines has no new file; R1 moves again
    _write(shop, "orders", [_order("O4"), _order("O3", at="31/31/2024")], "2025-01-02")
    _write(shop, "crm_contacts", [_crm("R1", "10 Newer Road", "26/09/1963")], "2025-01-02")
    # drop 3: a table's first file; a key repeated inside one file (the first valid row wins)
    _write(
        shop,
        "web_events",
        [{"event_id": "E1", "occurred_at": "2025-01-03T08:00:00Z", "event_type": "page_view"}],
        "2025-01-03",
    )
    _write(shop, "crm_contacts", [_crm("R4", "4 Road", created_at="bad"), _crm("R4", "4b Road")], "2025-01-03")
    held = tmp_path / "held"
    for folder in [p for p in shop.raw.iterdir() if p.is_dir()]:
        shutil.move(folder, held / folder.name)
    for day in ("2025-01-01", "2025-01-02", "2025-01-03"):
        for file in held.glob(f"*/{day}.csv"):
            (shop.raw / file.parent.name).mkdir(exist_ok=True)
            shutil.copy(file, shop.raw / file.parent.name / file.name)
        report = ingest(shop)
        assert report.mode == "incremental", report.notes
        assert_same_staged(shop, tmp_path)
        for entry in report.tables:
            assert entry.accepted + entry.quarantined + entry.suppressed + entry.superseded == entry.read
        lines = next(t for t in report.tables if t.table == "order_lines")
        if day == "2025-01-02":
            assert (lines.mode, lines.rechecked, lines.accepted, lines.quarantined) == ("incremental", 2, 1, 1)
            assert next(t for t in report.tables if t.table == "products").mode == "unchanged"
    history = pd.read_parquet(shop.staged / "crm_contacts_history.parquet")
    assert set(history.loc[history["record_id"] == "R1", "superseded_by"]) == {"crm_contacts/2025-01-02.csv"}
    quarantine = pd.read_parquet(shop.quarantine)
    assert "O3" in " ".join(quarantine.loc[quarantine["table"] == "order_lines", "reason"])


def test_generated_daily_drops_one_at_a_time_equal_a_full_ingest(tmp_path):
    """The synthetic retailer's drops: late records, moved CRM contacts, closed cards."""
    ws = Workspace(tmp_path / "daily")
    pipeline.generate(ws, customers=150, seed=5, daily_drops=2)
    held = tmp_path / "held"
    for folder in [p for p in ws.raw.iterdir() if p.is_dir()]:
        shutil.move(folder, held / folder.name)
    assert ingest(ws).mode == "full"
    for day in sorted({p.name for p in held.rglob("*.parquet")}):
        for file in held.glob(f"*/{day}"):
            (ws.raw / file.parent.name).mkdir(exist_ok=True)
            shutil.copy(file, ws.raw / file.parent.name / day)
        report = ingest(ws)
        assert report.mode == "incremental", report.notes
        assert sum(t.superseded for t in report.tables) > 0  # CRM moves and closed cards
        assert_same_staged(ws, tmp_path)


def _full_because(ws: Workspace, words: str) -> None:
    report = ingest(ws)
    assert report.mode == "full"
    assert any(n.startswith("full ingest") and words in n for n in report.notes), report.notes


@pytest.fixture
def ingested(shop) -> Workspace:
    """The shop ingested, then one drop ingested incrementally."""
    ingest(shop)
    _write(shop, "orders", [_order("O3")], "2025-01-01")
    assert ingest(shop).mode == "incremental"
    return shop


def test_a_changed_or_removed_file_or_a_late_drop_means_a_full_ingest(ingested, tmp_path):
    _write(ingested, "orders", [_order("O3", "99")], "2025-01-01")
    _full_because(ingested, "changed since the last ingest")
    (ingested.raw / "orders" / "2025-01-01.csv").unlink()
    _full_because(ingested, "was removed")
    _write(ingested, "orders", [_order("O7")], "2025-01-02")
    assert ingest(ingested).mode == "incremental"
    _write(ingested, "orders", [_order("O6")], "2024-12-31")
    _full_because(ingested, "comes before files already ingested")
    _write(ingested, "products", [{"product_id": "P2", "category": "toys", "price": "5"}])
    _full_because(ingested, "products.csv changed")
    assert ingest(ingested, full=True).notes[-1] == "full ingest (--full)"
    assert_same_staged(ingested, tmp_path)


def test_changed_settings_code_or_outputs_mean_a_full_ingest(ingested, monkeypatch):
    monkeypatch.setenv("CDP_DATE_ORDER", "mdy")
    _full_because(ingested, "CDP_DATE_ORDER, CDP_DEFAULT_REGION or CDP_CSV_ENCODING changed")
    monkeypatch.delenv("CDP_DATE_ORDER")
    _full_because(ingested, "CDP_DATE_ORDER, CDP_DEFAULT_REGION or CDP_CSV_ENCODING changed")
    monkeypatch.setenv("CDP_DEFAULT_REGION", "US")
    _full_because(ingested, "changed")
    monkeypatch.delenv("CDP_DEFAULT_REGION")
    _full_because(ingested, "changed")
    monkeypatch.setenv("CDP_CSV_ENCODING", "cp1252")
    _full_because(ingested, "CDP_CSV_ENCODING changed")
    monkeypatch.delenv("CDP_CSV_ENCODING")
    _full_because(ingested, "changed")
    monkeypatch.setattr(ledger, "FORMAT_VERSION", ledger.FORMAT_VERSION + 1)
    _full_because(ingested, "state format changed")
    monkeypatch.undo()
    _full_because(ingested, "state format changed")
    (ingested.staged / "orders.parquet").touch()
    _full_because(ingested, "staged/ was changed")
    assert ingest(ingested).mode == "incremental"


def test_a_day_month_order_the_new_rows_would_change_means_a_full_ingest(ingested, tmp_path):
    """R1's 26/09/1963 made the column day-first; three month-first dates tip the majority."""
    _write(ingested, "crm_contacts", [_crm(f"R{i}", "x", f"05/{13 + i}/1990") for i in range(6, 9)], "2025-01-02")
    _full_because(ingested, "day/month order decided over all rows changes")
    assert_same_staged(ingested, tmp_path)


def test_an_interrupted_ingest_leaves_no_state_and_the_next_is_full(ingested, monkeypatch, tmp_path):
    from cdp.ingest import incremental

    _write(ingested, "orders", [_order("O8")], "2025-01-02")
    real, written = incremental.write_parquet, []

    def killed_at_the_second_write(frame, path):
        written.append(path)
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        real(frame, path)

    monkeypatch.setattr(incremental, "write_parquet", killed_at_the_second_write)
    with pytest.raises(KeyboardInterrupt):
        ingest(ingested)
    monkeypatch.undo()
    assert ledger.load_state(ingested) is None
    _full_because(ingested, "no state of a complete earlier ingest")
    assert_same_staged(ingested, tmp_path)


def test_someone_erased_means_full_ingests_without_state_and_they_stay_suppressed(ingested, tmp_path):
    from cdp.privacy.erasure import SUPPRESSION_COLUMNS, suppressions_path
    from cdp.privacy.subjects import privacy_key, token

    key = privacy_key(ingested)
    nodes = ["key:crm_contacts|R2", "key:orders|O1"]  # a person's CRM record and order (its lines follow)
    rows = [[token(n, key), "key", "2025-01-01T00:00:00Z", "test"] for n in nodes]
    suppressions_path(ingested).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(SUPPRESSION_COLUMNS)).to_parquet(suppressions_path(ingested))
    _write(ingested, "orders", [_order("O1", "30")], "2025-01-02")  # an update of the erased order
    report = ingest(ingested)
    assert report.mode == "full" and any("someone is erased" in n for n in report.notes)
    assert ledger.load_state(ingested) is None
    counts = {t.table: t for t in report.tables}
    assert counts["crm_contacts"].suppressed == 2 and counts["order_lines"].suppressed == 1
    assert "O1" not in set(pd.read_parquet(ingested.staged / "orders.parquet")["order_id"])
    assert "O1" not in set(pd.read_parquet(ingested.staged / "orders_history.parquet")["order_id"])
    assert "R2" not in set(pd.read_parquet(ingested.staged / "crm_contacts.parquet")["record_id"])
    _write(ingested, "orders", [_order("O9")], "2025-01-03")
    assert ingest(ingested).mode == "full"
    assert "O1" not in set(pd.read_parquet(ingested.staged / "orders.parquet")["order_id"])


def test_a_phone_region_decision_or_a_new_year_the_new_rows_would_change_means_a_full_ingest(ingested, monkeypatch):
    from cdp.ingest import incremental

    _write(ingested, "orders", [_order("O8")], "2025-01-02")
    monkeypatch.setattr(incremental, "regions_of_keys", lambda keys: (("GB",), "test"))
    _full_because(ingested, "the phone region decision changes (US -> GB)")
    monkeypatch.undo()
    path = ledger.state_dir(ingested) / ledger.STATE_FILE
    state = json.loads(path.read_text())
    path.write_text(json.dumps({**state, "year": state["year"] - 1}))
    _full_because(ingested, "a new year")


def test_a_surprise_in_the_incremental_path_means_a_full_ingest(ingested, monkeypatch, tmp_path):
    from cdp.ingest import incremental

    _write(ingested, "orders", [_order("O8")], "2025-01-02")
    monkeypatch.setattr(incremental, "_merge_history", lambda *a: 1 / 0)
    _full_because(ingested, "the incremental path failed (ZeroDivisionError")
    monkeypatch.undo()
    assert_same_staged(ingested, tmp_path)
