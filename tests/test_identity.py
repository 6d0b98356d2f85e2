"""Identity resolution v1 on hand-made staged tables."""
from __future__ import annotations

import pandas as pd
import pytest

from cdp.paths import Workspace
from profiles.identity import ResolveConfig, customer_id_for, resolve


def _write(ws: Workspace, table: str, rows: list[dict]) -> None:
    ws.staged.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(ws.staged / f"{table}.parquet", index=False)


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    ws = Workspace(tmp_path)
    _write(ws, "crm_contacts", [
        {"record_id": "R1", "email_norm": "ann@x.com", "phone_e164": "+12127341234"},
        {"record_id": "R2", "email_norm": None, "phone_e164": "+12127341234"},      # same phone -> Ann
        {"record_id": "R3", "email_norm": "bob@x.com", "phone_e164": None},
        {"record_id": "R4", "email_norm": None, "phone_e164": None},               # nothing to link on
    ])
    _write(ws, "loyalty_members", [
        {"card_id": "L1", "email_norm": "bob@x.com", "phone_e164": None},
    ])
    _write(ws, "online_accounts", [
        {"account_id": "A1", "email_norm": "ann@x.com", "phone_e164": None},
    ])
    # A store's placeholder phone on 30 different people's cards must not merge them.
    orders = [{"order_id": f"O{i}", "card_id": f"LX{i}", "account_id": None, "email_norm": None,
               "phone_e164": "+12129990000"} for i in range(30)]
    orders += [{"order_id": "O-bob", "card_id": "L1", "account_id": None, "email_norm": None, "phone_e164": None},
               {"order_id": "O-anon", "card_id": None, "account_id": None, "email_norm": None, "phone_e164": None},
               {"order_id": "O-zero", "card_id": None, "account_id": None, "email_norm": None,
                "phone_e164": "+10000000000"}]
    _write(ws, "orders", orders)
    _write(ws, "web_events", [
        {"event_id": "W1", "account_id": "A1", "device_id": "D1"},
        {"event_id": "W2", "account_id": None, "device_id": "D1"},   # anonymous event on Ann's device
    ])
    return ws


def _customers(ws: Workspace) -> dict[tuple[str, str], str]:
    frame = pd.read_parquet(ws.identity / "identity_map.parquet")
    return {(t, k): c for t, k, c in zip(frame["source_table"], frame["source_key"], frame["customer_id"])}


def test_links_on_shared_identifiers(ws):
    resolve(ws)
    ids = _customers(ws)
    ann = ids[("crm_contacts", "R1")]
    assert ids[("crm_contacts", "R2")] == ann
    assert ids[("online_accounts", "A1")] == ann
    assert ids[("web_events", "W2")] == ann  # device seen logged in as Ann
    assert ids[("loyalty_members", "L1")] == ids[("crm_contacts", "R3")] == ids[("orders", "O-bob")]
    assert ids[("crm_contacts", "R3")] != ann
    assert ids[("crm_contacts", "R4")] not in {ann, ids[("crm_contacts", "R3")]}


def test_placeholder_and_shared_phone_do_not_merge(ws):
    summary = resolve(ws, ResolveConfig(max_fanout=5))
    ids = _customers(ws)
    placeholder_customers = {ids[("orders", f"O{i}")] for i in range(30)}
    assert len(placeholder_customers) == 30
    blocked = pd.read_parquet(ws.identity / "blocked_identifiers.parquet")
    assert "phone:+12129990000" in set(blocked["node"])
    assert summary.blocked_identifiers >= 1


def test_unlinkable_records_are_counted_not_mapped(ws):
    summary = resolve(ws)
    ids = _customers(ws)
    assert ("orders", "O-anon") not in ids
    assert ("orders", "O-zero") not in ids  # only a placeholder phone: never merged with anyone
    assert summary.anonymous_records >= 2


def test_ids_are_stable_across_reruns(ws):
    resolve(ws)
    first = _customers(ws)
    resolve(ws)
    assert _customers(ws) == first
    assert customer_id_for("email:ann@x.com") == customer_id_for("email:ann@x.com")
