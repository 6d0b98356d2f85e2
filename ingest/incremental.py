"""Incremental ingest: read only the new drop files and merge them into staged/ (issue 18).

The full ingest (cdp.ingest.staging.ingest) is the reference: an incremental run must leave
exactly the staged tables, histories, quarantine and field issues a full ingest of all the raw
files would write. It uses the state the last complete ingest left (cdp.ingest.ledger) and:
- reads each table's new drop files (those after the files already ingested, in load order);
- applies the supersede rule across old and new files: an earlier row whose key a new file
  carries is read again from its (unchanged) raw file and moved to `<table>_history.parquet`,
  history rows of that key name the new file in `superseded_by`; rows renumber as a full run would;
- validates the new rows with the day/month order and phone regions a full run over all rows
  would choose (recomputed from the ledgers' vote codes and phone keys);
- re-validates earlier child rows whose parent key arrived or left (an order line that came a
  drop before its order), reading them again from their raw files;
- leaves every other table unread.
It falls back to the full ingest (reported in the notes) when anything is unusual: no state or a
state from an interrupted ingest, another code or format version, changed settings (date order,
region, CSV encoding), someone erased,
a raw file changed, removed or new before files already read (a late drop, a new single file),
staged/ outputs changed since, raw column types unlike the earlier files', numbers in keys written
in more than one way, or a day/month or phone region decision that the new rows would change.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from cdp.atomic import write_json_atomic
from cdp.ingest import ledger
from cdp.ingest.contract import TABLES, TableSpec
from cdp.ingest.drops import MANIFEST, file_digests, history_name, supersede_keys
from cdp.ingest.ledger import TableState
from cdp.ingest.normalize import REGIONS_FILE, TEXT, UNKNOWN_REGION, region_setting, regions_of_keys
from cdp.ingest.schemas import date_order_note, date_order_setting, decide_date_order
from cdp.ingest.staging import (
    ISSUE_COLUMNS,
    QUARANTINE_COLUMNS,
    REFERENCES,
    ContractError,
    IngestReport,
    Progress,
    TableReport,
    history_source_name,
    locate,
    read_raw,
    source_label,
    stage_table,
    staged_outputs,
    unknown_warnings,
    write_parquet,
)
from cdp.ingest.staging import ingest as full_ingest
from cdp.workspace import Workspace


class FullIngestNeeded(Exception):
    """The incremental path cannot promise the full ingest's result; the message says why."""


def ingest(ws: Workspace, progress: Progress | None = None, write: bool = True, full: bool = False) -> IngestReport:
    """`cdp ingest`: incremental when it is safe (exactly the full ingest's result), else full.
    `full`: always the full ingest (`cdp ingest --full`); `write=False` (`--check`) is always full."""
    if full or not write:
        report = full_ingest(ws, progress=progress, write=write)
        if full:
            report.notes.append("full ingest (--full)")
        return report
    try:
        plan = plan_incremental(ws)
        return run_incremental(ws, plan, progress)  # an exception after its first write: state already gone
    except FullIngestNeeded as why:
        reason = str(why)
    except ContractError:  # bad input: the full ingest would say so the same way
        raise
    except Exception as error:  # never worse than the reference: a surprise here means a full ingest
        reason = f"the incremental path failed ({type(error).__name__}: {error})"
    report = full_ingest(ws, progress=progress, write=True)
    report.notes.append(f"full ingest: {reason}")
    return report


@dataclass
class TablePlan:
    """One table's new files, read and aligned to the earlier files' columns."""

    name: str
    state: TableState
    paths: list[Path]  # every file of the table, in load order
    new: list[pd.DataFrame]  # the new files' rows (file numbers continue after the old files)
    ledger: pd.DataFrame | None = None  # loaded for tables that are processed
    keys: pd.Series | None = None  # supersede keys of the concatenated new rows
    frame: pd.DataFrame | None = None  # the new rows concatenated
    origin: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype="int64"))
    latest: dict[str, int] = field(default_factory=dict)  # key -> latest new file number carrying it
    superseded_old: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    superseded_new: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


