"""Daily drop files beside the single table files, and the supersede rule between them.

Layout: `raw/<table>.parquet|csv` (the initial load, optional once drops exist) and any number of
`raw/<table>/<YYYY-MM-DD>.parquet|csv` drops. Ingest reads the single file first, then the drops
in date order, as one table. A key (the table's primary key) that appears again in a later file
is an update: the row(s) of the latest file carrying it are current, the earlier ones move to
`staged/<table>_history.parquet` (their raw values plus `source_file` and `superseded_by`).
Repeats of a key inside one file stay ingest's duplicate rule (first valid row wins, the others
quarantined). Tables without a primary key (order lines are keyed; enrichment and marketing
responses are not) simply append.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cdp.ingest.contract import TableSpec
from cdp.ingest.schemas import clean_text, to_arrow

DROP_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}\.(parquet|csv)$")


def history_name(table: str) -> str:
    return f"{table}_history.parquet"


def drop_files(raw_dir: Path, table: str) -> tuple[list[Path], list[str]]:
    """(the table's drop files in date order, warnings for files in its folder not named as drops).
    A date with both .parquet and .csv uses the .parquet."""
    folder = raw_dir / table
    if not folder.is_dir():
        return [], []
    by_date: dict[str, Path] = {}
    warnings: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not DROP_NAME.match(path.name):
            warnings.append(f"{table}: {path} ignored (drop files are named YYYY-MM-DD.parquet or .csv)")
            continue
        if path.stem in by_date:
            warnings.append(f"{table}: both {path.stem}.parquet and .csv found, using .parquet")
            continue
        by_date[path.stem] = path  # sorted: .csv before .parquet, so .parquet replaces it below
    for stem in list(by_date):
        if (folder / f"{stem}.parquet").exists():
            by_date[stem] = folder / f"{stem}.parquet"
    return [by_date[d] for d in sorted(by_date)], warnings


@dataclass
class Superseded:
    """The files of one table read as one: current rows, superseded rows, and where each came
    from (`origin`: file number in load order and row number inside that file)."""

    current: pd.DataFrame
    history: pd.DataFrame
    origin: np.ndarray  # (rows, 2) int64: file, line of each current row
    history_origin: np.ndarray  # the same for each history row
    keys: pd.Series | None  # each current row's `supersede_keys` (None: the table has no key)
    history_keys: pd.Series | None


def supersede_keys(table: pd.DataFrame, spec: TableSpec) -> pd.Series | None:
    """The text each row's key is compared by (trimmed; emails lower-cased; parts of a composite
    key joined by \\x1f), null where a part is missing; None for a table without a key."""
    pk = list(spec.primary_key)
    if not pk:
        return None
    if table.empty:
        return pd.Series(dtype=object, index=table.index)
    parts = [clean_text(table[c]).str.lower() if c.endswith("email") else clean_text(table[c]) for c in pk]
    arrays = [to_arrow(part).cast(pa.large_string()) for part in parts]
    # Arrow joins in C (a row-wise Python join took ~1 s for 440k order lines); null if any part is
    joined = (
        arrays[0] if len(arrays) == 1 else pc.binary_join_element_wise(*arrays, pa.scalar("\x1f", pa.large_string()))
    )
    return pd.Series(joined.to_pandas(), index=table.index, dtype=object)


def supersede(frames: list[pd.DataFrame], names: list[str], spec: TableSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(current rows of the files read as one table, superseded rows). `frames[i]` was read from
    file `names[i]`, in load order. Keys are compared as trimmed text (typing comes later)."""
    result = supersede_traced(frames, names, spec)
    return result.current, result.history


def supersede_traced(frames: list[pd.DataFrame], names: list[str], spec: TableSpec) -> Superseded:
    """`supersede`, keeping where every row came from and its key."""
    with warnings.catch_warnings():  # all-null columns of a drop: the text dtype is the same anyway
        warnings.simplefilter("ignore", FutureWarning)
        table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    file_no = np.concatenate([np.full(len(f), i) for i, f in enumerate(frames)]) if frames else np.array([], int)
    line = np.concatenate([np.arange(len(f)) for f in frames]) if frames else np.array([], int)
    origin = np.stack([file_no, line], axis=1).astype("int64").reshape(-1, 2)
    key = supersede_keys(table, spec)
    if len(frames) < 2 or key is None or table.empty:
        history = table.iloc[:0].assign(source_file=pd.Series(dtype=object), superseded_by=pd.Series(dtype=object))
        return Superseded(table, history, origin, origin[:0], key, None if key is None else key.iloc[:0])
    latest = pd.Series(file_no).groupby(key.to_numpy(), dropna=True).transform("max").to_numpy()
    old = key.notna().to_numpy() & (file_no < latest)
    history = table[old].copy()
    history["source_file"] = [names[i] for i in file_no[old]]
    history["superseded_by"] = [names[int(i)] for i in latest[old]]
    return Superseded(
        table[~old].reset_index(drop=True),
        history.reset_index(drop=True),
        origin[~old],
        origin[old],
        key[~old].reset_index(drop=True),
        key[old].reset_index(drop=True),
    )


MANIFEST = "ingested_files.json"  # in staged/: {raw-relative name: sha256} of the files the last ingest read


def file_digests(raw_dir: Path, paths: list[Path]) -> dict[str, str]:
    """{name relative to raw/: sha256 of its bytes}: a file counts as seen by name and content."""
    out = {}
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        out[path.relative_to(raw_dir).as_posix()] = digest.hexdigest()
    return out
