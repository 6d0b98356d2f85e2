"""Foreign formats for the synthetic raw tables: the same people and records, written as a
retailer outside the US would export them (issue 15: data we did not make).

In:  a raw contract table as generated (US phones, typed dates and timestamps).
Out: the same table with phones in the national form of another country (`phone_country`,
     e.g. GB: '07123 456789'; a number written internationally, '+1 ...', becomes '+44 ...')
     and dates / timestamps as text in day-first or month-first order (`date_order`:
     '26/09/1963', '26/09/2024 19:48:05'). Values that were malformed stay as written.

The phone mapping is one-to-one on the generator's numbers (38 area codes x 800 exchanges x
10,000 lines fit the GB mobile range 71xx-74xx), so the identity truth is unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cdp.ingest.contract import TABLES

from .reference import METROS

PHONE_COUNTRIES = ("GB",)
DATE_ORDERS = ("dmy", "mdy")
_AREA_INDEX = {code: i for i, code in enumerate(sorted({c for metro in METROS for c in metro[2]}))}
_US_DIGITS = re.compile(r"^\+?1?[-. ]?\(?(\d{3})\)?[-. ]?(\d{3})[-. ]?(\d{4})$")


@dataclass(frozen=True)
class ForeignFormat:
    phone_country: str | None = None  # ISO region of the national-form phones (None: US as generated)
    date_order: str | None = None  # 'dmy' | 'mdy' text dates (None: typed ISO dates)

    def __post_init__(self) -> None:
        if self.phone_country is not None and self.phone_country.upper() not in PHONE_COUNTRIES:
            raise ValueError(
                f"phone_country: '{self.phone_country}' is not supported (choose from {', '.join(PHONE_COUNTRIES)})"
            )
        if self.date_order is not None and self.date_order not in DATE_ORDERS:
            raise ValueError(f"date_order: '{self.date_order}' is not one of {', '.join(DATE_ORDERS)}")

    @property
    def active(self) -> bool:
        return self.phone_country is not None or self.date_order is not None


def gb_phone(written: str | None) -> str | None:
    """A generated US number as a GB mobile number (national form unless written with +1 / 1-)."""
    if written is None:
        return None
    text = written.strip()
    match = _US_DIGITS.match(text)
    if not match or match.group(1) not in _AREA_INDEX:
        return written  # malformed or not ours: left as written
    area, exchange, line = match.groups()
    index = _AREA_INDEX[area] * 8_000_000 + (int(exchange) - 200) * 10_000 + int(line)
    nsn = str(7_100_000_000 + index)  # 71xxxxxxxx .. 74xxxxxxxx, valid GB mobiles
    if text.startswith(("+1", "1-", "1 ")):
        return f"+44 {nsn[:4]} {nsn[4:]}"
    style = int(line) % 4  # deterministic per number: the same number looks alike across tables
    national = "0" + nsn
    return (
        f"{national[:5]} {national[5:]}",
        national,
        f"({national[:5]}) {national[5:]}",
        f"{national[:5]}-{national[5:]}",
    )[style]


def _dates_as_text(column: pa.ChunkedArray, order: str, with_time: bool) -> pa.ChunkedArray:
    """ISO dates / timestamps (text or typed) as day-first or month-first text; a value that is
    not ISO (a malformed one the generator made on purpose) stays as written."""
    day_month = "%d/%m/%Y" if order == "dmy" else "%m/%d/%Y"
    out_format = day_month + (" %H:%M:%S" if with_time else "")
    if pa.types.is_temporal(column.type):
        return pc.strftime(column, format=out_format)
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        return column
    iso = "%Y-%m-%dT%H:%M:%SZ" if with_time else "%Y-%m-%d"
    parsed = pc.strptime(column, format=iso, unit="s", error_is_null=True)
    return pc.if_else(pc.is_null(parsed), column, pc.strftime(parsed, format=out_format))


def apply_format(name: str, table: pa.Table, fmt: ForeignFormat) -> pa.Table:
    """`table` (contract table `name`) in the foreign format `fmt`."""
    if not fmt.active:
        return table
    spec = TABLES[name]
    if fmt.phone_country:
        for column in (c for c in spec.phones if c in table.column_names):
            values = np.array([gb_phone(v) for v in table.column(column).to_pylist()], dtype=object)
            table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, type=pa.string()))
        if name == "consent_events":  # phone identifiers of SMS consent: the same numbers as the profiles'
            kinds = [str(k or "").strip().lower() for k in table.column("identifier_type").to_pylist()]
            ids = table.column("identifier").to_pylist()
            values = np.array([gb_phone(v) if k == "phone" else v for k, v in zip(kinds, ids)], dtype=object)
            index = table.schema.get_field_index("identifier")
            table = table.set_column(index, "identifier", pa.array(values, type=pa.string()))
    if fmt.date_order:
        for column, with_time in [(c, False) for c in spec.dates] + [(c, True) for c in spec.timestamps]:
            if column not in table.column_names:
                continue
            text = _dates_as_text(table.column(column), fmt.date_order, with_time)
            table = table.set_column(table.schema.get_field_index(column), column, text)
    return table
