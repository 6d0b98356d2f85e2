"""Ingest: raw contract tables in, staged typed tables + quarantine + field issues out.

In: `ws.raw/<table>.parquet|csv` for every table of `cdp.ingest.contract.TABLES`.
Out: `ws.staged/<table>.parquet` (accepted rows, typed, with `source_row` and normalized
identifier columns), `ws.quarantine` (table, row, reason, record) and
`ws.staged/field_issues.parquet` (table, row, column, value, reason; personal values by
their shape only, e.g. '99/99/9999'). A row is quarantined only for a bad key or essential
field (`TableSpec.row_keys`); other bad values are nulled (or, for enumerations, kept) as field
issues. Every read row is
either accepted or quarantined, never dropped silently; `IngestReport` holds the counts.
Rows of people erased with `cdp privacy erase` (tokens in `privacy/suppressions.parquet`)
are counted as `suppressed` and neither staged nor quarantined:
accepted + quarantined + suppressed = read.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cdp.atomic import write_json_atomic, write_parquet_atomic
from cdp.ingest import ledger
from cdp.ingest.contract import TABLES, TableSpec
from cdp.ingest.drops import (
    DROP_NAME,
    MANIFEST,
    Superseded,
    drop_files,
    file_digests,
    history_name,
    supersede_traced,
)
from cdp.ingest.normalize import REGIONS_FILE, UNKNOWN_REGION, add_identifiers, detect_regions, region_setting
from cdp.ingest.schemas import TEXT, clean_text, date_order_setting, schema_reasons, show, to_arrow, type_columns
from cdp.settings import setting
from cdp.workspace import Workspace

OPTIONAL_TABLES = frozenset(
    {
        "enrichment",
        "consent_events",
        "marketing_responses",
        "service_interactions",
        "web_events",
        "campaigns",
        "marketing_sends",
        "loyalty_members",
        "online_accounts",
        "crm_contacts",
    }
)
# child table -> (column, parent table): rows whose key is not an accepted parent are rejected
REFERENCES: dict[str, tuple[str, str]] = {
    "order_lines": ("order_id", "orders"),
    "marketing_responses": ("send_id", "marketing_sends"),
}
QUARANTINE_COLUMNS = ("table", "row", "reason", "record")
ISSUE_COLUMNS = ("table", "row", "column", "value", "reason")
Progress = Callable[[str, int, int], None]


class ContractError(Exception):
    """Raw input does not follow the data contract (missing table file or required column)."""


@dataclass
class TableReport:
    table: str
    source: str
    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    field_issues: int = 0
    suppressed: int = 0  # rows of erased people (privacy/suppressions.parquet)
    superseded: int = 0  # earlier versions of keys updated by a later drop (staged/<table>_history.parquet)
    # column -> {"present": non-null values read, "nulled": of those set to null, "unknown": kept unknown}
    columns: dict[str, dict[str, int]] = field(default_factory=dict)
    # "full"; an incremental ingest (cdp.ingest.incremental): "incremental" (new files read, counts are
    # this run's rows) or "unchanged" (not read); rechecked: earlier rows validated again (a parent came or went)
    mode: str = "full"
    rechecked: int = 0


@dataclass
class IngestReport:
    tables: list[TableReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # choices made from the data (date order, region)
    mode: str = "full"  # or "incremental": only new drop files were read (cdp.ingest.incremental)
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "table",
        "source",
        "read",
        "accepted",
        "quarantined",
        "field issues",
        "suppressed",
    )

    def as_rows(self) -> list[tuple[str, ...]]:
        """One tuple of strings per table, in `COLUMNS` order (for a rich table)."""
        return [
            (
                t.table,
                t.source,
                f"{t.read:,}",
                f"{t.accepted:,}",
                f"{t.quarantined:,}",
                f"{t.field_issues:,}",
                f"{t.suppressed:,}",
            )
            for t in self.tables
        ]

    def to_dict(self) -> dict[str, object]:
        return {
            "tables": [asdict(t) for t in self.tables],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "mode": self.mode,
        }


FALLBACK_ENCODING = "cp1252"  # Excel's "CSV" on Windows in western Europe and the Americas


@lru_cache(maxsize=256)
def _detected_encoding(path: Path, size: int, mtime_ns: int) -> str:
    """utf-16 (its byte-order mark), utf-8-sig (valid UTF-8, mark or not), else FALLBACK_ENCODING.
    NUL bytes outside UTF-16 mean no text encoding this can guess: ContractError."""
    with path.open("rb") as handle:
        if handle.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            return "utf-16"
        handle.seek(0)
        decoder, utf8 = codecs.getincrementaldecoder("utf-8")(), True
        while chunk := handle.read(1 << 22):
            if b"\x00" in chunk:
                raise ContractError(
                    f"cannot read {path}: it holds NUL bytes, so it is not CSV text in a byte encoding "
                    "(UTF-16 without a byte-order mark? set CDP_CSV_ENCODING=utf-16)"
                )
            if utf8:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    utf8 = False
        if utf8:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                utf8 = False
    return "utf-8-sig" if utf8 else FALLBACK_ENCODING


def encoding_of(path: Path) -> str:
    """The text encoding of a raw CSV: $CDP_CSV_ENCODING, else UTF-8 (a byte-order mark is skipped)
    when the whole file decodes as UTF-8, else Windows-1252 (noted in the ingest report). The
    detection is cached per file version: the header, the delimiter sniff and the read ask for it."""
    chosen = str(setting("csv_encoding"))
    if chosen != "auto":
        return chosen
    stat = path.stat()
    return _detected_encoding(path, stat.st_size, stat.st_mtime_ns)


def sniff_delimiter(path: Path) -> str:
    """The CSV delimiter (',', ';', tab or '|') sniffed from the file's first lines; ',' if unclear."""
    with path.open(newline="", encoding=encoding_of(path), errors="replace") as handle:
        sample = "".join(line for _, line in zip(range(20), handle))
    try:
        return csv.Sniffer().sniff(sample, ",;\t|").delimiter
    except csv.Error:
        return ","


