"""Erasure: remove people from every derived store, remember them as hashes, hand a receipt.

In:  a workspace and Subjects (`cdp.privacy.subjects.find_subject` / `subjects_for`).
Out: the same stores without their rows, `privacy/suppressions.parquet` (sha256 tokens of
     their identifier nodes and record keys; ingest drops matching raw rows as 'suppressed'),
     and a receipt (dict, also written to `privacy/receipts/<id>.json`): per store the rows
     removed, plus the MLflow model versions trained on their data (flagged, not deleted).
Stores: staged/<table>.parquet and <table>_history.parquet (superseded versions), staged/quarantine.parquet (raw records carrying their
identifiers), staged/field_issues.parquet, identity/{identity_map, identifier_map,
households, id_history, match_edges}.parquet, identity/incremental_state/ (dropped whole),
staged/incremental/ (the incremental ingest's ledgers: dropped whole),
features/*.parquet (all snapshots and the
score push tables), features/incremental/fingerprints.parquet (the incremental build's per-customer digests), the Feast online store (SQLite or Redis: every feature view).
raw/ (the retailer's immutable input) and truth/ (synthetic evaluation only) are not touched.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cdp.atomic import clean_temporaries, write_json_atomic, write_parquet_atomic
from cdp.features.incremental import state_dir as incremental_state_dir
from cdp.identity.ids import state_dir
from cdp.ingest.contract import TABLES
from cdp.ingest.ledger import drop_state as drop_ingest_state
from cdp.privacy.subjects import (
    TABLE_NODES,
    PrivacyKeyMismatch,
    Subject,
    privacy_key,
    record_nodes,
    runs_trained_on,
    staged_rows_carrying,
    token,
)
from cdp.workspace import Workspace

SUPPRESSION_COLUMNS = ("token", "kind", "erased_at", "receipt_id")


def privacy_dir(ws: Workspace) -> Path:
    return ws.root / "privacy"


def suppressions_path(ws: Workspace) -> Path:
    return privacy_dir(ws) / "suppressions.parquet"


def load_suppressions(ws: Workspace) -> set[str]:
    """Every suppressed token (empty when nobody was erased)."""
    path = suppressions_path(ws)
    return set(pd.read_parquet(path, columns=["token"])["token"]) if path.exists() else set()


# A token of this fixed node under the key is stored with the suppressions: it tells whether the
# key at hand is the one they were made with, without storing the key.
KEY_CHECK_NODE = "key-check:cdp-suppressions"


def suppression_key(ws: Workspace) -> bytes:
    """The privacy key, checked against the suppression list: PrivacyKeyMismatch when the list was
    made with another key (every suppression would silently stop matching)."""
    key = privacy_key(ws)
    path = suppressions_path(ws)
    if path.exists():
        rows = pd.read_parquet(path, columns=["token", "kind"])
        checks = set(rows.loc[rows["kind"] == "key-check", "token"])
        if checks and token(KEY_CHECK_NODE, key) not in checks:
            raise PrivacyKeyMismatch(
                "privacy key changed: privacy/suppressions.parquet was made with another key, so erased "
                "people's records would be let back in; restore the old key (privacy/token.key or "
                "CDP_PRIVACY_KEY)"
            )
    return key


def suppressed_customer_tokens(ws: Workspace) -> set[str]:
    """Tokens of erased customer ids (what serving checks before answering)."""
    path = suppressions_path(ws)
    if not path.exists():
        return set()
    rows = pd.read_parquet(path, columns=["token", "kind"])
    return set(rows.loc[rows["kind"] == "customer", "token"])


def _filter_parquet(path: Path, drop: np.ndarray) -> int:
    """Rewrite a Parquet file without the rows where `drop` is true (schema kept exactly)."""
    if not drop.any():
        return 0
    table = pq.read_table(path)
    write_parquet_atomic(table.filter(pa.array(~drop)), path)
    return int(drop.sum())


def _column_in(path: Path, column: str, values: set[str]) -> np.ndarray:
    col = pq.read_table(path, columns=[column]).column(column)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = col.cast(pa.string())
    return pc.fill_null(pc.is_in(col, value_set=pa.array(sorted(values), type=pa.string())), False).to_numpy(
        zero_copy_only=False
    )


def _staged(ws: Workspace, nodes: set[str], receipt: dict) -> dict[str, set[int]]:
    """Staged tables: rows carrying any node. Returns removed source_row per table."""
    removed: dict[str, set[int]] = {}
    for table, path, frame, drop in staged_rows_carrying(ws, nodes):
        if "source_row" in frame:
            removed[table] = set(frame.loc[drop, "source_row"].astype(int))
        receipt["stores"][f"staged/{table}.parquet"] = _filter_parquet(path, drop)
    return removed


def _history(ws: Workspace, nodes: set[str], receipt: dict) -> None:
    """Superseded versions of the person's updated records (an old address, a closed card)."""
    for _, path, _, drop in staged_rows_carrying(ws, nodes, history=True):
        receipt["stores"][f"staged/{path.name}"] = _filter_parquet(path, drop)


