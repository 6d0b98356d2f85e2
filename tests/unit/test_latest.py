"""Batch scoring's one-query feature read equals Feast's point-in-time join at the snapshot, for
every model's FeatureService (reads the session workspace only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cdp.featurestore.latest import latest_service_features
from cdp.models.campaign_response import CAMPAIGN_RESPONSE
from cdp.models.churn import CHURN, scoring_entities
from cdp.models.next_best_product import NEXT_BEST_PRODUCT


@pytest.mark.parametrize("spec", [CHURN, NEXT_BEST_PRODUCT, CAMPAIGN_RESPONSE], ids=lambda s: s.name)
def test_latest_features_equal_feasts_point_in_time_join(pipeline_ws, spec):
    from cdp.features.build import load_snapshots
    from cdp.features.timeline import load_timeline
    from cdp.featurestore.store import open_store
    from cdp.training.train import build_training_set

    store = open_store(pipeline_ws)
    as_of = load_snapshots(pipeline_ws)[0][-1]
    active = scoring_entities(load_timeline(pipeline_ws).orders, as_of)
    entities = pd.concat(
        [active.sample(300, random_state=2), active.head(1).assign(customer_id="cus_not_a_customer")], ignore_index=True
    )
    ours = latest_service_features(pipeline_ws, store, spec.feature_service, entities, as_of)
    assert ours["customer_id"].tolist() == entities["customer_id"].tolist()  # order kept
    feast = build_training_set(store, spec, entities).set_index("customer_id").loc[entities["customer_id"]]
    features = [
        f.name for p in store.get_feature_service(spec.feature_service).feature_view_projections for f in p.features
    ]
    assert len(features) > 3 and set(features) <= set(ours.columns)
    mine = ours.set_index("customer_id")[features]
    assert mine.loc["cus_not_a_customer"].isna().all()
    for name in features:
        a, b = mine[name], feast[name]
        if pd.api.types.is_numeric_dtype(b) or pd.api.types.is_bool_dtype(b):
            np.testing.assert_allclose(
                a.astype(float).to_numpy(), b.astype(float).to_numpy(), rtol=0, atol=1e-12, err_msg=name
            )
        else:
            assert (
                a.astype(object).where(a.notna(), None).tolist() == b.astype(object).where(b.notna(), None).tolist()
            ), name