def _header(path: Path, delimiter: str = ",") -> list[str]:
    if path.suffix == ".parquet":
        return list(pq.read_schema(path).names)
    with path.open(newline="", encoding=encoding_of(path)) as handle:
        return next(csv.reader(handle, delimiter=delimiter), [])


def canonical_name(name: str) -> str:
    """Header names compared case- and whitespace-insensitively (' Date of Birth' = date_of_birth)."""
    return re.sub(r"\s+", "_", str(name).strip().lower())


def header_renames(header: list[str], spec: TableSpec) -> dict[str, str]:
    """Raw header name -> contract column, for names that match only up to case and spaces."""
    exact = set(header)
    wanted = {c: c for c in spec.columns if c not in exact}
    renames: dict[str, str] = {}
    for name in header:
        target = wanted.get(canonical_name(name))
        if target is not None and target not in renames.values():
            renames[name] = target
    return renames


def locate(raw_dir: Path, report: IngestReport) -> dict[str, list[Path]]:
    """Find every table's files (the single file, then its daily drops: cdp.ingest.drops) and
    check their required columns before anything is read."""
    found: dict[str, list[Path]] = {}
    for name, spec in TABLES.items():
        paths = [p for p in (raw_dir / f"{name}.parquet", raw_dir / f"{name}.csv") if p.exists()]
        if len(paths) > 1:
            report.warnings.append(f"{name}: both .parquet and .csv found, using .parquet")
        drops, notes = drop_files(raw_dir, name)
        report.warnings += notes
        found[name] = paths[:1] + drops
        if not found[name] and name not in OPTIONAL_TABLES:
            raise ContractError(
                f"table '{name}' not found in {raw_dir} (expected {name}.parquet or {name}.csv, or daily "
                f"drops {name}/YYYY-MM-DD.parquet|csv; `cdp contract` lists the tables and columns)"
            )
        if not found[name]:
            report.warnings.append(f"{name}: no file in {raw_dir}, staged as an empty table")
        for path in found[name]:
            _check_header(name, spec, path, report)
    return found


