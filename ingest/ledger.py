"""What an ingest remembers so that the next one can read only the new drop files.

`staged/incremental/` (written last by every complete `cdp ingest`, removed first by every ingest
before it writes anything, so a run interrupted at any moment leaves no state and the next ingest
is a full one):
- `state.json`: format version, code fingerprint, settings, suppression list digest, the raw files
  of each table in load order with their sha256, the raw column types, the day/month vote counts,
  the phone regions and the size and mtime of every staged output it wrote;
- `<table>.ledger.parquet`: one row per current raw row (the rows after the supersede rule, in the
  staged row numbering): the file and line it came from, its key, its parent key (child tables),
  whether it was accepted or quarantined, its day/month vote code per date column and its phone
  keys (what the phone region decision is made from);
- `<table>.history.parquet`: file, line and key of each row of staged/<table>_history.parquet.
The incremental ingest (cdp.ingest.incremental) compares against it and falls back to the full
ingest (cdp.ingest.staging.ingest, the reference) whenever anything differs. No state is written
while someone is erased (privacy/suppressions.parquet not empty): those ingests are always full.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cdp.atomic import write_json_atomic, write_parquet_atomic
from cdp.ingest.contract import TABLES, TableSpec
from cdp.ingest.normalize import TEXT, map_unique, phone_key, region_setting
from cdp.ingest.schemas import VOTE_DMY, VOTE_HIT, VOTE_MDY, VOTE_YEAR_FIRST, clean_text, date_order_setting
from cdp.settings import setting
from cdp.workspace import Workspace

STATE_DIR = "incremental"  # in staged/
STATE_FILE = "state.json"
FORMAT_VERSION = 1  # bump when the state's layout or meaning changes
STAGED, QUARANTINED = 0, 1  # ledger status
NO_PHONE_KEY = ""  # a phone value present but not a phone key (counts as present for region detection)
# child table -> (column, parent table), as ingest's REFERENCES
PARENTS: dict[str, tuple[str, str]] = {
    "order_lines": ("order_id", "orders"),
    "marketing_responses": ("send_id", "marketing_sends"),
}
_CANONICAL_INT = re.compile(r"^(0|[1-9]\d{0,14})$")
# the modules whose code decides what ingest produces (their source is part of the fingerprint)
_CODE = ("contract", "drops", "normalize", "schemas", "staging", "ledger", "incremental")
_LIBRARIES = ("pandas", "pyarrow", "numpy", "pandera", "phonenumbers")


def state_dir(ws: Workspace) -> Path:
    return ws.staged / STATE_DIR


def ledger_path(ws: Workspace, table: str) -> Path:
    return state_dir(ws) / f"{table}.ledger.parquet"


def history_ledger_path(ws: Workspace, table: str) -> Path:
    return state_dir(ws) / f"{table}.history.parquet"


def vote_column(col: str) -> str:
    return f"vote:{col}"


def phone_column(col: str) -> str:
    return f"phone:{col}"


def invalidate(ws: Workspace) -> None:
    """Before an ingest writes anything: no state until it has finished (crash safety)."""
    path = state_dir(ws) / STATE_FILE
    path.unlink(missing_ok=True)


def drop_state(ws: Workspace) -> None:
    """Remove the whole state (`cdp privacy erase`: the ledgers hold phone keys of everyone)."""
    shutil.rmtree(state_dir(ws), ignore_errors=True)


def code_fingerprint() -> str:
    """sha256 over ingest's own source files and the versions of the libraries it parses with."""
    digest = hashlib.sha256(str(FORMAT_VERSION).encode())
    here = Path(__file__).resolve().parent
    for name in _CODE:
        path = here / f"{name}.py"
        digest.update(path.read_bytes() if path.exists() else b"-")
    for lib in _LIBRARIES:
        digest.update(f"{lib}={version(lib)}".encode())
    return digest.hexdigest()


def suppressions_digest(ws: Workspace) -> str | None:
    """sha256 of privacy/suppressions.parquet, None when nobody was erased."""
    path = ws.root / "privacy" / "suppressions.parquet"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def settings_in_effect() -> dict[str, object]:
    """The settings that change what ingest makes of the same raw files."""
    region = region_setting()
    return {
        "date_order": date_order_setting(),
        "default_region": list(region) if region else None,
        "csv_encoding": str(setting("csv_encoding")),
    }


def keys_canonical(frame: pd.DataFrame, spec: TableSpec) -> bool:
    """Whether a number in the key is always written one way (e.g. line_no "1", never "1.0" or
    "01"): then keys equal as text exactly when equal as numbers, so a later file's rows can never
    be duplicates (the typed rule) of an earlier file's rows without superseding them (the text rule)."""
    for col in spec.primary_key:
        if col in spec.numbers and col in frame:
            text = clean_text(frame[col]).dropna()
            if len(text) and not text.str.fullmatch(_CANONICAL_INT.pattern).all():
                return False
    return True


def phone_keys(values: pd.Series) -> pd.Series:
    """Each row's phone key (`phone_key`), NO_PHONE_KEY where a value is present but gives none."""
    keys = map_unique(values, phone_key)
    present = values.notna().to_numpy() & keys.isna().to_numpy()
    keys[present] = NO_PHONE_KEY
    return keys


