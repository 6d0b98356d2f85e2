"""Typing and pandera validation of raw tables, with one readable reason per failed check.

In: a raw table (strings from CSV, or whatever types a Parquet file carries) and its
`TableSpec`. Out: the typed table (timestamps `datetime64[us, UTC]`, dates `datetime64[us]`,
numbers float64, booleans nullable `boolean`, text trimmed with blanks as null, enums
lower-cased) and a list of reason Series (index = raw row, value = "field: problem 'value'").
Parsing is vectorized (Arrow compute; pandas for unusual shapes). The row rules (required,
enum domains, ranges, hash format) are a pandera `DataFrameSchema` built from the contract,
run lazily so every failure of every row is reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as arrow
import pyarrow.compute as pc
from pandera.engines import pandas_engine

from cdp.ingest.contract import TableSpec
from cdp.ingest.normalize import TEXT, map_text, map_unique

TIMESTAMP_DTYPE = "datetime64[us, UTC]"
RANGES: dict[str, tuple[float, float]] = {"sentiment": (-1.0, 1.0)}  # other numbers are >= 0
HEX_COLUMNS = frozenset({"email_sha256"})
_WORDS = {
    **dict.fromkeys(("true", "t", "yes", "y", "1", "1.0"), True),
    **dict.fromkeys(("false", "f", "no", "n", "0", "0.0"), False),
}
_SHOW_MAX = 60
# ISO-8601 shapes Arrow casts directly (valid month/day/time ranges, so impossible dates
# like 2024-13-45 fall to the pandas path instead of failing the whole Arrow cast)
_DATE = (
    r"[1-9]\d{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12]\d|30)|02-(?:0[1-9]|1\d|2\d))"
)
_TIME = r"(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,6})?)?"
_ISO_ZONED = rf"^{_DATE}[T ]{_TIME}(?:Z|[+-](?:[01]\d|2[0-3]):?[0-5]\d)$"
_ISO_NAIVE = rf"^{_DATE}(?:[T ]{_TIME})?$"
_DECIMAL = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
_SCHEMAS: dict[str, pa.DataFrameSchema] = {}


def show(values: pd.Series) -> pd.Series:
    """Values quoted for a reason, e.g. 'not a date' (truncated); an object Series."""
    text = values.astype(object).astype(str)
    text = text.where(text.str.len() <= _SHOW_MAX, text.str.slice(0, _SHOW_MAX) + "...")
    return "'" + text + "'"


def text_columns(spec: TableSpec) -> tuple[str, ...]:
    """Contract columns kept as text (ids, names, enums, identifiers)."""
    typed = set(spec.timestamps) | set(spec.dates) | set(spec.numbers) | set(spec.booleans)
    return tuple(c for c in spec.columns if c not in typed)


def build_schema(spec: TableSpec) -> pa.DataFrameSchema:
    """The pandera schema of one typed contract table (extra columns allowed)."""
    if spec.name in _SCHEMAS:
        return _SCHEMAS[spec.name]
    columns: dict[str, pa.Column] = {}
    for col in spec.columns:
        nullable = col not in spec.required
        if col in spec.timestamps:
            columns[col] = pa.Column(TIMESTAMP_DTYPE, nullable=nullable)
        elif col in spec.dates:
            columns[col] = pa.Column(pandas_engine.DateTime(unit="us"), nullable=nullable)  # type: ignore[call-arg]
        elif col in spec.numbers:
            check = pa.Check.in_range(*RANGES[col]) if col in RANGES else pa.Check.ge(0)
            columns[col] = pa.Column("float64", check, nullable=nullable)
        elif col in spec.booleans:
            columns[col] = pa.Column("boolean", nullable=nullable)
        elif col in spec.enums:
            columns[col] = pa.Column(TEXT, pa.Check.isin(spec.enums[col]), nullable=nullable)
        elif col in HEX_COLUMNS:
            columns[col] = pa.Column(TEXT, pa.Check.str_matches(r"^[0-9a-f]{64}$"), nullable=nullable)
        else:
            columns[col] = pa.Column(TEXT, nullable=nullable)
    schema = pa.DataFrameSchema(columns, name=spec.name, strict=False, coerce=False)
    return _SCHEMAS.setdefault(spec.name, schema)


def _as_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def clean_text(values: pd.Series) -> pd.Series:
    """Arrow-backed strings, trimmed, blanks as null; non-text values (Parquet ints) as str."""
    if values.dtype != TEXT:
        if not (
            isinstance(values.dtype, pd.StringDtype)
            or (values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"))
        ):
            values = map_text(values, _as_text)
        values = values.astype(TEXT)
    trimmed = pc.utf8_trim_whitespace(to_arrow(values))
    blank = pc.equal(trimmed, "")
    if pc.any(blank).as_py():
        trimmed = pc.if_else(blank, arrow.scalar(None, trimmed.type), trimmed)
    return pd.Series(pd.arrays.ArrowStringArray(trimmed), index=values.index)


def to_arrow(text: pd.Series) -> arrow.Array:
    """The Arrow array behind an Arrow-backed text Series (chunks combined)."""
    arr = arrow.array(text.array)
    return arr.combine_chunks() if isinstance(arr, arrow.ChunkedArray) else arr


def _cast_matching(arr: arrow.Array, pattern: str, target: arrow.DataType) -> tuple[np.ndarray, np.ndarray]:
    """Arrow-cast the values matching `pattern`: (their positions, cast values as numpy)."""
    hit = pc.fill_null(pc.match_substring_regex(arr, pattern), False)
    where = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
    try:
        cast = pc.cast(arr.filter(hit), target)
    except arrow.ArrowInvalid:  # an impossible value of the right shape: leave all to pandas
        return where[:0], np.empty(0)
    return where, cast.to_numpy(zero_copy_only=False)


def _timestamps(text: pd.Series) -> pd.Series:
    """ISO-8601 strings to UTC microseconds: Arrow casts the usual shapes, pandas the rest."""
    arr = to_arrow(text)
    out = np.full(len(arr), np.datetime64("NaT"), dtype="datetime64[us]")
    todo = text.notna().to_numpy()
    for pattern, target in (
        (_ISO_ZONED, arrow.timestamp("us", "UTC")),
        (_ISO_NAIVE, arrow.timestamp("us")),
    ):  # naive means UTC
        rest = np.flatnonzero(todo)
        sub = arr if len(rest) == len(arr) else arr.take(rest)
        where, values = _cast_matching(sub, pattern, target)
        out[rest[where]], todo[rest[where]] = values, False
    rest = np.flatnonzero(todo)
    if len(rest):
        slow = pd.to_datetime(
            pd.Series(arr.take(rest).to_pylist(), dtype=object), format="ISO8601", utc=True, errors="coerce"
        )
        out[rest] = slow.dt.tz_localize(None).dt.as_unit("us").to_numpy()
    return pd.Series(out, index=text.index).dt.tz_localize("UTC")


def _numbers(text: pd.Series) -> pd.Series:
    """Decimal strings to float64 via Arrow; anything else via pandas (then finite only)."""
    arr = to_arrow(text)
    out = np.full(len(arr), np.nan)
    where, values = _cast_matching(arr, _DECIMAL, arrow.float64())
    out[where] = values
    todo = text.notna().to_numpy()
    todo[where] = False
    rest = np.flatnonzero(todo)
    if len(rest):
        out[rest] = pd.to_numeric(pd.Series(arr.take(rest).to_pylist(), dtype=object), errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan
        )
    out[~np.isfinite(out)] = np.nan
    return pd.Series(out, index=text.index)


def _native(values: pd.Series, col: str, spec: TableSpec) -> pd.Series | None:
    """A column that arrived typed (e.g. from Parquet) in its staged type; None when it is text."""
    dtype = values.dtype
    if col in spec.timestamps or col in spec.dates:
        if isinstance(dtype, pd.DatetimeTZDtype):
            return values.dt.tz_convert("UTC").dt.as_unit("us")
        if pd.api.types.is_datetime64_dtype(dtype):
            return values.dt.tz_localize("UTC").dt.as_unit("us")
        return None
    if col in spec.numbers:
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            numbers = values.astype("float64")
            return numbers.where(np.isfinite(numbers))
        return None
    return values.astype("boolean") if pd.api.types.is_bool_dtype(dtype) else None


def _from_text(text: pd.Series, col: str, spec: TableSpec) -> pd.Series:
    if col in spec.timestamps or col in spec.dates:
        return _timestamps(text)
    if col in spec.numbers:
        return _numbers(text)
    return map_unique(text, lambda v: _WORDS.get(v.lower())).astype("boolean")  # booleans


def _parse(values: pd.Series, col: str, spec: TableSpec) -> tuple[pd.Series, pd.Series]:
    """(typed values, mask of present-but-unparseable values) of one typed column."""
    native = _native(values, col, spec)
    if native is not None:
        parsed, present = native, values.notna()
    else:
        text = clean_text(values)
        parsed, present = _from_text(text, col, spec), text.notna()
    if col in spec.dates:
        parsed = parsed.dt.tz_localize(None).dt.normalize()
    return parsed, (present & parsed.isna()).astype(bool)


def type_columns(raw: pd.DataFrame, spec: TableSpec) -> tuple[pd.DataFrame, list[pd.Series], dict[str, pd.Index]]:
    """Typed copy of `raw` (contract columns), reasons for unparseable values, and their rows."""
    typed: dict[str, pd.Series] = {}
    reasons: list[pd.Series] = []
    unparseable: dict[str, pd.Index] = {}
    for col in spec.columns:
        values = raw[col]
        if col in text_columns(spec):
            parsed = clean_text(values)
            if col in spec.enums or col in HEX_COLUMNS:
                parsed = parsed.str.lower()
            typed[col] = parsed
            continue
        typed[col], bad = _parse(values, col, spec)
        if bad.any():
            kind = (
                "timestamp"
                if col in spec.timestamps
                else "date"
                if col in spec.dates
                else "number"
                if col in spec.numbers
                else "boolean"
            )
            reasons.append(f"{col}: unparseable {kind} " + show(clean_text(values[bad])))
            unparseable[col] = values.index[bad.to_numpy()]
    return pd.DataFrame(typed, index=raw.index), reasons, unparseable


def _describe(col: str, check: str, shown: pd.Series, spec: TableSpec) -> pd.Series:
    if check == "not_nullable":
        return pd.Series(f"{col}: required value missing", index=shown.index)
    if check.startswith("isin"):
        return f"{col}: " + show(shown) + f" not in ({', '.join(spec.enums[col])})"
    if check.startswith("greater_than_or_equal_to"):
        return f"{col}: negative value " + show(shown)
    if check.startswith("in_range"):
        low, high = RANGES[col]
        return f"{col}: value " + show(shown) + f" outside [{low:g}, {high:g}]"
    if check.startswith("str_matches"):
        return f"{col}: not a SHA-256 hex digest " + show(shown)
    raise RuntimeError(f"{spec.name}.{col}: unexpected schema failure {check!r} (ingest bug)")


def schema_reasons(
    typed: pd.DataFrame, raw: pd.DataFrame, spec: TableSpec, unparseable: dict[str, pd.Index]
) -> list[pd.Series]:
    """Run the pandera schema lazily; turn its failure cases into per-row reasons.

    Rows in `unparseable[col]` were already reported, so they are not reported as missing.
    """
    try:
        build_schema(spec).validate(typed, lazy=True, inplace=True)
        return []
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
    reasons: list[pd.Series] = []
    for (col, check), group in cases.groupby(["column", "check"], sort=False):
        if group["index"].isna().any():
            raise RuntimeError(f"{spec.name}.{col}: schema failure {check!r} (ingest bug)")
        rows = pd.Index(group["index"].astype("int64").unique())
        if check == "not_nullable" and col in unparseable:
            rows = rows.difference(unparseable[col], sort=False)
        if len(rows):
            shown = clean_text(raw[col].loc[rows])
            reasons.append(_describe(str(col), str(check), shown, spec))
    return reasons