def _check_header(name: str, spec: TableSpec, path: Path, report: IngestReport) -> None:
    try:
        delimiter = "," if path.suffix == ".parquet" else sniff_delimiter(path)
        header = _header(path, delimiter)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as err:
        raise ContractError(f"table '{name}': cannot read {path}: {err}") from err
    if delimiter != ",":
        report.notes.append(f"{name}: {path.name} read with delimiter {delimiter!r} (sniffed)")
    if path.suffix != ".parquet" and encoding_of(path) == FALLBACK_ENCODING and setting("csv_encoding") == "auto":
        report.notes.append(
            f"{name}: {path.name} is not UTF-8: read as Windows-1252 (set CDP_CSV_ENCODING if it is another encoding)"
        )
    renames = header_renames(header, spec)
    if renames:
        shown = ", ".join(f"{old!r} as {new}" for old, new in renames.items())
        report.warnings.append(f"{name}: header name(s) matched ignoring case/spaces: {shown}")
    header = [renames.get(c, c) for c in header]
    missing = [c for c in spec.required if c not in header]
    if missing:
        raise ContractError(f"table '{name}' ({path}) is missing required column(s): {', '.join(missing)}")
    absent = [c for c in spec.columns if c not in header]
    if absent:
        report.warnings.append(f"{name}: optional column(s) {', '.join(absent)} absent, staged as null")


