"""Campaign response / uplift: labels, Qini metrics, the learners on a known effect, the trained
model out of time vs. propensity, random and the oracle, scores pushed back and served."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from cdp.models.campaign_response import CAMPAIGN_RESPONSE, LEARNERS, UpliftModel, decisions, labelled_sends
from cdp.training.tracking import CHAMPION
from cdp.training.uplift import uplift_metrics
from cdp.workspace import use_workspace


def test_label_is_an_order_within_14_days_after_the_send_for_both_groups():
    ts = lambda s: pd.Timestamp(s, tz="UTC")
    sends = pd.DataFrame(
        {
            "send_id": ["s1", "s2", "s3", "s4"],
            "customer_id": ["a", "b", "c", "d"],
            "campaign_id": "C1",
            "group": ["treatment", "control", "treatment", "treatment"],
            "sent_at": [ts("2025-01-01"), ts("2025-01-01"), ts("2025-01-01"), ts("2025-03-25")],
        }
    )
    orders = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "z"],
            "ordered_at": [ts("2025-01-10"), ts("2025-01-14 23:00"), ts("2025-01-20"), ts("2025-04-01")],
        }
    )
    frame = labelled_sends(sends, orders).set_index("send_id")
    assert "s4" not in frame.index  # its window is not complete yet
    assert frame[CAMPAIGN_RESPONSE.label].to_dict() == {"s1": 1, "s2": 1, "s3": 0}
    assert frame["treated"].to_dict() == {"s1": 1, "s2": 0, "s3": 1}


def test_qini_rewards_ranking_persuadables_first():
    rng = np.random.default_rng(0)
    n = 20000
    tau = np.where(rng.random(n) < 0.3, 0.3, 0.0)
    treated = rng.random(n) < 0.5
    y = (rng.random(n) < 0.1 + tau * treated).astype(int)
    good, bad = uplift_metrics(y, treated, tau), uplift_metrics(y, treated, -tau)
    rand = uplift_metrics(y, treated, rng.random(n))
    assert good["qini"] > 0.02 > abs(rand["qini"]) and bad["qini"] < -0.02
    assert good["uplift_top_10"] == pytest.approx(0.3, abs=0.05)
    assert good["auuc"] > rand["auuc"] > bad["auuc"]


@pytest.mark.parametrize("learner", list(LEARNERS))
def test_learners_find_a_known_heterogeneous_effect(learner):
    rng = np.random.default_rng(1)
    n = 8000
    X = pd.DataFrame({"x": rng.random(n), "noise": rng.random(n)})
    treated = rng.random(n) < 0.8
    tau = np.where(X["x"] > 0.5, 0.25, -0.05)
    y = (rng.random(n) < 0.15 + 0.1 * X["noise"] + tau * treated).astype(int)
    out = UpliftModel(learner=learner).fit(X, treated, y).predict_outcomes(X)
    high, low = out["uplift"][X["x"] > 0.6].mean(), out["uplift"][X["x"] < 0.4].mean()
    assert high > 0.15 and low < 0.05
    assert out[["p_treated", "p_control"]].stack().between(0, 1).all()
    chosen = decisions(out)
    assert chosen["target"][X["x"] > 0.6].mean() > 0.9
    assert (chosen["expected_incremental_conversions"] == np.where(chosen["target"], chosen["uplift"], 0)).all()


def test_trained_out_of_time_by_campaign_and_compared(pipeline_ws, stage_results):
    result = stage_results["train_campaign_response"]
    campaigns = pd.read_parquet(pipeline_ws.staged / "campaigns.parquet").set_index("campaign_id")["start_at"]
    valid = result["valid_snapshot"].split(",")
    assert campaigns[result["train_snapshots"]].max() + pd.Timedelta(days=14) < campaigns[valid].min()
    compared = result["extra"]["compared"]
    assert {"t_learner", "x_learner", "propensity", "random"} <= set(compared)
    oracle = result["oracle"]  # true tau ranks persuadables first on the held-out campaigns
    assert oracle["true_uplift_top_30"] > oracle["true_uplift_all"] + 0.02
    # ~1.4k training sends are too few for the learners to beat random reliably (they do at 20k
    # customers, see the report); here: the chosen learner's numbers are the ones reported
    assert {"logistic_t_learner", "transformed_outcome_learner"} <= set(compared)
    chosen = compared[f"{result['extra']['learner']}_learner"]
    assert {k: result["metrics"][k] for k in chosen} == chosen
    assert chosen["qini"] == max(compared[f"{name}_learner"]["qini"] for name in LEARNERS)
    assert result["metrics"]["qini_low"] < result["metrics"]["qini_high"]  # its bootstrap 95% interval
    use_workspace(pipeline_ws)
    client = MlflowClient()
    run = client.get_run(result["run_id"])
    assert "plots/qini.png" in {a.path for a in client.list_artifacts(result["run_id"], "plots")}
    # the gate: champion only above random targeting's 97.5th percentile on the same held-out sends
    gate, baseline = result["extra"]["promotion"], run.data.metrics["baseline_qini"]
    assert gate["baseline"] == "random targeting (97.5th percentile)" and gate["baseline_value"] == baseline
    assert gate["promoted"] == (result["metrics"]["qini"] > baseline)
    if gate["promoted"]:
        assert str(client.get_model_version_by_alias(CAMPAIGN_RESPONSE.name, CHAMPION).version) == result["version"]
    else:
        assert run.data.tags["no_champion_reason"].startswith("no model better than random targeting")


def test_without_a_champion_scoring_and_the_route_say_so(pipeline_ws, stage_results, monkeypatch):
    if stage_results["train_campaign_response"]["extra"]["promotion"]["promoted"]:
        pytest.skip("on this fixture the campaign model beat random targeting")
    assert stage_results["score"]["campaign_response"]["not_scored"].startswith(
        "no model better than random for this campaign: contact everyone eligible or no one"
    )
    monkeypatch.setenv("CDP_HOME", str(pipeline_ws.root))
    from cdp.serving.service import CampaignResponseRequest, CustomerScores

    campaign = pd.read_parquet(pipeline_ws.staged / "campaigns.parquet")["campaign_id"].iloc[-1]
    body = CustomerScores().campaign_response(CampaignResponseRequest(customer_ids=["x"], campaign_id=campaign))
    assert body["scores"] == [] and body["advice"].startswith("no model better than random")


@pytest.fixture(scope="module")
def campaign_champion_ws(pipeline_ws, stage_results, tmp_path_factory):
    """The session workspace with a campaign champion (forced when the gate refused it here)."""
    from tests.conftest import with_every_champion

    return with_every_champion(pipeline_ws, tmp_path_factory.mktemp("campaign") / "ws")


def test_scores_pushed_and_served(campaign_champion_ws, monkeypatch):
    pipeline_ws, score = campaign_champion_ws
    offline = pd.read_parquet(pipeline_ws.features / "campaign_response_scores.parquet")
    assert len(offline) == score["campaign_response"]["customers_scored"] > 0
    assert offline[["campaign_p_treated", "campaign_p_control"]].stack().between(0, 1).all()
    # Targeted = positive uplift AND the campaign channel's consent allows contact (never without it).
    assert not ((offline["campaign_target"] == 1) & (offline["campaign_uplift"] <= 0)).any()
    assert (offline["campaign_target"] == 1).any()
    monkeypatch.setenv("CDP_HOME", str(pipeline_ws.root))
    from bentoml.exceptions import InvalidArgument

    from cdp.serving.service import CampaignResponseRequest, CustomerScores

    service = CustomerScores()
    sample = offline.sample(10, random_state=4)
    body = service.campaign_response(
        CampaignResponseRequest(
            customer_ids=[*sample["customer_id"], "cus_nobody"], campaign_id=sample["campaign_id"].iloc[0]
        )
    )
    served = {s["customer_id"]: s for s in body["scores"]}
    for row in sample.itertuples():  # online features == offline features: no skew
        assert served[row.customer_id]["uplift"] == pytest.approx(row.campaign_uplift, abs=1e-5)
        assert served[row.customer_id]["p_respond_treated"] == pytest.approx(row.campaign_p_treated, abs=1e-5)
    assert body["errors"] == [
        {"customer_id": "cus_nobody", "error": "unknown customer_id: no profile in the online store"}
    ]
    assert body["expected_incremental_conversions"] == pytest.approx(
        sum(s["expected_incremental_conversions"] for s in body["scores"]), abs=1e-3
    )
    with pytest.raises(InvalidArgument):
        service.campaign_response(CampaignResponseRequest(customer_ids=["x"], campaign_id="CMP_NOPE"))


def test_sends_with_unobserved_windows_are_counted_not_silently_dropped():
    ts = lambda s: pd.Timestamp(s, tz="UTC")
    sends = pd.DataFrame(
        {
            "send_id": ["s1", "s2"],
            "customer_id": ["a", "b"],
            "campaign_id": "C1",
            "group": ["treatment", "control"],
            "sent_at": [ts("2025-01-01"), ts("2025-03-25")],
        }
    )
    orders = pd.DataFrame({"customer_id": ["a"], "ordered_at": [ts("2025-01-20")]})
    frame = labelled_sends(sends, orders)  # data end = last order: s2's window is not observed
    assert list(frame["send_id"]) == ["s1"] and frame.attrs["unobserved_sends"] == 1
    later = labelled_sends(sends, orders, data_end=ts("2025-04-30"))  # latest event in any table
    assert list(later["send_id"]) == ["s1", "s2"] and later.attrs["unobserved_sends"] == 0


def test_gate_refuses_a_model_no_better_than_random_on_noise():
    from cdp.training.gate import decide
    from cdp.training.uplift import random_targeting

    rng = np.random.default_rng(3)
    n = 4000
    treated, y = rng.random(n) < 0.5, (rng.random(n) < 0.1).astype(int)
    value = uplift_metrics(y, treated, rng.random(n))["qini"]
    gate = decide("qini", value, random_targeting(y, treated), None)
    assert not gate.promoted and gate.reason.startswith("no model better than random targeting")


def _one_experiment(n: int = 3000, seed: int = 3) -> pd.DataFrame:
    """One randomized campaign, all sends on one date (like the Hillstrom e-mail experiment)."""
    rng = np.random.default_rng(seed)
    x = rng.random(n)
    treated = (rng.random(n) < 0.5).astype(int)
    y = (rng.random(n) < 0.1 + np.where(x > 0.5, 0.15, 0.0) * treated).astype(int)
    return pd.DataFrame(
        {
            "send_id": [f"s{i}" for i in range(n)],
            "customer_id": [f"c{i % (n // 2)}" for i in range(n)],  # two sends per customer
            "campaign_id": "only",
            "event_timestamp": pd.Timestamp("2024-03-01", tz="UTC"),
            "treated": treated,
            CAMPAIGN_RESPONSE.label: y,
            "x": x,
        }
    )


def test_one_same_date_experiment_is_cross_fitted_by_customer():
    from cdp.training.uplift import held_out_predictions

    frame = _one_experiment()
    campaigns = pd.DataFrame({"campaign_id": ["only"], "start_at": [pd.Timestamp("2024-03-01", tz="UTC")]})
    held = held_out_predictions(frame, campaigns, ["x"], seed=0)
    assert held.split["split"].startswith("cross-fitted, 5 folds by customer")
    assert len(held.rows) == len(frame) and set(held.scores) == set(LEARNERS)
    assert all(np.isfinite(score).all() for score in held.scores.values())  # every send predicted out of fold
    y, t = frame[CAMPAIGN_RESPONSE.label].to_numpy(), frame["treated"].to_numpy()
    assert uplift_metrics(y, t, held.scores["t"])["qini"] > 0  # the effect (x > 0.5) is found out of fold


def test_response_windows_end_at_the_latest_event_of_any_table():
    from types import SimpleNamespace

    from cdp.training.uplift import latest_event

    day = pd.Timestamp("2024-03-01", tz="UTC")
    sends = pd.DataFrame(
        {
            "send_id": ["a", "b"],
            "customer_id": ["c1", "c2"],
            "campaign_id": "k",
            "sent_at": [day, day + pd.Timedelta(days=10)],
            "group": ["treatment", "control"],
        }
    )
    orders = pd.DataFrame({"customer_id": ["c1"], "ordered_at": [day + pd.Timedelta(days=3)]})
    web = pd.DataFrame({"occurred_at": [day + pd.Timedelta(days=20)]})
    empty = pd.DataFrame({"occurred_at": pd.Series(dtype="datetime64[us, UTC]")})
    timeline = SimpleNamespace(orders=orders, sends=sends, responses=empty, web=web)
    end = latest_event(timeline)
    assert end == day + pd.Timedelta(days=20)  # a web visit after the last order
    out = labelled_sends(sends, orders, data_end=end)
    assert list(out["send_id"]) == ["a"]  # b's window (day 10..24) is not fully observed by day 20
    assert out.attrs["unobserved_sends"] == 1  # counted, not dropped silently


def test_marketer_metrics_normalize_by_the_perfect_ranking_and_price_the_contact():
    from cdp.training.uplift import marketer_metrics

    frame = _one_experiment(n=20_000)
    y, t, x = frame[CAMPAIGN_RESPONSE.label].to_numpy(), frame["treated"].to_numpy(), frame["x"].to_numpy()
    perfect = np.where((t == 1) & (y == 1), 2.0, np.where((t == 0) & (y == 1), 0.0, 1.0))
    assert marketer_metrics(y, t, perfect)["normalized_qini"] == pytest.approx(1.0)
    free = marketer_metrics(y, t, x)  # the true effect (+0.15) sits in x > 0.5
    assert free["normalized_qini"] > 0 and free["uplift_top_50"] > 0.1
    assert 0.4 <= free["recommended_depth"] <= 0.8 and free["incremental_per_1000_contacts"] > 80
    dear = marketer_metrics(y, t, x, contact_cost=0.5)  # a contact costs more than any uplift earns
    assert dear["recommended_depth"] == 0.0 and dear["incremental_per_1000_contacts"] == 0.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("order", "order"), ("WEB_VISIT", "web_visit"), (" web:add_to_cart ", "web:add_to_cart")],
)
def test_campaign_outcome_setting_accepts_order_visit_and_an_event_type(monkeypatch, value, expected):
    from cdp.settings import setting

    monkeypatch.setenv("CDP_CAMPAIGN_OUTCOME", value)
    assert setting("campaign_outcome") == expected


@pytest.mark.parametrize("value", ["visits", "web:", "web_event:search"])
def test_campaign_outcome_setting_refuses_other_values_naming_setting_and_value(monkeypatch, value):
    from cdp.settings import SettingsError, setting

    monkeypatch.setenv("CDP_CAMPAIGN_OUTCOME", value)
    with pytest.raises(SettingsError, match=f"CDP_CAMPAIGN_OUTCOME='{value}': choose order, web_visit or web:"):
        setting("campaign_outcome")


def test_outcome_events_of_one_web_event_type_and_an_unknown_type_refused():
    from types import SimpleNamespace

    from cdp.training.uplift import OutcomeError, outcome_events

    ts = pd.Timestamp("2025-01-02", tz="UTC")
    web = pd.DataFrame(
        {"customer_id": ["a", "b", "c"], "occurred_at": ts, "event_type": ["page_view", "add_to_cart", "page_view"]}
    )
    timeline = SimpleNamespace(web=web, orders=pd.DataFrame({"customer_id": ["z"], "ordered_at": [ts]}))
    assert outcome_events(timeline, "web:add_to_cart")["customer_id"].tolist() == ["b"]
    assert outcome_events(timeline, "web_visit")["customer_id"].tolist() == ["a", "b", "c"]
    assert outcome_events(timeline, "order")["customer_id"].tolist() == ["z"]
    with pytest.raises(OutcomeError, match=r"web:checkout_start.*found: add_to_cart, page_view"):
        outcome_events(timeline, "web:checkout_start")


def test_every_learner_has_a_name_people_read():
    """The notebook and the Qini chart's legend look the chosen learner up by `<learner>_learner`."""
    from cdp.models.campaign_response import LEARNERS
    from cdp.training.evaluate import RANKING_LABELS

    assert [n for n in LEARNERS if f"{n}_learner" not in RANKING_LABELS] == []


