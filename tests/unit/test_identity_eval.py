"""Cluster metrics on hand-made predictions."""

from __future__ import annotations

import pandas as pd
import pytest

from cdp.identity.evaluate import cluster_metrics, duplicate_rates


def _frame(pred, true, table="crm_contacts"):
    return pd.DataFrame({"pred": pred, "true": true, "source_table": table})


def test_perfect_clustering():
    m = cluster_metrics(_frame(["a", "a", "b", None], ["p", "p", "q", "r"]))
    assert m.pairwise_precision == m.pairwise_recall == m.pairwise_f1 == 1.0
    assert m.bcubed_precision == m.bcubed_recall == 1.0
    assert m.overmerged_entities == m.split_entities == 0


def test_overmerge_and_split_counts():
    # p split over a/b; q merged into b with p's second record
    m = cluster_metrics(_frame(["a", "b", "b", "c"], ["p", "p", "q", "r"]))
    assert m.pairwise_precision == 0.0 and m.pairwise_recall == 0.0
    assert m.split_entities == 1 and m.overmerged_entities == 2 and m.overmerged_clusters == 1
    assert m.bcubed_precision == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    assert m.bcubed_recall == pytest.approx((0.5 + 0.5 + 1 + 1) / 4)


def test_unlinked_records_are_singletons_and_duplicate_rates():
    frame = _frame([None, None, "a"], ["p", "p", "p"])
    m = cluster_metrics(frame)
    assert m.pairwise_precision == 1.0 and m.pairwise_recall == 0.0 and m.predicted_clusters == 3
    rates = duplicate_rates(frame)
    assert rates["duplicate_rate_true"] == pytest.approx(2 / 3, abs=1e-4) and rates["duplicate_rate_found"] == 0.0


def test_identified_scope_leaves_out_only_orders_without_any_identifier(pipeline_ws):
    """Anonymous receipts (no card, phone, account or email) cannot be linked by any method;
    the identified_records scope drops exactly those and nothing else."""
    from cdp.identity.evaluate import ORDER_IDENTIFIERS, evaluate_workspace

    result = evaluate_workspace(pipeline_ws)
    orders = pd.read_parquet(pipeline_ws.staged / "orders.parquet", columns=list(ORDER_IDENTIFIERS))
    assert result["anonymous_records"] == int(orders.isna().all(axis=1).sum()) > 0
    assert result["identified_records"]["records"] == result["overall"]["records"] - result["anonymous_records"]
    assert result["identified_records"]["pairwise_recall"] > result["overall"]["pairwise_recall"]


def test_recoverable_ceiling_joins_only_what_the_data_supports(tmp_path):
    """The oracle knows the truth but links a person's records only through identifiers no other
    person carries (plus all of the person's profile records)."""
    from cdp.identity.evaluate import recoverable_ceiling
    from cdp.workspace import Workspace

    ws = Workspace(tmp_path)
    ws.staged.mkdir(parents=True)
    ws.truth.mkdir(parents=True)
    home, own = "+13125550100", "+13125550199"
    tables = {
        "crm_contacts": [
            ("C1", "p", {"email_norm": "p@x.com", "phone_e164": home}),
            ("C2", "q", {"email_norm": None, "phone_e164": home}),
        ],  # q lives with p
        "loyalty_members": [("L1", "p", {"email_norm": None, "phone_e164": None})],  # name only
        "orders": [
            ("O1", "p", {"card_id": "L1"}),
            ("O2", "p", {"phone_e164": home}),
            ("O3", "p", {"phone_e164": own}),
            ("O4", "p", {"email_norm": "p@x.com"}),
            ("O5", "p", {"phone_e164": own}),
        ],
    }
    keys = {"crm_contacts": "record_id", "loyalty_members": "card_id", "orders": "order_id"}
    truth, frame = [], []
    for table, rows in tables.items():
        cols = ["email_norm", "phone_e164"] + (["card_id", "account_id"] if table == "orders" else [])
        staged = pd.DataFrame(
            [{keys[table]: k, **{c: None for c in cols}, **v, "source_row": i} for i, (k, _, v) in enumerate(rows)]
        )
        staged.to_parquet(ws.staged / f"{table}.parquet", index=False)
        truth += [{"source_table": table, "row": i, "person_id": p} for i, (_, p, _) in enumerate(rows)]
        frame += [{"source_table": table, "source_key": k, "true": p, "anonymous": False} for k, p, _ in rows]
    pd.DataFrame(truth).to_parquet(ws.truth / "record_persons.parquet", index=False)
    frame = pd.DataFrame(frame)
    cluster = dict(zip(frame["source_key"], recoverable_ceiling(ws, frame)))
    assert cluster["C1"] == cluster["L1"] == cluster["O1"] == cluster["O4"]  # profile + card + email
    assert cluster["O3"] == cluster["O5"] != cluster["C1"]  # a number seen only on orders
    assert cluster["O2"] not in {cluster["C1"], cluster["C2"]}  # household phone: whose?
    assert cluster["C2"] != cluster["C1"]
    m = cluster_metrics(frame.assign(pred=frame["source_key"].map(cluster)))
    assert m.pairwise_precision == 1.0 and 0 < m.pairwise_recall < 1
