"""Privacy end to end on the session pipeline: export is complete, erasure reaches every store
(and only the erased person's rows), suppression survives re-ingest, nothing leaks PII.

Destructive tests work on a copy of the session workspace (the Feast registry/online store
paths follow CDP_HOME, so a copied folder is a self-contained platform)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdp.ingest.contract import TABLES
from cdp.ingest.normalize import canonical_email, e164_phone
from cdp.workspace import Workspace

CDP = str(Path(sys.executable).with_name("cdp"))
KEYS = {
    "crm_contacts": "record_id",
    "loyalty_members": "card_id",
    "online_accounts": "account_id",
    "orders": "order_id",
    "service_interactions": "interaction_id",
    "marketing_sends": "send_id",
    "web_events": "event_id",
}
ID_FIELDS = (
    "email",
    "phone",
    "identifier",
    "card_id",
    "account_id",
    "device_id",
    "record_id",
    "order_id",
    "send_id",
    "event_id",
    "interaction_id",
    "email_sha256",
)
CONSENT_NODE = {"email": "email", "phone": "phone", "account_id": "account", "card_id": "card"}


def cdp(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CDP_HOME", "MLFLOW_TRACKING_URI")}
    return subprocess.run([CDP, *args, "--home", str(home)], capture_output=True, text=True, timeout=timeout, env=env)


def cli(*args: str, home: Path) -> tuple[int, str]:
    """The same typer app in-process (no interpreter start-up): exit code and all output."""
    from typer.testing import CliRunner

    from cdp.cli.app import app

    result = CliRunner().invoke(app, [*args, "--home", str(home)])
    return result.exit_code, result.output + (repr(result.exception) if result.exit_code not in (0, 2) else "")


# ---- what the test itself believes belongs to a person (independent of cdp.privacy.subjects) ----


def pick_customer(ws: Workspace) -> str:
    """A well-covered person: orders, a CRM record, consent events, a score, an exclusive email."""
    identity = pd.read_parquet(ws.identity / "identity_map.parquet")
    nodes = pd.read_parquet(ws.identity / "identifier_map.parquet")
    per_table = identity.groupby(["customer_id", "source_table"]).size().unstack(fill_value=0)
    scored = set(pd.read_parquet(ws.features / "churn_scores.parquet")["customer_id"])
    consent = pd.read_parquet(ws.staged / "consent_events.parquet")
    consent_nodes = set(consent["identifier_type"].map(CONSENT_NODE) + ":" + consent["identifier_norm"].astype(str))
    with_consent = set(nodes.loc[nodes["node"].isin(consent_nodes), "customer_id"])
    with_email = set(nodes.loc[nodes["node"].str.startswith("email:"), "customer_id"])
    with_phone = set(nodes.loc[nodes["node"].str.startswith("phone:"), "customer_id"])
    quarantine = pd.read_parquet(ws.quarantine)
    emails = [canonical_email(json.loads(r).get("email")) for r in quarantine["record"]]
    quarantined = set(nodes.set_index("node")["customer_id"].reindex([f"email:{e}" for e in emails if e]).dropna())
    ok = per_table[(per_table.get("orders", 0) > 0) & (per_table.get("crm_contacts", 0) > 0)].index
    pool = sorted(set(ok) & scored & with_consent & with_email & with_phone)
    assert pool, "fixture has no well-covered person"
    preferred = [c for c in pool if c in quarantined]
    return (preferred or pool)[0]


def person_view(ws: Workspace, cid: str) -> dict:
    """Keys, identifier values and raw identifier strings of one customer, from the stores."""
    identity = pd.read_parquet(ws.identity / "identity_map.parquet")
    mine = identity[identity["customer_id"] == cid]
    nodes = pd.read_parquet(ws.identity / "identifier_map.parquet")
    my_nodes = set(nodes.loc[nodes["customer_id"] == cid, "node"])
    keys = {t: set(g["source_key"]) for t, g in mine.groupby("source_table")}
    raw_strings, hashes = set(), set()
    for table, key in KEYS.items():
        staged = pd.read_parquet(ws.staged / f"{table}.parquet")
        rows = staged[staged[key].astype(str).isin(keys.get(table, set()))]
        if "email" in rows:
            own = rows["email_norm"].map(lambda e: f"email:{e}" in my_nodes)
            raw_strings |= set(rows.loc[own, "email"].dropna())
            hashes |= set(rows.loc[own, "email_sha256"].dropna())
        if "phone" in rows:
            own = rows["phone_e164"].map(lambda p: f"phone:{p}" in my_nodes)
            raw_strings |= set(rows.loc[own, "phone"].dropna())
    values = {n.split(":", 1)[1] for n in my_nodes}
    return {
        "customer_id": cid,
        "nodes": my_nodes,
        "keys": keys,
        "hashes": hashes,
        "needles": values | raw_strings | {cid},
        "all_keys": set().union(*keys.values()),
        "raw_email": sorted(s for s in raw_strings if "@" in s)[0],
    }


def expected_masks(ws: Workspace, person: dict) -> dict[str, np.ndarray]:
    """Per Parquet file (relative path): which rows are the person's."""
    cid, keys, nodes = person["customer_id"], person["keys"], person["nodes"]
    masks: dict[str, np.ndarray] = {}
    for table in TABLES:
        frame = pd.read_parquet(ws.staged / f"{table}.parquet")
        if table in KEYS:
            mask = frame[KEYS[table]].astype(str).isin(keys.get(table, set()))
        elif table == "order_lines":
            mask = frame["order_id"].astype(str).isin(keys.get("orders", set()))
        elif table == "marketing_responses":
            mask = frame["send_id"].astype(str).isin(keys.get("marketing_sends", set()))
        elif table == "consent_events":
            mask = (frame["identifier_type"].map(CONSENT_NODE) + ":" + frame["identifier_norm"].astype(str)).isin(nodes)
        elif table == "enrichment":
            mask = frame["email_sha256"].isin(person["hashes"])
        else:
            mask = pd.Series(False, index=frame.index)
        masks[f"staged/{table}.parquet"] = mask.to_numpy(bool)
    quarantine = pd.read_parquet(ws.quarantine)
    values = {n.split(":", 1)[1] for n in nodes} | person["all_keys"] | person["hashes"]

    def carries(record: str) -> bool:
        fields = json.loads(record)
        return any(
            v is not None and {v, canonical_email(v), e164_phone(v)} & values
            for f, v in fields.items()
            if f in ID_FIELDS
        )

    masks["staged/quarantine.parquet"] = np.array([carries(r) for r in quarantine["record"]], dtype=bool)
    for name in ("identity_map", "identifier_map", "households"):
        masks[f"identity/{name}.parquet"] = (
            pd.read_parquet(ws.identity / f"{name}.parquet")["customer_id"] == cid
        ).to_numpy()
    edges = pd.read_parquet(ws.identity / "match_edges.parquet")
    uids = {f"{t}|{k}" for t, ks in keys.items() for k in ks}
    masks["identity/match_edges.parquet"] = (
        edges["unique_id_l"].isin(uids) | edges["unique_id_r"].isin(uids)
    ).to_numpy()
    for path in ws.features.glob("*.parquet"):
        masks[f"features/{path.name}"] = (pd.read_parquet(path)["customer_id"] == cid).to_numpy()
    return masks


