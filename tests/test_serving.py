"""Serving: the service in-process, and the real `bentoml serve` HTTP server (slow)."""
from __future__ import annotations

import os

import httpx
import pandas as pd
import pytest

from serving.server import running_server
from tests.conftest import free_port


@pytest.fixture(scope="module")
def service(pipeline_ws):
    os.environ["CDP_HOME"] = str(pipeline_ws.root)
    from serving.service import ChurnRequest, CustomerScores

    return CustomerScores(), ChurnRequest


def test_in_process_scores_match_batch_scores(service, pipeline_ws):
    scores_service, request = service
    batch = pd.read_parquet(pipeline_ws.features / "churn_scores.parquet").sample(20, random_state=2)
    body = scores_service.churn(request(customer_ids=batch["customer_id"].tolist()))
    served = {s["customer_id"]: s["churn_probability"] for s in body["scores"]}
    assert body["errors"] == []
    # Online features (materialized) and offline features (point-in-time) give the same score: no skew.
    for customer_id, expected in zip(batch["customer_id"], batch["churn_probability"]):
        assert served[customer_id] == pytest.approx(expected, abs=1e-5)


def test_unknown_ids_get_a_per_id_error(service, pipeline_ws):
    scores_service, request = service
    known = pd.read_parquet(pipeline_ws.features / "churn_scores.parquet")["customer_id"].iloc[0]
    body = scores_service.churn(request(customer_ids=[known, "cus_nobody"]))
    assert [s["customer_id"] for s in body["scores"]] == [known]
    assert body["errors"][0]["customer_id"] == "cus_nobody"
    assert "unknown customer_id" in body["errors"][0]["error"]


@pytest.mark.slow
def test_real_http_server(pipeline_ws, tmp_path):
    batch = pd.read_parquet(pipeline_ws.features / "churn_scores.parquet").head(3)
    with running_server(pipeline_ws, free_port(), log_path=tmp_path / "bentoml.log") as url:
        ok = httpx.post(f"{url}/churn", json={"customer_ids": [*batch["customer_id"], "cus_nobody"]}, timeout=30)
        empty = httpx.post(f"{url}/churn", json={"customer_ids": []}, timeout=30)
        wrong = httpx.post(f"{url}/churn", json={"customer_ids": "not-a-list"}, timeout=30)
    assert ok.status_code == 200
    body = ok.json()
    assert [s["customer_id"] for s in body["scores"]] == batch["customer_id"].tolist()
    assert [s["churn_probability"] for s in body["scores"]] == pytest.approx(batch["churn_probability"].tolist(), abs=1e-5)
    assert body["errors"] == [{"customer_id": "cus_nobody", "error": "unknown customer_id: no profile in the online store"}]
    assert empty.status_code == 400 and "customer_ids" in empty.text
    assert wrong.status_code == 400
