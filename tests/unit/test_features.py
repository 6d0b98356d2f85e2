"""Profiles and signals: invariants at the hand-over to Feast, and point-in-time correctness."""

from __future__ import annotations

import pandas as pd

from cdp.features.build import load_snapshots
from cdp.features.timeline import load_timeline
from cdp.featurestore.store import open_store, repo_definitions
from cdp.models.churn import CHURN, labelled_entities
from cdp.training.train import build_training_set


def test_one_row_per_customer_per_snapshot_and_columns_match_feast(pipeline_ws):
    definitions = repo_definitions()
    for view, fields in definitions.FEATURES.items():
        frame = pd.read_parquet(pipeline_ws.features / f"{view}.parquet")
        assert not frame.duplicated(["customer_id", "event_timestamp"]).any(), view
        assert list(frame.columns) == ["customer_id", "event_timestamp", *fields], view
        assert str(frame["event_timestamp"].dtype) == "datetime64[us, UTC]"


def test_windows_are_nested_and_recency_is_never_negative(pipeline_ws):
    frame = pd.read_parquet(pipeline_ws.features / "purchase_behaviour.parquet")
    frame = frame[frame["orders_lifetime"] > 0]  # no orders yet: counts 0, recency null
    assert (frame["days_since_last_order"] >= 0).all()
    assert (frame["orders_30d"] <= frame["orders_90d"]).all()
    assert (frame["orders_90d"] <= frame["orders_365d"]).all()
    assert (frame["orders_365d"] <= frame["orders_lifetime"]).all()


def test_features_use_only_events_before_the_snapshot(pipeline_ws):
    """orders_lifetime at every snapshot equals a direct count of orders strictly before it."""
    orders = load_timeline(pipeline_ws).orders
    frame = pd.read_parquet(pipeline_ws.features / "purchase_behaviour.parquet")
    sample = frame.dropna(subset=["orders_lifetime"]).sample(300, random_state=0)
    for row in sample.itertuples():
        mine = orders[(orders["customer_id"] == row.customer_id) & (orders["ordered_at"] < row.event_timestamp)]
        assert len(mine) == row.orders_lifetime


def test_point_in_time_training_set_keeps_every_entity_row(pipeline_ws):
    snapshots, end = load_snapshots(pipeline_ws)
    entities = labelled_entities(load_timeline(pipeline_ws).orders, snapshots, end)
    entities = pd.concat([entities.head(200), entities.head(3).assign(customer_id=["x1", "x2", "x3"])])
    frame = build_training_set(open_store(pipeline_ws), CHURN, entities)
    assert len(frame) == len(entities)  # unknown customers come back with nulls, not dropped
    assert frame.loc[frame["customer_id"].isin(["x1", "x2", "x3"]), "tenure_days"].isna().all()


def test_stale_enrichment_ages_out(pipeline_ws):
    frame = pd.read_parquet(pipeline_ws.features / "customer_profile.parquet")
    used = frame["enrichment_age_days"].dropna()
    assert len(used) > 0
    assert used.between(0, 730).all()