def online_counts(ws: Workspace, cid: str) -> dict[str, tuple[int, int]]:
    """Per online table: (all rows, rows whose entity key holds the customer_id)."""
    with sqlite3.connect(ws.feast / "online.db") as con:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            t: (
                con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0],
                con.execute(f'SELECT count(*) FROM "{t}" WHERE instr(entity_key, ?) > 0', (cid.encode(),)).fetchone()[
                    0
                ],
            )
            for t in tables
            if "entity_key" in [c[1] for c in con.execute(f'PRAGMA table_info("{t}")')]
        }


def string_hits(frame: pd.DataFrame, needles: set[str]) -> list[str]:
    """Columns of `frame` holding any needle (exactly, or as a field of a JSON record)."""
    hits = []
    for column in frame.columns:
        values = frame[column].dropna()
        if values.empty or not isinstance(values.iloc[0], str):
            continue
        if values.isin(needles).any() or (
            column == "record"
            and any(set(map(str, json.loads(r).values())) & needles for r in values if r.startswith("{"))
        ):
            hits.append(column)
    return hits


def mlflow_runs(ws: Workspace) -> list:
    """Every run in the workspace's MLflow (all experiments)."""
    from mlflow import MlflowClient

    from cdp.workspace import use_workspace

    use_workspace(ws)
    client = MlflowClient()
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def mlflow_files(ws: Workspace) -> list[Path]:
    """Every artifact file of every run and of the models they logged."""
    from mlflow import MlflowClient

    runs = mlflow_runs(ws)
    client = MlflowClient()
    roots = [r.info.artifact_uri for r in runs]
    roots += [
        m.artifact_location
        for m in client.search_logged_models(experiment_ids=sorted({r.info.experiment_id for r in runs}))
    ]
    files = []
    for root in roots:
        files += [p for p in Path(root.removeprefix("file://")).rglob("*") if p.is_file()]
    assert files, "fixture runs have no artifacts"
    return files


def mlflow_text(files: list[Path]) -> str:
    chunks = []
    for path in files:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                chunks += [archive.read(n).decode("utf-8", "ignore") for n in archive.namelist()]
        elif path.suffix != ".png":
            chunks.append(path.read_bytes().decode("utf-8", "ignore"))
    return "\n".join(chunks)


# ---- erasure ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def erased(pipeline_ws, tmp_path_factory):
    """A copy of the session workspace with one person erased through the CLI."""
    home = tmp_path_factory.mktemp("erase") / "ws"
    shutil.copytree(pipeline_ws.root, home)
    ws = Workspace(home)
    person = person_view(ws, pick_customer(ws))
    masks = expected_masks(ws, person)
    before = {rel: pd.read_parquet(ws.root / rel) for rel in masks}
    online_before = online_counts(ws, person["customer_id"])
    result = cdp("privacy", "erase", person["raw_email"].upper(), "--yes", home=home)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return {
        "ws": ws,
        "person": person,
        "masks": masks,
        "before": before,
        "online_before": online_before,
        "output": result.stdout + result.stderr,
    }


