"""Serving: the service in-process (fast), and the real `bentoml serve` HTTP server over the
SQLite and the Redis online store (slow)."""

from __future__ import annotations

import contextlib
import os
import shutil
from importlib.metadata import version

import httpx
import numpy as np
import pandas as pd
import pytest

from cdp.serving.server import running_server
from cdp.workspace import Workspace
from tests.conftest import free_port
from tests.services import redis_server


@pytest.fixture(scope="module")
def pipeline_ws(pipeline_ws, tmp_path_factory):
    """Serving needs every model served: the session workspace with every champion (see conftest)."""
    from tests.conftest import with_every_champion

    return with_every_champion(pipeline_ws, tmp_path_factory.mktemp("served") / "ws")[0]


@pytest.fixture(scope="module")
def service(pipeline_ws):
    os.environ["CDP_HOME"] = str(pipeline_ws.root)
    os.environ["CDP_MODEL_RELOAD_SECONDS"] = "0"
    from cdp.serving import service as module

    return module.CustomerScores(), module


def latest(ws: Workspace, view: str) -> pd.DataFrame:
    frame = pd.read_parquet(ws.features / f"{view}.parquet")
    return frame[frame["event_timestamp"] == frame["event_timestamp"].max()]


def test_in_process_scores_match_batch_scores_and_carry_reasons(service, pipeline_ws):
    scores_service, module = service
    batch = pd.read_parquet(pipeline_ws.features / "churn_scores.parquet").sample(20, random_state=2)
    body = scores_service.churn(module.ChurnRequest(customer_ids=batch["customer_id"].tolist()))
    served = {s["customer_id"]: s for s in body["scores"]}
    assert body["errors"] == []
    # Online features (bulk-written) and batch features (latest snapshot) give the same score: no skew.
    for customer_id, expected in zip(batch["customer_id"], batch["churn_probability"]):
        assert served[customer_id]["churn_probability"] == pytest.approx(expected, abs=1e-5)
    features = set(scores_service.champions.get("churn")[0].features)
    for score in served.values():
        assert 1 <= len(score["reasons"]) <= 3
        assert all(r["feature"] in features and r["contribution"] > 0 and r["text"] for r in score["reasons"])
        contributions = [r["contribution"] for r in score["reasons"]]
        assert contributions == sorted(contributions, reverse=True)
    quiet = scores_service.churn(module.ChurnRequest(customer_ids=batch["customer_id"].tolist()[:2], reasons=False))
    assert all("reasons" not in s for s in quiet["scores"])


def test_fast_churn_path_equals_sklearn_and_reasons_are_lightgbm_contributions(service, pipeline_ws):
    from cdp.featurestore.latest import latest_service_features
    from cdp.models.churn import CHURN

    scores_service, _ = service
    scorer = scores_service.champions.get("churn")[0]
    as_of = scores_service.as_of
    ids = latest(pipeline_ws, "purchase_behaviour")["customer_id"].head(200)
    frame = latest_service_features(
        pipeline_ws,
        scores_service.store,
        CHURN.feature_service,
        pd.DataFrame({"customer_id": ids, "event_timestamp": as_of}),
        as_of,
    )
    matrix = scorer.matrix(frame)
    expected = scorer.model.predict_proba(frame[scorer.features])[:, 1]
    np.testing.assert_allclose(scorer.probabilities(matrix), expected, rtol=0, atol=1e-12)
    booster = scorer.model.calibrated_classifiers_[0].estimator.estimator.booster_
    contributions = booster.predict(matrix[:5], pred_contrib=True)
    for row, reasons in zip(contributions, scorer.reasons(matrix[:5])):
        top = max(range(len(scorer.features)), key=lambda j: row[j])
        if row[top] > 0:
            assert reasons[0]["feature"] == scorer.features[top]


def test_unknown_ids_get_a_per_id_error(service, pipeline_ws):
    scores_service, module = service
    known = pd.read_parquet(pipeline_ws.features / "churn_scores.parquet")["customer_id"].iloc[0]
    body = scores_service.churn(module.ChurnRequest(customer_ids=[known, "cus_nobody"]))
    assert [s["customer_id"] for s in body["scores"]] == [known]
    assert body["errors"] == [
        {"customer_id": "cus_nobody", "error": "unknown customer_id: no profile in the online store"}
    ]
    nbp = scores_service.next_best_product(module.NextBestProductRequest(customer_id="cus_nobody"))
    assert nbp["products"] == [] and "unknown customer_id" in nbp["errors"][0]["error"]


