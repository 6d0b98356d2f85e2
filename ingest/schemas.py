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

import re
import warnings

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as arrow
import pyarrow.compute as pc
from pandera.engines import pandas_engine

from cdp.ingest.contract import PERSONAL_COLUMNS, TableSpec
from cdp.ingest.normalize import TEXT, map_text, map_unique
from cdp.settings import setting

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
_DECIMAL_COMMA = r"^[+-]?(\d{1,3}(\.\d{3})+|\d+),\d{1,2}$"
_DECIMAL = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
_SCHEMAS: dict[str, pa.DataFrameSchema] = {}
# non-ISO numeric dates: 26/09/1963, 02.03.2024 19:48, 2024/03/02, 9-24-02, 3/2/2024 7:48 PM (order decided
# per column)
_NUMERIC_DATE = (
    r"^(\d{1,4})[/.-](\d{1,2})[/.-](\d{1,4})(?:[ T,]+(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,]\d{1,6})?)?"
    r"(?:\s*([AaPp])\.?[Mm]\.?)?)?\s*(?:Z|UTC)?$"
)
# dates with an English month name: Mar 2, 2024; 2 March 2024; Sat, 02 Mar 2024 19:48:05 GMT
_MONTH_NAME = r"(?i)\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\b.*\b\d{4}\b|\b\d{4}\b.*\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
DATE_ORDERS = ("ymd", "dmy", "mdy")
_DIGIT_RE = re.compile(r"\d")
_LETTER_RE = re.compile(r"[^\W\d_]")


def shape(value: str) -> str:
    """A personal value's shape only: digits as 9, letters as x ('26/09/1963' -> '99/99/9999')."""
    return _LETTER_RE.sub("x", _DIGIT_RE.sub("9", value))


def show(values: pd.Series, col: str | None = None) -> pd.Series:
    """Values quoted for a reason, e.g. 'not a date' (truncated; personal columns as their shape)."""
    text = values.astype(object).astype(str)
    if col in PERSONAL_COLUMNS:
        text = text.map(shape)
    text = text.where(text.str.len() <= _SHOW_MAX, text.str.slice(0, _SHOW_MAX) + "...")
    return "'" + text + "'"


def date_order_setting() -> str | None:
    """$CDP_DATE_ORDER (ymd|dmy|mdy) or None (detect per column)."""
    return setting("date_order")


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