def test_erase_removes_exactly_the_persons_rows_everywhere(erased):
    ws, person = erased["ws"], erased["person"]
    removed = {}
    for rel, mask in erased["masks"].items():
        after = pd.read_parquet(ws.root / rel)
        expected = erased["before"][rel][~mask].reset_index(drop=True)
        pd.testing.assert_frame_equal(after.reset_index(drop=True), expected, check_dtype=True, obj=rel)
        removed[rel] = int(mask.sum())
    for table in ("crm_contacts", "orders", "order_lines", "consent_events"):
        assert removed[f"staged/{table}.parquet"] > 0, table  # the chosen person really is in these
    assert removed["features/churn_scores.parquet"] == 1
    for table, (total, mine) in erased["online_before"].items():
        now_total, now_mine = online_counts(ws, person["customer_id"])[table]
        assert now_mine == 0 and now_total == total - mine, table
    assert sum(mine for _, mine in erased["online_before"].values()) > 0
    receipt = json.loads(next((ws.root / "privacy" / "receipts").glob("*.json")).read_text())
    for rel, count in removed.items():
        assert receipt["stores"][rel] == count, rel
    assert "models_trained_on_subjects" in receipt


def test_erasure_drops_the_incremental_linking_state(erased):
    """The saved state of `resolve --incremental` holds everyone's identifiers and household keys:
    erasure removes it (the next run rebuilds it from what is left)."""
    ws = erased["ws"]
    assert not (ws.identity / "incremental_state").exists()
    receipt = json.loads(next((ws.root / "privacy" / "receipts").glob("*.json")).read_text())
    assert receipt["stores"]["identity/incremental_state/ (rows; folder removed)"] > 0  # it existed


def test_nothing_of_the_person_is_left_in_any_store(erased, stage_results):
    ws, person = erased["ws"], erased["person"]
    needles = person["needles"] | person["all_keys"]
    leftovers = {}
    for folder in ("staged", "identity", "features", "privacy"):
        for path in (ws.root / folder).rglob("*.parquet"):
            hits = string_hits(pd.read_parquet(path), needles)
            if hits:
                leftovers[str(path.relative_to(ws.root))] = hits
    assert not leftovers
    tokens = pd.read_parquet(ws.root / "privacy" / "suppressions.parquet")["token"]
    assert tokens.str.fullmatch(r"[0-9a-f]{64}").all()
    # keyed: hashing the person's identifiers without the workspace's secret finds none of them
    import hashlib

    from cdp.privacy.subjects import privacy_key, token

    key_file = ws.root / "privacy" / "token.key"
    assert key_file.stat().st_mode & 0o077 == 0  # owner-only
    plain = {hashlib.sha256(n.encode()).hexdigest() for n in person["nodes"]}
    assert plain and not plain & set(tokens)
    assert {token(n, privacy_key(ws)) for n in person["nodes"] if not n.startswith("email_sha256:")} <= set(tokens)
    text = mlflow_text(mlflow_files(ws))
    receipts = "".join(p.read_text() for p in (ws.root / "privacy").rglob("*.json"))
    for needle in person["needles"]:
        assert needle not in text and needle not in receipts and needle not in erased["output"]


def workspace_traces(ws: Workspace, needles: set[str]) -> dict[str, list[str]]:
    """Every file of the workspace except raw/ (the retailer's input) and truth/ (synthetic
    answers) holding a needle: Parquet by column values, JSON records included; any other file
    (SQLite online store and MLflow database, JSON, logs, the Feast registry) by its bytes."""
    hits: dict[str, list[str]] = {}
    encoded = {n: n.encode() for n in needles if len(n) >= 6}  # shorter ones match random bytes
    for path in sorted(p for p in ws.root.rglob("*") if p.is_file()):
        rel = path.relative_to(ws.root)
        if rel.parts[0] in ("raw", "truth"):
            continue
        if path.suffix == ".parquet":
            found = string_hits(pd.read_parquet(path), needles)
        else:
            data = path.read_bytes()
            found = [n for n, b in encoded.items() if b in data]
        if found:
            hits[str(rel)] = found
    return hits


def test_no_file_anywhere_in_the_workspace_carries_the_person(erased):
    """The whole-workspace scan (issue 16 target 2): not only the stores erasure knows about."""
    ws, person = erased["ws"], erased["person"]
    assert person["needles"]
    assert workspace_traces(ws, person["needles"] | person["all_keys"]) == {}


def test_erasure_reaches_the_superseded_versions_of_updated_records(pipeline_ws, tmp_path):
    """A daily drop updates the person's CRM record: the earlier version moves to
    staged/crm_contacts_history.parquet with their old address. Subject access lists it; erasure
    removes it (and only it) and the whole workspace carries no trace of them afterwards."""
    from cdp import pipeline

    home = tmp_path / "ws"
    shutil.copytree(pipeline_ws.root, home)
    ws = Workspace(home)
    person = person_view(ws, pick_customer(ws))
    source = next(p for p in (ws.raw / "crm_contacts.csv", ws.raw / "crm_contacts.parquet") if p.exists())
    raw = pd.read_csv(source, dtype=str) if source.suffix == ".csv" else pd.read_parquet(source).astype("string")
    mine = raw["record_id"].str.strip().isin(person["keys"]["crm_contacts"])
    other = raw.index[~mine][:3]  # someone else's records are updated in the same drop
    updated = raw.loc[mine | raw.index.isin(other)].copy()
    updated["address_line"] = "1 Moved Street"
    (ws.raw / "crm_contacts").mkdir()
    updated.to_csv(ws.raw / "crm_contacts" / "2099-01-01.csv", index=False)
    pipeline.ingest(ws)
    pipeline.resolve(ws)
    history_path = ws.staged / "crm_contacts_history.parquet"
    history = pd.read_parquet(history_path)
    assert len(history) == len(updated) and string_hits(history, person["needles"])

    code, out = cli(
        "privacy", "export", f"customer:{person['customer_id']}", "--out", str(tmp_path / "x.json"), home=home
    )
    assert code == 0, out
    exported = json.loads((tmp_path / "x.json").read_text())["source_records"]
    assert len(exported["crm_contacts (superseded versions)"]) == int(mine.sum())

    before = workspace_traces(ws, person["needles"] | person["all_keys"])
    assert "staged/crm_contacts_history.parquet" in before
    assert any(not rel.endswith(".parquet") for rel in before), before  # the byte scan finds e.g. the online store

    result = cdp("privacy", "erase", f"customer:{person['customer_id']}", "--yes", home=home)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    after = pd.read_parquet(history_path)
    assert len(after) == len(history) - int(mine.sum()) and not string_hits(after, person["needles"])
    assert workspace_traces(ws, person["needles"] | person["all_keys"]) == {}


