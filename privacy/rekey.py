"""`cdp privacy rekey`: move every keyed token of the workspace from the old privacy key to a new one.

Tokens are one-way (HMAC), so a token cannot be re-keyed by itself: each one is re-made from the
identifier it stands for, found again in the workspace's own data (raw/ tables and drops, staged/,
the quarantine, the identity maps: exactly what ingest re-computes to recognize an erased person,
plus customer ids and the ids identity resolution would issue). A token whose identifier is found
nowhere (its raw records were deleted at the source) is *unrecoverable*: the rekey refuses unless
told to drop those (`--drop-unrecoverable`), since a dropped token stops suppressing that identifier.

Keyed tokens live in privacy/suppressions.parquet (with the key-check token), privacy/receipts/*.json
(`subject_tokens`) and the MLflow training populations (mlartifacts/**/privacy/training_population
.parquet). Staged, identity, feature and score tables and the online store hold no tokens.

Crash safety: everything new is first written under privacy/rekey/ (the new key, when one is made,
before anything else); nothing live changes until `privacy/rekey/journal.json` is published (the
commit point). From then until the journal is removed the workspace is part old-key, part new-key:
`privacy_key` (every token user: ingest, erase, train, serving) refuses with RekeyInProgress, and
re-running `cdp privacy rekey` finishes the copy (every step is idempotent, no key needed).
A rekey killed before the commit left the live workspace untouched; its re-run starts over.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cdp.atomic import atomic_path, clean_temporaries, write_json_atomic, write_parquet_atomic
from cdp.identity.ids import customer_id_for
from cdp.ingest.contract import TABLES
from cdp.privacy.erasure import KEY_CHECK_NODE, pending_erasures, privacy_dir, suppressions_path
from cdp.privacy.subjects import (
    POPULATION_ARTIFACT,
    POPULATION_COLUMN,
    key_file,
    record_nodes,
    rekey_dir,
    rekey_journal,
    token,
)
from cdp.settings import setting
from cdp.workspace import Workspace


class RekeyError(ValueError):
    """A rekey that cannot start as asked; the message says what to set or run."""


@dataclass
class KeyPlan:
    """Where the old and the new key come from (never the key values in any message)."""

    old: bytes
    new: bytes
    old_source: str
    new_source: str
    mode: str  # "file": the new key replaces privacy/token.key; "env": CDP_PRIVACY_KEY is the new key


@dataclass
class RekeyPlan:
    keys: KeyPlan
    mapping: dict[str, str] = field(default_factory=dict)  # old token -> new token
    stored: dict[str, int] = field(default_factory=dict)  # store -> tokens it holds
    unrecoverable: dict[str, int] = field(default_factory=dict)  # store -> tokens whose identifier is gone


def _secret(name: str) -> bytes | None:
    value = setting(name)
    return value.get_secret_value().encode("utf-8") if value else None


def _key_checks(ws: Workspace) -> set[str]:
    path = suppressions_path(ws)
    if not path.exists():
        return set()
    rows = pd.read_parquet(path, columns=["token", "kind"])
    return set(rows.loc[rows["kind"] == "key-check", "token"])


def choose_keys(ws: Workspace) -> KeyPlan:
    """Old key: CDP_PRIVACY_OLD_KEY, else privacy/token.key or CDP_PRIVACY_KEY, whichever made the
    suppression list (its key-check token). New key: CDP_PRIVACY_KEY when it is not the old key
    (the secrets-manager case), else a new random key that will replace privacy/token.key."""
    import secrets

    checks = _key_checks(ws)
    current, old_env = _secret("privacy_key"), _secret("privacy_old_key")
    path = key_file(ws)
    from_file = path.read_bytes().strip() if path.exists() else None
    if old_env is not None:
        candidates = [(old_env, "CDP_PRIVACY_OLD_KEY")]
    else:
        candidates = [(k, s) for k, s in ((current, "CDP_PRIVACY_KEY"), (from_file, str(path))) if k is not None]
    if checks:
        candidates = [(k, s) for k, s in candidates if token(KEY_CHECK_NODE, k) in checks]
        if not candidates:
            raise RekeyError(
                "old key: none of the keys at hand (CDP_PRIVACY_OLD_KEY, CDP_PRIVACY_KEY, privacy/token.key) made "
                "privacy/suppressions.parquet; set CDP_PRIVACY_OLD_KEY to the key it was made with"
            )
    elif not candidates:
        raise RekeyError("old key: no privacy key in this workspace yet (nothing is keyed, nothing to rekey)")
    old, old_source = candidates[0]
    if current is not None and current != old:
        return KeyPlan(old, current, old_source, "CDP_PRIVACY_KEY", "env")
    if current is not None:
        raise RekeyError(
            "new key: CDP_PRIVACY_KEY is the old key; set CDP_PRIVACY_KEY to the new key and "
            "CDP_PRIVACY_OLD_KEY to the old one (or unset both to replace privacy/token.key with a new key)"
        )
    staged_key = rekey_dir(ws) / "new.key"  # a killed earlier prepare's key is reused, not multiplied
    new = staged_key.read_bytes().strip() if staged_key.exists() else secrets.token_hex(32).encode()
    return KeyPlan(old, new, old_source, "a new random key in privacy/token.key", "file")


# ---- where tokens are stored ----------------------------------------------------------------


def _receipts(ws: Workspace) -> list[Path]:
    folder = privacy_dir(ws) / "receipts"
    return sorted(folder.glob("*.json")) if folder.exists() else []


def _populations(ws: Workspace) -> list[Path]:
    """Training populations in the workspace's MLflow artifact store (local files)."""
    folder = ws.root / "mlartifacts"
    return sorted(folder.rglob(Path(POPULATION_ARTIFACT).name)) if folder.exists() else []