@dataclass
class Plan:
    state: dict
    report: IngestReport
    found: dict[str, list[Path]]
    digests: dict[str, str]
    regions: tuple[str, ...]
    tables: dict[str, TablePlan]


def _check_state(ws: Workspace) -> dict:
    state = ledger.load_state(ws)
    if state is None:
        raise FullIngestNeeded("no state of a complete earlier ingest in staged/incremental/")
    if state.get("version") != ledger.FORMAT_VERSION or state.get("fingerprint") != ledger.code_fingerprint():
        raise FullIngestNeeded("the ingest code, its libraries or the state format changed since the last ingest")
    if state.get("settings") != ledger.settings_in_effect():
        raise FullIngestNeeded("CDP_DATE_ORDER, CDP_DEFAULT_REGION or CDP_CSV_ENCODING changed since the last ingest")
    if state.get("suppressions") is not None or ledger.suppressions_digest(ws) is not None:
        raise FullIngestNeeded("someone is erased (privacy/suppressions.parquet): ingests are full")
    if state.get("year") != datetime.now(UTC).year:
        raise FullIngestNeeded("a new year: two-digit years may read differently")
    if ledger.output_stats(ws, list(state["outputs"])) != state["outputs"]:
        raise FullIngestNeeded("staged/ was changed or removed since the last ingest")
    return state


def _split_files(name: str, paths: list[Path], state: TableState, ws: Workspace, digests: dict, old: dict) -> int:
    """How many of the table's files the last ingest read (they must be unchanged and first)."""
    names = [p.relative_to(ws.raw).as_posix() for p in paths]
    for seen in state.files:
        if seen not in names:
            raise FullIngestNeeded(f"raw file {seen} was removed since the last ingest")
        if digests[seen] != old.get(seen):
            raise FullIngestNeeded(f"raw file {seen} changed since the last ingest")
    if names[: len(state.files)] != state.files:
        late = next(n for n in names if n not in state.files)
        raise FullIngestNeeded(f"{late} comes before files already ingested ({name}: a late drop or a new single file)")
    return len(state.files)


def align(frame: pd.DataFrame, columns: list[list], new: bool, where: str) -> pd.DataFrame:
    """A file's rows with the columns and types of the table the files make together (as
    `pd.concat` gives them: an all-null column takes the others' type). A new file whose columns
    differ would change that table: FullIngestNeeded."""
    names = [c[0] for c in columns]
    if set(frame.columns) != set(names):
        raise FullIngestNeeded(f"{where}: columns differ from the earlier files'")
    out = frame[names].copy()
    for name, dtype, any_values in columns:
        if ledger.dtype_name(out[name].dtype) == dtype:
            continue
        target = pd.api.types.pandas_dtype(dtype)
        if new and not (any_values and ledger.joins_as(out[name], target)):
            raise FullIngestNeeded(f"{where}: column {name} is {out[name].dtype}, the earlier files' {dtype}")
        out[name] = out[name].astype(target)
    return out


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    with warnings.catch_warnings():  # aligned frames: the types are the same
        warnings.simplefilter("ignore", FutureWarning)
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