def test_withdrawn_profiling_consent_is_refused_on_every_scoring_route(service, pipeline_ws):
    from cdp.features.consent import PROFILING_WITHDRAWN

    scores_service, module = service
    withdrawn = latest(pipeline_ws, "consent_state").query("consent_profiling == 0")["customer_id"].tolist()[:3]
    assert withdrawn, "the synthetic data should contain profiling withdrawals"
    nbp = scores_service.next_best_product(module.NextBestProductRequest(customer_id=withdrawn[0]))
    assert nbp["products"] == [] and nbp["errors"] == [{"customer_id": withdrawn[0], "error": PROFILING_WITHDRAWN}]
    campaign = scores_service.campaign_response(
        module.CampaignResponseRequest(customer_ids=withdrawn, campaign_id=scores_service.campaigns.index[0])
    )
    assert campaign["scores"] == [] and [e["error"] for e in campaign["errors"]] == [PROFILING_WITHDRAWN] * len(
        withdrawn
    )


def test_email_campaign_targets_only_customers_with_a_live_email_grant(service, pipeline_ws):
    scores_service, module = service
    email = scores_service.campaigns.index[scores_service.campaigns["channel"] == "email"][0]
    consent = latest(pipeline_ws, "consent_state").set_index("customer_id")
    ids = latest(pipeline_ws, "purchase_behaviour")["customer_id"].head(300).tolist()
    body = scores_service.campaign_response(
        module.CampaignResponseRequest(customer_ids=ids, campaign_id=email, min_uplift=-1.0)
    )
    assert body["channel"] == "email" and body["scores"]
    for score in body["scores"]:
        granted = consent["consent_email_marketing"].get(score["customer_id"]) == 1
        assert score["contactable"] == granted
        assert score["target"] == granted  # min_uplift -1: everyone allowed is targeted, nobody else
        if not granted:
            assert score["expected_incremental_conversions"] == 0.0
    assert any(not s["contactable"] for s in body["scores"]) and any(s["contactable"] for s in body["scores"])


def test_batch_campaign_target_list_respects_channel_consent(pipeline_ws, tmp_path):
    from cdp.features.build import load_snapshots
    from cdp.features.timeline import load_timeline
    from cdp.featurestore.store import open_store
    from cdp.serving.batch import score_campaign_response

    shutil.copytree(pipeline_ws.root, tmp_path / "ws")  # scoring writes back: keep the shared workspace as is
    ws = Workspace(tmp_path / "ws")
    campaigns = pd.read_parquet(ws.staged / "campaigns.parquet")
    email = campaigns.loc[campaigns["channel"] == "email", "campaign_id"].iloc[-1]
    timeline, as_of = load_timeline(ws), load_snapshots(ws)[0][-1]
    scores = score_campaign_response(
        ws, open_store(ws), timeline.order_lines, timeline.orders, as_of, campaign_id=email
    )
    assert (~scores["campaign_contactable"]).any()
    assert not (scores["campaign_target"].astype(bool) & ~scores["campaign_contactable"]).any()
    from cdp.features.consent import contactable

    allowed = contactable(ws, scores["customer_id"], "email", as_of)
    assert (scores.set_index("customer_id")["campaign_contactable"] == allowed.reindex(scores["customer_id"])).all()


def test_profile_has_features_scores_and_consent(service, pipeline_ws):
    scores_service, module = service
    scored = pd.read_parquet(pipeline_ws.features / "churn_scores.parquet").iloc[0]
    body = scores_service.profile(module.ProfileRequest(customer_id=scored["customer_id"]))
    assert body["features"]["customer_profile"]["tenure_days"] is not None
    assert set(body["features"]) >= {"customer_profile", "purchase_behaviour", "service_signals"}
    # typed features (issue 13): counts are ints, flags bools, the rest floats or null
    orders = body["features"]["purchase_behaviour"]["orders_lifetime"]
    assert (
        type(orders) is int
        and orders
        == latest(pipeline_ws, "purchase_behaviour")
        .set_index("customer_id")
        .loc[scored["customer_id"], "orders_lifetime"]
    )
    assert type(body["features"]["service_signals"]["complaints_365d"]) is int
    assert type(body["features"]["campaign_engagement"]["unsubscribed_365d"]) is bool
    assert type(body["features"]["purchase_behaviour"]["spend_365d"]) is float
    assert body["scores"]["churn_scores"]["churn_probability"] == pytest.approx(scored["churn_probability"], abs=1e-9)
    assert set(body["consent"]) == {"email_marketing", "sms_marketing", "profiling", "third_party_sharing"}
    with pytest.raises(Exception, match="unknown customer"):
        scores_service.profile(module.ProfileRequest(customer_id="cus_nobody"))