def quarantine_matches(ws: Workspace, nodes: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """(the person's rows, conflicting rows) of the quarantine. A quarantined row often reuses a
    key of someone else's record (a duplicate card or order id); when a row matching `nodes` also
    carries an identifier that identity resolution gave to another customer, it is a conflict:
    neither exported to nor erased for this person, only counted."""
    if not ws.quarantine.exists():
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    quarantine = pd.read_parquet(ws.quarantine, columns=["table", "record"])
    others = set(pd.read_parquet(ws.identity / "identifier_map.parquet", columns=["node"])["node"]) - set(nodes)
    mine = np.zeros(len(quarantine), dtype=bool)
    conflict = np.zeros(len(quarantine), dtype=bool)
    for table, group in quarantine.groupby("table"):
        records = pd.DataFrame([json.loads(r) for r in group["record"]])
        for column in TABLES[table].columns if table in TABLES else ():
            if column not in records:
                records[column] = None
        hit = record_nodes(table, records)
        ours = np.unique(hit.loc[hit["node"].isin(nodes), "row"].to_numpy())
        theirs = np.unique(hit.loc[hit["node"].isin(others), "row"].to_numpy())
        positions = group.index.to_numpy()
        mine[positions[np.setdiff1d(ours, theirs)]] = True
        conflict[positions[np.intersect1d(ours, theirs)]] = True
    return mine, conflict


def _identity(ws: Workspace, ids: set[str], keys: set[str], receipt: dict) -> None:
    stores = receipt["stores"]
    for name, columns in (
        ("identity_map", ["customer_id"]),
        ("identifier_map", ["customer_id"]),
        ("households", ["customer_id"]),
        ("id_history", ["old_id", "new_id"]),
    ):
        path = ws.identity / f"{name}.parquet"
        if path.exists():
            drop = np.logical_or.reduce([_column_in(path, c, ids) for c in columns])
            stores[f"identity/{name}.parquet"] = _filter_parquet(path, drop)
    path = ws.identity / "match_edges.parquet"
    if path.exists():
        drop = _column_in(path, "unique_id_l", keys) | _column_in(path, "unique_id_r", keys)
        stores["identity/match_edges.parquet"] = _filter_parquet(path, drop)
    # Incremental linking's saved state (identifier counts, fan-out pairs, household address and
    # phone keys) is derived from everyone's records: dropped whole, the next resolve rebuilds it
    # from what is left (an incremental run without state reads every record, same result).
    state = state_dir(ws)
    if state.exists():
        stores["identity/incremental_state/ (rows; folder removed)"] = sum(
            pq.read_metadata(p).num_rows for p in state.rglob("*.parquet")
        )
        shutil.rmtree(state)


ONLINE_RECEIPT_KEY = "feast online store (feature rows)"


def _online(ws: Workspace, ids: set[str], receipt: dict, only_view: str | None = None) -> None:
    """Delete the entities from the Feast online store (SQLite or Redis, Feast's own key encoding);
    with `only_view`, that feature view's values alone."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from cdp.featurestore.store import open_store

    store = open_store(ws)
    config = store.config
    kind = config.online_store.type
    keys = [
        serialize_entity_key(
            EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=c)]),
            entity_key_serialization_version=config.entity_key_serialization_version,
        )
        for c in sorted(ids)
    ]
    if kind in ("sqlite", "feast.infra.online_stores.sqlite.SqliteOnlineStore"):
        removed = _online_sqlite(Path(config.online_store.path), config, keys, only_view)
    elif kind in ("redis", "feast.infra.online_stores.redis.RedisOnlineStore"):
        removed = _online_redis(store, keys, only_view)
        # The embedded store of the time before the switch to Redis still holds everyone's rows
        removed += _online_sqlite(ws.feast / "online.db", config, keys, only_view)
    else:
        receipt["not_erased"].append(f"online store type {kind}: erase there by hand")
        return
    receipt["stores"][ONLINE_RECEIPT_KEY] = receipt["stores"].get(ONLINE_RECEIPT_KEY, 0) + removed


def _online_sqlite(path: Path, config, keys: list[bytes], only_view: str | None) -> int:
    if not path.is_absolute():
        path = Path(config.repo_path or ".") / path
    if not path.exists():
        return 0
    total = 0
    with sqlite3.connect(path) as con:
        tables = [
            name
            for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if any(col[1] == "entity_key" for col in con.execute(f'PRAGMA table_info("{name}")'))
            and (only_view is None or name == f"{config.project}_{only_view}")
        ]
        for name in tables:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                cursor = con.execute(f'DELETE FROM "{name}" WHERE entity_key IN ({",".join("?" * len(chunk))})', chunk)
                total += cursor.rowcount
    return total


def _online_redis(store, keys: list[bytes], only_view: str | None) -> int:
    """One Redis hash per entity holds every view's fields: delete the hash, or one view's fields.
    Counts feature values removed (hash fields), comparable with SQLite's rows."""
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import RedisOnlineStore

    config = store.config
    client = RedisOnlineStore()._get_client(config.online_store)
    redis_keys = [key + config.project.encode() for key in keys]  # feast's _redis_key layout
    fields: list[bytes] | None = None
    if only_view is not None:
        view = store.get_feature_view(only_view)
        fields = [_mmh3(f"{only_view}:{f.name}") for f in view.features] + [f"_ts:{only_view}".encode()]
    with client.pipeline(transaction=False) as pipe:
        for key in redis_keys:
            pipe.hlen(key) if fields is None else pipe.hdel(key, *fields)
        counts = pipe.execute()
        if fields is None:
            for key in redis_keys:
                pipe.delete(key)
            pipe.execute()
    return int(sum(counts))


def shared_identifiers(ws: Workspace, nodes: set[str]) -> dict:
    """What erasure keeps on purpose: identifiers on the person's records that identity resolution
    blocked as shared (a household phone), and the records nobody is linked through that carry
    them. Those records are as likely another sharer's (on our generator 41% were the erased
    person's), so they are neither erased nor suppressed; the receipt counts them for review."""
    blocked_path = ws.identity / "blocked_identifiers.parquet"
    if not blocked_path.exists():
        return {"identifiers": 0, "unlinked_records_carrying_them": {}}
    blocked = set(pd.read_parquet(blocked_path, columns=["node"])["node"])
    shared: set[str] = set()
    carrying: list[tuple[str, pd.DataFrame, np.ndarray, pd.DataFrame]] = []
    for table, _, frame, mine in staged_rows_carrying(ws, nodes):
        long = record_nodes(table, frame)
        theirs = long[long["row"].isin(np.flatnonzero(mine)) & long["node"].isin(blocked)]
        shared.update(theirs["node"])
        carrying.append((table, frame, mine, long))
    linked_through = set(
        pd.read_parquet(ws.identity / "identifier_map.parquet", columns=["customer_id"])["customer_id"]
    )
    records = pd.read_parquet(
        ws.identity / "identity_map.parquet", columns=["source_table", "source_key", "customer_id"]
    )
    unlinked: dict[str, int] = {}
    for table, frame, mine, long in carrying:
        rows = np.setdiff1d(long.loc[long["node"].isin(shared), "row"].unique(), np.flatnonzero(mine))
        key = TABLE_NODES[table][0] if table in TABLE_NODES else None
        if not len(rows) or key is None:
            continue
        keys = frame[key].iloc[rows].astype(str)
        mapped = records[records["source_table"] == table]
        owners = pd.Series(mapped["customer_id"].to_numpy(), index=mapped["source_key"].astype(str).to_numpy())
        floating = ~keys.map(owners).isin(linked_through)
        if floating.any():
            unlinked[table] = int(floating.sum())
    return {"identifiers": len(shared), "unlinked_records_carrying_them": unlinked}


def _kind(node: str) -> str:
    return node.split(":", 1)[0]


def _suppress(ws: Workspace, nodes: set[str], receipt: dict, customer_ids: Iterable[str] = ()) -> None:
    """Tokens of every node (identifiers and record keys), of the customer ids (serving refuses
    them before the online store is cleaned) and the key check."""
    key = suppression_key(ws)
    named = sorted(nodes) + [f"customer:{c}" for c in sorted(customer_ids)] + [KEY_CHECK_NODE]
    rows = pd.DataFrame({"token": [token(n, key) for n in named], "kind": [_kind(n) for n in named]})
    rows["erased_at"] = pd.Timestamp.now(tz="UTC").floor("s")
    rows["receipt_id"] = receipt["receipt_id"]
    path = suppressions_path(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        rows = pd.concat([pd.read_parquet(path), rows], ignore_index=True).drop_duplicates("token")
    write_parquet_atomic(rows[list(SUPPRESSION_COLUMNS)], path)
    receipt["suppression_tokens_added"] = len(nodes)


def journal_dir(ws: Workspace) -> Path:
    return privacy_dir(ws) / "journal"


STEPS = ("suppress", "staged", "history", "quarantine", "field_issues", "identity", "features", "online")


class ErasureIncomplete(RuntimeError):
    """A store could not be erased (e.g. the online store is down); the journal keeps the job."""


def _write_journal(ws: Workspace, journal: dict) -> Path:
    path = journal_dir(ws) / f"{journal['receipt']['receipt_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_json_atomic(path, journal)
    path.chmod(0o600)  # holds the identifier nodes until the job is done, then removed
    return path


def pending_erasures(ws: Workspace) -> list[dict]:
    """Journals of erasures that did not finish (oldest first)."""
    folder = journal_dir(ws)
    if not folder.exists():
        return []
    journals = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    return sorted(journals, key=lambda j: j["receipt"]["erased_at"])


def erase_subjects(ws: Workspace, subjects: Iterable[Subject], models: bool = True) -> dict:
    """Erase every subject as a journaled job: the suppression and a journal are written first, then
    each store is erased and recorded as done in the journal; the receipt is written when every
    store is done. A failing store (online store down) raises ErasureIncomplete after recording
    what is done; `resume_erasures` finishes the job from the journal."""
    subjects = list(subjects)
    ids = {s.customer_id for s in subjects}
    nodes = set().union(*(s.nodes for s in subjects)) if subjects else set()
    token_key = privacy_key(ws)
    receipt: dict = {
        "receipt_id": uuid.uuid4().hex[:16],
        "erased_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "subjects": len(ids),
        "subject_tokens": sorted(token(f"customer:{c}", token_key) for c in ids),
        "stores": {},
        "not_erased": [],
    }
    if not ids:
        return receipt
    # The journal first, then its first step, the suppression: a crash after either one is finished
    # by `--resume`, and from the suppression on ingest and serving never bring the person back.
    journal = {"receipt": receipt, "ids": sorted(ids), "nodes": sorted(nodes), "done": [], "models": models}
    _write_journal(ws, journal)
    return _run_journal(ws, journal)


def resume_erasures(ws: Workspace) -> list[dict]:
    """Finish every pending erasure from its journal; returns their receipts (raises
    ErasureIncomplete again if a store is still unreachable)."""
    return [_run_journal(ws, journal) for journal in pending_erasures(ws)]


def _run_journal(ws: Workspace, journal: dict) -> dict:
    receipt, ids, nodes = journal["receipt"], set(journal["ids"]), set(journal["nodes"])
    for folder in (ws.staged, ws.identity, ws.features, privacy_dir(ws)):
        if folder.exists():
            clean_temporaries(folder)  # half-written files of a killed earlier attempt
    keys = {n[4:] for n in nodes if n.startswith("key:")}
    for step in STEPS:
        if step in journal["done"]:
            continue
        try:
            _erase_step(ws, step, ids, nodes, keys, journal)
        except Exception as error:
            journal.setdefault("errors", {})[step] = f"{type(error).__name__}: {error}"
            _write_journal(ws, journal)
            raise ErasureIncomplete(
                f"erasure {receipt['receipt_id']}: the {step} store failed ({type(error).__name__}: {error}); "
                f"the person is suppressed and done so far: {', '.join(journal['done']) or 'nothing'}. "
                "Fix the store, then run `cdp privacy erase --resume`"
            ) from None
        journal["done"].append(step)
        journal.get("errors", {}).pop(step, None)
        _write_journal(ws, journal)
    if journal["models"]:
        receipt["models_trained_on_subjects"] = runs_trained_on(ws, ids)
        receipt["not_erased"].append(
            "MLflow models keep what they learned from the subjects' rows; retrain the listed versions to forget them"
        )
    receipt["not_erased"].append("raw/ is the source system's input: delete there, or it stays suppressed at ingest")
    receipt["completed_at"] = pd.Timestamp.now(tz="UTC").isoformat()
    out = privacy_dir(ws) / "receipts" / f"{receipt['receipt_id']}.json"
    write_json_atomic(out, receipt)
    (journal_dir(ws) / f"{receipt['receipt_id']}.json").unlink(missing_ok=True)
    receipt["receipt_path"] = str(out)
    return receipt


def _erase_step(ws: Workspace, step: str, ids: set[str], nodes: set[str], keys: set[str], journal: dict) -> None:
    receipt = journal["receipt"]
    if step == "suppress":
        _suppress(ws, nodes, receipt, ids)
        # the incremental ingest's ledgers hold everyone's record and phone keys; while anyone is
        # erased every ingest is a full one and writes none (cdp.ingest.ledger)
        drop_ingest_state(ws)
        shared = receipt["shared_identifiers_kept"] = shared_identifiers(ws, nodes)
        if shared["unlinked_records_carrying_them"]:
            receipt["not_erased"].append(
                "records linked to nobody that carry an identifier this person shares with others (counted in "
                "shared_identifiers_kept): kept, as they may be the other sharer's; review them"
            )
    elif step == "staged":
        removed = _staged(ws, nodes, receipt)
        journal["removed_source_rows"] = {t: sorted(int(r) for r in rows) for t, rows in removed.items()}
    elif step == "history":
        _history(ws, nodes, receipt)
    elif step == "quarantine":
        mine, conflicts = quarantine_matches(ws, nodes)
        receipt["stores"]["staged/quarantine.parquet"] = _filter_parquet(ws.quarantine, mine) if mine.any() else 0
        if conflicts.any():  # someone else's row reusing one of the person's keys: kept, reported
            receipt["quarantine_conflicts_kept"] = int(conflicts.sum())
    elif step == "field_issues":
        issues = ws.staged / "field_issues.parquet"
        removed = {t: set(rows) for t, rows in journal.get("removed_source_rows", {}).items()}
        if issues.exists():
            frame = pd.read_parquet(issues, columns=["table", "row"])
            drop = np.array([r in removed.get(t, ()) for t, r in zip(frame["table"], frame["row"])], dtype=bool)
            receipt["stores"]["staged/field_issues.parquet"] = _filter_parquet(issues, drop)
    elif step == "identity":
        _identity(ws, ids, keys, receipt)
    elif step == "features":
        # the views, the score push tables and the incremental build's per-customer input digests
        # (their rows go with the person's feature rows, so the state still describes the views)
        fingerprints = incremental_state_dir(ws) / "fingerprints.parquet"
        for path in [*sorted(ws.features.glob("*.parquet")), *([fingerprints] if fingerprints.exists() else [])]:
            name = str(path.relative_to(ws.features))
            receipt["stores"][f"features/{name}"] = _filter_parquet(path, _column_in(path, "customer_id", ids))
    elif step == "online":
        _online(ws, ids, receipt)


def withdraw_scores(ws: Workspace, customer_ids: Iterable[str]) -> dict[str, int]:
    """Delete existing model scores (every `*_scores` view: offline push table + online table)
    of customers who withdrew profiling consent; their other data stays. Rows removed per store."""
    ids = set(customer_ids)
    receipt: dict = {"stores": {}, "not_erased": []}
    if not ids:
        return receipt["stores"]
    for path in sorted(ws.features.glob("*_scores.parquet")):
        receipt["stores"][f"features/{path.name}"] = _filter_parquet(path, _column_in(path, "customer_id", ids))
        _online(ws, ids, receipt, only_view=path.stem)
    return receipt["stores"]


def last_activity(ws: Workspace) -> pd.Series:
    """customer_id -> latest timestamp of anything they did (orders, visits, contacts, sign-ups)."""
    activity = {
        "orders": "ordered_at",
        "web_events": "occurred_at",
        "service_interactions": "occurred_at",
        "crm_contacts": "updated_at",
        "loyalty_members": "enrolled_at",
        "online_accounts": "created_at",
    }
    keys = {
        "orders": "order_id",
        "web_events": "event_id",
        "service_interactions": "interaction_id",
        "crm_contacts": "record_id",
        "loyalty_members": "card_id",
        "online_accounts": "account_id",
    }
    identity = pd.read_parquet(
        ws.identity / "identity_map.parquet", columns=["source_table", "source_key", "customer_id"]
    )
    parts = []
    for table, column in activity.items():
        path = ws.staged / f"{table}.parquet"
        if not path.exists():
            continue
        wanted = [keys[table], column] + (["created_at"] if table == "crm_contacts" else [])
        frame = pd.read_parquet(path, columns=wanted)
        stamp = frame[column] if table != "crm_contacts" else frame[column].fillna(frame["created_at"])
        ids = identity[identity["source_table"] == table].set_index("source_key")["customer_id"]
        parts.append(pd.DataFrame({"customer_id": frame[keys[table]].astype(str).map(ids), "ts": stamp}))
    every = pd.concat(parts, ignore_index=True).dropna()
    return every.groupby("customer_id")["ts"].max()


def inactive_customers(ws: Workspace, inactive_days: int, as_of: pd.Timestamp | None = None) -> list[str]:
    """Customers whose last activity is more than `inactive_days` before `as_of` (default: the
    latest activity in the data, so old extracts are not purged wholesale)."""
    if inactive_days < 1:
        raise ValueError(f"inactive_days: must be >= 1, got {inactive_days}")
    ws.require("identity_map")
    last = last_activity(ws)
    as_of = as_of if as_of is not None else last.max()
    return sorted(last[last < as_of - pd.Timedelta(days=inactive_days)].index)


def drop_suppressed(table: str, raw: pd.DataFrame, suppressed: set[str], key: bytes) -> tuple[pd.DataFrame, np.ndarray]:
    """(raw rows not carrying a suppressed token, their positions in `raw`).

    Rows of an erased person are recognized by any identifier node or record key; a child row
    (order line, campaign response) follows its parent. Keys of rows dropped here are added to
    `suppressed` (mutated) so that later child tables in the same ingest follow them."""
    positions = np.arange(len(raw))
    if not suppressed or raw.empty:
        return raw, positions
    long = record_nodes(table, raw)
    if long.empty:
        return raw, positions
    distinct = pd.unique(long["node"])
    hashed = dict(zip(distinct, (token(n, key) for n in distinct)))
    hit = long["node"].map(hashed).isin(suppressed).to_numpy()
    drop = np.zeros(len(raw), dtype=bool)
    drop[long.loc[hit, "row"].to_numpy()] = True
    if not drop.any():
        return raw, positions
    keys = long[long["row"].isin(np.flatnonzero(drop)) & long["node"].str.startswith("key:")]["node"]
    suppressed.update(hashed[n] for n in keys)
    return raw.loc[~drop].reset_index(drop=True), positions[~drop]