def plan_incremental(ws: Workspace) -> Plan:
    """Everything decided before anything is written: FullIngestNeeded when unsafe."""
    state = _check_state(ws)
    report = IngestReport(mode="incremental")
    found = locate(ws.raw, report)
    digests = file_digests(ws.raw, [p for paths in found.values() for p in paths])
    states = ledger.table_states(state)
    if set(states) != set(TABLES):
        raise FullIngestNeeded("the state does not cover every table")
    tables: dict[str, TablePlan] = {}
    for name, spec in TABLES.items():
        table_state = states[name]
        n_old = _split_files(name, found[name], table_state, ws, digests, state["digests"])
        new_paths = found[name][n_old:]
        plan = TablePlan(name, table_state, found[name], [])
        if new_paths:
            if not (table_state.uniform and table_state.canonical_keys):
                raise FullIngestNeeded(
                    f"{name}: its files differ in column types, or numbers in its key are written in several ways"
                )
            columns = table_state.raw_columns if n_old else None
            for path in new_paths:
                frame = read_raw(path, spec)
                plan.new.append(align(frame, columns, True, str(path)) if columns else frame)
                columns = columns or ledger.raw_columns(plan.new[0])
            _supersede_new(ws, plan, spec, n_old)
        tables[name] = plan
    regions = _regions(ws, state, tables, report)
    return Plan(state, report, found, digests, regions, tables)


def _supersede_new(ws: Workspace, plan: TablePlan, spec: TableSpec, n_old: int) -> None:
    """The supersede rule between the old rows (ledger keys) and the new files."""
    frame = _concat(plan.new)
    if not ledger.keys_canonical(frame, spec):
        raise FullIngestNeeded(f"{spec.name}: numbers in its key are written in several ways")
    file_no = np.concatenate([np.full(len(f), n_old + i) for i, f in enumerate(plan.new)]).astype("int64")
    line = np.concatenate([np.arange(len(f)) for f in plan.new]).astype("int64")
    plan.frame, plan.origin = frame, np.stack([file_no, line], axis=1).reshape(-1, 2)
    plan.ledger = ledger.read_parquet(ledger.ledger_path(ws, plan.name))
    plan.keys = supersede_keys(frame, spec)
    plan.superseded_new = np.zeros(len(frame), dtype=bool)
    plan.superseded_old = np.zeros(len(plan.ledger), dtype=bool)
    if plan.keys is None:
        return
    valid = plan.keys.notna().to_numpy()
    latest = pd.Series(file_no[valid]).groupby(plan.keys[valid].to_numpy()).max()
    plan.latest = {str(k): int(v) for k, v in latest.items()}
    plan.superseded_new = valid & (file_no < plan.keys.map(plan.latest).fillna(-1).to_numpy(dtype="int64"))
    plan.superseded_old = plan.ledger["key"].isin(latest.index).to_numpy()


def _regions(ws: Workspace, state: dict, tables: dict[str, TablePlan], report: IngestReport) -> tuple[str, ...]:
    """The phone regions a full ingest would choose now; FullIngestNeeded if not the last ones."""
    setting = region_setting()
    if setting:
        report.notes.append(f"phone region {'/'.join(setting)} (CDP_DEFAULT_REGION)")
        return setting
    parts = []
    for name, spec in TABLES.items():
        if not spec.phones or not tables[name].paths:
            continue
        plan = tables[name]
        columns = [ledger.phone_column(c) for c in spec.phones]
        if plan.ledger is None:
            old = ledger.read_parquet(ledger.ledger_path(ws, plan.name), columns=columns)
        else:
            old = plan.ledger.loc[~plan.superseded_old, columns]
        frames = [old.reset_index(drop=True)]
        if plan.frame is not None:
            current = plan.frame[~plan.superseded_new]
            keys = {ledger.phone_column(c): ledger.phone_keys(current[c]).astype(TEXT) for c in spec.phones}
            frames.append(pd.DataFrame(keys).reset_index(drop=True))
        both = _concat(frames)
        parts += [both[c].dropna() for c in columns]
    values = pd.concat(parts, ignore_index=True) if parts else pd.Series(dtype=TEXT)
    if values.empty:
        regions: tuple[str, ...] = (UNKNOWN_REGION,)
    else:
        distinct = pd.unique(values[values != ledger.NO_PHONE_KEY])
        regions, how = regions_of_keys(pd.Series(np.asarray(distinct, dtype=object), dtype=object))
        report.notes.append(
            f"phone region {'/'.join(regions)} detected from the data ({how}); set CDP_DEFAULT_REGION to override"
        )
    if list(regions) != state["regions"]:
        raise FullIngestNeeded(
            f"the phone region decision changes ({'/'.join(state['regions'])} -> {'/'.join(regions)})"
        )
    return regions