def test_reingest_keeps_the_erased_person_out(erased):
    """raw/ still holds them; the suppression list drops their rows, counted, at ingest."""
    from cdp import pipeline

    ws, person = erased["ws"], erased["person"]
    summary = pipeline.ingest(ws)
    for table, counts in summary["tables"].items():
        assert counts["accepted"] + counts["quarantined"] + counts["suppressed"] == counts["read"], table
    assert summary["tables"]["crm_contacts"]["suppressed"] >= len(person["keys"]["crm_contacts"])
    assert summary["tables"]["order_lines"]["suppressed"] > 0
    for table in TABLES:
        rel = f"staged/{table}.parquet"
        staged = pd.read_parquet(ws.root / rel)
        assert not string_hits(staged, person["needles"]), table
        others = erased["before"][rel][~erased["masks"][rel]].reset_index(drop=True)
        pd.testing.assert_frame_equal(staged, others, obj=rel)  # everyone else is back, same source_row
    assert not string_hits(pd.read_parquet(ws.quarantine), person["needles"])


def test_a_lost_or_changed_privacy_key_stops_ingest(erased, tmp_path, monkeypatch):
    """Suppression tokens are keyed: with another key every erased person would silently come
    back. Ingest refuses (exit 1, one line) until the original key is back."""
    home = tmp_path / "ws"
    shutil.copytree(erased["ws"].root, home, ignore=shutil.ignore_patterns("mlartifacts", "features"))
    key_file = home / "privacy" / "token.key"
    original = key_file.read_bytes()
    key_file.unlink()
    lost = cdp("ingest", home=home)
    assert lost.returncode == 1 and "privacy key lost" in lost.stdout, lost.stdout[-2000:] + lost.stderr[-2000:]
    assert not key_file.exists()  # no new key made behind the user's back
    monkeypatch.setenv("CDP_PRIVACY_KEY", "a-different-key")
    changed = cdp("ingest", home=home)
    assert changed.returncode == 1 and "privacy key changed" in changed.stdout, changed.stdout[-2000:]
    assert "Traceback" not in lost.stdout + lost.stderr + changed.stdout + changed.stderr
    monkeypatch.setenv("CDP_PRIVACY_KEY", original.decode().strip())  # the same key, from a secrets manager
    restored = cdp("ingest", home=home)
    assert restored.returncode == 0, restored.stdout[-2000:] + restored.stderr[-2000:]
    assert "suppressed" in restored.stdout


# ---- subject access -------------------------------------------------------------------------


def test_a_quarantined_row_reusing_the_persons_card_with_another_persons_email_is_a_conflict(pipeline_ws, tmp_path):
    """A duplicate-id row (someone else's loyalty record reusing this person's card id) is neither
    exported to nor erased for this person: it is reported as a conflict and kept."""
    from cdp.privacy.erasure import erase_subjects
    from cdp.privacy.subject_access import export_subject
    from cdp.privacy.subjects import subject_for

    home = tmp_path / "ws"
    shutil.copytree(pipeline_ws.root, home)
    ws = Workspace(home)
    nodes = pd.read_parquet(ws.identity / "identifier_map.parquet")
    cards = nodes[nodes["node"].str.startswith("card:")]
    person, card = cards["customer_id"].iloc[0], cards["node"].iloc[0].removeprefix("card:")
    emails = nodes[nodes["node"].str.startswith("email:") & (nodes["customer_id"] != person)]
    other_email = emails["node"].iloc[0].removeprefix("email:")
    quarantine = pd.read_parquet(ws.quarantine)
    planted = {"card_id": card, "first_name": "Other", "last_name": "Person", "email": other_email}
    row = pd.DataFrame(
        [{"table": "loyalty_members", "row": 999_999, "reason": "duplicate row", "record": json.dumps(planted)}]
    )
    pd.concat([quarantine, row], ignore_index=True).to_parquet(ws.quarantine, index=False)

    report = export_subject(ws, subject_for(ws, person), online=False, models=False)
    assert 999_999 not in [r["row"] for r in report["quarantined_records"]]
    assert [(c["table"], c["row"]) for c in report["quarantine_conflicts"]] == [("loyalty_members", 999_999)]
    assert other_email not in json.dumps(report)  # nothing of the other person is shown

    receipt = erase_subjects(ws, [subject_for(ws, person)], models=False)
    assert receipt["quarantine_conflicts_kept"] == 1
    assert 999_999 in set(pd.read_parquet(ws.quarantine)["row"])


