"""BentoML service: churn, next best products and campaign uplift from online features + champions.

Start: `cdp serve` (or `CDP_HOME=/abs/data bentoml serve serving.service:CustomerScores`).
POST /churn {"customer_ids": ["cus_..."]} ->
  {"scores": [{"customer_id", "churn_probability", "model_version"}], "errors": [{"customer_id", "error"}]}
POST /next_best_product {"customer_id": "cus_...", "k": 10, "exclude_owned": false} ->
  {"customer_id", "model_version", "as_of", "products": [{"product_id", "category", "score", "rank"}]}
  (only in-catalogue items; exclude_owned drops owned items that customers rarely re-buy)
POST /campaign_response {"customer_ids": [...], "campaign_id": "CMP16", "min_uplift": 0.0} ->
  {"scores": [{"customer_id", "p_respond_treated", "p_respond_control", "uplift", "target",
               "expected_incremental_conversions"}], "expected_incremental_conversions", "errors": [...]}
Unknown customer ids get a per-id error, never a 500; an unknown campaign_id is a 400.
Models are the MLflow `champion` of each model, loaded at start-up; a model with no champion yet
answers its route with an error while the others keep serving.
"""
from __future__ import annotations

import math

import bentoml
from bentoml.exceptions import InvalidArgument, NotFound
from pydantic import BaseModel, Field

MAX_BATCH = 1000
MAX_K = 50


class ChurnRequest(BaseModel):
    customer_ids: list[str] = Field(..., min_length=1, max_length=MAX_BATCH,
                                    description=f"1..{MAX_BATCH} customer ids from identity resolution")


class NextBestProductRequest(BaseModel):
    customer_id: str = Field(..., min_length=1, description="A customer id from identity resolution")
    k: int = Field(10, ge=1, le=MAX_K, description=f"How many products (1..{MAX_K})")
    exclude_owned: bool = Field(False, description="Drop items the customer owns unless they are repeat buys")


class CampaignResponseRequest(BaseModel):
    customer_ids: list[str] = Field(..., min_length=1, max_length=MAX_BATCH,
                                    description=f"1..{MAX_BATCH} customer ids from identity resolution")
    campaign_id: str = Field(..., min_length=1, description="A campaign from the campaigns table")
    min_uplift: float = Field(0.0, ge=-1, le=1, description="Contact when the uplift is above this")


def _unknown(customer_id: str) -> dict:
    return {"customer_id": customer_id, "error": "unknown customer_id: no profile in the online store"}


