"""BentoML service: churn scores for customer_ids from online features + the champion model.

Start: `cdp serve` (or `CDP_HOME=/abs/data bentoml serve serving.service:CustomerScores`).
POST /churn {"customer_ids": ["cus_..."]} ->
  {"scores": [{"customer_id", "churn_probability", "model_version"}],
   "errors": [{"customer_id", "error"}]}
Unknown ids get a per-id error, never a 500.
"""
from __future__ import annotations

import math

import bentoml
from pydantic import BaseModel, Field

MAX_BATCH = 1000


class ChurnRequest(BaseModel):
    customer_ids: list[str] = Field(..., min_length=1, max_length=MAX_BATCH,
                                    description=f"1..{MAX_BATCH} customer ids from identity resolution")


@bentoml.service(name="cdp_scores", traffic={"timeout": 30})
class CustomerScores:
    def __init__(self) -> None:
        from cdp.paths import Workspace
        from cdp.store import open_store
        from models.churn import CHURN
        from training.tracking import load_champion

        ws = Workspace.from_env()
        self.store = open_store(ws)
        self.service = self.store.get_feature_service(CHURN.feature_service)
        self.model, self.model_version = load_champion(ws, CHURN.name)
        self.features = list(self.model.feature_names_in_)

    @bentoml.api
    def churn(self, request: ChurnRequest, /) -> dict:
        ids = list(dict.fromkeys(request.customer_ids))
        online = self.store.get_online_features(
            features=self.service, entity_rows=[{"customer_id": c} for c in ids]).to_df()
        known = online["tenure_days"].notna()  # every profiled customer has a tenure
        scores = []
        if known.any():
            rows = online.loc[known]
            probability = self.model.predict_proba(rows[self.features].astype(float))[:, 1]
            scores = [{"customer_id": c, "churn_probability": round(float(p), 6), "model_version": self.model_version}
                      for c, p in zip(rows["customer_id"], probability) if not math.isnan(p)]
        errors = [{"customer_id": c, "error": "unknown customer_id: no profile in the online store"}
                  for c in online.loc[~known, "customer_id"]]
        return {"scores": scores, "errors": errors}

    @bentoml.api(route="/healthz")
    def healthz(self) -> dict:
        return {"status": "ok", "churn_model_version": self.model_version}
