"""Incremental identity resolution: new records join the existing graph without a full re-run."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from cdp.identity.evaluate import cluster_metrics
from cdp.identity.incremental import resolve_incremental
from cdp.identity.resolve import resolve
from cdp.workspace import Workspace

BASE = {
    "first_name": None,
    "last_name": None,
    "date_of_birth": None,
    "address_line": None,
    "postcode": None,
    "email_norm": None,
    "phone_e164": None,
}
NO_IDS = {"card_id": None, "account_id": None, "email_norm": None, "phone_e164": None}


def _write(ws: Workspace, table: str, rows: list[dict]) -> None:
    ws.staged.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(ws.staged / f"{table}.parquet", index=False)


def _ids(ws: Workspace) -> dict[tuple[str, str], str]:
    frame = pd.read_parquet(ws.identity / "identity_map.parquet")
    return {(t, k): c for t, k, c in zip(frame["source_table"], frame["source_key"], frame["customer_id"])}


CRM = [
    {
        "record_id": "A1",
        "first_name": "Ann",
        "last_name": "Berg",
        "date_of_birth": "1980-02-03",
        "email_norm": "ann@x.com",
        "phone_e164": "+12127341111",
    },
    {
        "record_id": "C1",
        "first_name": "Carl",
        "last_name": "Dunn",
        "date_of_birth": "1975-05-06",
        "email_norm": "carl@x.com",
    },
    {
        "record_id": "D1",
        "first_name": "Dora",
        "last_name": "Dunn",
        "date_of_birth": "1950-01-09",
        "email_norm": "dd@y.com",
        "phone_e164": "+12127342222",
        "postcode": "10001",
    },
    {
        "record_id": "D2",
        "first_name": "Dora",
        "last_name": "Dunn",
        "date_of_birth": "1950-01-09",
        "phone_e164": "+12127342222",
    },
    {
        "record_id": "E1",
        "first_name": "Eve",
        "last_name": "Falk",
        "date_of_birth": "1990-07-08",
        "email_norm": "eve@x.com",
    },
]
ORDERS = [
    {"order_id": "O1", **NO_IDS, "email_norm": "ann@x.com"},
    {"order_id": "O2", **NO_IDS, "phone_e164": "+12127342222"},
]


@pytest.fixture()
def base(tmp_path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    _write(ws, "crm_contacts", [{**BASE, **r} for r in CRM])
    _write(ws, "orders", ORDERS)
    resolve(ws)
    return ws


def _add(ws: Workspace, crm: list[dict] = (), orders: list[dict] = ()) -> None:
    _write(ws, "crm_contacts", [{**BASE, **r} for r in [*CRM, *crm]])
    _write(ws, "orders", [*ORDERS, *orders])


def test_new_records_join_existing_customers_and_keep_every_id(base):
    before = _ids(base)
    assert before[("crm_contacts", "C1")] != before[("crm_contacts", "D1")]
    _add(
        base,
        crm=[{"record_id": "A9", "first_name": "Ann", "last_name": "Berg", "email_norm": "ann@x.com"}],
        orders=[
            {"order_id": "O9", **NO_IDS, "email_norm": "ann@x.com"},
            {"order_id": "O10", **NO_IDS, "email_norm": "new@z.com"},
            {"order_id": "O11", **NO_IDS, "email_norm": "new@z.com"},
        ],
    )
    summary = resolve_incremental(base)
    after = _ids(base)
    assert all(after[k] == v for k, v in before.items())  # every existing id kept
    assert after[("orders", "O9")] == after[("crm_contacts", "A9")] == before[("crm_contacts", "A1")]
    assert after[("orders", "O10")] == after[("orders", "O11")] not in set(before.values())
    assert summary.new_records == 4 and summary.linked_to_existing == 2 and summary.new_customers == 1
    assert summary.merged_ids == 0
    # nothing new: a second incremental run changes nothing
    again = resolve_incremental(base)
    assert again.new_records == 0 and _ids(base) == after


def test_garbage_and_null_identifiers_never_merge(base):
    before = _ids(base)
    garbage = [
        {"order_id": "G1", **NO_IDS},  # anonymous
        {"order_id": "G2", **NO_IDS, "phone_e164": "+10000000000"},  # placeholder phone
        {"order_id": "G3", **NO_IDS, "phone_e164": "+15555555555", "email_norm": None},
    ]
    crm = [
        {"record_id": "G4", "first_name": "n/a", "last_name": None},  # nothing to link on
        {"record_id": "G5", "first_name": "n/a", "last_name": None, "phone_e164": "+10000000000"},
    ]
    _add(base, crm=crm, orders=garbage)
    summary = resolve_incremental(base)
    after = _ids(base)
    for key in ("G1", "G2", "G3"):
        assert ("orders", key) not in after
    assert after[("crm_contacts", "G4")] != after[("crm_contacts", "G5")]
    assert {after[("crm_contacts", "G4")], after[("crm_contacts", "G5")]}.isdisjoint(before.values())
    assert all(after[k] == v for k, v in before.items())
    assert summary.merged_ids == 0 and summary.linked_to_existing == 0


def test_bridging_record_merges_two_customers_with_history(base):
    before = _ids(base)
    carl, dunn = before[("crm_contacts", "C1")], before[("crm_contacts", "D1")]
    # a new order carrying Carl's email and the D-cluster's phone bridges the two clusters
    _add(base, orders=[{"order_id": "B1", **NO_IDS, "email_norm": "carl@x.com", "phone_e164": "+12127342222"}])
    twin = Workspace(base.root.parent / "twin")
    shutil.copytree(base.root, twin.root)
    summary = resolve_incremental(base)
    after = _ids(base)
    survivor = after[("orders", "B1")]
    assert survivor == dunn  # D-cluster has more records (D1, D2, O2)
    assert after[("crm_contacts", "C1")] == after[("crm_contacts", "D1")] == survivor
    history = pd.read_parquet(base.identity / "id_history.parquet")
    assert ((history["event"] == "merged") & (history["old_id"] == carl) & (history["new_id"] == dunn)).any()
    assert summary.merged_ids == 1
    assert carl not in set(pd.read_parquet(base.identity / "identifier_map.parquet")["customer_id"])
    resolve_incremental(twin)  # deterministic: same result on a copy
    assert _ids(twin) == after


def test_incremental_needs_a_previous_full_run(tmp_path):
    ws = Workspace(tmp_path)
    _write(ws, "orders", ORDERS)
    with pytest.raises(FileNotFoundError, match=r"identity_map\.parquet.*cdp resolve"):
        resolve_incremental(ws)


TABLES = {
    "crm_contacts": "record_id",
    "loyalty_members": "card_id",
    "online_accounts": "account_id",
    "orders": "order_id",
    "service_interactions": "interaction_id",
    "marketing_sends": "send_id",
    "web_events": "event_id",
}


def test_incremental_agrees_with_a_full_rerun(pipeline_ws, tmp_path):
    """Hold out 5% of every linkable table, resolve the rest, add the held-out rows back
    incrementally, and compare with a full resolve of everything."""
    inc, full = Workspace(tmp_path / "inc"), Workspace(tmp_path / "full")
    for ws in (inc, full):
        shutil.copytree(pipeline_ws.staged, ws.staged)
        shutil.copytree(pipeline_ws.truth, ws.truth)
    rng = np.random.default_rng(3)
    held = {}
    for table in TABLES:
        frame = pd.read_parquet(inc.staged / f"{table}.parquet")
        out = rng.random(len(frame)) < 0.05
        held[table] = frame
        frame[~out].to_parquet(inc.staged / f"{table}.parquet", index=False)
    resolve(inc)
    before = _ids(inc)
    for table, frame in held.items():
        frame.to_parquet(inc.staged / f"{table}.parquet", index=False)
    slow = Workspace(tmp_path / "slow")
    shutil.copytree(inc.root, slow.root)
    summary = resolve_incremental(inc)
    assert summary.new_records > 500
    assert resolve_incremental(slow, use_state=False) == summary  # saved state == reading every record
    _assert_same_outputs(inc, slow)
    after = _ids(inc)
    assert set(before) <= set(after)
    history = pd.read_parquet(inc.identity / "id_history.parquet")
    merges = set(
        zip(history.loc[history["event"] == "merged", "old_id"], history.loc[history["event"] == "merged", "new_id"])
    )
    changed = {(v, after[k]) for k, v in before.items() if after[k] != v}
    assert changed <= merges  # an id only changes by a recorded merge
    assert len(changed) == summary.merged_ids
    resolve(full)
    a = pd.read_parquet(inc.identity / "identity_map.parquet")
    b = pd.read_parquet(full.identity / "identity_map.parquet")
    both = a.merge(b, on=["source_table", "source_key"], how="outer", suffixes=("_inc", "_full"))
    unmapped = both["customer_id_full"].isna()  # in one map only: a singleton there
    both.loc[unmapped, "customer_id_full"] = "single:" + both.index[unmapped].astype(str)
    agreement = cluster_metrics(both.rename(columns={"customer_id_inc": "pred", "customer_id_full": "true"}))
    print("incremental vs full:", agreement.to_dict(), summary.to_dict())
    # observed on the 1.5k-person fixture: pairwise F1 0.9995, B-cubed precision 0.998, recall 1.0
    assert agreement.pairwise_f1 >= 0.995
    assert agreement.bcubed_precision >= 0.99 and agreement.bcubed_recall >= 0.99


def test_cli_resolve_incremental(base):
    from typer.testing import CliRunner

    from cdp.cli.app import app

    _add(base, orders=[{"order_id": "O9", **NO_IDS, "email_norm": "eve@x.com"}])
    result = CliRunner().invoke(app, ["resolve", "--incremental", "--home", str(base.root)])
    assert result.exit_code == 0, result.output
    assert "linked_to_existing" in result.output
    assert _ids(base)[("orders", "O9")] == _ids(base)[("crm_contacts", "E1")]
    empty = CliRunner().invoke(app, ["resolve", "--incremental", "--home", str(base.root.parent / "nothing")])
    assert empty.exit_code == 2 and "cdp resolve" in empty.output


def test_new_rows_are_placed_as_a_full_sort_would_place_them():
    from cdp.identity.incremental import _insert_sorted, _retire

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "source_table": rng.choice(["crm_contacts", "orders", "web_events"], 3000),
            "source_key": [f"K{i:06d}" for i in rng.integers(0, 10**6, 3000)],
            "customer_id": "old",
        }
    ).drop_duplicates(["source_table", "source_key"])
    new = frame.sample(200, random_state=1).assign(customer_id="new")
    old = frame.drop(new.index).sort_values(["source_table", "source_key"]).reset_index(drop=True)
    expected = pd.concat([old, new]).sort_values(["source_table", "source_key"]).reset_index(drop=True)
    assert _insert_sorted(old, new).equals(expected)
    assert _insert_sorted(old.sample(frac=1, random_state=2), new).equals(expected)  # unordered input: sorted
    assert _retire(pd.Series(["a", "b", "c"]), {"b": "a"}).tolist() == ["a", "a", "c"]


OUTPUTS = ("identity_map", "identifier_map", "id_history", "households")


def _assert_same_outputs(a: Workspace, b: Workspace) -> None:
    for name in OUTPUTS:
        x, y = (pd.read_parquet(ws.identity / f"{name}.parquet") for ws in (a, b))
        if name == "id_history":  # resolved_at is the wall clock
            x, y = x.drop(columns="resolved_at"), y.drop(columns="resolved_at")
        pd.testing.assert_frame_equal(x, y, check_dtype=False, obj=name)
    guards = [
        pd.read_parquet(ws.identity / "blocked_identifiers.parquet")
        .sort_values(["guard", "node"])
        .reset_index(drop=True)
        for ws in (a, b)
    ]
    pd.testing.assert_frame_equal(*guards, obj="blocked_identifiers")


def test_saved_state_gives_the_same_result_as_reading_every_record(base):
    """The fast path (incremental_state/ saved by the last run) against reading and guarding every
    record (use_state=False), over two incremental runs in a row: new records that make an
    existing phone too shared (fan-out), bridge clusters, and earlier unmapped records."""
    assert (base.identity / "incremental_state" / "nodes.parquet").exists()
    slow = Workspace(base.root.parent / "slow")
    shutil.copytree(base.root, slow.root)
    first = [
        {"order_id": f"F{i}", **NO_IDS, "email_norm": f"f{i}@q.com", "phone_e164": "+12127341111"} for i in range(13)
    ]  # Ann's phone now on 14 emails: blocked
    second = [
        {"order_id": "B1", **NO_IDS, "email_norm": "carl@x.com", "phone_e164": "+12127342222"},
        {"order_id": "B2", **NO_IDS, "email_norm": "f3@q.com"},
        {"order_id": "G1", **NO_IDS},
    ]
    crm = [
        {
            "record_id": "A9",
            "first_name": "Ann",
            "last_name": "Berg",
            "email_norm": "ann@x.com",
            "address_line": "1 Elm St",
            "postcode": "10001",
        },
        {
            "record_id": "C9",
            "first_name": "Cora",
            "last_name": "Berg",
            "address_line": "1 Elm St",
            "postcode": "10001",
            "phone_e164": "+12127349999",
        },
    ]
    summaries = []
    for crm_rows, orders in (([], first), (crm, first + second)):
        for ws in (base, slow):
            _add(ws, crm=crm_rows, orders=orders)
        summaries.append((resolve_incremental(base), resolve_incremental(slow, use_state=False)))
        _assert_same_outputs(base, slow)
    (fast1, slow1), (fast2, slow2) = summaries
    assert fast1 == slow1 and fast2 == slow2
    assert fast1.identifiers_now_guarded == 1 and fast1.new_records == 13
    assert fast2.merged_ids == 1 and fast2.new_records == 4  # G1 carries no identifier
    blocked = pd.read_parquet(base.identity / "blocked_identifiers.parquet")
    assert "phone:+12127341111" in set(blocked.loc[blocked["guard"] == "blocked", "node"])