@dataclass
class Segments:
    """The quarantine and field issues of every table (kept apart to be replaced per table)."""

    quarantine: dict[str, pd.DataFrame]
    issues: dict[str, pd.DataFrame]


def _segments(path: Path) -> dict[str, pd.DataFrame]:
    frame = pd.read_parquet(path)
    return {str(t): g.reset_index(drop=True) for t, g in frame.groupby("table", sort=False)}


def run_incremental(ws: Workspace, plan: Plan, progress: Progress | None) -> IngestReport:
    """Merge the new files table by table (see the module docstring). Writes start here."""
    report = plan.report
    segments = Segments(_segments(ws.quarantine), _segments(ws.staged / "field_issues.parquet"))
    ledger.invalidate(ws)  # from here until the state is written, the next ingest is a full one
    states: dict[str, TableState] = {}
    changed_parents: dict[str, pd.Index] = {}  # parent table -> keys accepted before xor now
    read_files: list[str] = []
    for done, (name, spec) in enumerate(TABLES.items()):
        if progress:
            progress(name, done, len(TABLES))
        table = plan.tables[name]
        affected = _affected_children(ws, name, table, changed_parents)
        if table.frame is None and affected is None:
            states[name] = table.state
            report.tables.append(TableReport(name, source_label(table.paths), mode="unchanged"))
            if progress:
                progress(name, done + 1, len(TABLES))
            continue
        merged = _merge_table(ws, name, spec, table, plan, affected, segments, changed_parents)
        states[name] = merged.state
        report.tables.append(merged.entry)
        report.warnings += merged.warnings
        report.notes += merged.notes
        read_files += [p.relative_to(ws.raw).as_posix() for p in table.paths[len(table.state.files) :]]
        if progress:
            progress(name, done + 1, len(TABLES))
    write_parquet(_join_segments(segments.quarantine, QUARANTINE_COLUMNS), ws.quarantine)
    write_parquet(_join_segments(segments.issues, ISSUE_COLUMNS), ws.staged / "field_issues.parquet")
    write_json_atomic(ws.staged / REGIONS_FILE, {"regions": list(plan.regions)})
    write_json_atomic(ws.staged / MANIFEST, plan.digests)
    ledger.save_state(ws, states, plan.digests, plan.regions, staged_outputs(plan.found))
    unread = sum(1 for t in report.tables if t.mode == "unchanged")
    report.notes.append(
        f"incremental ingest: {len(read_files)} new file(s) read"
        + (f" ({', '.join(read_files[:6])}{', ...' if len(read_files) > 6 else ''})" if read_files else "")
        + f"; {unread} table(s) unchanged, not read; counts are this run's rows (`cdp ingest --full` re-reads all)"
    )
    return report


def _affected_children(
    ws: Workspace, name: str, table: TablePlan, changed_parents: dict[str, pd.Index]
) -> np.ndarray | None:
    """Earlier rows of a child table whose parent key was accepted before and not now, or the
    reverse (they are validated again); None when there are none."""
    if name not in ledger.PARENTS:
        return None
    parent = ledger.PARENTS[name][1]
    changed = changed_parents.get(parent)
    if changed is None or changed.empty or not table.paths:
        return None
    if table.ledger is None:
        table.ledger = ledger.read_parquet(ledger.ledger_path(ws, table.name))
        table.superseded_old = np.zeros(len(table.ledger), dtype=bool)
    hit = table.ledger["parent"].isin(changed).to_numpy() & ~table.superseded_old
    if "key" in table.ledger and hit.any():  # a key's rows (one file) are validated together
        hit |= table.ledger["key"].isin(table.ledger.loc[hit, "key"].dropna()).to_numpy() & ~table.superseded_old
    return hit if hit.any() else None