def stored_tokens(ws: Workspace) -> dict[str, set[str]]:
    """Store (relative path) -> the keyed tokens it holds (the key-check token excluded)."""
    found: dict[str, set[str]] = {}
    path = suppressions_path(ws)
    if path.exists():
        rows = pd.read_parquet(path, columns=["token", "kind"])
        found[str(path.relative_to(ws.root))] = set(rows.loc[rows["kind"] != "key-check", "token"])
    for receipt in _receipts(ws):
        found[str(receipt.relative_to(ws.root))] = set(json.loads(receipt.read_text()).get("subject_tokens", []))
    for population in _populations(ws):
        frame = pd.read_parquet(population)
        if POPULATION_COLUMN in frame:
            found[str(population.relative_to(ws.root))] = set(frame[POPULATION_COLUMN])
    return found


# ---- the identifiers behind the tokens --------------------------------------------------------


def candidate_nodes(ws: Workspace) -> Iterable[set[str]]:
    """Batches of node strings the workspace's data can re-make tokens from: every node ingest
    computes on raw/ (all files and drops), on staged/ and the quarantine; identifier_map nodes;
    `customer:<id>` of every id in the identity tables and of the id each anchor would be issued."""
    from cdp.ingest.staging import IngestReport, locate, read_raw

    anchors: set[str] = set()

    def batch(frame_nodes: pd.DataFrame) -> set[str]:
        nodes = set(frame_nodes["node"])
        anchors.update(n[4:] if n.startswith("key:") else n for n in nodes if not n.startswith("email_sha256:"))
        return nodes

    if ws.raw.exists():
        for table, paths in locate(ws.raw, IngestReport()).items():
            for path in paths:
                yield batch(record_nodes(table, read_raw(path, TABLES[table])))
    for table in TABLES:
        path = ws.staged / f"{table}.parquet"
        if path.exists():
            yield batch(record_nodes(table, pd.read_parquet(path)))
    if ws.quarantine.exists():
        quarantine = pd.read_parquet(ws.quarantine, columns=["table", "record"])
        for table, group in quarantine.groupby("table"):
            records = pd.DataFrame([json.loads(r) for r in group["record"]])
            for column in TABLES[table].columns if table in TABLES else ():
                if column not in records:
                    records[column] = None
            yield batch(record_nodes(table, records))
    ids: set[str] = set()
    for name, columns in (
        ("identifier_map", ["node", "customer_id"]),
        ("identity_map", ["customer_id"]),
        ("id_history", ["old_id", "new_id"]),
    ):
        path = ws.identity / f"{name}.parquet"
        if path.exists():
            frame = pd.read_parquet(path, columns=columns)
            if "node" in frame:
                yield batch(frame[["node"]])
            for column in columns:
                if column != "node":
                    ids.update(frame[column].dropna().astype(str))
    ids.update(customer_id_for(a) for a in anchors)  # an erased person's id was issued from one of these
    ids.update(customer_id_for(f"{a}#1") for a in anchors)
    yield {f"customer:{c}" for c in ids}


def plan_rekey(ws: Workspace, keys: KeyPlan) -> RekeyPlan:
    """Old token -> new token for every stored token whose identifier the workspace still holds."""
    stores = stored_tokens(ws)
    wanted = set().union(*stores.values()) if stores else set()
    plan = RekeyPlan(keys)
    for nodes in candidate_nodes(ws) if wanted else ():
        for node in nodes:
            old = token(node, keys.old)
            if old in wanted and old not in plan.mapping:
                plan.mapping[old] = token(node, keys.new)
        if len(plan.mapping) == len(wanted):
            break
    for store, held in stores.items():
        plan.stored[store] = len(held)
        missing = len(held - plan.mapping.keys())
        if missing:
            plan.unrecoverable[store] = missing
    return plan


# ---- prepare, commit, resume ---------------------------------------------------------------


