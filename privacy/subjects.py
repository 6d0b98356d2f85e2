"""Privacy building blocks: who a request is about, which records carry their identifiers.

In:  a workspace after `cdp resolve` (staged/ tables, identity/identity_map.parquet,
     identity/identifier_map.parquet) and an identifier typed by a person (email, phone,
     loyalty card id, account id; optionally prefixed `email:`, `phone:`, `card:`,
     `account:`, `device:` or `customer:`).
Out: `Subject` (customer_id + the identifier nodes that are exclusively theirs),
     `record_nodes` (row -> node pairs for any contract table, raw or staged),
     `token` (HMAC-SHA256 under the workspace's secret `privacy_key`, used for suppression lists
     and training populations: no raw identifier is ever stored by the privacy code, and a leaked
     list cannot be reversed by hashing candidate emails or phones), and the MLflow training-population
     helpers (`record_training_population`, `runs_trained_on`).

Node names follow identity resolution (`email:<canonical>`, `phone:<E.164>`, `card:<id>`,
`account:<id>`, `device:<id>`, `crm:<record_id>`) plus `key:<table>|<primary key>` for a
record itself and `email_sha256:<hex>` for the vendor enrichment join key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cdp.features.consent import CONSENT_KINDS  # consent identifier type -> node kind
from cdp.ingest.contract import TABLES
from cdp.ingest.drops import history_name
from cdp.ingest.normalize import (
    canonical_email,
    default_region,
    e164_phone,
    email_sha256,
    mask_email,
    phone_digits_hint,
)
from cdp.settings import setting
from cdp.workspace import Workspace, use_workspace

POPULATION_ARTIFACT = "privacy/training_population.parquet"
POPULATION_COLUMN = "customer_token"
# table -> (key column, {node kind: raw column}); the kinds identity resolution links on
TABLE_NODES: dict[str, tuple[str | None, dict[str, str]]] = {
    "crm_contacts": ("record_id", {"crm": "record_id", "email": "email", "phone": "phone"}),
    "loyalty_members": ("card_id", {"card": "card_id", "email": "email", "phone": "phone"}),
    "online_accounts": ("account_id", {"account": "account_id", "email": "email", "phone": "phone"}),
    "orders": ("order_id", {"card": "card_id", "account": "account_id", "email": "email", "phone": "phone"}),
    "service_interactions": (
        "interaction_id",
        {"account": "account_id", "card": "card_id", "email": "email", "phone": "phone"},
    ),
    "marketing_sends": ("send_id", {"account": "account_id", "email": "email", "device": "device_id"}),
    "web_events": ("event_id", {"account": "account_id", "device": "device_id"}),
}
# child table -> (column, parent table): a child row belongs to whoever owns its parent
CHILDREN = {"order_lines": ("order_id", "orders"), "marketing_responses": ("send_id", "marketing_sends")}
PREFIXES = ("email", "phone", "card", "account", "device", "customer")


class SubjectNotFound(ValueError):
    """The identifier is well-formed but names no (single) customer. Message is PII-safe."""


PRIVACY_KEY_ENV = "CDP_PRIVACY_KEY"


class PrivacyKeyMismatch(RuntimeError):
    """The key at hand is not the one the suppression list was made with: suppression would fail."""


class RekeyInProgress(PrivacyKeyMismatch):
    """A `cdp privacy rekey` was interrupted after its commit: tokens are part old-key, part new-key."""


def key_file(ws: Workspace) -> Path:
    return ws.root / "privacy" / "token.key"


def rekey_dir(ws: Workspace) -> Path:
    return ws.root / "privacy" / "rekey"


def rekey_journal(ws: Workspace) -> Path:
    """Present only between a rekey's commit and its end (cdp.privacy.rekey)."""
    return rekey_dir(ws) / "journal.json"