def test_a_shared_phone_is_reported_and_other_sharers_records_are_kept(pipeline_ws, tmp_path):
    """A person whose phone is shared (blocked by identity resolution): their own records go, every
    other record carrying the phone stays (another person's, or nobody's: counted for review), and
    the phone is not suppressed (it would drop the other sharer's future records at ingest)."""
    from cdp.privacy.erasure import erase_subjects, load_suppressions
    from cdp.privacy.subjects import TABLE_NODES, privacy_key, staged_rows_carrying, subject_for, token

    home = tmp_path / "ws"
    shutil.copytree(pipeline_ws.root, home)
    ws = Workspace(home)
    blocked = pd.read_parquet(ws.identity / "blocked_identifiers.parquet")
    phones = set(blocked.loc[blocked["node"].str.startswith("phone:"), "node"])
    identity = pd.read_parquet(ws.identity / "identity_map.parquet")
    crm = pd.read_parquet(ws.staged / "crm_contacts.parquet")
    carriers = crm[("phone:" + crm["phone"].astype(str)).isin(phones)]
    assert len(carriers), "the synthetic data should contain shared phones"
    record = str(carriers["record_id"].iloc[0])
    phone = "phone:" + str(carriers["phone"].iloc[0])
    person = identity.loc[
        (identity["source_table"] == "crm_contacts") & (identity["source_key"].astype(str) == record), "customer_id"
    ].iloc[0]
    before = {t: frame[mask] for t, _, frame, mask in staged_rows_carrying(ws, {phone})}
    theirs = {k: set(v) for k, v in subject_for(ws, person).records.groupby("source_table")["source_key"]}

    receipt = erase_subjects(ws, [subject_for(ws, person)], models=False)
    assert receipt["shared_identifiers_kept"]["identifiers"] >= 1
    kept = 0
    for table, _, frame, mask in staged_rows_carrying(ws, {phone}):
        key = TABLE_NODES[table][0] if table in TABLE_NODES else None
        if key is None or table not in before:
            continue
        others = before[table][~before[table][key].astype(str).isin(theirs.get(table, set()))]
        assert set(frame.loc[mask, key].astype(str)) == set(others[key].astype(str)), table  # none of theirs left
        kept += len(others)
    assert kept > 0  # the other sharer's records are all still there
    assert token(phone, privacy_key(ws)) not in load_suppressions(ws)


def test_export_holds_everything_about_the_person(pipeline_ws):
    """In-process (the CLI path is the same two calls; its error paths are tested below)."""
    from cdp.privacy.subject_access import export_subject
    from cdp.privacy.subjects import find_subject

    person = person_view(pipeline_ws, pick_customer(pipeline_ws))
    masks = expected_masks(pipeline_ws, person)
    phone = next(n for n in person["nodes"] if n.startswith("phone:"))[6:]
    report = json.loads(
        json.dumps(export_subject(pipeline_ws, find_subject(pipeline_ws, f"phone:{phone}")), default=str)
    )
    assert report["customer_id"] == person["customer_id"]
    for table in TABLES:
        assert len(report["source_records"].get(table, [])) == masks[f"staged/{table}.parquet"].sum(), table
    assert len(report["quarantined_records"]) == masks["staged/quarantine.parquet"].sum()
    assert len(report["identity"]["records"]) == masks["identity/identity_map.parquet"].sum()
    assert {n for n in report["identity"]["identifiers"] if not n.startswith("email_sha256:")} == person["nodes"]
    for view, rows in report["features_offline"].items():
        assert len(rows) == masks[f"features/{view}.parquet"].sum(), view
    for view in ("customer_profile", "purchase_behaviour", "consent_state"):
        assert report["features_offline"][view], view
    for view, rows in report["scores_offline"].items():
        assert len(rows) == masks[f"features/{view}.parquet"].sum(), view
    assert len(report["scores_offline"]["churn_scores"]) == 1
    online = report["features_online"]
    assert online["customer_id"] == person["customer_id"]
    assert online["customer_profile__tenure_days"] is not None
    assert online["churn_scores__churn_probability"] == pytest.approx(
        report["scores_offline"]["churn_scores"][0]["churn_probability"]
    )
    assert len(report["consent"]["history"]) == masks["staged/consent_events.parquet"].sum()
    assert set(report["consent"]["now"]) == {"email_marketing", "sms_marketing", "profiling", "third_party_sharing"}
    assert report["models_trained_on_subject"]  # the churn run (population not recorded yet: 'unknown')


# ---- bad input, retention, leaks ------------------------------------------------------------


def raw_pii(ws: Workspace) -> set[str]:
    """Raw emails, phones and full names of every person in the workspace's raw data."""
    pii = set()
    for table in ("crm_contacts", "loyalty_members", "online_accounts"):
        raw = pd.read_parquet(ws.raw / f"{table}.parquet")
        pii |= set(raw["email"].dropna()) | {e for e in raw["email"].dropna().map(canonical_email) if e}
        pii |= {p for p in raw["phone"].dropna() if len(re.sub(r"\D", "", p)) >= 7}
        pii |= {p for p in raw["phone"].dropna().map(e164_phone) if p}
        names = raw[["first_name", "last_name"]].dropna()
        pii |= set(names["first_name"] + " " + names["last_name"])
    return {p for p in pii if len(p) >= 6}