def _stage(ws: Workspace, plan: RekeyPlan) -> list[dict]:
    """Write every new file under privacy/rekey/; returns the copy plan (staged file -> target).
    Tokens without a new one (unrecoverable, dropped by the caller's choice) are left out."""
    folder = rekey_dir(ws)
    mapping, copies = plan.mapping, []

    def new(old: str) -> str | None:
        return mapping.get(old)

    path = suppressions_path(ws)
    if path.exists():
        rows = pd.read_parquet(path)
        checks = rows["kind"] == "key-check"
        rows.loc[~checks, "token"] = rows.loc[~checks, "token"].map(new)
        rows = rows[checks | rows["token"].notna()].copy()
        rows.loc[checks, "token"] = token(KEY_CHECK_NODE, plan.keys.new)
        rows = rows.drop_duplicates("token")
        staged = folder / "files" / "suppressions.parquet"
        write_parquet_atomic(rows.reset_index(drop=True), staged)
        copies.append({"staged": str(staged.relative_to(ws.root)), "target": str(path.relative_to(ws.root))})
    for number, receipt in enumerate(_receipts(ws)):
        body = json.loads(receipt.read_text())
        if "subject_tokens" not in body:
            continue
        body["subject_tokens"] = sorted(t for t in map(new, body["subject_tokens"]) if t is not None)
        staged = folder / "files" / f"receipt_{number}.json"
        write_json_atomic(staged, body)
        copies.append({"staged": str(staged.relative_to(ws.root)), "target": str(receipt.relative_to(ws.root))})
    for number, population in enumerate(_populations(ws)):
        frame = pd.read_parquet(population)
        if POPULATION_COLUMN not in frame:
            continue
        tokens = sorted(t for t in map(new, frame[POPULATION_COLUMN]) if t is not None)
        staged = folder / "files" / f"population_{number}.parquet"
        write_parquet_atomic(pd.DataFrame({POPULATION_COLUMN: tokens}), staged)
        copies.append({"staged": str(staged.relative_to(ws.root)), "target": str(population.relative_to(ws.root))})
    return copies


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    target.chmod(0o600)


def rekey(ws: Workspace, drop_unrecoverable: bool = False, dry_run: bool = False) -> dict:
    """Re-tokenize the workspace under the new key (see module docstring). Resumes an interrupted
    commit first. Returns a summary (counts and key sources, never a key or an identifier)."""
    if rekey_journal(ws).exists():
        return {**finish(ws), "resumed": True}
    if pending_erasures(ws):
        raise RekeyError("an erasure is pending: finish it first with `cdp privacy erase --resume`")
    keys = choose_keys(ws)
    plan = plan_rekey(ws, keys)
    summary = {
        "old_key": keys.old_source,
        "new_key": keys.new_source,
        "tokens_stored": sum(plan.stored.values()),
        "tokens_rekeyed": sum(plan.stored.values()) - sum(plan.unrecoverable.values()),
        "stores": len(plan.stored),
        "unrecoverable": dict(plan.unrecoverable),
    }
    if plan.unrecoverable and not drop_unrecoverable:
        shown = ", ".join(f"{store}: {n}" for store, n in plan.unrecoverable.items())
        raise RekeyError(
            f"{sum(plan.unrecoverable.values())} token(s) cannot be re-made: their identifiers are in no raw, staged "
            f"or identity table any more ({shown}); restore those raw files and re-run, or pass "
            "--drop-unrecoverable (those identifiers are then no longer suppressed if they come back)"
        )
    if dry_run:
        return {**summary, "dry_run": True}
    folder = rekey_dir(ws)
    if folder.exists():  # a rekey killed before its commit: nothing live changed, start over
        kept = (folder / "new.key").read_bytes() if (folder / "new.key").exists() else None
        shutil.rmtree(folder)
        if kept is not None:
            _write_key(folder / "new.key", kept)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if keys.mode == "file" and not (folder / "new.key").exists():
        _write_key(folder / "new.key", keys.new)  # first: a crash later must never lose the key files use
    copies = _stage(ws, plan)
    journal = {
        "state": "commit",
        "mode": keys.mode,
        "new_check": token(KEY_CHECK_NODE, keys.new),
        "copies": copies,
        "summary": summary,
    }
    write_json_atomic(rekey_journal(ws), journal)  # the commit point
    rekey_journal(ws).chmod(0o600)
    return finish(ws)


def _write_key(path: Path, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_path(path) as tmp:
        tmp.write_bytes(key)
        tmp.chmod(0o600)


def finish(ws: Workspace) -> dict:
    """Publish a committed rekey: copy every staged file over its target, install the new key,
    remove the journal. Idempotent; needs no key (a re-run after a kill at any point finishes it)."""
    journal = json.loads(rekey_journal(ws).read_text())
    for folder in (privacy_dir(ws), ws.root / "mlartifacts"):
        if folder.exists():
            clean_temporaries(folder)
    for copy in journal["copies"]:
        _copy_atomic(ws.root / copy["staged"], ws.root / copy["target"])
    path = key_file(ws)
    if journal["mode"] == "file":
        _copy_atomic(rekey_dir(ws) / "new.key", path)
    else:
        path.unlink(missing_ok=True)  # it held the old key; CDP_PRIVACY_KEY is the key from now on
    rekey_journal(ws).unlink()  # the workspace is consistent under the new key from here
    shutil.rmtree(rekey_dir(ws), ignore_errors=True)
    summary = dict(journal["summary"])
    current = _secret("privacy_key")
    if journal["mode"] == "env" and (current is None or token(KEY_CHECK_NODE, current) != journal["new_check"]):
        summary["warning"] = "CDP_PRIVACY_KEY is not the new key: set it to the new key before the next command"
    return summary