def _full_year(year: pd.Series) -> pd.Series:
    """Two-digit years: the latest year not after this one (70 -> 1970, 24 -> 2024)."""
    this = pd.Timestamp.now().year
    century = (this // 100) * 100
    two = year < 100
    guess = century + year
    return year.where(~two, guess.where(guess <= this, guess - 100))


# per-value codes of the day/month evidence in a non-ISO numeric date (what the column's order is
# decided from): stored by ingest so an incremental run can redo the decision over all rows
VOTE_HIT, VOTE_YEAR_FIRST, VOTE_DMY, VOTE_MDY = 1, 2, 4, 8


def decide_date_order(dmy_votes: int, mdy_votes: int, order: str | None = None) -> str:
    """The day/month order of a column: `order` if set, else the majority of the unambiguous values."""
    return order or ("mdy" if mdy_votes > dmy_votes else "dmy")


def date_order_note(dmy_votes: int, mdy_votes: int, day_month_values: int, order: str | None = None) -> str:
    """How a column's non-ISO dates were read (ingest's note), from its vote counts."""
    chosen = decide_date_order(dmy_votes, mdy_votes, order)
    if order:
        how = f"{chosen} (CDP_DATE_ORDER)"
    elif dmy_votes and mdy_votes:
        how = f"{chosen}: values disagree ({dmy_votes} day-first, {mdy_votes} month-first); set CDP_DATE_ORDER"
    elif dmy_votes or mdy_votes:
        how = f"{chosen} (detected from {max(dmy_votes, mdy_votes):,} unambiguous values)"
    else:
        how = f"{chosen} (assumed: no value shows the order; set CDP_DATE_ORDER if wrong)"
    return f"{day_month_values:,} day/month value(s) read as {how}"


def _numeric_dates(text: pd.Series, order: str | None) -> tuple[pd.Series, str | None, np.ndarray]:
    """Non-ISO numeric dates as naive datetimes (NaT where none/impossible), how they were read,
    and each value's vote code (`VOTE_*` bits).

    The order is `order` if given, else from the unambiguous values (a first part > 12 is a day:
    dmy; a second part > 12 is a day: mdy); with none, or both, the majority (dmy on a tie)."""
    parts = text.str.extract(_NUMERIC_DATE)
    hit = parts[0].notna()
    codes = np.zeros(len(text), dtype="int8")
    if not hit.any():
        return pd.Series(pd.NaT, index=text.index, dtype="datetime64[us]"), None, codes
    meridiem = parts.loc[hit, 6].str.lower()
    p = parts[hit].drop(columns=6).astype("float64")
    first, second, third = p[0], p[1], p[2]
    hour = p[3]  # 12-hour clock: 12 AM is 0, 1-11 PM add 12, hours above 12 with AM/PM stay impossible
    p[3] = hour.where(meridiem.isna(), hour.mod(12).where(hour <= 12, 99) + 12 * (meridiem == "p"))
    year_first = parts.loc[hit, 0].str.len() == 4
    dmy = (first > 12) & ~year_first
    mdy = (second > 12) & ~year_first
    codes[hit.to_numpy()] = (
        VOTE_HIT
        + VOTE_YEAR_FIRST * year_first.astype("int8")
        + VOTE_DMY * dmy.astype("int8")
        + VOTE_MDY * mdy.astype("int8")
    ).to_numpy(dtype="int8")
    dmy_votes, mdy_votes = int(dmy.sum()), int(mdy.sum())
    chosen = decide_date_order(dmy_votes, mdy_votes, order)
    ymd = year_first | (chosen == "ymd")
    day, month = (first, second) if chosen == "dmy" else (second, first)
    frame = pd.DataFrame(
        {
            "year": _full_year(first.where(ymd, third)),
            "month": second.where(ymd, month),
            "day": third.where(ymd, day),
            "hour": p[3].fillna(0),
            "minute": p[4].fillna(0),
            "second": p[5].fillna(0),
        }
    )
    parsed = pd.to_datetime(frame, errors="coerce").dt.as_unit("us")
    # pandas carries an hour of 25 or a minute of 61 into the next day: impossible clock times are NaT
    impossible = (frame["hour"] > 23) | (frame["minute"] > 59) | (frame["second"] > 59)
    parsed = parsed.mask(impossible.to_numpy())
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us]")
    out[hit] = parsed
    if year_first.all():  # 2024/03/02 needs no order
        return out, None, codes
    return out, date_order_note(dmy_votes, mdy_votes, int((~year_first).sum()), order), codes


def _timestamps(text: pd.Series, order: str | None = None) -> tuple[pd.Series, str | None, np.ndarray]:
    """ISO-8601 strings to UTC microseconds: Arrow casts the usual shapes, then numeric
    day/month dates in the column's order, pandas the rest. Also returns how non-ISO dates were
    read and each value's vote code (`_numeric_dates`)."""
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
    note = None
    codes = np.zeros(len(arr), dtype="int8")
    rest = np.flatnonzero(todo)
    if len(rest):
        numeric, note, codes[rest] = _numeric_dates(
            pd.Series(arr.take(rest).to_pylist(), dtype=object).astype(str), order
        )
        found = numeric.notna().to_numpy()
        out[rest[found]], todo[rest[found]] = numeric.to_numpy()[found], False
        if note:  # shapes that matched but are impossible stay unparseable
            todo[rest[numeric.isna().to_numpy() & _matches(arr.take(rest))]] = False
    rest = np.flatnonzero(todo)
    if len(rest):
        slow = pd.to_datetime(
            pd.Series(arr.take(rest).to_pylist(), dtype=object), format="ISO8601", utc=True, errors="coerce"
        )
        out[rest] = slow.dt.tz_localize(None).dt.as_unit("us").to_numpy()
        named = rest[np.isnat(out[rest]) & _named_months(arr.take(rest))]
        if len(named):  # only text naming a month and a year: a free-form parser accepts too much else
            values = pd.Series(arr.take(named).to_pylist(), dtype=object)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # dateutil's "unknown timezone" warnings: the value stays NaT
                parsed = pd.to_datetime(values, format="mixed", utc=True, errors="coerce")
            out[named] = parsed.dt.tz_localize(None).dt.as_unit("us").to_numpy()
    return pd.Series(out, index=text.index).dt.tz_localize("UTC"), note, codes