def test_bad_identifiers_are_clear_errors_without_pii(pipeline_ws, erased, stage_results):
    pii = raw_pii(pipeline_ws)
    outputs = [erased["output"]]
    for args, message in (
        (["export", "ann@@example"], "identifier: malformed email 'a***@***'"),
        (["erase", "nobody.here@example.com"], "identifier: email n***@***: no customer"),
        (["export", "phone:12"], "identifier: invalid phone number (2 digits)"),
        (["purge", "--inactive-days", "30", "--as-of", "soon"], "--as-of: not a timestamp"),
    ):
        code, output = cli("privacy", *args, home=pipeline_ws.root)
        assert code == 2, (args, output)
        assert message in " ".join(output.split()) and "Traceback" not in output
        outputs.append(output)
    code, output = cli("privacy", "purge", "--inactive-days", "365", home=pipeline_ws.root)
    assert code == 0 and "dry run" in output
    outputs.append(output)
    runs = mlflow_runs(pipeline_ws)
    assert stage_results["train"]["run_id"] in {r.info.run_id for r in runs}
    outputs += [json.dumps([r.data.params, r.data.tags, list(r.data.metrics)]) for r in runs]
    outputs.append(mlflow_text(mlflow_files(pipeline_ws)))
    text = "\n".join(outputs)
    # a digits-only phone must stand alone: inside a model file's float (7.6544776465743762) it is chance
    leaked = sorted(p for p in pii if (re.search(rf"(?<![\d.]){p}(?!\d)", text) if p.isdigit() else p in text))
    assert not leaked, f"{len(leaked)} raw identifiers/names in logs or MLflow"


def test_purge_erases_inactive_customers_in_batches(pipeline_ws, tmp_path):
    from cdp.privacy.erasure import erase_subjects, inactive_customers, last_activity
    from cdp.privacy.subjects import subjects_for

    last = last_activity(pipeline_ws)
    stale = inactive_customers(pipeline_ws, 365)
    assert 0 < len(stale) < len(last)
    assert (last[stale] < last.max() - pd.Timedelta(days=365)).all()
    assert set(inactive_customers(pipeline_ws, 730)) <= set(stale)
    home = tmp_path / "ws"
    shutil.copytree(pipeline_ws.root, home)
    ws = Workspace(home)
    chosen = stale[:3]
    receipt = erase_subjects(ws, subjects_for(ws, chosen).values(), models=False)
    assert receipt["subjects"] == 3
    for path in ws.features.glob("*.parquet"):
        assert not pd.read_parquet(path)["customer_id"].isin(chosen).any()
    assert not pd.read_parquet(ws.identity / "identity_map.parquet")["customer_id"].isin(chosen).any()
    kept = pd.read_parquet(ws.identity / "identity_map.parquet")["customer_id"].nunique()
    assert kept == pd.read_parquet(pipeline_ws.identity / "identity_map.parquet")["customer_id"].nunique() - 3


def test_training_population_marks_the_models_trained_on_a_person(pipeline_ws, tmp_path):
    """record_training_population -> runs_trained_on finds the run (hashed ids only)."""
    import mlflow
    from mlflow import MlflowClient

    from cdp.privacy.erasure import withdraw_scores
    from cdp.privacy.subjects import record_training_population, runs_trained_on
    from cdp.workspace import use_workspace

    home = tmp_path / "ws"
    shutil.copytree(pipeline_ws.root, home)
    ws = Workspace(home)
    scored = sorted(pd.read_parquet(ws.features / "churn_scores.parquet")["customer_id"])
    use_workspace(ws)
    client = MlflowClient()
    experiment = client.create_experiment("privacy_test", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    assert record_training_population(ws, run_id, scored[:10] + scored[:3]) == 10
    client.create_registered_model("privacy_test")
    client.create_model_version("privacy_test", source=f"runs:/{run_id}/model", run_id=run_id)
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="privacy")
    text = "".join(p.read_bytes().decode("latin-1") for p in Path(local).rglob("*") if p.is_file())
    assert not any(c in text for c in scored[:10])
    hit = [r for r in runs_trained_on(ws, [scored[0]]) if r["run_id"] == run_id]
    assert hit and hit[0]["model_versions"] == ["privacy_test/1"] and hit[0]["population"] == "contains subject"
    assert not [r for r in runs_trained_on(ws, [scored[-1]]) if r["run_id"] == run_id]
    removed = withdraw_scores(ws, scored[:2])  # profiling withdrawn: old scores go, profiles stay
    assert removed["features/churn_scores.parquet"] == 2 and removed["feast online store (feature rows)"] >= 2 * 3
    assert len(pd.read_parquet(ws.features / "churn_scores.parquet")) == len(scored) - 2


def test_enrichment_retention_is_configurable(monkeypatch):
    from cdp.features.views import ENRICHMENT_MAX_AGE_DAYS, enrichment_max_age_days

    monkeypatch.delenv("CDP_ENRICHMENT_MAX_AGE_DAYS", raising=False)
    assert enrichment_max_age_days() == ENRICHMENT_MAX_AGE_DAYS
    monkeypatch.setenv("CDP_ENRICHMENT_MAX_AGE_DAYS", "365")
    assert enrichment_max_age_days() == 365
    monkeypatch.setenv("CDP_ENRICHMENT_MAX_AGE_DAYS", "two years")
    with pytest.raises(ValueError, match=r"CDP_ENRICHMENT_MAX_AGE_DAYS=.two years.: Input should be a valid integer"):
        enrichment_max_age_days()