def test_campaign_features_count_category_lines_and_views_strictly_before_the_send():
    from cdp.models.campaign_response import campaign_features

    sent = pd.Timestamp("2025-06-01", tz="UTC")
    at = lambda days: sent + pd.Timedelta(days=days)
    pairs = pd.DataFrame({"customer_id": ["a", "b"], "campaign_id": ["C1", "C1"], "event_timestamp": [sent, sent]})
    campaigns = pd.DataFrame(
        {"campaign_id": ["C1", "C2"], "channel": ["email", "sms"], "target_category": ["shoes", None]}
    )
    lines = pd.DataFrame({"customer_id": ["a", "a"], "category": ["shoes", "toys"], "ordered_at": [at(-3), at(-400)]})
    # a's views: 2 shoes + 1 toys inside the year; one shoes view after the send and one 2 years back do not count
    views = pd.DataFrame(
        {
            "customer_id": ["a"] * 5,
            "category": ["shoes", "shoes", "toys", "shoes", "shoes"],
            "occurred_at": [at(-1), at(-100), at(-5), at(0), at(-730)],
        }
    )
    out = campaign_features(pairs, campaigns, lines, views).set_index("customer_id")
    assert out.loc["a", "target_category_views_365d"] == 2 and out.loc["b", "target_category_views_365d"] == 0
    assert out.loc["a", "target_category_view_share_365d"] == pytest.approx(3 / 11)  # (2 + 1) / (3 + 8)
    assert out.loc["b", "target_category_view_share_365d"] == pytest.approx(1 / 8)  # no views: the prior
    assert out.loc["a", "target_category_lines_365d"] == 1 and out.loc["a", "channel_email"] == 1
    # a campaign without a target category has no category features
    untargeted = campaign_features(pairs.assign(campaign_id="C2"), campaigns, lines, views.iloc[:0])
    assert untargeted["target_category_view_share_365d"].isna().all() and (untargeted["has_target_category"] == 0).all()
