"""Dirty rows: what real exports look like, and the truth list of every injected problem.

In: a raw table (Arrow, exactly as it will be written, optionally with `_person`). Out: the
dirtied table and a list of (row, kind, column, other_row, row_error) with final positions.
Row errors (ingest must quarantine the row): null_required, bad_date, bad_enum, duplicate_row
(an exact copy placed after its source), duplicate_id (a different row reusing the id of an
earlier row `other_row`). Not row errors (ingest nulls the identifier): malformed_email,
malformed_phone. About 1% of rows per table; tables under 1000 rows only get duplicate_row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cdp.ingest.contract import TABLES

ROW_ERRORS = ("null_required", "bad_date", "bad_enum", "duplicate_row", "duplicate_id")
IDENTIFIER_KINDS = ("malformed_email", "malformed_phone")
BAD_DATES = ("2024-13-45", "not a date", "31/02/2025", "2025-02-30T10:00:00Z", "0000-00-00 00:00:00", "yesterday")
BAD_ENUMS = ("kiosk", "fax", "tv", "carrier_pigeon", "legacy", "holdout", "purchase")
MALFORMED_EMAILS = (
    "john.doe@@mail",
    "n/a",
    "john at gmail",
    "jane.doe@",
    "@gmail.com",
    "jane doe@gmail.com",
    "mary.smith@gmail",
)
MALFORMED_PHONES = ("12", "call me", "555", "n/a", "123-45", "none given", "+1 (0) 12")
SMALL_TABLE = 1000


class _Edits:
    """Cell edits collected per column and applied with one pass over each column."""

    def __init__(self) -> None:
        self.cells: dict[str, dict[int, object]] = {}

    def set(self, column: str, rows: np.ndarray, values: list | None) -> None:
        cells = self.cells.setdefault(column, {})
        for i, r in enumerate(rows.tolist()):
            cells[r] = None if values is None else values[i]

    def apply(self, table: pa.Table) -> pa.Table:
        for column, cells in self.cells.items():
            col = table.column(column).combine_chunks()
            rows = np.array(sorted(cells), dtype=np.int64)
            mask = np.zeros(len(col), dtype=bool)
            mask[rows] = True  # replace_with_mask fills in row order
            repl = pa.array([cells[r] for r in rows.tolist()], type=col.type)
            new = pc.replace_with_mask(col, pa.array(mask), repl)
            table = table.set_column(table.schema.get_field_index(column), column, new)
        return table


def make_dirty(
    name: str, table: pa.Table, rng: np.random.Generator, rate: float = 0.01
) -> tuple[pa.Table, dict[str, list]]:
    """Inject ~`rate` dirty rows of every applicable kind; returns (table, truth columns)."""
    spec = TABLES[name]
    n = table.num_rows
    out: dict[str, list] = {"row": [], "kind": [], "column": [], "other_row": []}

    def note(rows: np.ndarray | list, kind: str, column: str | np.ndarray, other: np.ndarray | None = None) -> None:
        out["row"] += list(rows)
        out["kind"] += [kind] * len(rows)
        out["column"] += list(column) if isinstance(column, (list, np.ndarray)) else [column] * len(rows)
        out["other_row"] += list(other) if other is not None else [-1] * len(rows)

    used = np.zeros(n, dtype=bool)
    edits = _Edits()
    dup_count = 1
    if n >= SMALL_TABLE:
        req_ts = [c for c in spec.timestamps if c in spec.required]
        kinds = (
            ["null_required", "duplicate_row"]
            + (["bad_date"] if req_ts else [])
            + (["bad_enum"] if spec.enums else [])
            + (["duplicate_id"] if spec.primary_key else [])
        )
        per_kind = max(1, round(rate * n / len(kinds)))
        dup_count = per_kind
        in_place = [k for k in kinds if k != "duplicate_row"]
        rows = rng.choice(n, per_kind * len(in_place), replace=False)
        used[rows] = True
        for j, kind in enumerate(in_place):
            r = np.sort(rows[j * per_kind : (j + 1) * per_kind])
            if kind == "null_required":
                cols = np.array(spec.required, dtype=object)[rng.integers(0, len(spec.required), len(r))]
                for c in np.unique(cols):
                    edits.set(c, r[cols == c], None)
                note(r, kind, cols)
            elif kind == "bad_date":
                cols = np.array(req_ts, dtype=object)[rng.integers(0, len(req_ts), len(r))]
                for c in np.unique(cols):
                    m = r[cols == c]
                    edits.set(c, m, [BAD_DATES[i] for i in rng.integers(0, len(BAD_DATES), len(m))])
                note(r, kind, cols)
            elif kind == "bad_enum":
                names = list(spec.enums)
                cols = np.array(names, dtype=object)[rng.integers(0, len(names), len(r))]
                for c in np.unique(cols):
                    m = r[cols == c]
                    bad = [v for v in BAD_ENUMS if v not in spec.enums[c]]
                    edits.set(c, m, [bad[i] for i in rng.integers(0, len(bad), len(m))])
                note(r, kind, cols)
            else:  # duplicate_id: reuse the key of an earlier clean row
                r = r[r > 0]
                src = (rng.random(len(r)) * r).astype(np.int64)
                for _ in range(20):
                    clash = used[src]
                    src[clash] = (rng.random(clash.sum()) * r[clash]).astype(np.int64)
                r, src = r[~used[src]], src[~used[src]]
                for c in spec.primary_key:
                    values = table.column(c).take(pa.array(src)).to_pylist()
                    edits.set(c, r, values)
                note(r, kind, ",".join(spec.primary_key), src)
        # malformed identifiers on otherwise valid rows
        for kind, columns, pool in (
            ("malformed_email", spec.emails, MALFORMED_EMAILS),
            ("malformed_phone", spec.phones, MALFORMED_PHONES),
        ):
            for c in columns:
                ok = np.flatnonzero(table.column(c).is_valid().to_numpy(zero_copy_only=False) & ~used)
                if not len(ok):
                    continue
                r = np.sort(rng.choice(ok, max(1, round(0.003 * len(ok))), replace=False))
                used[r] = True
                edits.set(c, r, [pool[i] for i in rng.integers(0, len(pool), len(r))])
                note(r, kind, c)
    table = edits.apply(table)
    # exact duplicate rows: re-sent batches, each copy inserted at one of a few points after its source
    clean = np.flatnonzero(~used)
    src = np.sort(rng.choice(clean, min(dup_count, len(clean)), replace=False))
    points = np.unique(np.concatenate([[n], rng.integers(1, n + 1, min(20, len(src)))]))
    at = points[np.searchsorted(points, src + 1)]  # first insertion point after the source
    pieces, start, pos = [], 0, np.empty(n + len(src), dtype=np.int64)
    offset = 0
    for point in points:
        block = src[at == point]
        pieces.append(table.slice(start, point - start))
        pos[start:point] = np.arange(start, point) + offset
        offset += len(block)
        if len(block):
            pieces.append(table.take(pa.array(block)))
            pos[n + np.flatnonzero(at == point)] = point + offset - len(block) + np.arange(len(block))
        start = point
    table = pa.concat_tables(pieces)
    out["row"] = [int(pos[r]) for r in out["row"]]
    out["other_row"] = [int(pos[r]) if r >= 0 else -1 for r in out["other_row"]]
    note(pos[n + np.arange(len(src))], "duplicate_row", "*", pos[src])
    out["row_error"] = [k in ROW_ERRORS for k in out["kind"]]
    return table, out