def test_erasure_with_the_online_store_down_suppresses_first_and_resumes_from_the_journal(
    pipeline_ws, tmp_path, monkeypatch
):
    """Redis unreachable during erase: exit 1 with one line saying what to run, the suppression and
    the journal are already written, no receipt yet; once Redis answers, `--resume` finishes the
    online store from the journal and writes the receipt."""
    from cdp.features.build import load_snapshots
    from cdp.featurestore.store import materialize_latest, open_store
    from cdp.privacy.erasure import journal_dir, load_suppressions, pending_erasures
    from cdp.privacy.subjects import privacy_key, token
    from tests.conftest import free_port
    from tests.services import redis_server

    home = tmp_path / "ws"
    shutil.copytree(pipeline_ws.root, home)
    ws = Workspace(home)
    person = person_view(ws, pick_customer(ws))
    with redis_server(free_port(), tmp_path) as address:
        monkeypatch.setenv("CDP_ONLINE_STORE", "redis")
        monkeypatch.setenv("CDP_REDIS", address)
        materialize_latest(ws, open_store(ws), load_snapshots(ws)[0][-1])

        def served() -> object:
            rows = [{"customer_id": person["customer_id"]}]
            return (
                open_store(ws).get_online_features(["customer_profile:tenure_days"], rows).to_dict()["tenure_days"][0]
            )

        assert served() is not None
        monkeypatch.setenv("CDP_REDIS", f"127.0.0.1:{free_port()}")  # the online store is down
        down = cdp("privacy", "erase", person["raw_email"], "--yes", home=home)
        assert down.returncode == 1, down.stdout[-2000:] + down.stderr[-2000:]
        assert "--resume" in down.stdout and "Traceback" not in down.stdout + down.stderr
        assert token(f"email:{canonical_email(person['raw_email'])}", privacy_key(ws)) in load_suppressions(ws)
        [journal] = pending_erasures(ws)
        assert "online" not in journal["done"] and {"staged", "identity", "features"} <= set(journal["done"])
        assert not (ws.root / "privacy" / "receipts").exists() or not list((ws.root / "privacy" / "receipts").iterdir())
        monkeypatch.setenv("CDP_REDIS", address)  # back up
        assert served() is not None  # still served until the job finishes
        up = cdp("privacy", "erase", "--resume", home=home)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        assert served() is None
        assert pending_erasures(ws) == [] and not list(journal_dir(ws).glob("*.json"))
        receipt = json.loads(
            (ws.root / "privacy" / "receipts" / f"{journal['receipt']['receipt_id']}.json").read_text()
        )
        assert receipt["stores"]["feast online store (feature rows)"] > 0 and "completed_at" in receipt
        import redis

        host, port = address.rsplit(":", 1)
        client = redis.Redis(host=host, port=int(port))
        keys = list(client.scan_iter(count=1000))
        assert keys  # everyone else is still served
        assert not [k for k in keys if person["customer_id"].encode() in k]
        assert workspace_traces(ws, person["needles"] | person["all_keys"]) == {}


# ---- key rotation (cdp privacy rekey) ---------------------------------------------------------


def _rekey_copy(erased, home: Path) -> Path:
    shutil.copytree(erased["ws"].root, home, ignore=shutil.ignore_patterns("features"))
    return home


def _tokens(home: Path) -> pd.DataFrame:
    return pd.read_parquet(home / "privacy" / "suppressions.parquet").sort_values("token").reset_index(drop=True)


def test_rekey_then_ingest_keeps_the_person_out_under_the_new_key_and_refuses_the_old(erased, tmp_path, monkeypatch):
    monkeypatch.delenv("CDP_PRIVACY_KEY", raising=False)
    home = _rekey_copy(erased, tmp_path / "ws")
    old_key = (home / "privacy" / "token.key").read_bytes().strip()
    before = _tokens(home)
    dry = cdp("privacy", "rekey", home=home)
    assert (
        dry.returncode == 0
        and "dry run" in dry.stdout
        and (home / "privacy" / "token.key").read_bytes().strip() == old_key
    )
    done = cdp("privacy", "rekey", "--yes", home=home)
    assert done.returncode == 0 and "rekeyed" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    new_key = (home / "privacy" / "token.key").read_bytes().strip()
    after = _tokens(home)
    assert new_key != old_key and len(after) == len(before) and not set(after["token"]) & set(before["token"])
    assert old_key.decode() not in done.stdout + done.stderr and new_key.decode() not in done.stdout
    assert not (home / "privacy" / "rekey").exists()
    ingested = cdp("ingest", home=home)
    assert ingested.returncode == 0, ingested.stdout[-2000:] + ingested.stderr[-2000:]
    person = erased["person"]
    for table in TABLES:
        assert not string_hits(pd.read_parquet(home / "staged" / f"{table}.parquet"), person["needles"]), table
    assert "of erased people suppressed" in ingested.stdout
    monkeypatch.setenv("CDP_PRIVACY_KEY", old_key.decode())
    refused = cdp("ingest", home=home)
    assert refused.returncode == 1 and "privacy key changed" in refused.stdout, refused.stdout[-2000:]
    assert "Traceback" not in refused.stdout + refused.stderr