def privacy_key(ws: Workspace) -> bytes:
    """The secret tokens are keyed with: $CDP_PRIVACY_KEY (e.g. from a secrets manager), else
    `privacy/token.key` in the workspace, created once (owner-only) on first use. Losing it makes
    existing suppression tokens unrecognizable: back it up with the workspace. Refused
    (RekeyInProgress) while an interrupted rekey is unfinished."""
    if rekey_journal(ws).exists():
        raise RekeyInProgress(
            "privacy rekey interrupted: the workspace's tokens are part under the old key, part under the new "
            "one; run `cdp privacy rekey` to finish it before any other command"
        )
    configured = setting("privacy_key")
    if configured:
        return configured.get_secret_value().encode("utf-8")
    path = key_file(ws)
    if not path.exists():
        if (ws.root / "privacy" / "suppressions.parquet").exists():  # a new key would unsuppress everyone
            raise PrivacyKeyMismatch(
                f"privacy key lost: {path} is missing but people were erased (privacy/suppressions.parquet), "
                "and a new key would let their records back in; restore the key file (or set CDP_PRIVACY_KEY "
                "to it)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write(secrets.token_hex(32))
        except FileExistsError:  # created meanwhile by another process: use theirs
            pass
    return path.read_bytes().strip()


def token(node: str, key: bytes) -> str:
    """HMAC-SHA256 hex of a node string under `key`: what suppression lists and populations store."""
    return hmac.new(key, node.encode("utf-8"), hashlib.sha256).hexdigest()


def tokens(nodes: Iterable[str], key: bytes) -> set[str]:
    return {token(n, key) for n in nodes}


def masked(kind: str, value: str) -> str:
    """A log-safe hint of an identifier (never the value): e.g. "email j***@***"."""
    if kind == "email":
        return f"email {mask_email(value)}"
    if kind == "phone":
        return f"phone ({phone_digits_hint(value)})"
    return f"{kind} {value[:2]}***" if kind != "customer" else f"customer_id {value}"


def _text(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip().replace("", pd.NA)


def _unique_map(values: pd.Series, fn) -> pd.Series:
    """fn once per distinct non-null value; nulls stay null."""
    present = values.dropna()
    if present.empty:
        return pd.Series(pd.NA, index=values.index, dtype="object")
    uniques = pd.unique(present)
    mapped = dict(zip(uniques, (fn(u) for u in uniques)))
    return values.map(mapped, na_action="ignore")


def _node_column(kind: str, values: pd.Series, region: str) -> pd.Series:
    """Node string per row for one identifier column (null where the value is unusable)."""
    values = _text(values)
    if kind == "email":
        norm = _unique_map(values, canonical_email)
    elif kind == "phone":
        norm = _unique_map(values, lambda v: e164_phone(v, region))
    else:
        norm = values
    return (kind + ":" + norm.astype("string")).astype("object").where(norm.notna(), None)


def staged_rows_carrying(
    ws: Workspace, nodes: AbstractSet[str], history: bool = False
) -> Iterator[tuple[str, Path, pd.DataFrame, np.ndarray]]:
    """For every staged table: (table, path, frame, mask of rows carrying any of `nodes`).
    The one scan that subject access (read) and erasure (delete) both build on. With `history`,
    the superseded versions of updated records instead (staged/<table>_history.parquet: raw
    values, matched by the record key and by the identifiers they carried)."""
    for table in TABLES:
        path = ws.staged / (history_name(table) if history else f"{table}.parquet")
        if not path.exists():
            continue
        frame = pd.read_parquet(path)
        hits = record_nodes(table, frame)
        mask = np.zeros(len(frame), dtype=bool)
        mask[hits.loc[hits["node"].isin(nodes), "row"].to_numpy()] = True
        yield table, path, frame, mask


def record_nodes(table: str, frame: pd.DataFrame, region: str | None = None) -> pd.DataFrame:
    """Long frame (row: position in `frame`, node) of every identifier a table's rows carry.

    Works on raw (strings) and staged frames alike: identifiers are re-normalized from the
    contract columns. Tables with no person identifiers (products, campaigns) give no rows."""
    region = region or default_region()
    parts: list[pd.Series] = []

    def add(nodes: pd.Series) -> None:
        parts.append(pd.Series(nodes.to_numpy(dtype=object), index=np.arange(len(frame))))

    if table in TABLE_NODES:
        key, columns = TABLE_NODES[table]
        add("key:" + table + "|" + _text(frame[key]).astype("object").fillna("\0"))
        for kind, column in columns.items():
            if column in frame:
                add(_node_column(kind, frame[column], region))
        for column in ("email",):  # the enrichment join key of each email, for enrichment rows
            if column in frame:
                add(
                    _unique_map(_text(frame[column]), email_sha256).map(
                        lambda h: f"email_sha256:{h}", na_action="ignore"
                    )
                )
    elif table in CHILDREN:
        column, parent = CHILDREN[table]
        add("key:" + parent + "|" + _text(frame[column]).astype("object").fillna("\0"))
    elif table == "enrichment":
        add(("email_sha256:" + _text(frame["email_sha256"]).str.lower()).astype("object"))
    elif table == "consent_events":
        kinds = frame["identifier_type"].astype("string").str.strip().str.lower()
        for raw_kind, kind in CONSENT_KINDS.items():
            chosen = frame["identifier"].where(kinds == raw_kind)
            add(_node_column(kind, chosen, region))
    if not parts:
        return pd.DataFrame({"row": pd.Series(dtype="int64"), "node": pd.Series(dtype=object)})
    long = pd.concat(parts)
    long = long[long.notna() & ~long.astype(str).str.endswith("\0")]
    return pd.DataFrame({"row": long.index.to_numpy(dtype="int64"), "node": long.to_numpy(dtype=object)})


@dataclass(frozen=True)
class Subject:
    """A person as the platform knows them: customer_id and exclusively-theirs nodes."""

    customer_id: str
    nodes: frozenset[str]  # identifier_map nodes + key:<table>|<key> of their records (+ email_sha256)
    records: pd.DataFrame = field(repr=False, compare=False)  # their identity_map rows

    def identifier_nodes(self) -> list[str]:
        return sorted(n for n in self.nodes if not n.startswith("key:"))


def parse_identifier(identifier: str) -> tuple[str, str]:
    """(kind, normalized value) of a typed identifier; ValueError naming the field otherwise."""
    text = (identifier or "").strip()
    if not text:
        raise ValueError("identifier: empty value (give an email, phone, card id or account id)")
    kind, _, rest = text.partition(":")
    if kind.lower() in PREFIXES and rest and not (kind.lower() == "phone" and rest.startswith("//")):
        kind, text = kind.lower(), rest.strip()
    else:
        kind = "email" if "@" in text else "auto"
    if kind == "email":
        value = canonical_email(text)
        if value is None:
            raise ValueError(f"identifier: malformed email '{mask_email(text)}'")
        return "email", value
    if kind == "phone":
        value = e164_phone(text)
        if value is None:
            raise ValueError(f"identifier: invalid phone number ({phone_digits_hint(text)})")
        return "phone", value
    return kind, text


def find_subject(ws: Workspace, identifier: str) -> Subject:
    """The customer behind an identifier (see `parse_identifier`), with all their nodes."""
    kind, value = parse_identifier(identifier)
    path = ws.identity / "identifier_map.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `cdp resolve` first")
    nodes = pd.read_parquet(path)
    if kind == "customer":
        known = nodes["customer_id"].eq(value).any() or _identity_map(ws)["customer_id"].eq(value).any()
        if not known:
            raise SubjectNotFound(f"identifier: unknown customer_id '{value}'")
        return subject_for(ws, value, nodes)
    candidates = (
        [f"{kind}:{value}"] if kind != "auto" else [f"{k}:{value}" for k in ("card", "account", "crm", "device")]
    )
    if kind == "auto" and (phone := e164_phone(value)) is not None:
        candidates.append(f"phone:{phone}")
    hits = nodes[nodes["node"].isin(candidates)]["customer_id"].unique()
    if len(hits) != 1:
        shown = masked(kind if kind != "auto" else "identifier", value)
        why = (
            "no customer carries it (or it is shared/blocked, so it names no single person)"
            if not len(hits)
            else f"it matches {len(hits)} customers; prefix it with its kind (email:, phone:, card:, account:)"
        )
        raise SubjectNotFound(f"identifier: {shown}: {why}")
    return subject_for(ws, str(hits[0]), nodes)


def _identity_map(ws: Workspace) -> pd.DataFrame:
    return pd.read_parquet(ws.identity / "identity_map.parquet")


def subject_for(ws: Workspace, customer_id: str, identifier_map: pd.DataFrame | None = None) -> Subject:
    """A Subject for a known customer_id."""
    return subjects_for(ws, [customer_id], identifier_map)[customer_id]


def subjects_for(
    ws: Workspace, customer_ids: Iterable[str], identifier_map: pd.DataFrame | None = None
) -> dict[str, Subject]:
    """Subjects for many customer_ids at once (one read of each staged table)."""
    wanted = set(customer_ids)
    nodes = identifier_map if identifier_map is not None else pd.read_parquet(ws.identity / "identifier_map.parquet")
    nodes = nodes[nodes["customer_id"].isin(wanted)]
    records = _identity_map(ws)
    records = records[records["customer_id"].isin(wanted)]
    per: dict[str, set[str]] = {c: set() for c in wanted}
    for cid, node in zip(nodes["customer_id"], nodes["node"]):
        per[cid].add(node)
    for cid, table, key in zip(records["customer_id"], records["source_table"], records["source_key"]):
        per[cid].add(f"key:{table}|{key}")
    # enrichment join keys of their own (exclusive) emails
    owner = {n: c for c, ns in per.items() for n in ns}
    for table in TABLE_NODES:
        path = ws.staged / f"{table}.parquet"
        if not path.exists() or "email" not in TABLE_NODES[table][1]:
            continue
        staged = pd.read_parquet(path, columns=["email"])
        emails = _node_column("email", staged["email"], default_region())
        mine = emails.map(owner)
        present = mine.notna()
        if present.any():
            hashes = _unique_map(_text(staged.loc[present, "email"]), email_sha256)
            for cid, digest in zip(mine[present], hashes):
                if isinstance(digest, str):
                    per[cid].add(f"email_sha256:{digest}")
    return {
        c: Subject(c, frozenset(per[c]), records[records["customer_id"] == c].reset_index(drop=True)) for c in wanted
    }


def rows_of(table: str, frame: pd.DataFrame, nodes: set[str] | frozenset[str]) -> np.ndarray:
    """Boolean mask of `frame` rows that carry any of `nodes`."""
    long = record_nodes(table, frame)
    hit = long.loc[long["node"].isin(nodes), "row"].to_numpy()
    mask = np.zeros(len(frame), dtype=bool)
    mask[hit] = True
    return mask


# ---- MLflow: which model versions were trained on whom (hashed ids only) -------------------


def record_training_population(ws: Workspace, run_id: str, customer_ids: Iterable[str]) -> int:
    """Log `privacy/training_population.parquet` (the token of each distinct customer_id) to an
    MLflow run, using the current tracking URI. Returns how many ids were recorded."""
    import tempfile
    from pathlib import Path

    from mlflow import MlflowClient

    key = privacy_key(ws)
    hashed = sorted({token(f"customer:{c}", key) for c in pd.Series(list(customer_ids)).dropna().astype(str)})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(POPULATION_ARTIFACT).name
        pd.DataFrame({POPULATION_COLUMN: hashed}).to_parquet(path, index=False)
        MlflowClient().log_artifact(run_id, str(path), artifact_path=str(Path(POPULATION_ARTIFACT).parent))
    return len(hashed)


def runs_trained_on(ws: Workspace, customer_ids: Iterable[str]) -> list[dict]:
    """MLflow runs (and registered model versions) whose training population holds any of
    `customer_ids`; runs without a population artifact are listed as `population: unknown`."""
    import mlflow
    from mlflow import MlflowClient

    use_workspace(ws)
    key = privacy_key(ws)
    wanted = {token(f"customer:{c}", key) for c in customer_ids}
    client = MlflowClient()
    versions: dict[str, list[str]] = {}
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name='{model.name}'"):
            if version.run_id:  # a version registered from a path has no run
                versions.setdefault(version.run_id, []).append(f"{model.name}/{version.version}")
    found = []
    for run_id, names in sorted(versions.items()):
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=POPULATION_ARTIFACT)
        except Exception:
            found.append({"run_id": run_id, "model_versions": names, "population": "unknown"})
            continue
        stored = pd.read_parquet(local)
        if POPULATION_COLUMN not in stored:  # an older, unkeyed population: cannot be matched
            found.append({"run_id": run_id, "model_versions": names, "population": "unknown"})
            continue
        population = set(stored[POPULATION_COLUMN])
        if population & wanted:
            found.append({"run_id": run_id, "model_versions": names, "population": "contains subject"})
    return found
