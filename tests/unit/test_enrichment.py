"""`cdp eval-enrichment`: churn with and without each vendor's facts, lift with a bootstrap interval."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cdp.training.enrichment import ENRICHMENT_FEATURES, paired_bootstrap, point_in_time_facts


def test_vendor_facts_are_joined_point_in_time():
    facts = pd.DataFrame(
        {
            "vendor": ["a", "a", "a", "b"],
            "customer_id": ["c1", "c1", "c1", "c1"],
            "as_of": pd.to_datetime(["2023-06-01", "2025-03-01", "2025-06-01", "2025-05-01"], utc=True),
            "household_size": [1.0, 2.0, 3.0, 4.0],
            "income_band_rank": [1.0, 2.0, 3.0, 4.0],
            "home_owner": [0.0, 1.0, 1.0, 0.0],
            "car_owner": [1.0, 1.0, 0.0, 0.0],
            "linked_at": pd.to_datetime(["2020-01-01"] * 4, utc=True),
        }
    )
    rows = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c1", "c2"],
            "event_timestamp": pd.to_datetime(["2025-06-01", "2025-02-01", "2026-01-01", "2025-06-01"], utc=True),
        }
    )
    only_a = point_in_time_facts(rows, facts[facts["vendor"] == "a"], max_age_days=730)
    # fact dated exactly at the snapshot is not used; the freshest earlier one is
    assert only_a["household_size"].tolist()[:3] == [2.0, 1.0, 3.0]
    assert only_a["enrichment_age_days"].iloc[0] == 92
    assert np.isnan(only_a["household_size"].iloc[3])  # another customer
    short = point_in_time_facts(rows, facts[facts["vendor"] == "a"], max_age_days=300)
    assert np.isnan(short["household_size"].iloc[1])  # the 2023 fact aged out (611 days old)
    both = point_in_time_facts(rows, facts, max_age_days=730)
    assert both["household_size"].iloc[0] == 4.0  # vendor b's May fact is fresher than a's March one
    # a fact reaches the customer only through a record that existed before the snapshot
    late = facts.assign(linked_at=pd.Timestamp("2025-07-01", tz="UTC"))
    late_sizes = point_in_time_facts(rows, late, max_age_days=730)["household_size"]
    assert late_sizes.iloc[:2].isna().all() and late_sizes.iloc[2] == 3.0  # by 2026 the link exists


def test_bootstrap_interval_covers_a_real_difference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    good, noise = y + rng.normal(0, 0.8, 2000), rng.normal(0, 1, 2000)
    low, high = paired_bootstrap(y, good, noise, n=100)
    assert 0 < low < high
    low, high = paired_bootstrap(y, noise, noise, n=50)
    assert low == high == 0


def test_vendor_features_equal_the_feature_pipeline(pipeline_ws):
    from cdp.features.timeline import load_timeline
    from cdp.training.enrichment import vendor_facts

    profile = pd.read_parquet(pipeline_ws.features / "customer_profile.parquet")
    mine = point_in_time_facts(profile, vendor_facts(pipeline_ws, load_timeline(pipeline_ws)))
    for column in ENRICHMENT_FEATURES:
        a, b = profile[column].to_numpy(float), mine[column].to_numpy(float)
        assert ((a == b) | (np.isnan(a) & np.isnan(b))).mean() > 0.999, column


def test_eval_enrichment_reports_lift_per_vendor(pipeline_ws, stage_results):
    from typer.testing import CliRunner

    from cdp.cli.app import app

    result = CliRunner().invoke(
        app, ["eval-enrichment", "--bootstrap", "50", "--home", str(pipeline_ws.root)], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    report = json.loads((pipeline_ws.reports / "enrichment_eval.json").read_text())
    vendors = sorted(pd.read_parquet(pipeline_ws.staged / "enrichment.parquet")["vendor"].dropna().unique())
    assert report["vendors"] == vendors and set(report["results"]) == {"without", *vendors, "all_vendors"}
    results = report["results"]
    # all vendors = exactly the churn_v1 features: the production model's out-of-time AUC again
    assert results["all_vendors"]["roc_auc"] == pytest.approx(stage_results["train"]["metrics"]["roc_auc"])
    for name in (*vendors, "all_vendors"):
        row = results[name]
        assert row["lift_roc_auc"] == pytest.approx(row["roc_auc"] - results["without"]["roc_auc"])
        assert row["lift_ci_low"] <= row["lift_roc_auc"] <= row["lift_ci_high"]
        assert 0 < row["coverage_valid_rows"] <= results["all_vendors"]["coverage_valid_rows"]
    assert results["without"]["coverage_valid_rows"] == 0
    for vendor in vendors:
        assert vendor in result.output
