"""Daily drops: raw/<table>/<date> files read after the single file; a later key supersedes."""

from __future__ import annotations

import pandas as pd

from cdp.ingest.contract import TABLES
from cdp.ingest.drops import drop_files, supersede
from cdp.ingest.staging import ingest
from cdp.workspace import Workspace


def _crm(*rows: tuple[str, str]) -> pd.DataFrame:
    columns = list(TABLES["crm_contacts"].columns)
    return pd.DataFrame(
        [
            {**dict.fromkeys(columns), "record_id": r, "address_line": a, "created_at": "2024-03-01T10:00:00Z"}
            for r, a in rows
        ]
    )


def test_a_key_in_a_later_drop_supersedes_and_the_earlier_goes_to_history():
    base, drop1, drop2 = _crm(("R1", "old"), ("R2", "keep")), _crm(("R1", "mid"), ("R3", "new")), _crm(("R1", "last"))
    current, history = supersede([base, drop1, drop2], ["base", "d1", "d2"], TABLES["crm_contacts"])
    assert dict(zip(current["record_id"], current["address_line"])) == {"R2": "keep", "R3": "new", "R1": "last"}
    assert history[["address_line", "source_file", "superseded_by"]].values.tolist() == [
        ["old", "base", "d2"],
        ["mid", "d1", "d2"],
    ]


def test_drop_files_are_dated_and_others_are_named_in_a_warning(tmp_path):
    (tmp_path / "orders").mkdir()
    for name in ("2025-01-02.parquet", "2025-01-01.csv", "2025-01-01.parquet", "notes.txt"):
        (tmp_path / "orders" / name).write_text("")
    files, warnings = drop_files(tmp_path, "orders")
    assert [f.name for f in files] == ["2025-01-01.parquet", "2025-01-02.parquet"]
    assert any("notes.txt" in w for w in warnings)


def test_ingest_counts_superseded_rows_and_stages_the_latest(tmp_path):
    ws = Workspace(tmp_path)
    ws.raw.mkdir(parents=True)
    for name, spec in TABLES.items():  # every required table present, empty
        pd.DataFrame({c: pd.Series(dtype=object) for c in spec.columns}).to_csv(ws.raw / f"{name}.csv", index=False)
    _crm(("R1", "1 Old Road"), ("R2", "2 Same Road")).to_csv(ws.raw / "crm_contacts.csv", index=False)
    (ws.raw / "crm_contacts").mkdir()
    _crm(("R1", "9 New Road")).to_parquet(ws.raw / "crm_contacts" / "2025-01-01.parquet")
    report = ingest(ws)
    entry = next(t for t in report.tables if t.table == "crm_contacts")
    assert (entry.read, entry.accepted, entry.superseded) == (3, 2, 1)
    staged = pd.read_parquet(ws.staged / "crm_contacts.parquet")
    assert dict(zip(staged["record_id"], staged["address_line"])) == {"R2": "2 Same Road", "R1": "9 New Road"}
    assert pd.read_parquet(ws.staged / "crm_contacts_history.parquet")["address_line"].tolist() == ["1 Old Road"]