def vote_counts(codes: np.ndarray) -> dict[str, int]:
    """The day/month evidence of one column's rows (as `_numeric_dates` counts it)."""
    hit = (codes & VOTE_HIT) > 0
    year_first = (codes & VOTE_YEAR_FIRST) > 0
    return {
        "hits": int(hit.sum()),
        "day_month": int((hit & ~year_first).sum()),
        "dmy": int(((codes & VOTE_DMY) > 0).sum()),
        "mdy": int(((codes & VOTE_MDY) > 0).sum()),
    }


@dataclass
class TableState:
    """One table as the last ingest left it (see the module docstring)."""

    files: list[str]  # raw-relative names in load order
    raw_columns: list[list]  # [name, dtype, any value present] of the concatenated raw table
    uniform: bool  # every file's columns had the concatenated table's types (or were all null)
    canonical_keys: bool
    votes: dict[str, dict[str, int]] = field(default_factory=dict)


def build_ledger(
    spec: TableSpec,
    raw: pd.DataFrame,
    origin: np.ndarray,
    keys: pd.Series | None,
    quarantined_rows: np.ndarray,
    votes: dict[str, np.ndarray],
) -> pd.DataFrame:
    """The ledger of one table (see the module docstring); `raw`: its current rows as read."""
    status = np.full(len(raw), STAGED, dtype="int8")
    status[quarantined_rows] = QUARANTINED
    ledger = pd.DataFrame(
        {"file": origin[:, 0].astype("int32"), "line": origin[:, 1].astype("int64"), "status": status}
    )
    if keys is not None:
        ledger["key"] = _text(keys)
    if spec.name in PARENTS:
        ledger["parent"] = clean_text(raw[PARENTS[spec.name][0]]).reset_index(drop=True)
    for col in (*spec.timestamps, *spec.dates):
        ledger[vote_column(col)] = votes.get(col, np.zeros(len(raw), dtype="int8"))
    for col in spec.phones:
        ledger[phone_column(col)] = _text(phone_keys(raw[col]))
    return ledger


def _text(values: pd.Series) -> pd.Series:
    """Ledger text columns are Arrow strings (read back without making Python strings)."""
    return pd.Series(values.to_numpy(dtype=object), dtype=TEXT)


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file with its text as Arrow strings (`TEXT`), other columns as pandas reads them."""
    return pq.read_table(path, columns=columns).to_pandas(types_mapper=_arrow_text)


def _arrow_text(kind: pa.DataType) -> object:
    return TEXT if kind in (pa.string(), pa.large_string()) else None


def dtype_name(dtype: object) -> str:
    """A dtype as text `pandas_dtype` reads back (Arrow and Python strings told apart)."""
    return f"string[{dtype.storage}]" if isinstance(dtype, pd.StringDtype) else str(dtype)


def raw_columns(frame: pd.DataFrame) -> list[list]:
    return [[str(c), dtype_name(frame[c].dtype), bool(frame[c].notna().any())] for c in frame.columns]


def joins_as(part: pd.Series, dtype: object) -> bool:
    """Whether `pd.concat` gives a part of this type in a column of `dtype` unchanged in value:
    the same type, all null (it takes the others' type), or plain numbers and booleans in an
    object column (they become Python objects, as `astype(object)` makes them)."""
    if part.dtype == dtype or not part.notna().any():
        return True
    return pd.api.types.is_object_dtype(dtype) and part.dtype.kind in "biuf"


def uniform_types(frames: list[pd.DataFrame], table: pd.DataFrame) -> bool:
    """Every frame has the concatenated table's columns, each joining as that column's type."""
    for frame in frames:
        if set(frame.columns) != set(table.columns):
            return False
        if not all(joins_as(frame[col], table[col].dtype) for col in frame.columns):
            return False
    return True


def output_stats(ws: Workspace, names: list[str]) -> dict[str, list[int]]:
    """[size, mtime_ns] of staged/ outputs: a file changed after ingest means a full ingest."""
    out = {}
    for name in names:
        path = ws.staged / name
        if path.exists():
            stat = path.stat()
            out[name] = [stat.st_size, stat.st_mtime_ns]
    return out


def save_state(
    ws: Workspace,
    tables: dict[str, TableState],
    digests: dict[str, str],
    regions: tuple[str, ...],
    outputs: list[str],
) -> None:
    """Written last, after every staged output and ledger was published."""
    write_json_atomic(
        state_dir(ws) / STATE_FILE,
        {
            "version": FORMAT_VERSION,
            "fingerprint": code_fingerprint(),
            "settings": settings_in_effect(),
            "suppressions": suppressions_digest(ws),
            "year": datetime.now(UTC).year,  # two-digit years are read relative to this year
            "regions": list(regions),
            "digests": digests,
            "tables": {name: vars(state) for name, state in tables.items()},
            "outputs": output_stats(ws, outputs),
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )


def load_state(ws: Workspace) -> dict | None:
    path = state_dir(ws) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def table_states(state: dict) -> dict[str, TableState]:
    return {name: TableState(**value) for name, value in state["tables"].items() if name in TABLES}


def write_ledger(ws: Workspace, table: str, ledger: pd.DataFrame, history: pd.DataFrame) -> None:
    write_parquet_atomic(ledger, ledger_path(ws, table))
    write_parquet_atomic(history, history_ledger_path(ws, table))


def history_ledger(origin: np.ndarray, keys: pd.Series | None) -> pd.DataFrame:
    frame = pd.DataFrame({"file": origin[:, 0].astype("int32"), "line": origin[:, 1].astype("int64")})
    frame["key"] = _text(keys) if keys is not None else pd.Series(None, index=frame.index, dtype=TEXT)
    return frame
