"""Consent gates: latest event at or before a moment decides, per purpose and customer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cdp.features.consent import (
    PROFILING_WITHDRAWN,
    consent_at,
    contactable,
    filter_profiling_consent,
    profiling_allowed,
    profiling_refusal,
)
from cdp.workspace import Workspace

T = pd.Timestamp


@pytest.fixture
def ws(tmp_path) -> Workspace:
    """Four customers; consent events on their email, phone or account id (as ingest stages them)."""
    ws = Workspace(tmp_path).ensure()
    events = [  # identifier_norm, type, purpose, granted, occurred_at
        ("ann@x.com", "email", "profiling", True, "2024-01-01"),
        ("ann@x.com", "email", "profiling", False, "2024-06-01"),  # ann withdraws in June
        ("ann@x.com", "email", "email_marketing", True, "2024-01-01"),
        ("+15550001111", "phone", "email_marketing", True, "2024-01-01"),
        ("A1", "account_id", "email_marketing", False, "2024-03-01"),  # bob: same customer, later withdrawal
        ("A1", "account_id", "profiling", True, "2024-03-01"),
        ("cat@x.com", "email", "profiling", True, "2024-05-01"),
        ("cat@x.com", "email", "profiling", False, "2024-05-01"),  # same instant: withdrawal wins
        ("stranger@x.com", "email", "profiling", False, "2024-01-01"),  # links to nobody
    ]
    frame = pd.DataFrame(events, columns=["identifier_norm", "identifier_type", "purpose", "granted", "occurred_at"])
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], utc=True)
    frame["granted"] = frame["granted"].astype("boolean")
    frame["event_id"] = [f"E{i}" for i in range(len(frame))]
    frame["identifier"] = frame["identifier_norm"]
    frame["source"] = "web_form"
    frame.to_parquet(ws.staged / "consent_events.parquet", index=False)
    pd.DataFrame(
        {
            "node": ["email:ann@x.com", "phone:+15550001111", "account:A1", "email:cat@x.com", "email:dan@x.com"],
            "customer_id": ["c_ann", "c_bob", "c_bob", "c_cat", "c_dan"],
        }
    ).to_parquet(ws.identity / "identifier_map.parquet", index=False)
    return ws


IDS = ["c_ann", "c_bob", "c_cat", "c_dan"]


def test_latest_event_at_or_before_the_moment_decides(ws):
    before = consent_at(ws, IDS, "profiling", "2024-05-31")
    assert before.to_dict() == {"c_ann": True, "c_bob": True, "c_cat": False, "c_dan": None}
    exactly = consent_at(ws, IDS, "profiling", T("2024-06-01", tz="UTC"))  # at the withdrawal: counts
    assert exactly["c_ann"] is False
    assert consent_at(ws, IDS, "profiling", "2023-12-31").isna().all()  # nothing asked yet


def test_events_on_any_identifier_of_the_customer_count(ws):
    marketing = consent_at(ws, ["c_bob"], "email_marketing", "2024-02-01")
    assert marketing["c_bob"] is True  # granted on the phone
    assert consent_at(ws, ["c_bob"], "email_marketing", "2024-04-01")["c_bob"] is False  # withdrawn on the account


def test_profiling_withdrawn_customers_are_not_scored(ws):
    frame = pd.DataFrame({"customer_id": IDS, "x": np.arange(4)})
    allowed, refused = filter_profiling_consent(ws, frame, "2024-07-01")
    assert list(refused["customer_id"]) == ["c_ann", "c_cat"]
    assert list(allowed["customer_id"]) == ["c_bob", "c_dan"]  # never asked: allowed (policy)
    assert len(allowed) + len(refused) == len(frame)
    assert profiling_allowed(ws, IDS, "2024-01-02").all()


def test_serving_refusal_reason_from_online_feature():
    assert profiling_refusal(0.0) == PROFILING_WITHDRAWN
    assert profiling_refusal(1.0) is None
    assert profiling_refusal(None) is None
    assert profiling_refusal(float("nan")) is None


def test_campaign_targets_need_a_live_email_grant(ws):
    at = "2024-07-01"
    assert contactable(ws, IDS, "email", at).to_dict() == {
        "c_ann": True,
        "c_bob": False,
        "c_cat": False,
        "c_dan": False,
    }
    assert not contactable(ws, IDS, "sms", at).any()


def test_bad_input_names_the_field(ws):
    with pytest.raises(ValueError, match="purpose: unknown purpose 'ads'"):
        consent_at(ws, IDS, "ads", "2024-01-01")
    with pytest.raises(ValueError, match="channel: unknown channel 'fax'"):
        contactable(ws, IDS, "fax", "2024-01-01")
    with pytest.raises(ValueError, match="at: not a timestamp"):
        consent_at(ws, IDS, "profiling", "yesterday-ish")
    with pytest.raises(ValueError, match="frame: needs a 'customer_id' column"):
        filter_profiling_consent(ws, pd.DataFrame({"id": ["c_ann"]}), "2024-01-01")


def test_agrees_with_the_consent_state_feature(pipeline_ws):
    """The gate and the Feast feature consent_state:consent_profiling say the same thing."""
    features = pd.read_parquet(pipeline_ws.features / "consent_state.parquet")
    latest = features[features["event_timestamp"] == features["event_timestamp"].max()]
    state = consent_at(pipeline_ws, latest["customer_id"], "profiling", latest["event_timestamp"].iloc[0])
    feature = latest.set_index("customer_id")["consent_profiling"]
    asked = feature.notna()
    assert asked.sum() > 50 and (feature == 0).sum() > 5
    assert (state[~asked.to_numpy()].isna()).all()
    agree = state[asked.to_numpy()].astype(float).to_numpy() == feature[asked].to_numpy()
    assert agree.mean() > 0.99  # the feature breaks same-instant ties arbitrarily; the gate withdraws


def test_withdrawn_profiling_is_neither_scored_nor_served(pipeline_ws):
    """Batch scoring skips people whose profiling consent is withdrawn; /churn says why."""
    import os

    from cdp.features.consent import PROFILING_WITHDRAWN
    from cdp.featurestore.store import open_store

    online_consent = pd.read_parquet(pipeline_ws.features / "consent_state.parquet")
    latest = online_consent[online_consent["event_timestamp"] == online_consent["event_timestamp"].max()]
    withdrawn = latest.loc[latest["consent_profiling"] == 0, "customer_id"].tolist()
    assert withdrawn, "the synthetic data should contain profiling withdrawals"
    scored = set(pd.read_parquet(pipeline_ws.features / "churn_scores.parquet")["customer_id"])
    assert not scored & set(withdrawn)

    os.environ["CDP_HOME"] = str(pipeline_ws.root)
    from cdp.serving.service import ChurnRequest, CustomerScores

    open_store(pipeline_ws)
    body = CustomerScores().churn(ChurnRequest(customer_ids=withdrawn[:3]))
    assert body["scores"] == []
    assert [e["error"] for e in body["errors"]] == [PROFILING_WITHDRAWN] * len(withdrawn[:3])


def test_next_score_replaces_latest_scores_and_removes_a_withdrawn_persons_scores(pipeline_ws, tmp_path):
    """Re-scoring the same snapshot replaces, never appends; after a profiling withdrawal the next
    `cdp score` deletes that person's stored scores offline (every *_scores table) and online."""
    from cdp import pipeline
    from cdp.featurestore.store import open_store
    from tests.conftest import with_every_champion

    # a copy (scoring writes back) where every family is scored, so every *_scores table holds people
    ws, _ = with_every_champion(pipeline_ws, tmp_path / "ws")
    before = {p.name: len(pd.read_parquet(p)) for p in ws.features.glob("*_scores.parquet")}
    assert before["churn_scores.parquet"] > 0
    pipeline.score(ws)
    after = {p.name: pd.read_parquet(p) for p in ws.features.glob("*_scores.parquet")}
    assert {name: len(frame) for name, frame in after.items()} == before
    churn = after["churn_scores.parquet"]
    assert not churn.duplicated(["customer_id", "churn_scored_at"]).any()

    nodes = pd.read_parquet(ws.identity / "identifier_map.parquet")
    emails = nodes[nodes["node"].str.startswith("email:")].drop_duplicates("customer_id").set_index("customer_id")
    everywhere = set.intersection(*(set(f["customer_id"]) for f in after.values())) & set(emails.index)
    victim = sorted(everywhere)[0]
    node = emails.at[victim, "node"]
    events = pd.read_parquet(ws.staged / "consent_events.parquet")
    withdrawal = events.iloc[[0]].copy()
    withdrawal["event_id"], withdrawal["identifier_type"], withdrawal["purpose"] = "E_withdraw", "email", "profiling"
    withdrawal["identifier_norm"] = withdrawal["identifier"] = node.split(":", 1)[1]
    withdrawal["granted"] = pd.array([False], dtype=events["granted"].dtype)
    withdrawal["occurred_at"] = events["occurred_at"].max()  # after any grant of theirs
    pd.concat([events, withdrawal], ignore_index=True).to_parquet(ws.staged / "consent_events.parquet", index=False)

    summary = pipeline.score(ws)
    assert summary["scores_removed_consent_withdrawn"]["customers"] == 1
    for path in ws.features.glob("*_scores.parquet"):
        assert victim not in set(pd.read_parquet(path)["customer_id"]), path.name
    online = (
        open_store(ws)
        .get_online_features(
            features=["churn_scores:churn_probability", "next_best_product_scores:nbp_top_products"],
            entity_rows=[{"customer_id": victim}],
        )
        .to_dict()
    )
    assert online["churn_probability"] == [None] and online["nbp_top_products"] == [None]
    assert len(pd.read_parquet(ws.features / "churn_scores.parquet")) == before["churn_scores.parquet"] - 1