def _named_months(arr: arrow.Array) -> np.ndarray:
    """Text naming a month and a year, and no time zone abbreviation but GMT/UTC (EST, CET: the
    parser would drop it and shift the time by hours)."""

    def hits(pattern: str) -> np.ndarray:
        return pc.fill_null(pc.match_substring_regex(arr, pattern), False).to_numpy(zero_copy_only=False)

    return hits(_MONTH_NAME) & (~hits(r"[A-Z]{3,5}\s*$") | hits(r"(?:GMT|UTC)\s*$"))


def _matches(arr: arrow.Array) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(arr, _NUMERIC_DATE), False).to_numpy(zero_copy_only=False)


_CURRENCY = r"[$€£¥₹]|[A-Z]{3}"  # a sign or an ISO 4217 code before or after the amount (USD 12.00, 12,00 €)
_FORMATTED_RE = re.compile(
    rf"^(?:(?:{_CURRENCY})\s?)?(\()?([+-])?(?:(?:{_CURRENCY})\s?)?([\d.,' \u00a0\u202f]+?)(\))?(?:\s?(?:{_CURRENCY}))?$"
)
_THOUSANDS_COMMA_RE = re.compile(r"^\d{1,3}(?:,\d{3})+(?:\.\d+)?$")  # 1,234.50 1,234
_THOUSANDS_DOT_RE = re.compile(r"^\d{1,3}(?:\.\d{3})+(?:,\d+)?$")  # 1.234,50 1.234
_THOUSANDS_SPACE_RE = re.compile(r"^\d{1,3}(?:[' \u00a0\u202f]\d{3})+(?:[.,]\d+)?$")  # 1 234,50 1'234.50


def _formatted_number(text: str) -> float | None:
    """An amount as spreadsheets format it: a currency sign or code, thousands separators, an
    accounting negative (10.50). A lone "1,234" is 1234 (a decimal comma has one or two decimals,
    as for `_DECIMAL_COMMA`): each value is read alone, so a daily file reads as the whole history
    would. None when it is not such a number."""
    match = _FORMATTED_RE.match(text.strip())
    if match is None:
        return None
    bracket, sign, body, closed = match.groups()
    if bool(bracket) != bool(closed):
        return None
    if _THOUSANDS_SPACE_RE.match(body):
        body = re.sub(r"[' \u00a0\u202f]", "", body).replace(",", ".")
    elif _THOUSANDS_COMMA_RE.match(body):
        body = body.replace(",", "")
    elif _THOUSANDS_DOT_RE.match(body) and "," in body:
        body = body.replace(".", "").replace(",", ".")
    elif re.fullmatch(r"\d+,\d{1,2}", body):
        body = body.replace(",", ".")
    elif not re.fullmatch(r"\d+(?:\.\d+)?|\.\d+", body):
        return None
    value = float(body)
    return -value if bracket or sign == "-" else value