@dataclass
class Batch:
    """The rows a run validates: earlier rows to re-validate, then the new current rows."""

    raw: pd.DataFrame
    position: np.ndarray  # each row's place in the table after this run
    origin: np.ndarray  # (file, line) of each row
    keys: pd.Series | None
    moved: pd.DataFrame  # the raw earlier rows a new file superseded (they go to history)


def _batch(spec: TableSpec, table: TablePlan, recheck: np.ndarray, position: np.ndarray, n_remaining: int) -> Batch:
    """Read again the earlier rows to re-validate or move to history; put the batch together."""
    old = table.ledger
    assert old is not None
    recheck_rows, moved_rows = np.flatnonzero(recheck), np.flatnonzero(table.superseded_old)
    again = _reread(spec, table, old, np.flatnonzero(table.superseded_old | recheck))
    empty = _empty_raw(table.state)
    rechecked = again.loc[old.index[recheck_rows]] if len(recheck_rows) else empty
    moved = again.loc[old.index[moved_rows]] if len(moved_rows) else empty
    current = ~table.superseded_new
    fresh = table.frame[current] if table.frame is not None else empty
    raw = _concat([rechecked, fresh]) if len(rechecked) or len(fresh) else empty
    keys = None
    if spec.primary_key:
        fresh_keys = table.keys[current].to_numpy(dtype=object) if table.keys is not None else np.zeros(0, object)
        keys = pd.Series(
            np.concatenate([old["key"].iloc[recheck_rows].to_numpy(dtype=object), fresh_keys]), dtype=object
        )
    return Batch(
        raw,
        np.concatenate([position[recheck_rows], n_remaining + np.arange(len(fresh))]).astype("int64"),
        np.concatenate([old[["file", "line"]].to_numpy(dtype="int64")[recheck_rows], table.origin[current]]).reshape(
            -1, 2
        ),
        keys,
        moved,
    )


@dataclass
class Merged:
    state: TableState
    entry: TableReport
    warnings: list[str]
    notes: list[str]