def _secrets_manager_rekey(erased, tmp_path: Path, monkeypatch) -> tuple[Path, Path, str]:
    """Two copies of the erased workspace, both keys from the environment (so two runs make the
    same tokens); the reference copy rekeyed without interruption. (reference, home, old key)."""
    reference = _rekey_copy(erased, tmp_path / "reference")
    home = _rekey_copy(erased, tmp_path / "ws")
    old_key = (home / "privacy" / "token.key").read_text().strip()
    monkeypatch.setenv("CDP_PRIVACY_OLD_KEY", old_key)
    monkeypatch.setenv("CDP_PRIVACY_KEY", "the-new-key-from-a-secrets-manager")
    assert cdp("privacy", "rekey", "--yes", home=reference).returncode == 0
    return reference, home, old_key


def test_a_killed_rekey_blocks_other_commands_and_a_rerun_finishes_it(erased, tmp_path, monkeypatch):
    """Secrets-manager mode (both keys from the environment, so two runs make the same tokens): a
    SIGKILL right after the first file was published under the new key leaves a half-rekeyed
    workspace; ingest refuses (exit 1) and the re-run ends equal to an uninterrupted rekey."""
    import signal

    reference, home, old_key = _secrets_manager_rekey(erased, tmp_path, monkeypatch)
    staged = 1 + len(list((home / "privacy" / "receipts").glob("*.json")))
    staged += len(list((home / "mlartifacts").rglob("training_population.parquet")))
    env = {k: v for k, v in os.environ.items() if k not in ("CDP_HOME", "MLFLOW_TRACKING_URI")}
    env["CDPTEST_KILL_AT"] = f"after:{staged + 2}"  # staged files, the journal, then the first copy
    killed = subprocess.run(
        [CDP, "privacy", "rekey", "--yes", "--home", str(home)], capture_output=True, text=True, env=env, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:]
    assert (home / "privacy" / "rekey" / "journal.json").exists()
    blocked = cdp("ingest", home=home)
    assert blocked.returncode == 1 and "rekey interrupted" in blocked.stdout, blocked.stdout[-2000:]
    finished = cdp("privacy", "rekey", "--yes", home=home)
    assert finished.returncode == 0 and "finished the interrupted rekey" in finished.stdout, finished.stdout[-2000:]
    pd.testing.assert_frame_equal(_tokens(home), _tokens(reference))
    assert not (home / "privacy" / "token.key").exists() and not (home / "privacy" / "rekey").exists()
    for receipt in (reference / "privacy" / "receipts").glob("*.json"):
        assert json.loads(receipt.read_text()) == json.loads((home / "privacy" / "receipts" / receipt.name).read_text())
    assert cdp("ingest", home=home).returncode == 0
    monkeypatch.delenv("CDP_PRIVACY_OLD_KEY")
    monkeypatch.setenv("CDP_PRIVACY_KEY", old_key)
    assert cdp("ingest", home=home).returncode == 1


def test_a_rekey_killed_before_its_commit_point_changes_nothing_live(erased, tmp_path, monkeypatch):
    """Killed while staging (the first staged file written, no journal yet): the live workspace is
    still entirely under the old key, other commands run, and a re-run starts over and finishes."""
    import signal

    reference, home, old_key = _secrets_manager_rekey(erased, tmp_path, monkeypatch)
    before = _tokens(home)
    env = {k: v for k, v in os.environ.items() if k not in ("CDP_HOME", "MLFLOW_TRACKING_URI")}
    env["CDPTEST_KILL_AT"] = "after:1"
    killed = subprocess.run(
        [CDP, "privacy", "rekey", "--yes", "--home", str(home)], capture_output=True, text=True, env=env, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:]
    assert (home / "privacy" / "rekey").exists() and not (home / "privacy" / "rekey" / "journal.json").exists()
    pd.testing.assert_frame_equal(_tokens(home), before)
    monkeypatch.setenv("CDP_PRIVACY_KEY", old_key)  # the old key is still the live one
    monkeypatch.delenv("CDP_PRIVACY_OLD_KEY")
    assert cdp("ingest", home=home).returncode == 0
    monkeypatch.setenv("CDP_PRIVACY_OLD_KEY", old_key)
    monkeypatch.setenv("CDP_PRIVACY_KEY", "the-new-key-from-a-secrets-manager")
    again = cdp("privacy", "rekey", "--yes", home=home)
    assert again.returncode == 0 and "rekeyed" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
    pd.testing.assert_frame_equal(_tokens(home), _tokens(reference))
    assert not (home / "privacy" / "rekey").exists()


def test_serving_refuses_to_answer_when_the_key_did_not_make_the_suppression_list(erased, monkeypatch):
    """With a changed key an erased person's token would not match: the service answers 503, not them."""
    from bentoml.exceptions import ServiceUnavailable

    from cdp.serving.erased import ErasedCustomers

    cid = erased["person"]["customer_id"]
    monkeypatch.delenv("CDP_PRIVACY_KEY", raising=False)
    assert cid in ErasedCustomers(erased["ws"]) and "cus_nobody" not in ErasedCustomers(erased["ws"])
    monkeypatch.setenv("CDP_PRIVACY_KEY", "a-different-key")
    with pytest.raises(ServiceUnavailable, match="privacy key changed"):
        assert cid in ErasedCustomers(erased["ws"])