@bentoml.service(name="cdp_scores", traffic={"timeout": 30})
class CustomerScores:
    def __init__(self) -> None:
        import pandas as pd

        from cdp.paths import Workspace
        from cdp.pipeline import load_snapshots
        from cdp.store import open_store
        from models.campaign_response import CAMPAIGN_RESPONSE
        from models.churn import CHURN
        from models.next_best_product import NEXT_BEST_PRODUCT, catalogue, customer_order_lines, item_stats
        from training.tracking import load_champion

        ws = Workspace.from_env()
        self.store = open_store(ws)
        self.service = self.store.get_feature_service(CHURN.feature_service)
        self.model, self.model_version = load_champion(ws, CHURN.name)
        self.features = list(self.model.feature_names_in_)
        self.as_of = load_snapshots(ws)[0][-1]  # the snapshot the online store holds
        self.champions, self.services = {}, {}
        for spec in (NEXT_BEST_PRODUCT, CAMPAIGN_RESPONSE):
            try:
                self.champions[spec.name] = load_champion(ws, spec.name)
                self.services[spec.name] = self.store.get_feature_service(spec.feature_service)
            except Exception:  # noqa: BLE001 - not trained yet: that route answers with an error
                continue
        if self.champions:
            lines = customer_order_lines(ws)
            self.lines = lines[(lines["ordered_at"] < self.as_of)
                               & (lines["ordered_at"] >= self.as_of - pd.Timedelta(days=365))]
            self.products = catalogue(ws)
            self.catalogue_ids = set(self.products["product_id"])
            self.item_stats = item_stats(self.lines, self.products, self.as_of)
            self.campaigns = pd.read_parquet(ws.staged / "campaigns.parquet")

    def _online(self, model_name: str, ids: list[str]):
        frame = self.store.get_online_features(features=self.services[model_name],
                                               entity_rows=[{"customer_id": c} for c in ids]).to_df()
        values = frame.columns.drop("customer_id")
        frame[values] = frame[values].astype(float)
        return frame, frame["tenure_days"].notna()  # every profiled customer has a tenure

    def _champion(self, model_name: str):
        if model_name not in self.champions:
            raise NotFound(f"no champion model '{model_name}' registered yet: run `cdp train {model_name.replace('_', '-')}`")
        return self.champions[model_name]

    @bentoml.api
    def churn(self, request: ChurnRequest, /) -> dict:
        ids = list(dict.fromkeys(request.customer_ids))
        online = self.store.get_online_features(
            features=self.service, entity_rows=[{"customer_id": c} for c in ids]).to_df()
        from profiles.consent import profiling_refusal

        refusals = online["consent_profiling"].map(profiling_refusal)
        known = online["tenure_days"].notna()  # every profiled customer has a tenure
        scorable = known & refusals.isna()
        scores = []
        if scorable.any():
            rows = online.loc[scorable]
            probability = self.model.predict_proba(rows[self.features].astype(float))[:, 1]
            scores = [{"customer_id": c, "churn_probability": round(float(p), 6), "model_version": self.model_version}
                      for c, p in zip(rows["customer_id"], probability) if not math.isnan(p)]
        errors = [_unknown(c) for c in online.loc[~known, "customer_id"]]
        refused = known & refusals.notna()
        errors += [{"customer_id": c, "error": r} for c, r in zip(online.loc[refused, "customer_id"], refusals[refused])]
        return {"scores": scores, "errors": errors}

    @bentoml.api
    def next_best_product(self, request: NextBestProductRequest, /) -> dict:
        from models.next_best_product import NEXT_BEST_PRODUCT, candidates, recommend

        model, version = self._champion(NEXT_BEST_PRODUCT.name)
        online, known = self._online(NEXT_BEST_PRODUCT.name, [request.customer_id])
        if not known.all():
            return {"customer_id": request.customer_id, "products": [], "errors": [_unknown(request.customer_id)]}
        own_lines = self.lines[self.lines["customer_id"] == request.customer_id]  # item stats are precomputed
        frame = candidates(own_lines, self.item_stats, [request.customer_id]).merge(online, on="customer_id")
        recs = recommend(model, frame, request.k, self.catalogue_ids, request.exclude_owned)
        recs = recs.merge(self.products[["product_id", "category"]], on="product_id", how="left")
        return {"customer_id": request.customer_id, "model_version": version, "as_of": self.as_of.isoformat(),
                "products": [{"product_id": r.product_id, "category": r.category, "score": round(float(r.score), 6),
                              "rank": int(r.rank)} for r in recs.itertuples()], "errors": []}

    @bentoml.api
    def campaign_response(self, request: CampaignResponseRequest, /) -> dict:
        import pandas as pd

        from models.campaign_response import CAMPAIGN_RESPONSE, campaign_features, decisions

        model, version = self._champion(CAMPAIGN_RESPONSE.name)
        if request.campaign_id not in set(self.campaigns["campaign_id"]):
            raise InvalidArgument(f"unknown campaign_id '{request.campaign_id}'")
        ids = list(dict.fromkeys(request.customer_ids))
        online, known = self._online(CAMPAIGN_RESPONSE.name, ids)
        rows = online.loc[known]
        scores, total = [], 0.0
        if len(rows):
            pairs = pd.DataFrame({"customer_id": rows["customer_id"], "campaign_id": request.campaign_id,
                                  "event_timestamp": self.as_of})
            camp = campaign_features(pairs, self.campaigns, self.lines).drop(columns=["event_timestamp"])
            frame = rows.merge(camp, on="customer_id", how="left")
            out = decisions(model.predict_outcomes(frame), request.min_uplift)
            total = float(out["expected_incremental_conversions"].sum())
            scores = [{"customer_id": c, "campaign_id": request.campaign_id, "p_respond_treated": round(float(o.p_treated), 6),
                       "p_respond_control": round(float(o.p_control), 6), "uplift": round(float(o.uplift), 6),
                       "target": bool(o.target),
                       "expected_incremental_conversions": round(float(o.expected_incremental_conversions), 6)}
                      for c, o in zip(frame["customer_id"], out.itertuples())]
        return {"scores": scores, "model_version": version, "expected_incremental_conversions": round(total, 4),
                "errors": [_unknown(c) for c in online.loc[~known, "customer_id"]]}

    @bentoml.api(route="/healthz")
    def healthz(self) -> dict:
        return {"status": "ok", "churn_model_version": self.model_version,
                **{f"{name}_model_version": v for name, (_, v) in self.champions.items()}}