def _reread(spec: TableSpec, table: TablePlan, old: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """The raw values of earlier rows (positions `rows` of the ledger `old`), read again from their
    unchanged raw files (only files holding such rows are read)."""
    wanted = old.iloc[rows]
    parts = []
    for file_no, group in wanted.groupby("file", sort=True):
        frame = read_raw(table.paths[int(file_no)], spec)
        part = align(frame, table.state.raw_columns, False, str(table.paths[int(file_no)]))
        parts.append(part.take(group["line"].to_numpy()).set_axis(group.index))
    if not parts:
        return _empty_raw(table.state)
    return _concat(parts).set_axis(pd.concat([p.index.to_series() for p in parts]).to_numpy()).loc[wanted.index]


def _empty_raw(state: TableState) -> pd.DataFrame:
    return pd.DataFrame({n: pd.Series(dtype=pd.api.types.pandas_dtype(d)) for n, d, _ in state.raw_columns})


def _date_orders(spec: TableSpec, votes: dict[str, dict[str, int]]) -> dict[str, str]:
    """The day/month order each date column got over all rows at the last ingest."""
    return {
        c: decide_date_order(votes.get(c, {}).get("dmy", 0), votes.get(c, {}).get("mdy", 0))
        for c in (*spec.timestamps, *spec.dates)
    }


def _merge_table(
    ws: Workspace,
    name: str,
    spec: TableSpec,
    table: TablePlan,
    plan: Plan,
    affected: np.ndarray | None,
    segments: Segments,
    changed_parents: dict[str, pd.Index],
) -> Merged:
    """One table's new rows (and re-validated earlier rows) merged into its staged outputs."""
    old = table.ledger
    assert old is not None
    n_old_files = len(table.state.files)
    if not n_old_files and table.frame is not None:  # the table's first files: their columns make it
        table.state = TableState([], ledger.raw_columns(table.frame), True, True, {})
    superseded_old = table.superseded_old
    recheck = affected if affected is not None else np.zeros(len(old), dtype=bool)
    new_frame = table.frame if table.frame is not None else _empty_raw(table.state)
    # positions: the earlier rows that stay keep their order, the new current rows follow
    remaining = ~superseded_old
    position = np.cumsum(remaining) - 1
    n_remaining = int(remaining.sum())
    removed = superseded_old | recheck  # earlier rows whose staged / quarantine / issue rows go
    recheck_rows = np.flatnonzero(recheck)
    batch = _batch(spec, table, recheck, position, n_remaining)
    # validate the batch as a full ingest would: parents over all accepted rows, the orders over all rows
    known = _known_parents(ws, name, plan)
    order = date_order_setting()
    orders = None if order else _date_orders(spec, table.state.votes)
    votes: dict[str, np.ndarray] = {}
    notes: list[str] = []
    result = stage_table(batch.raw, spec, known, plan.regions, order, notes, orders, votes)
    dated = tuple(f"{name}.{c}:" for c in (*spec.timestamps, *spec.dates))
    notes = [n for n in notes if not n.startswith(dated)]  # this run's rows; date notes: all rows, below
    staged_batch, bad, issues = result.staged, result.quarantine, result.issues
    batch_quarantined = bad["row"].to_numpy(dtype="int64").copy()
    new_votes = _updated_votes(spec, table.state, old, removed, votes, order)
    for col, counts in new_votes.items():
        if counts["day_month"]:
            notes.append(f"{name}.{col}: {date_order_note(counts['dmy'], counts['mdy'], counts['day_month'], order)}")
    staged_batch["source_row"] = batch.position[staged_batch["source_row"].to_numpy(dtype="int64")]
    _merge_staged(ws, name, staged_batch, removed, position, changed_parents)
    for store, frame in ((segments.quarantine, bad), (segments.issues, issues)):
        frame["row"] = batch.position[frame["row"].to_numpy(dtype="int64")]
        store[name] = _merge_segment(store.get(name), frame, removed, position)
    history, history_origin, history_keys = _merge_history(ws, name, table, batch.moved, new_frame)
    if len(table.paths) > 1:
        write_parquet(history, ws.staged / history_name(name))
    # the ledger: earlier rows that stay (the rechecked with their new status), then the batch
    batch_ledger = ledger.build_ledger(spec, batch.raw, batch.origin, batch.keys, batch_quarantined, votes)
    batch_ledger.index = batch.position
    stay = old[remaining & ~recheck].copy()
    stay.index = position[np.flatnonzero(remaining & ~recheck)]
    new_ledger = pd.concat([stay, batch_ledger]).sort_index(kind="stable").reset_index(drop=True)
    ledger.write_ledger(ws, name, new_ledger, ledger.history_ledger(history_origin, history_keys))
    state = TableState(
        files=[p.relative_to(ws.raw).as_posix() for p in table.paths],
        raw_columns=[
            [n, d, bool(any_values or (n in new_frame and new_frame[n].notna().any()))]
            for n, d, any_values in table.state.raw_columns
        ]
        if n_old_files
        else ledger.raw_columns(new_frame),
        uniform=table.state.uniform,
        canonical_keys=table.state.canonical_keys,
        votes=new_votes,
    )
    n_new = len(new_frame)
    superseded = int(superseded_old.sum()) + int(table.superseded_new.sum())
    entry = TableReport(
        name,
        source_label(table.paths),
        n_new + int(superseded_old.sum()) + len(recheck_rows),
        len(staged_batch),
        len(bad),
        len(issues),
        0,
        superseded=superseded,
        columns=result.columns,
        mode="incremental",
        rechecked=len(recheck_rows),
    )
    if entry.accepted + entry.quarantined + entry.superseded != entry.read:
        raise RuntimeError(f"incremental ingest bug: {name} accepted + quarantined + superseded != read")
    return Merged(state, entry, unknown_warnings(name, spec, issues, result.columns), notes)


def _merge_staged(
    ws: Workspace,
    name: str,
    batch: pd.DataFrame,
    removed: np.ndarray,
    position: np.ndarray,
    changed_parents: dict[str, pd.Index],
) -> None:
    """staged/<name>.parquet: the earlier rows renumbered, the batch's at their place; for a
    parent table, which keys were accepted before xor now (their children are validated again)."""
    old_staged = ledger.read_parquet(ws.staged / f"{name}.parquet")
    old_positions = old_staged["source_row"].to_numpy(dtype="int64")
    keep = ~removed[old_positions]
    kept = old_staged[keep] if not keep.all() else old_staged
    staged = _merge_rows(kept.assign(source_row=position[old_positions[keep]]), batch, "source_row", typed=True)
    for col, parent in REFERENCES.values():
        if parent == name:
            before, after = pd.Index(old_staged[col].dropna().unique()), pd.Index(staged[col].dropna().unique())
            changed_parents[name] = before.symmetric_difference(after)
    write_parquet(staged, ws.staged / f"{name}.parquet")


def _merge_segment(
    earlier: pd.DataFrame | None, batch: pd.DataFrame, removed: np.ndarray, position: np.ndarray
) -> pd.DataFrame:
    """A table's quarantine or field-issue rows: the earlier ones of rows that stay, renumbered,
    and the batch's (already at their positions)."""
    if earlier is None:
        return batch
    if len(earlier):
        rows = earlier["row"].to_numpy(dtype="int64")
        earlier = earlier[~removed[rows]].assign(row=position[rows[~removed[rows]]])
    return _merge_rows(earlier, batch, "row")


def _updated_votes(
    spec: TableSpec,
    state: TableState,
    old: pd.DataFrame,
    removed: np.ndarray,
    batch_votes: dict[str, np.ndarray],
    order: str | None,
) -> dict[str, dict[str, int]]:
    """Vote counts over all current rows now; FullIngestNeeded if a column's order would change."""
    out = {}
    for col in (*spec.timestamps, *spec.dates):
        codes = np.concatenate(
            [old[ledger.vote_column(col)].to_numpy(dtype="int8")[~removed], batch_votes.get(col, np.zeros(0, "int8"))]
        )
        counts = ledger.vote_counts(codes)
        before = state.votes.get(col, {})
        if (
            not order
            and counts["day_month"]
            and decide_date_order(counts["dmy"], counts["mdy"])
            != decide_date_order(before.get("dmy", 0), before.get("mdy", 0))
        ):
            raise FullIngestNeeded(f"{spec.name}.{col}: the day/month order decided over all rows changes")
        out[col] = counts
    return out


def _known_parents(ws: Workspace, name: str, plan: Plan) -> dict[str, pd.Series]:
    """The accepted keys of the table's parent (already merged: parents come first)."""
    if name not in REFERENCES:
        return {}
    col, parent = REFERENCES[name]
    return {parent: ledger.read_parquet(ws.staged / f"{parent}.parquet", columns=[col])[col]}


def _merge_rows(earlier: pd.DataFrame | None, batch: pd.DataFrame, by: str, typed: bool = False) -> pd.DataFrame:
    """Rows of both, in `by` order (no position is in both). `typed` (staged tables): the earlier
    rows take the batch's column types (what a full ingest types them as), also from an empty batch."""
    if earlier is None or earlier.empty:
        return batch.reset_index(drop=True)
    if batch.empty and not typed:
        return earlier.reset_index(drop=True)
    if list(earlier.columns) != list(batch.columns):
        raise FullIngestNeeded("staged columns differ from the new rows'")
    earlier = pd.DataFrame(
        {c: v if v.dtype == batch[c].dtype else v.astype(batch[c].dtype) for c, v in earlier.items()}, copy=False
    )
    both = _concat([earlier, batch]) if len(batch) else earlier.reset_index(drop=True)
    if both[by].is_monotonic_increasing:
        return both
    return both.sort_values(by, kind="stable").reset_index(drop=True)


def _merge_history(
    ws: Workspace, name: str, table: TablePlan, moved_raw: pd.DataFrame, new_frame: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray, pd.Series]:
    """History rows in load order: the earlier history (its superseded_by updated), the earlier
    rows a new file superseded, the new rows a later new file superseded."""
    hist_names = [history_source_name(p) for p in table.paths]
    path = ws.staged / history_name(name)
    earlier_ledger = ledger.read_parquet(ledger.history_ledger_path(ws, name))
    columns = [*(n for n, _, _ in table.state.raw_columns), "source_file", "superseded_by"]
    if path.exists():
        earlier = ledger.read_parquet(path)
        for n, d, _ in table.state.raw_columns:
            if ledger.dtype_name(earlier[n].dtype) != d:
                earlier[n] = earlier[n].astype(pd.api.types.pandas_dtype(d))
    else:
        earlier = _empty_raw(table.state).assign(
            source_file=pd.Series(dtype=object), superseded_by=pd.Series(dtype=object)
        )
    if len(earlier) != len(earlier_ledger):
        raise FullIngestNeeded(f"staged/{history_name(name)} does not match its ledger")
    latest = table.latest

    def superseded_by(keys: pd.Series) -> list[str]:
        return [hist_names[latest[k]] for k in keys]

    hits = earlier_ledger["key"].isin(list(latest)).to_numpy() if latest else np.zeros(len(earlier), dtype=bool)
    if hits.any():
        earlier.loc[hits, "superseded_by"] = superseded_by(earlier_ledger.loc[hits, "key"])
    moved_ledger = table.ledger.loc[table.superseded_old] if table.ledger is not None else earlier_ledger.iloc[:0]
    moved = moved_raw.reset_index(drop=True).assign(
        source_file=[hist_names[int(f)] for f in moved_ledger["file"]],
        superseded_by=superseded_by(moved_ledger["key"]),
    )
    late = new_frame[table.superseded_new] if len(new_frame) else new_frame.iloc[:0]
    late_origin = table.origin[table.superseded_new]
    late_keys = table.keys[table.superseded_new] if table.keys is not None else pd.Series(dtype=object)
    late = late.reset_index(drop=True).assign(
        source_file=[hist_names[int(f)] for f in late_origin[:, 0]], superseded_by=superseded_by(late_keys)
    )
    parts = [p for p in (earlier, moved, late) if len(p)]
    labels = ["source_file", "superseded_by"]
    origin = np.concatenate(
        [
            earlier_ledger[["file", "line"]].to_numpy(dtype="int64"),
            moved_ledger[["file", "line"]].to_numpy(dtype="int64"),
            late_origin,
        ]
    ).reshape(-1, 2)
    keys = pd.Series(
        np.concatenate([k.to_numpy(dtype=object) for k in (earlier_ledger["key"], moved_ledger["key"], late_keys)]),
        dtype=TEXT,
    )
    order = np.lexsort((origin[:, 1], origin[:, 0]))
    frame = _concat([p[columns] for p in parts]).take(order) if parts else earlier[columns].iloc[:0]
    out = frame.drop(columns=labels).reset_index(drop=True)
    for label in labels:  # as the full ingest sets them: a list (an empty one makes a float column)
        out[label] = frame[label].tolist()
    return out, origin[order], keys.take(order).reset_index(drop=True)


def _join_segments(segments: dict[str, pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    """All tables' rows in contract table order (as the full ingest concatenates them)."""
    parts = [segments[t] for t in TABLES if t in segments and len(segments[t])]
    frame = _concat(parts) if parts else pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    frame["row"] = frame["row"].astype("int64")
    return frame[list(columns)]