def test_candidate_index_equals_the_batch_candidate_query(service):
    from cdp.models.next_best_product import candidates, item_stats

    scores_service, _ = service
    ids = [*scores_service.lines["customer_id"].drop_duplicates().head(3), "cus_without_history"]
    expected = candidates(
        scores_service.lines, item_stats(scores_service.lines, scores_service.products, scores_service.as_of), ids
    )
    got = scores_service.candidate_index.candidates(ids)
    order = ["customer_id", "product_id"]
    pd.testing.assert_frame_equal(
        got.sort_values(order, ignore_index=True), expected.sort_values(order, ignore_index=True)
    )


def test_a_new_champion_is_swapped_in_by_reload(service, pipeline_ws):
    from mlflow import MlflowClient

    from cdp.training.tracking import CHAMPION
    from cdp.workspace import use_workspace

    scores_service, module = service
    use_workspace(pipeline_ws)
    client = MlflowClient()
    current = client.get_model_version_by_alias("churn", CHAMPION)
    copy = client.create_model_version("churn", current.source, run_id=current.run_id)
    try:
        client.set_registered_model_alias("churn", CHAMPION, copy.version)
        assert scores_service.champions.reload() == ["churn"]
        body = scores_service.churn(
            module.ChurnRequest(
                customer_ids=pd.read_parquet(pipeline_ws.features / "churn_scores.parquet")["customer_id"]
                .head(2)
                .tolist()
            )
        )
        assert {s["model_version"] for s in body["scores"]} == {str(copy.version)}
        assert scores_service.champions.reload() == []  # nothing changed: nothing reloaded
    finally:
        client.set_registered_model_alias("churn", CHAMPION, current.version)
        client.delete_model_version("churn", copy.version)  # leave the shared registry as it was
        scores_service.champions.reload()