def read_sources(
    paths: list[Path], spec: TableSpec, columns: tuple[str, ...] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the table's current rows over its single file and drops, the superseded rows)."""
    if len(paths) < 2:
        current = read_raw(paths[0] if paths else None, spec, columns)
        return current, current.iloc[:0]
    wanted = None if columns is None else tuple(dict.fromkeys((*spec.primary_key, *columns)))
    result, _ = read_sources_traced(paths, spec, wanted)
    return (result.current, result.history) if columns is None else (result.current[list(columns)], result.history)


def history_source_name(path: Path) -> str:
    """How staged/<table>_history.parquet names a file (source_file, superseded_by)."""
    return path.relative_to(path.parents[1]).as_posix()


def read_sources_traced(
    paths: list[Path], spec: TableSpec, columns: tuple[str, ...] | None = None
) -> tuple[Superseded, bool]:
    """`read_sources` keeping each row's origin and key (`Superseded`), and whether every file's
    columns had the types of the table they make (`ledger.uniform_types`)."""
    frames = [read_raw(p, spec, columns) for p in paths] or [read_raw(None, spec, columns)]
    result = supersede_traced(frames, [history_source_name(p) for p in paths] or ["missing"], spec)
    return result, ledger.uniform_types(frames, result.current)


def _text_types(kind: pa.DataType) -> pd.api.extensions.ExtensionDtype | None:
    return TEXT if kind in (pa.string(), pa.large_string()) else None


def read_raw(path: Path | None, spec: TableSpec, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The raw table as read (CSV: all strings), header names matched to the contract, absent
    contract columns as nulls. `columns`: read only these contract columns (a cheap pre-pass)."""
    if path is None:
        frame = pd.DataFrame({c: pd.Series(dtype=TEXT) for c in columns or spec.columns})
    else:
        try:
            frame = _read_file(path, spec, columns)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as err:
            raise ContractError(
                f"table '{spec.name}': cannot read {path} (Parquet, or UTF-8 CSV with a header row): {err}"
            ) from err
    for col in columns or spec.columns:
        if col not in frame.columns:
            frame[col] = pd.Series(None, index=frame.index, dtype=TEXT)
    return frame.reset_index(drop=True)


def _read_file(path: Path, spec: TableSpec, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    delimiter = "," if path.suffix == ".parquet" else sniff_delimiter(path)
    names = _header(path, delimiter)
    renames = header_renames(names, spec)
    keep = None if columns is None else [n for n in names if renames.get(n, n) in columns]
    if path.suffix == ".parquet":
        table = pq.read_table(path, columns=keep)
        for i, fld in enumerate(table.schema):
            if pa.types.is_decimal(fld.type):
                table = table.set_column(i, fld.name, table.column(i).cast(pa.float64()))
        frame = table.to_pandas(date_as_object=False, types_mapper=_text_types)
    else:
        encoding = encoding_of(path)
        frame = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(encoding="utf8" if encoding == "utf-8-sig" else encoding),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names},
                include_columns=keep,
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=True,
            ),
        ).to_pandas(types_mapper=_text_types)
    return frame.rename(columns=renames) if renames else frame


def _reference_reasons(typed: pd.DataFrame, spec: TableSpec, known: dict[str, pd.Series]) -> list[pd.Series]:
    if spec.name not in REFERENCES:
        return []
    col, parent = REFERENCES[spec.name]
    values = typed[col]
    parents = pa.array(known.get(parent, pd.Series(dtype=TEXT)).astype(TEXT).array)
    found = pc.is_in(pa.array(values.astype(TEXT).array), value_set=parents)
    unknown = values.notna() & ~pc.fill_null(found, False).to_numpy(zero_copy_only=False)
    return [f"{col}: unknown {col} " + show(values[unknown])] if unknown.any() else []


def _key_codes(typed: pd.DataFrame, pk: list[str]) -> np.ndarray:
    """One int64 code per row for its primary key (-1 where any part is null)."""
    codes = np.zeros(len(typed), dtype="int64")
    for col in pk:
        values = typed[col]
        if values.dtype == TEXT:
            encoded = pc.dictionary_encode(to_arrow(values))
            part = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
        else:
            part = pd.factorize(values, use_na_sentinel=True)[0]
        part = part.astype("int64")
        codes = np.where((codes < 0) | (part < 0), -1, pd.factorize(codes * (part.max(initial=0) + 1) + part)[0])
    return codes


def _duplicate_reasons(typed: pd.DataFrame, raw: pd.DataFrame, spec: TableSpec, rejected: pd.Index) -> list[pd.Series]:
    """First valid row of each primary key wins; later rows are exact or id duplicates."""
    pk = list(spec.primary_key)
    if not pk or typed.empty:
        return []
    codes = _key_codes(typed, pk)
    counts = np.bincount(codes[codes >= 0], minlength=1)
    rows = np.flatnonzero((codes >= 0) & (counts[np.maximum(codes, 0)] > 1))
    if not len(rows):
        return []
    keys = pd.DataFrame({"code": codes[rows], "_row": rows})
    keepers = keys[~keys["_row"].isin(rejected)].drop_duplicates("code")
    pairs = keys.merge(keepers, on="code", suffixes=("", "_keep"))
    pairs = pairs[pairs["_row"] != pairs["_row_keep"]]
    if pairs.empty:
        return []
    involved = pd.Index(pd.concat([pairs["_row"], pairs["_row_keep"]]).unique())
    extra = [c for c in raw.columns if c not in spec.columns]
    content = pd.concat([typed.loc[involved], raw.loc[involved, extra]], axis=1).astype(str)
    digest = pd.util.hash_pandas_object(content, index=False)
    exact = digest.loc[pairs["_row"]].to_numpy() == digest.loc[pairs["_row_keep"]].to_numpy()
    index = pd.Index(pairs["_row"])
    out = [pd.Series("duplicate row", index=index[exact])]
    reuse = index[~exact]
    if len(reuse):
        shown = [show(clean_text(typed[c].loc[reuse])) for c in pk]
        label = pk[0] if len(pk) == 1 else f"({', '.join(pk)})"
        value = shown[0] if len(pk) == 1 else ("(" + pd.concat(shown, axis=1).agg(", ".join, axis=1) + ")")
        out.append(f"duplicate {label} " + value)
    return out


def _join(reasons: list[pd.Series], spec: TableSpec) -> pd.Series:
    """One "; "-joined reason per rejected row, in contract column order."""
    if not reasons:
        return pd.Series(dtype=object)
    flat = pd.concat(reasons)
    position = {c: i for i, c in enumerate(spec.columns)}
    order = flat.str.split(":", n=1).str[0].map(position).fillna(len(position))
    frame = pd.DataFrame({"row": flat.index, "order": order.to_numpy(), "reason": flat.to_numpy()})
    frame = frame.sort_values(["row", "order"], kind="stable")
    several = frame["row"].duplicated(keep=False).to_numpy()
    joined = pd.Series(frame["reason"].to_numpy()[~several], index=frame["row"].to_numpy()[~several])
    if several.any():  # few rows have more than one problem: join those in Python
        multi = frame[several].groupby("row", sort=False)["reason"].agg("; ".join)
        joined = pd.concat([joined, multi])
    return joined.sort_index()


def _records(raw: pd.DataFrame, rows: np.ndarray) -> list[str]:
    """The raw rows as JSON objects of strings (null stays null)."""
    sub = raw.take(rows)
    names = [str(c) for c in sub.columns]
    columns = [[None if pd.isna(v) else str(v) for v in sub[c].tolist()] for c in sub.columns]
    return [json.dumps(dict(zip(names, values)), ensure_ascii=False) for values in zip(*columns)] if len(rows) else []


def _filter(values: pd.Series, keep: np.ndarray) -> pd.Series:
    if values.dtype == TEXT:  # Arrow filter: much faster than pandas masking for text
        kept = to_arrow(values).filter(pa.array(keep))
        return pd.Series(pd.arrays.ArrowStringArray(kept))
    return values[keep].reset_index(drop=True)


@dataclass
class Staged:
    """One validated table: accepted rows, quarantine rows, field issues, per-column counts."""

    staged: pd.DataFrame
    quarantine: pd.DataFrame
    issues: pd.DataFrame
    columns: dict[str, dict[str, int]]


def _column_of(reasons: pd.Series) -> pd.Series:
    return reasons.str.split(":", n=1).str[0]


def _unknown_values(typed: pd.DataFrame, spec: TableSpec) -> list[pd.Series]:
    """Enumerations are open: values outside the usual set are kept, each one a field issue."""
    out = []
    for col, domain in spec.enums.items():
        values = typed[col]
        unknown = values.notna() & ~values.isin(domain).fillna(False).astype(bool)
        if unknown.any():
            verb = "not one of" if col in spec.closed else "kept, not one of"
            out.append(f"{col}: value " + show(values[unknown], col) + f" {verb} ({', '.join(domain)})")
    return out


def stage_table(
    raw: pd.DataFrame,
    spec: TableSpec,
    known: dict[str, pd.Series],
    regions: tuple[str, ...] | str,
    order: str | None = None,
    notes: list[str] | None = None,
    orders: dict[str, str] | None = None,
    votes: dict[str, np.ndarray] | None = None,
) -> Staged:
    """Validate one raw table. A row is quarantined only for a problem in one of its `row_keys`
    (or a duplicate key, or an unknown parent); any other bad value is nulled, kept as a field
    issue (table, row, column, value, reason) and the row goes on. `orders`, `votes`: see
    `type_columns` (the incremental ingest's per-column date orders and vote codes)."""
    typed, reasons, unparseable = type_columns(raw, spec, order, notes, orders, votes)
    reasons += schema_reasons(typed, raw, spec, unparseable)
    reasons += _reference_reasons(typed, spec, known)
    unknown = _unknown_values(typed, spec)
    reasons += [u for u in unknown if str(_column_of(u.iloc[:1]).iloc[0]) in spec.closed]
    flat = pd.concat(reasons) if reasons else pd.Series(dtype=object)
    essential = _column_of(flat).isin(spec.row_keys).to_numpy() if len(flat) else np.zeros(0, dtype=bool)
    rejected = pd.Index(flat.index[essential].unique())
    dup = _duplicate_reasons(typed, raw, spec, rejected)
    rejected = rejected.union(pd.Index(pd.concat(dup).index.unique()) if dup else pd.Index([]))
    # a rejected row's quarantine reason lists all its problems; accepted rows keep theirs as issues
    on_rejected = flat.index.isin(rejected)
    joined = _join([flat[on_rejected], *dup], spec)
    soft = flat[~on_rejected]
    counted: dict[str, int] = {}

    def present(col: str) -> int:  # non-null values as read
        if col not in counted:
            counted[col] = int(clean_text(raw[col]).notna().sum()) if col in raw else 0
        return counted[col]

    columns: dict[str, dict[str, int]] = {}
    for col, rows in soft.groupby(_column_of(soft)).groups.items() if len(soft) else ():
        was_present = raw[col].loc[rows].notna() & clean_text(raw[col].loc[rows]).notna()
        nulled = pd.Index(rows)[was_present.to_numpy()]
        if col in typed:  # the bad value is nulled; the row keeps the rest
            typed.loc[nulled, col] = None
        columns[str(col)] = {"present": present(str(col)), "nulled": len(nulled.unique()), "unknown": 0}
    unknown = [u[~u.index.isin(rejected)] for u in unknown if str(_column_of(u.iloc[:1]).iloc[0]) not in spec.closed]
    for u in unknown:
        if len(u):
            col = str(_column_of(u.iloc[:1]).iloc[0])
            columns.setdefault(col, {"present": present(col), "nulled": 0, "unknown": 0})["unknown"] = len(u)
    rejected_rows = joined.index.to_numpy(dtype="int64")
    quarantine = pd.DataFrame(
        {
            "table": spec.name,
            "row": rejected_rows,
            "reason": joined.to_numpy(dtype=object),
            "record": _records(raw, rejected_rows),
        }
    )
    keep = np.ones(len(raw), dtype=bool)
    keep[rejected_rows] = False
    staged = pd.DataFrame({c: _filter(typed[c] if c in typed else raw[c], keep) for c in raw.columns})
    staged["source_row"] = np.flatnonzero(keep).astype("int64")
    identifier_issues = add_identifiers(staged, spec, regions)
    for reasons_of in identifier_issues:  # identifiers are counted against the raw values present
        if len(reasons_of):
            col = str(_column_of(reasons_of.iloc[:1]).iloc[0])
            entry = columns.setdefault(col, {"present": present(col), "nulled": 0, "unknown": 0})
            entry["nulled"] += len(reasons_of)
    by_source = [r.set_axis(staged["source_row"].loc[r.index].to_numpy()) for r in identifier_issues]
    issues = pd.concat([soft, *unknown, *by_source]) if len(soft) or unknown or by_source else flat[:0]
    issues = issues.sort_index(kind="stable") if len(issues) else issues
    field_issues = _issue_frame(spec, issues, raw)
    return Staged(staged, quarantine, field_issues, columns)


def _issue_frame(spec: TableSpec, issues: pd.Series, raw: pd.DataFrame) -> pd.DataFrame:
    """Field issues as (table, row, column, value, reason); the value of a personal column only
    by its shape (emails and phones as their masked hint already in the reason)."""
    rows = issues.index.to_numpy(dtype="int64")
    cols = _column_of(issues).to_numpy(dtype=object) if len(issues) else np.array([], dtype=object)
    values = np.empty(len(rows), dtype=object)
    for col in pd.unique(cols):
        at = cols == col
        if col in raw.columns:
            text = clean_text(raw[col].take(rows[at]))
            shown = show(text.str.lower() if col in spec.enums else text, col).str.slice(1, -1)  # as kept
            values[at] = np.where(text.isna().to_numpy(), None, shown.to_numpy())
    return pd.DataFrame(
        {"table": spec.name, "row": rows, "column": cols, "value": values, "reason": issues.to_numpy(dtype=object)}
    )


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write text as Arrow strings (all-null columns too) that pandas reads back as object."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for i, fld in enumerate(table.schema):
        if pa.types.is_null(fld.type) or pa.types.is_large_string(fld.type):
            table = table.set_column(i, fld.name, table.column(i).cast(pa.string()))
    meta = json.loads(table.schema.metadata[b"pandas"])
    for col in meta["columns"]:
        if col["numpy_type"] == "string":  # StringDtype -> plain object strings on read
            col.update(pandas_type="unicode", numpy_type="object")
    write_parquet_atomic(table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}), path)


def phone_regions(found: dict[str, list[Path]], report: IngestReport) -> tuple[str, ...]:
    """The phone region(s) for national-form numbers: $CDP_DEFAULT_REGION, else detected from
    the phone columns of all tables (one choice, so a number normalizes alike everywhere)."""
    chosen = region_setting()
    if chosen:
        report.notes.append(f"phone region {'/'.join(chosen)} (CDP_DEFAULT_REGION)")
        return chosen
    parts = [
        frame[col].dropna()
        for name, spec in TABLES.items()
        if spec.phones and found[name]
        for frame in [read_sources(found[name], spec, spec.phones)[0]]
        for col in spec.phones
    ]
    values = pd.concat(parts, ignore_index=True) if parts else pd.Series(dtype=object)
    if values.notna().sum() == 0:
        return (UNKNOWN_REGION,)
    regions, how = detect_regions(values)
    report.notes.append(
        f"phone region {'/'.join(regions)} detected from the data ({how}); set CDP_DEFAULT_REGION to override"
    )
    return regions


def ingest(ws: Workspace, progress: Progress | None = None, write: bool = True) -> IngestReport:
    """Validate, type and normalize every raw table into `ws.staged` (see module docstring).
    `write=False` (`cdp ingest --check`): the same validation and report, nothing written."""
    from cdp.privacy.erasure import drop_suppressed, load_suppressions, suppression_key

    report = IngestReport()
    found = locate(ws.raw, report)
    suppressed = load_suppressions(ws)
    # tokens are only computed when someone was erased; a lost or changed key stops ingest (exit 1)
    key = suppression_key(ws) if suppressed else b""
    # the incremental ingest's state (cdp.ingest.ledger); none while someone is erased
    track = write and not suppressed
    states: dict[str, ledger.TableState] = {}
    if write:
        ws.staged.mkdir(parents=True, exist_ok=True)
        ledger.invalidate(ws)
    order = date_order_setting()
    regions = phone_regions(found, report)
    known: dict[str, pd.Series] = {}  # parent table -> its accepted keys
    quarantined: list[pd.DataFrame] = []
    issues: list[pd.DataFrame] = []
    for done, (name, spec) in enumerate(TABLES.items()):
        if progress:
            progress(name, done, len(TABLES))
        if track:  # where each row came from, for the ledger
            traced, uniform = read_sources_traced(found[name], spec)
            raw, history = traced.current, traced.history
        else:
            raw, history = read_sources(found[name], spec)
        kept, positions = drop_suppressed(name, raw, suppressed, key)
        if len(found[name]) > 1 and write:  # earlier versions of updated keys (erased people left out)
            write_parquet(drop_suppressed(name, history, suppressed, key)[0], ws.staged / history_name(name))
        votes: dict[str, np.ndarray] = {}
        result = stage_table(kept, spec, known, regions, order, report.notes, votes=votes)
        staged, bad, field_issues = result.staged, result.quarantine, result.issues
        if track:
            states[name] = _track_table(ws, name, spec, found[name], traced, uniform, bad, votes)
        report.warnings += unknown_warnings(name, spec, field_issues, result.columns)
        if len(kept) < len(raw):  # row numbers keep pointing into the raw file
            for frame, column in ((staged, "source_row"), (bad, "row"), (field_issues, "row")):
                frame[column] = positions[frame[column].to_numpy(dtype="int64")]
            report.warnings.append(f"{name}: {len(raw) - len(kept)} row(s) of erased people suppressed")
        entry = TableReport(
            name,
            source_label(found[name]),
            len(raw) + len(history),
            len(staged),
            len(bad),
            len(field_issues),
            len(raw) - len(kept),
            columns=result.columns,
            superseded=len(history),
        )
        if entry.accepted + entry.quarantined + entry.suppressed + entry.superseded != entry.read:
            raise RuntimeError(
                f"ingest bug: {name} accepted {entry.accepted} + quarantined "
                f"{entry.quarantined} + suppressed {entry.suppressed} != read {entry.read}"
            )
        known.update({parent: staged[col] for col, parent in REFERENCES.values() if parent == name})
        if write:
            write_parquet(staged, ws.staged / f"{name}.parquet")
        quarantined.append(bad)
        issues.append(field_issues)
        report.tables.append(entry)
        if progress:
            progress(name, done + 1, len(TABLES))
    if write:
        write_json_atomic(ws.staged / REGIONS_FILE, {"regions": list(regions)})
        write_parquet(_frame(quarantined, QUARANTINE_COLUMNS), ws.quarantine)
        write_parquet(_frame(issues, ISSUE_COLUMNS), ws.staged / "field_issues.parquet")
        read = [p for paths in found.values() for p in paths]
        digests = file_digests(ws.raw, read)
        write_json_atomic(ws.staged / MANIFEST, digests)  # what `cdp refresh` has seen
        if track:
            ledger.save_state(ws, states, digests, regions, staged_outputs(found))
    return report


def staged_outputs(found: dict[str, list[Path]]) -> list[str]:
    """The staged/ files an ingest of `found` writes (names relative to staged/)."""
    names = [f"{name}.parquet" for name in found]
    names += [history_name(name) for name, paths in found.items() if len(paths) > 1]
    return [*names, "quarantine.parquet", "field_issues.parquet", REGIONS_FILE, MANIFEST]


def _track_table(
    ws: Workspace,
    name: str,
    spec: TableSpec,
    paths: list[Path],
    traced: Superseded,
    uniform: bool,
    quarantine: pd.DataFrame,
    votes: dict[str, np.ndarray],
) -> ledger.TableState:
    """Write the table's ledgers; its part of the state (no one erased: every row was staged)."""
    raw = traced.current
    rows = quarantine["row"].to_numpy(dtype="int64")
    table_ledger = ledger.build_ledger(spec, raw, traced.origin, traced.keys, rows, votes)
    ledger.write_ledger(ws, name, table_ledger, ledger.history_ledger(traced.history_origin, traced.history_keys))
    return ledger.TableState(
        files=[p.relative_to(ws.raw).as_posix() for p in paths],
        raw_columns=ledger.raw_columns(raw),
        uniform=uniform,
        canonical_keys=ledger.keys_canonical(raw, spec),
        votes={col: ledger.vote_counts(codes) for col, codes in votes.items()},
    )


def source_label(paths: list[Path]) -> str:
    if not paths:
        return "missing"
    drops = [p for p in paths if DROP_NAME.match(p.name)]
    base = [p.name for p in paths if p not in drops]
    return " + ".join(base + ([f"{len(drops)} drop(s)"] if drops else []))


def unknown_warnings(name: str, spec: TableSpec, issues: pd.DataFrame, columns: dict) -> list[str]:
    """One line per enumeration column with values outside the usual set (kept as given)."""
    out = []
    for col in spec.enums:
        if columns.get(col, {}).get("unknown"):
            values = issues.loc[(issues["column"] == col) & issues["reason"].str.contains(" kept, "), "value"]
            top = ", ".join(f"'{v}' ({n:,})" for v, n in values.value_counts().head(8).items())
            out.append(
                f"{name}.{col}: {len(values):,} value(s) outside ({', '.join(spec.enums[col])}) kept as given: {top}"
            )
    return out


def _frame(parts: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    frame = (
        pd.concat([p for p in parts if len(p)], ignore_index=True)
        if any(len(p) for p in parts)
        else pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    )
    frame["row"] = frame["row"].astype("int64")
    return frame[list(columns)]