def _numbers(text: pd.Series) -> tuple[pd.Series, str | None]:
    """Decimal strings to float64 via Arrow; formatted amounts (currency, thousands separators)
    in Python; anything else via pandas (then finite only). Also returns a note on the formatted ones."""
    arr = to_arrow(text)
    out = np.full(len(arr), np.nan)
    where, values = _cast_matching(arr, _DECIMAL, arrow.float64())
    out[where] = values
    todo = text.notna().to_numpy()
    todo[where] = False
    rest = np.flatnonzero(todo)
    if len(rest):  # decimal comma of European exports: 10,50 or 1.234,5 (never 1,234: a thousands comma)
        sub = arr.take(rest)
        comma = pc.fill_null(pc.match_substring_regex(sub, _DECIMAL_COMMA), False).to_numpy(zero_copy_only=False)
        if comma.any():
            fixed = pc.replace_substring(pc.replace_substring(sub.filter(comma), ".", ""), ",", ".")
            out[rest[comma]] = pc.cast(fixed, arrow.float64()).to_numpy(zero_copy_only=False)
            todo[rest[comma]] = False
    rest = np.flatnonzero(todo)
    note = None
    if len(rest):
        sub = pd.Series(arr.take(rest).to_pylist(), dtype=object)
        formatted = map_unique(sub, _formatted_number).to_numpy(dtype=object)
        found = np.array([v is not None for v in formatted], dtype=bool)
        if found.any():
            out[rest[found]] = formatted[found].astype("float64")
            todo[rest[found]] = False
            example = str(sub[found].iloc[0])
            note = (
                f"{int(found.sum()):,} value(s) formatted as amounts (currency, thousands separators or an "
                f"accounting negative) read as numbers, e.g. {example!r}"
            )
    rest = np.flatnonzero(todo)
    if len(rest):
        out[rest] = pd.to_numeric(pd.Series(arr.take(rest).to_pylist(), dtype=object), errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan
        )
    out[~np.isfinite(out)] = np.nan
    return pd.Series(out, index=text.index), note


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


def _from_text(
    text: pd.Series, col: str, spec: TableSpec, order: str | None
) -> tuple[pd.Series, str | None, np.ndarray | None]:
    """(typed values, how non-ISO dates were read, date vote codes) of a text column."""
    if col in spec.timestamps or col in spec.dates:
        return _timestamps(text, order)
    if col in spec.numbers:
        numbers, note = _numbers(text)
        return numbers, note, None
    return map_unique(text, lambda v: _WORDS.get(v.lower())).astype("boolean"), None, None  # booleans


def _parse(
    values: pd.Series, col: str, spec: TableSpec, order: str | None = None
) -> tuple[pd.Series, pd.Series, str | None, np.ndarray | None]:
    """(typed values, mask of present-but-unparseable values, how dates were read, date vote
    codes or None) of one column."""
    native = _native(values, col, spec)
    note, codes = None, None
    if native is not None:
        parsed, present = native, values.notna()
    else:
        text = clean_text(values)
        (parsed, note, codes), present = _from_text(text, col, spec, order), text.notna()
    if col in spec.dates:
        parsed = parsed.dt.tz_localize(None).dt.normalize()
    return parsed, (present & parsed.isna()).astype(bool), note, codes


def type_columns(
    raw: pd.DataFrame,
    spec: TableSpec,
    order: str | None = None,
    notes: list[str] | None = None,
    orders: dict[str, str] | None = None,
    votes: dict[str, np.ndarray] | None = None,
) -> tuple[pd.DataFrame, list[pd.Series], dict[str, pd.Index]]:
    """Typed copy of `raw` (contract columns), reasons for unparseable values, and their rows.
    How each column's non-ISO dates were read is appended to `notes`. `orders`: a day/month
    order per column where `order` is unset (an incremental ingest reuses the decision made over
    all rows); `votes` collects each date column's per-row vote codes (`VOTE_*`)."""
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
        typed[col], bad, note, codes = _parse(values, col, spec, order or (orders or {}).get(col))
        if votes is not None and (col in spec.timestamps or col in spec.dates):
            votes[col] = codes if codes is not None else np.zeros(len(raw), dtype="int8")
        if note and notes is not None:
            notes.append(f"{spec.name}.{col}: {note}")
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
            reasons.append(f"{col}: unparseable {kind} " + show(clean_text(values[bad]), col))
            unparseable[col] = values.index[bad.to_numpy()]
    return pd.DataFrame(typed, index=raw.index), reasons, unparseable


def _describe(col: str, check: str, shown: pd.Series, spec: TableSpec) -> pd.Series:
    if check == "not_nullable":
        return pd.Series(f"{col}: required value missing", index=shown.index)
    if check.startswith("greater_than_or_equal_to"):
        return f"{col}: negative value " + show(shown, col)
    if check.startswith("in_range"):
        low, high = RANGES[col]
        return f"{col}: value " + show(shown, col) + f" outside [{low:g}, {high:g}]"
    if check.startswith("str_matches"):
        return f"{col}: not a SHA-256 hex digest " + show(shown, col)
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