def test_service_refuses_to_start_and_says_what_to_run(pipeline_ws, tmp_path):
    from cdp.serving.readiness import ServiceNotReady, check_ready

    with pytest.raises(ServiceNotReady, match="cdp features"):
        check_ready(Workspace(tmp_path / "empty"))
    home = tmp_path / "no_models"
    shutil.copytree(pipeline_ws.root, home, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    with pytest.raises(ServiceNotReady, match="cdp train churn"):
        check_ready(Workspace(home))
    emptied = tmp_path / "no_online"
    shutil.copytree(pipeline_ws.root, emptied, ignore=shutil.ignore_patterns("online.db"))
    with pytest.raises(ServiceNotReady, match="online store"):
        check_ready(Workspace(emptied))


def test_an_erased_person_is_not_served_before_the_online_store_is_cleaned(service, pipeline_ws, tmp_path, monkeypatch):
    """`cdp privacy erase` killed right after its journal and the suppression list are written: the person's
    rows are all still in the online store, yet every route answers as for an unknown customer."""
    import subprocess
    import sys
    from pathlib import Path

    _, module = service
    home = tmp_path / "ws"
    shutil.copytree(pipeline_ws.root, home)
    monkeypatch.setenv("CDP_HOME", str(home))
    scores_service = module.CustomerScores()
    scored = pd.read_parquet(home / "features" / "churn_scores.parquet")["customer_id"]
    erased, kept = scored.iloc[3], scored.iloc[4]
    assert scores_service.churn(module.ChurnRequest(customer_ids=[erased]))["scores"]
    cdp = str(Path(sys.executable).with_name("cdp"))
    killed = subprocess.run(
        [cdp, "privacy", "erase", f"customer:{erased}", "--yes", "--home", str(home)],
        env={**os.environ, "CDPTEST_KILL_AT": "after:2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    body = scores_service.churn(module.ChurnRequest(customer_ids=[erased, kept]))
    assert [s["customer_id"] for s in body["scores"]] == [kept]
    assert [e["customer_id"] for e in body["errors"]] == [erased]
    nbp = scores_service.next_best_product(module.NextBestProductRequest(customer_id=erased))
    assert nbp["products"] == [] and "unknown customer_id" in nbp["errors"][0]["error"]
    with pytest.raises(Exception, match="unknown customer"):
        scores_service.profile(module.ProfileRequest(customer_id=erased))
    assert scores_service.profile(module.ProfileRequest(customer_id=kept))["customer_id"] == kept


# ---- the real HTTP server, over SQLite and over Redis ----------------------------------------


@pytest.fixture(scope="module")
def redis_workspace(pipeline_ws, tmp_path_factory):
    """A copy of the session workspace whose online store is a private redis-server."""
    from cdp.features.build import load_snapshots
    from cdp.featurestore.store import materialize_latest, open_store
    from cdp.pipeline import score

    home = tmp_path_factory.mktemp("redis") / "ws"
    shutil.copytree(pipeline_ws.root, home)
    ws = Workspace(home)
    with redis_server(free_port(), home) as address:
        env = {"CDP_ONLINE_STORE": "redis", "CDP_REDIS": address}
        previous = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            materialize_latest(ws, open_store(ws), load_snapshots(ws)[0][-1])
            score(ws)
            yield ws, env
        finally:
            for key, value in previous.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def http_checks(ws: Workspace, url: str, headers: dict) -> None:
    batch = pd.read_parquet(ws.features / "churn_scores.parquet").head(3)
    post = lambda route, body: httpx.post(f"{url}/{route}", json=body, headers=headers, timeout=30)
    ok = post("churn", {"customer_ids": [*batch["customer_id"], "cus_nobody"]})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert [s["customer_id"] for s in body["scores"]] == batch["customer_id"].tolist()
    assert [s["churn_probability"] for s in body["scores"]] == pytest.approx(
        batch["churn_probability"].tolist(), abs=1e-5
    )
    assert all(s["reasons"] for s in body["scores"])
    assert body["errors"] == [
        {"customer_id": "cus_nobody", "error": "unknown customer_id: no profile in the online store"}
    ]
    nbp = post("next_best_product", {"customer_id": batch["customer_id"].iloc[0], "k": 5})
    assert nbp.status_code == 200 and len(nbp.json()["products"]) == 5
    batched = httpx.post(
        f"{url}/churn_batch",
        json={"customer_ids": [*batch["customer_id"], "cus_nobody", ""]},
        headers=headers,
        timeout=30,
    )
    assert batched.status_code == 200, batched.text
    answers = batched.json()
    assert [a["customer_id"] for a in answers] == [*batch["customer_id"], "cus_nobody", ""]
    assert [a["churn_probability"] for a in answers[:3]] == pytest.approx(batch["churn_probability"].tolist(), abs=1e-5)
    assert "unknown customer_id" in answers[3]["error"] and "characters" in answers[4]["error"]
    profile = post("profile", {"customer_id": batch["customer_id"].iloc[0]})
    assert profile.status_code == 200 and profile.json()["scores"]["churn_scores"]["churn_probability"] is not None
    assert type(profile.json()["features"]["purchase_behaviour"]["orders_90d"]) is int  # JSON 3, not 3.0
    # Bad input: a 4xx naming the field, never a 500.
    bad = {
        "empty list": ("churn", {"customer_ids": []}, "customer_ids"),
        "wrong type": ("churn", {"customer_ids": "not-a-list"}, "customer_ids"),
        "oversize batch": ("churn", {"customer_ids": [f"c{i}" for i in range(1001)]}, "customer_ids"),
        "empty id": ("churn", {"customer_ids": [""]}, "customer_ids"),
        "k out of range": ("next_best_product", {"customer_id": "x", "k": 0}, "k"),
        "NaN threshold": (
            "campaign_response",
            {"customer_ids": ["x"], "campaign_id": "CMP01", "min_uplift": "NaN"},
            "min_uplift",
        ),
        "unknown campaign": ("campaign_response", {"customer_ids": ["x"], "campaign_id": "nope"}, "campaign_id"),
        "unknown profile": ("profile", {"customer_id": "cus_nobody"}, "customer_id"),
    }
    for case, (route, payload, field) in bad.items():
        response = post(route, payload)
        assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
        assert field in response.text, (case, response.text)


@pytest.mark.slow
def test_real_http_server_on_sqlite_with_api_key(pipeline_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("CDP_API_KEY", "test-key-123")
    with running_server(pipeline_ws, free_port(), log_path=tmp_path / "bentoml.log") as url:
        http_checks(pipeline_ws, url, {"X-API-Key": "test-key-123"})
        assert httpx.post(f"{url}/churn", json={"customer_ids": ["x"]}, timeout=30).status_code == 401
        wrong = httpx.post(f"{url}/churn", json={"customer_ids": ["x"]}, headers={"X-API-Key": "nope"}, timeout=30)
        assert wrong.status_code == 401 and "API key" in wrong.text
        bearer = httpx.post(
            f"{url}/churn", json={"customer_ids": ["x"]}, headers={"Authorization": "Bearer test-key-123"}, timeout=30
        )
        assert bearer.status_code == 200
        bare = httpx.post(f"{url}/churn", json={"customer_ids": ["x"]}, headers={"Authorization": "test-key-123"})
        assert bare.status_code == 401, "the Bearer scheme is required"
        health = httpx.post(f"{url}/healthz", json={}, timeout=30)  # probes need no key
        assert health.status_code == 200 and health.json()["online_store"] == "sqlite"
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 401
        assert httpx.get(f"{url}/metrics", headers={"X-API-Key": "test-key-123"}, timeout=30).status_code == 200
        key = {"X-API-Key": "test-key-123"}
        big = b'{"customer_ids": ["' + b"x" * (2 << 20) + b'"]}'
        too_big = httpx.post(
            f"{url}/churn", content=big, headers={**key, "Content-Type": "application/json"}, timeout=30
        )
        assert too_big.status_code == 413 and "CDP_MAX_BODY_BYTES" in too_big.text

        def chunks():
            for _ in range(40):
                yield b"x" * 65536

        chunked = httpx.post(
            f"{url}/churn", content=chunks(), headers={**key, "Content-Type": "application/json"}, timeout=30
        )
        assert chunked.status_code == 413  # no Content-Length: counted while read
        multipart = httpx.post(f"{url}/churn", files={"f": ("a.txt", b"hello")}, headers=key, timeout=30)
        assert multipart.status_code == 415, multipart.text
        text = httpx.post(f"{url}/churn", content=b"customer_ids=x", headers={**key, "Content-Type": "text/plain"})
        assert text.status_code == 415
        broken = httpx.post(f"{url}/churn", content=b"{not json", headers={**key, "Content-Type": "application/json"})
        assert 400 <= broken.status_code < 500
        small_probe_sweep(pipeline_ws, url, "test-key-123")


def small_probe_sweep(ws: Workspace, url: str, key: str) -> None:
    """Every 15th probe of benchmarks/http_probes.py plus its malformed-framing ones (~45): bad input
    is answered 4xx, nothing 5xx, no protected route answers without the key."""
    import importlib.util
    import sys
    from pathlib import Path

    from cdp.serving.auth import DEFAULT_MAX_BODY_BYTES

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "http_probes.py"
    spec = importlib.util.spec_from_file_location("http_probes", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    customer = str(pd.read_parquet(ws.features / "churn_scores.parquet")["customer_id"].iloc[0])
    campaign = str(pd.read_parquet(ws.staged / "campaigns.parquet")["campaign_id"].iloc[0])
    routes = sorted(p for p in httpx.get(f"{url}/docs.json", timeout=30).json()["paths"] if p != "/metrics")
    assert {"/churn", "/churn_batch", "/next_best_product", "/campaign_response", "/profile"} <= set(routes)
    sweep = module.probes(customer, campaign, routes, DEFAULT_MAX_BODY_BYTES, key=key)
    chosen = [p for i, p in enumerate(sweep) if i % 15 == 0 or p.name.startswith("raw ")]
    assert any(not p.auth for p in chosen) and any(p.bad for p in chosen)
    result = module.run(url, int(url.rsplit(":", 1)[1]), chosen, key=key)
    assert (result["5xx"], result["auth_bypasses"], result["bad_input_not_4xx"]) == ([], [], []), result


@pytest.mark.slow
def test_real_http_server_on_redis(redis_workspace, tmp_path):
    ws, _env = redis_workspace
    with running_server(ws, free_port(), log_path=tmp_path / "bentoml.log") as url:
        assert httpx.post(f"{url}/healthz", json={}, timeout=30).json()["online_store"] == "redis"
        http_checks(ws, url, {})
        # The OpenAPI page BentoML serves: this package's version, every route described with an example.
        spec = httpx.get(f"{url}/docs.json", timeout=30).json()
        assert spec["info"]["version"] == version("cdp-ml") != "None"
        routes = {
            path: item["post"] for path, item in spec["paths"].items() if "x-bentoml-name" in item.get("post", {})
        }
        assert {"/churn", "/profile", "/healthz"} <= set(routes)
        assert [path for path, op in routes.items() if "Example body" not in op["description"]] == []
        churn = routes["/churn"]
        assert churn["requestBody"]["content"]["application/json"]["schema"]["example"]["customer_ids"]


def test_redis_and_sqlite_serve_the_same_scores(redis_workspace, service):
    """Same features in both stores: the Redis-backed service answers exactly as the SQLite one."""
    ws, _ = redis_workspace
    sqlite_service, module = service
    from cdp.serving.service import CustomerScores

    redis_service = CustomerScores()  # the fixture's environment selects Redis
    assert redis_service.store.config.online_store.type == "redis"
    ids = pd.read_parquet(ws.features / "churn_scores.parquet")["customer_id"].head(50).tolist()
    request = module.ChurnRequest(customer_ids=ids)
    assert redis_service.churn(request) == sqlite_service.churn(request)
    profile = module.ProfileRequest(customer_id=ids[0])
    assert redis_service.profile(profile) == sqlite_service.profile(profile)


def test_online_recommendations_equal_the_batch_recommender(service, pipeline_ws):
    """The fast single-customer path ranks exactly like `recommend()` used by batch scoring."""
    from cdp.models.next_best_product import recommend

    scores_service, _module = service
    model = scores_service.champions.get("next_best_product")[0]
    ids = [*scores_service.lines["customer_id"].drop_duplicates().sample(15, random_state=5), "cus_without_history"]
    online = scores_service.store.get_online_features(
        features=scores_service.services["next_best_product_v1"], entity_rows=[{"customer_id": c} for c in ids]
    ).to_df()
    for exclude_owned in (False, True):
        for i, customer_id in enumerate(ids):
            features = online.drop(columns=["customer_id"]).iloc[i].astype(float).to_dict()
            frame = scores_service.candidate_index.candidates([customer_id]).merge(
                online.iloc[[i]].assign(customer_id=customer_id), on="customer_id"
            )
            frame[online.columns.drop("customer_id")] = frame[online.columns.drop("customer_id")].astype(float)
            expected = recommend(model, frame, 10, scores_service.catalogue_ids, exclude_owned)
            got = scores_service.candidate_index.recommend_one(
                model, customer_id, features, 10, scores_service.catalogue_ids, exclude_owned
            )
            assert got["product_id"].tolist() == expected["product_id"].tolist()
            np.testing.assert_allclose(got["score"], expected["score"], rtol=0, atol=1e-12)


def test_batch_recommendations_equal_one_call_per_customer(service):
    """/next_best_product_batch (one online read, one ranker call) answers each customer exactly
    like /next_best_product, errors included (unknown id, withdrawn consent), never a failed call."""
    scores_service, module = service
    ids = [*scores_service.lines["customer_id"].drop_duplicates().sample(30, random_state=8), "cus_nobody"]
    for exclude_owned in (False, True):
        batch = scores_service.next_best_product_batch(
            module.NextBestProductBatchRequest(customer_ids=ids, k=7, exclude_owned=exclude_owned)
        )
        by_id = {r["customer_id"]: r["products"] for r in batch["results"]}
        batch_errors = {e["customer_id"]: e for e in batch["errors"]}
        assert set(by_id) | set(batch_errors) == set(ids) and not set(by_id) & set(batch_errors)
        assert "cus_nobody" in batch_errors and len(by_id) >= 20
        for customer_id in ids:
            one = scores_service.next_best_product(
                module.NextBestProductRequest(customer_id=customer_id, k=7, exclude_owned=exclude_owned)
            )
            if one["errors"]:
                assert one["errors"] == [batch_errors[customer_id]]
            else:
                assert len(one["products"]) == 7 and by_id[customer_id] == one["products"]


def test_start_up_objects_are_frozen_out_of_the_garbage_collector(service):
    """A full collection walking the service's ~0.5M start-up objects took ~240 ms (the load test's
    slow window); the service freezes them once built."""
    import gc

    assert gc.get_freeze_count() > 10_000


def _outside_address() -> str | None:
    """This machine's address on a non-loopback interface (None when it has none)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.254.254.254", 9))  # no packet is sent: only picks the outgoing interface
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.mark.slow
def test_bentoml_serve_binds_loopback_by_default_and_refuses_open_exposure_without_a_key(
    pipeline_ws, tmp_path, monkeypatch
):
    """`bentoml serve` as a container runs it (no --host): loopback only, from the service config.
    Bound to every interface without CDP_API_KEY, requests arriving from outside get 503."""
    import sys
    from pathlib import Path

    outside = _outside_address()
    if outside is None:
        pytest.skip("no non-loopback interface on this machine")
    monkeypatch.delenv("CDP_API_KEY", raising=False)
    monkeypatch.delenv("CDP_SERVE_HOST", raising=False)
    monkeypatch.delenv("CDP_INSECURE", raising=False)
    port = free_port()
    bare = [str(Path(sys.executable).with_name("bentoml")), "serve", "cdp.serving.service:CustomerScores", "--port"]
    with running_server(pipeline_ws, port, log_path=tmp_path / "default.log", command=[*bare, str(port)]) as url:
        assert httpx.post(f"{url}/churn", json={"customer_ids": ["x"]}, timeout=30).status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"http://{outside}:{port}/healthz", json={}, timeout=5)
    port = free_port()
    with running_server(pipeline_ws, port, log_path=tmp_path / "open.log", host="0.0.0.0") as url:
        local = httpx.post(f"{url}/churn", json={"customer_ids": ["x"]}, timeout=30)
        assert local.status_code == 200
        remote = httpx.post(f"http://{outside}:{port}/churn", json={"customer_ids": ["x"]}, timeout=30)
        assert remote.status_code == 503 and "CDP_API_KEY" in remote.text
        assert httpx.post(f"http://{outside}:{port}/healthz", json={}, timeout=30).status_code == 200


def test_cdp_serve_refuses_a_non_loopback_host_without_a_key(pipeline_ws):
    import subprocess
    import sys
    from pathlib import Path

    cdp = str(Path(sys.executable).with_name("cdp"))
    env = {k: v for k, v in os.environ.items() if k not in ("CDP_API_KEY", "CDP_INSECURE")}
    done = subprocess.run(
        [cdp, "serve", "--host", "0.0.0.0", "--home", str(pipeline_ws.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "CDP_API_KEY" in done.stdout and "Traceback" not in done.stdout + done.stderr


@pytest.mark.slow
def test_cdp_serve_prints_how_to_call_it_and_leaves_no_orphan(pipeline_ws, tmp_path):
    """`cdp serve` becomes the server (exec): the banner has the URL, Swagger UI and a curl; killing
    the pid `cdp serve` started as stops everything."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    cdp, port = str(Path(sys.executable).with_name("cdp")), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CDP_API_KEY",)}
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [cdp, "serve", "--port", str(port), "--home", str(pipeline_ws.root)],
            env={**env, "CDP_MODEL_RELOAD_SECONDS": "0"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops" not in log.read_text() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
        text = log.read_text()
        assert f"http://127.0.0.1:{port}" in text and "Swagger UI" in text and "curl -s -X POST" in text, text
        assert "bentoml" in Path(f"/proc/{process.pid}/cmdline").read_bytes().decode(errors="replace")
        process.send_signal(signal.SIGTERM)  # what `kill <pid of cdp serve>` does
        process.wait(timeout=30)
        time.sleep(1)
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"http://127.0.0.1:{port}/healthz", json={}, timeout=2)
        import psutil

        def survivors() -> list[str]:
            found = []
            for proc in psutil.process_iter(["pid", "status", "cmdline"]):
                try:
                    if os.getpgid(proc.pid) == process.pid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                        found.append(" ".join(proc.info["cmdline"] or []))
                except (ProcessLookupError, psutil.Error):
                    continue
            return found

        deadline = time.monotonic() + 20
        while survivors() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert survivors() == [], "processes of the server's group survived"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
