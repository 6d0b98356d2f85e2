"""BentoML service: churn (with reasons), next best products, campaign uplift and the unified
profile, from the online store + the MLflow `champion` of each model.

Start: `cdp serve` (or `CDP_HOME=/abs/data bentoml serve cdp.serving.service:CustomerScores`).
POST /churn {"customer_ids": [...], "reasons": true} ->
  {"scores": [{"customer_id", "churn_probability", "model_version", "reasons": [{"feature", "value",
               "contribution", "text"}]}], "errors": [{"customer_id", "error"}]}
POST /next_best_product {"customer_id", "k": 10, "exclude_owned": false} ->
  {"customer_id", "model_version", "as_of", "products": [{"product_id", "category", "score", "rank"}], "errors"}
POST /next_best_product_batch {"customer_ids", "k": 10, "exclude_owned": false} ->
  {"model_version", "as_of", "results": [{"customer_id", "products": [...]}], "errors"} (one ranker call)
POST /campaign_response {"customer_ids", "campaign_id", "min_uplift": 0.0} ->
  {"scores": [{"customer_id", "p_respond_treated", "p_respond_control", "uplift", "contactable", "target",
               "expected_incremental_conversions"}], "expected_incremental_conversions", "errors"}
POST /profile {"customer_id"} -> {"customer_id", "features": {view: {feature: value}}, "scores": {...},
                                   "consent": {purpose: true/false/null}}
POST /churn_batch {"customer_ids": ["cus_1", "cus_2"]} -> [{"customer_id", "churn_probability" | "error"}, ...] (adaptive
  batching: concurrent calls are merged into one online read and one model call; no reasons)
POST /events {"events": [{"customer_id", "event_type", "timestamp", "category", "product_id"}]} ->
  {"accepted", "customers", "queued", "errors"}: session features pushed online + offline (serving/events.py,
  docs/EVENTS.md; with CDP_EVENTS_WRITE=stream appended to a Redis stream for `cdp events consume`
  instead: `queued`); /next_best_product gives its first CDP_SESSION_BOOST_SLOTS slots to the category
  viewed in the last hour, /profile shows the session features.
POST /healthz -> model versions (no API key needed).

Limits: at most MAX_BATCH ids per call, k <= MAX_K, ids 1..MAX_ID_LENGTH characters; violations are
400s naming the field. Unknown ids and withdrawn profiling consent are per-id errors, never 500s.
Binds 127.0.0.1 unless `--host`/CDP_SERVE_HOST. With CDP_API_KEY set, every route but the probes
(/metrics included) needs header `X-API-Key: <key>` or `Authorization: Bearer <key>`, else 401; on a
non-loopback address without CDP_API_KEY every route answers 503 unless CDP_INSECURE=1. Bodies: JSON
only (else 415), at most CDP_MAX_BODY_BYTES (default 1 MiB, else 413). See serving/auth.py.
The service refuses to start when the online store is empty or a served model has no champion
(serving/readiness.py says what to run). Every CDP_MODEL_RELOAD_SECONDS (default 30, 0 = never) a
background thread checks the `champion` aliases and swaps in a new champion between requests.
"""

from __future__ import annotations

import gc
import math
import threading
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import InvalidArgument, NotFound, ServiceUnavailable
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from cdp.serving.auth import ApiKeyMiddleware
from cdp.serving.events import EventBatch
from cdp.settings import apply_profile, load_settings, profile_name, setting

# `bentoml serve` (what a container runs) does not go through the `cdp` CLI: apply CDP_PROFILE here
# too, so CDP_PROFILE=scale alone selects Redis, PostgreSQL MLflow and the Spark offline store.
# The embedded profile only restates the code's defaults: nothing to write into the environment.
if profile_name() != "embedded":
    apply_profile()
SETTINGS = load_settings()  # the service's decorator reads them once, at import

MAX_BATCH = 1000
MAX_K = 50
MAX_ID_LENGTH = 64
CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, strip_whitespace=True)]


class ChurnRequest(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={"example": {"customer_ids": ["cus_3f2a9c1b7d04"], "reasons": True}},
    )

    customer_ids: list[CustomerId] = Field(
        ..., min_length=1, max_length=MAX_BATCH, description=f"1..{MAX_BATCH} customer ids from identity resolution"
    )
    reasons: bool = Field(True, description="Add the top features that raise each customer's risk")


class NextBestProductRequest(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={"example": {"customer_id": "cus_3f2a9c1b7d04", "k": 5, "exclude_owned": True}},
    )

    customer_id: CustomerId = Field(..., description="A customer id from identity resolution")
    k: int = Field(10, ge=1, le=MAX_K, description=f"How many products (1..{MAX_K})")
    exclude_owned: bool = Field(False, description="Drop items the customer owns unless they are repeat buys")


class NextBestProductBatchRequest(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "example": {"customer_ids": ["cus_3f2a9c1b7d04", "cus_81d0e6a42c9f"], "k": 5, "exclude_owned": True}
        },
    )

    customer_ids: list[CustomerId] = Field(
        ..., min_length=1, max_length=MAX_BATCH, description=f"1..{MAX_BATCH} customer ids from identity resolution"
    )
    k: int = Field(10, ge=1, le=MAX_K, description=f"How many products per customer (1..{MAX_K})")
    exclude_owned: bool = Field(False, description="Drop items the customer owns unless they are repeat buys")


class CampaignResponseRequest(BaseModel):
    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "example": {"customer_ids": ["cus_3f2a9c1b7d04"], "campaign_id": "CMP01", "min_uplift": 0.01}
        },
    )

    customer_ids: list[CustomerId] = Field(
        ..., min_length=1, max_length=MAX_BATCH, description=f"1..{MAX_BATCH} customer ids from identity resolution"
    )
    campaign_id: str = Field(
        ..., min_length=1, max_length=MAX_ID_LENGTH, description="A campaign from the campaigns table"
    )
    min_uplift: float = Field(
        0.0, ge=-1, le=1, allow_inf_nan=False, description="Contact when the uplift is above this"
    )


class ProfileRequest(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid", json_schema_extra={"example": {"customer_id": "cus_3f2a9c1b7d04"}}
    )

    customer_id: CustomerId = Field(..., description="A customer id from identity resolution")


def _unknown(customer_id: str) -> dict:
    return {"customer_id": customer_id, "error": "unknown customer_id: no profile in the online store"}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class NoChampion(LookupError):
    """A served model whose training never beat its baseline: the route answers with the advice."""


class Champions:
    """The served champion of each model; `reload()` swaps in new versions. Readers take one
    reference per request (`get`), so a swap never changes a model in the middle of a request."""

    def __init__(self, ws, names: tuple[str, ...]) -> None:
        self.ws, self.names = ws, names
        self.models: dict[str, tuple[object, str]] = {}
        self.missing: dict[str, str] = {}  # served name -> why it has no champion (the gate refused it)
        self.lock = threading.Lock()
        self.reload()

    def get(self, name: str) -> tuple[Any, str]:
        if name in self.missing:
            raise NoChampion(self.missing[name])
        if name not in self.models:
            raise NotFound(f"model '{name}' is not served (CDP_SERVE_MODELS)")
        return self.models[name]

    def reload(self) -> list[str]:
        """Load every champion whose registered version changed; returns the names swapped."""
        from cdp.serving.churn_scorer import ChurnScorer
        from cdp.serving.readiness import no_champion_reason
        from cdp.training.tracking import CHAMPION, has_champion, load_version, registry_client

        with self.lock:  # runs in the reloader thread too: must not touch process-wide MLflow URIs
            client, swapped = registry_client(self.ws), []
            for name in self.names:
                if name != "churn" and not has_champion(self.ws, name):
                    self.missing[name] = no_champion_reason(self.ws, name)
                    continue
                self.missing.pop(name, None)
                version = str(client.get_model_version_by_alias(name, CHAMPION).version)
                if name in self.models and self.models[name][1] == version:
                    continue
                model = load_version(name, version, client)
                if name == "churn":
                    model = ChurnScorer.from_model(model, version)
                self.models = {**self.models, name: (model, version)}  # one atomic swap
                swapped.append(name)
            return swapped


# CDP_SERVE_WORKERS: processes serving requests (the scale profile sets 2); each loads the champions.
# CDP_ACCESS_LOG=0 / CDP_SERVE_METRICS=0 drop the per-request access log line and Prometheus
# histograms (on by default; see benchmarks/serving.py for what they cost per call).
class DocumentedService(bentoml.Service[Any]):
    """The OpenAPI page (/docs, /docs.json) with this package's version and a description of the
    service: BentoML 1.4 takes `info.version` only from a built bento's tag ("None" otherwise) and
    `info.description` from its own readme template."""

    @property
    def openapi_spec(self):
        from importlib.metadata import version

        import attr

        spec = super().openapi_spec
        info = attr.evolve(spec.info, version=version("cdp-ml"), description=SERVICE_DESCRIPTION)
        return attr.evolve(spec, info=info)


SERVICE_DESCRIPTION = (
    "Scores from the customer data platform: churn risk with reasons, next best products, campaign "
    "uplift and the unified profile, read from the online store and the MLflow `champion` of each "
    f"model. At most {MAX_BATCH} ids per call; unknown ids and withdrawn profiling consent are "
    "per-id `errors`, never 500s. With CDP_API_KEY set, send `X-API-Key: <key>`."
)


@bentoml.service(
    name="cdp_scores",
    service_class=DocumentedService,
    traffic={"timeout": 30},
    workers=SETTINGS.serve_workers,
    logging={"access": {"enabled": SETTINGS.access_log}},
    metrics={"enabled": SETTINGS.serve_metrics},
    # Loopback unless asked: `bentoml serve` without --host (what a container runs) binds here, not 0.0.0.0.
    # CDP_SERVE_HOST or `--host` widen it; serving/auth.py refuses a non-loopback bind without CDP_API_KEY.
    http={"host": SETTINGS.serve_host.strip() or "127.0.0.1"},
)
class CustomerScores:
    def __init__(self) -> None:
        import pandas as pd

        from cdp.features.build import load_snapshots
        from cdp.featurestore.online_reader import OnlineReader
        from cdp.featurestore.store import open_store, repo_definitions
        from cdp.models.campaign_response import customer_category_views
        from cdp.models.next_best_product import CandidateIndex, catalogue, customer_order_lines, item_stats
        from cdp.serving.erased import ErasedCustomers
        from cdp.serving.readiness import check_ready, served_models
        from cdp.workspace import Workspace, private

        ws = Workspace.from_env()
        private(ws.root)  # files the service writes (logs, SQLite journals) are the owner's only
        self.store = open_store(ws)
        self.erased = ErasedCustomers(ws)  # answered as unknown from the moment erasure starts
        self.reader = OnlineReader(self.store)
        check_ready(ws, self.store)  # refuses to start, saying what to run
        definitions = repo_definitions()
        self.views = {
            **{v: list(f) for v, f in definitions.FEATURES.items()},
            **{v: list(f) for v, f in definitions.SCORE_FAMILIES.items()},
        }
        self.services = {
            s: self.store.get_feature_service(s) for s in ("churn_v1", "next_best_product_v1", "campaign_response_v1")
        }
        self.champions = Champions(ws, served_models())
        self.as_of = load_snapshots(ws)[0][-1]  # the snapshot the online store holds

        def year_before_as_of(frame: pd.DataFrame, at: str) -> pd.DataFrame:  # what the request-time features read
            return frame[(frame[at] < self.as_of) & (frame[at] >= self.as_of - pd.Timedelta(days=365))]

        self.lines = year_before_as_of(customer_order_lines(ws), "ordered_at")
        self.category_views = year_before_as_of(customer_category_views(ws), "occurred_at")
        self.products = catalogue(ws)
        self.catalogue_ids = set(self.products["product_id"])
        stats = item_stats(self.lines, self.products, self.as_of)
        self.candidate_index = CandidateIndex(self.lines, stats)
        self.events = self._session_events(ws, stats)
        self.campaigns = pd.read_parquet(ws.staged / "campaigns.parquet").set_index("campaign_id")
        self._start_reloader(float(setting("model_reload_seconds")))
        # Start-up leaves ~0.5M long-lived objects (catalogue, candidate index, Feast registry): a full
        # garbage collection walking them took ~240 ms here, the one slow window of the load test.
        # Frozen, the collector never walks them again (requests' own garbage is still collected).
        gc.collect()
        gc.freeze()

    def _session_events(self, ws, stats):
        """Request-time events (serving/events.py), or None until `cdp features` registered their view."""
        from cdp.serving.events import SessionEvents, popular_by_category, session_registered

        if not session_registered(self.store):
            return None
        self.popular = popular_by_category(stats.items, self.catalogue_ids)
        self.boost_slots = int(setting("session_boost_slots"))
        queue = None
        if setting("events_write") == "stream":  # written by `cdp events consume`, not in the request
            from cdp.serving.stream import EventQueue

            queue = EventQueue(str(setting("redis")), str(setting("events_stream")))
        return SessionEvents(ws, self.store, self.erased, self.products, queue)

    def _start_reloader(self, every: float) -> None:
        if every <= 0:
            return

        def loop() -> None:
            while not stop.wait(every):
                try:
                    self.champions.reload()
                except Exception:
                    continue

        stop = threading.Event()
        threading.Thread(target=loop, name="champion-reloader", daemon=True).start()

    # ---- online reads -------------------------------------------------------------------------

    def _online(self, features, ids: list[str]) -> dict[str, list]:
        """Feast's `get_online_features(...).to_dict()` answer, read by cdp.featurestore.online_reader (~5x faster)."""
        return self.reader.read(features, ids)

    def _gate(self, ids: list[str], online: dict) -> tuple[list[int], list[dict]]:
        """Row indexes that may be scored, and per-id errors (unknown customer, profiling withdrawn)."""
        from cdp.features.consent import profiling_refusal

        keep, errors = [], []
        for i, customer_id in enumerate(ids):
            if customer_id in self.erased or _missing(online["tenure_days"][i]):  # every profiled customer has a tenure
                errors.append(_unknown(customer_id))
            elif (refusal := profiling_refusal(online["consent_profiling"][i])) is not None:
                errors.append({"customer_id": customer_id, "error": refusal})
            else:
                keep.append(i)
        return keep, errors

    def _refs(self, service: str) -> list[str]:
        return [f"{p.name}:{f.name}" for p in self.services[service].feature_view_projections for f in p.features]

    def _consent_refs(self) -> list[str]:
        return [f"consent_state:{f}" for f in self.views["consent_state"]]

    # ---- routes -------------------------------------------------------------------------------

    @bentoml.api
    def churn(self, request: ChurnRequest, /) -> dict:
        """Calibrated probability that each customer places no order in the next 90 days and, with `reasons`, the
        features that raise it most. Example body: `{"customer_ids": ["cus_3f2a9c1b7d04"], "reasons": true}`."""
        return self._churn(list(dict.fromkeys(request.customer_ids)), request.reasons)

    def _churn(self, ids: list[str], with_reasons: bool) -> dict:
        import numpy as np

        scorer, version = self.champions.get("churn")
        online = self._online(self.services["churn_v1"], ids)
        keep, errors = self._gate(ids, online)
        scores = []
        if keep:
            matrix = np.array(
                [[np.nan if _missing(online[f][i]) else online[f][i] for f in scorer.features] for i in keep],
                dtype=np.float64,
            )
            probabilities = scorer.probabilities(matrix)
            reasons = scorer.reasons(matrix) if with_reasons else [None] * len(keep)
            for i, p, why in zip(keep, probabilities, reasons):
                score = {"customer_id": ids[i], "churn_probability": round(float(p), 6), "model_version": version}
                if why is not None:
                    score["reasons"] = why
                scores.append(score)
        return {"scores": scores, "errors": errors}

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=20)
    def churn_batch(self, customer_ids: Annotated[list[str], Field(max_length=MAX_BATCH)]) -> list[dict]:
        """Adaptive batching: concurrent callers' ids are merged into one online read and one model
        call. Body: a JSON list of ids; answer: one object per id, in order, each with either
        `churn_probability` or `error` (no reasons: use /churn for those).
        Example body: `{"customer_ids": ["cus_3f2a9c1b7d04", "cus_81d0e6a42c9f"]}`."""
        ids = [str(c).strip() for c in customer_ids]
        valid = [c for c in ids if 0 < len(c) <= MAX_ID_LENGTH]
        body = self._churn(list(dict.fromkeys(valid)), with_reasons=False) if valid else {"scores": [], "errors": []}
        by_id = {**{e["customer_id"]: e for e in body["errors"]}, **{s["customer_id"]: s for s in body["scores"]}}
        return [
            by_id.get(c) or {"customer_id": c, "error": f"customer_id: must be 1..{MAX_ID_LENGTH} characters"}
            for c in ids
        ]

    @bentoml.api
    def next_best_product(self, request: NextBestProductRequest, /) -> dict:
        """The `k` products this customer is most likely to buy next, ranked, from the ranker's
        champion. Example body: `{"customer_id": "cus_3f2a9c1b7d04", "k": 5, "exclude_owned": true}`."""
        customer_id = request.customer_id
        version, results, errors = self._recommend([customer_id], request.k, request.exclude_owned)
        if errors:
            return {"customer_id": customer_id, "products": [], "errors": errors}
        return {
            "customer_id": customer_id,
            "model_version": version,
            "as_of": self.as_of.isoformat(),
            "products": results[0]["products"],
            "errors": [],
        }

    @bentoml.api
    def next_best_product_batch(self, request: NextBestProductBatchRequest, /) -> dict:
        """Next best products for up to MAX_BATCH customers in one call: one online read, one ranker
        call. Example body: `{"customer_ids": ["cus_3f2a9c1b7d04"], "k": 5, "exclude_owned": true}`."""
        version, results, errors = self._recommend(
            list(dict.fromkeys(request.customer_ids)), request.k, request.exclude_owned
        )
        return {"model_version": version, "as_of": self.as_of.isoformat(), "results": results, "errors": errors}

    def _recommend(self, ids: list[str], k: int, exclude_owned: bool) -> tuple[str, list[dict], list[dict]]:
        import numpy as np

        try:
            model, version = self.champions.get("next_best_product")
        except NoChampion as why:
            raise ServiceUnavailable(f"next_best_product: {why}") from None
        online = self._online([*self._refs("next_best_product_v1"), "consent_state:consent_profiling"], ids)
        keep, errors = self._gate(ids, online)
        features = {
            ids[i]: {
                name: np.nan if _missing(v[i]) else float(v[i]) for name, v in online.items() if name != "customer_id"
            }
            for i in keep
        }
        from cdp.serving.events import recent_category

        sessions = self.events.features(list(features)) if self.events is not None and features else {}
        # a customer with a category viewed in the last hour: rank every candidate, the boost picks from all
        depth = 1_000_000 if any(recent_category(v) for v in sessions.values()) else k
        recs = (
            self.candidate_index.recommend_many(model, features, depth, self.catalogue_ids, exclude_owned)
            if keep
            else {}
        )
        results = []
        for c, ranked in recs.items():
            products = [
                {
                    "product_id": r.product_id,
                    "category": r.category,
                    "score": round(float(r.score), 6),
                    "rank": int(r.rank),
                }
                for r in ranked.itertuples()
            ]
            if sessions:
                products = self._session_boost(c, products, sessions[c], k, exclude_owned)
            results.append({"customer_id": c, "products": products[:k]})
        return version, results, errors

    def _session_boost(self, customer_id: str, products: list[dict], session: dict, k: int, exclude_owned: bool):
        """The category viewed in the last hour takes the first slots (serving/events.py `boost`)."""
        from cdp.serving.events import boost, recent_category

        category = recent_category(session)
        if category is None:
            return products
        skip: set[str] = set()
        if exclude_owned:  # popular fill-ins must not bring back what the customer already owns
            own = self.candidate_index.candidates([customer_id])
            skip = set(own.loc[own["cust_item_lines_365d"] > 0, "product_id"])
        return boost(products, category, k, self.boost_slots, self.popular.get(category, []), skip)

    @bentoml.api
    def campaign_response(self, request: CampaignResponseRequest, /) -> dict:
        """Uplift of one campaign per customer (response if contacted minus if not), whether the
        campaign's channel is consented, and who to target (uplift above `min_uplift`).
        Example body: `{"customer_ids": ["cus_3f2a9c1b7d04"], "campaign_id": "CMP01", "min_uplift": 0.01}`."""
        import numpy as np
        import pandas as pd

        from cdp.models.campaign_response import campaign_features, decisions

        if request.campaign_id not in self.campaigns.index:
            raise InvalidArgument(f"campaign_id: unknown campaign '{request.campaign_id}'")
        try:
            model, version = self.champions.get("campaign_response")
        except NoChampion as why:  # honest: no target flags from a model no better than random
            return {"campaign_id": request.campaign_id, "model_version": None, "advice": str(why), "scores": []}
        channel = self.campaigns.at[request.campaign_id, "channel"]
        ids = list(dict.fromkeys(request.customer_ids))
        online = self._online([*self._refs("campaign_response_v1"), *self._consent_refs()], ids)
        keep, errors = self._gate(ids, online)
        scores, total = [], 0.0
        if keep:
            consent_cols = set(self.views["consent_state"])
            rows = _float_frame({k: [v[i] for i in keep] for k, v in online.items() if k not in consent_cols})
            pairs = pd.DataFrame(
                {"customer_id": rows["customer_id"], "campaign_id": request.campaign_id, "event_timestamp": self.as_of}
            )
            camp = campaign_features(pairs, self.campaigns.reset_index(), self.lines, self.category_views)
            camp = camp.drop(columns=["event_timestamp"])
            frame = rows.merge(camp, on="customer_id", how="left")
            allowed = np.array([_channel_allowed(channel, online, i) for i in keep], dtype=bool)
            out = decisions(model.predict_outcomes(frame), request.min_uplift, contactable=allowed)
            total = float(out["expected_incremental_conversions"].sum())
            scores = [
                {
                    "customer_id": c,
                    "campaign_id": request.campaign_id,
                    "p_respond_treated": round(float(o.p_treated), 6),
                    "p_respond_control": round(float(o.p_control), 6),
                    "uplift": round(float(o.uplift), 6),
                    "contactable": bool(a),
                    "target": bool(o.target),
                    "expected_incremental_conversions": round(float(o.expected_incremental_conversions), 6),
                }
                for c, o, a in zip(frame["customer_id"], out.itertuples(), allowed)
            ]
        return {
            "scores": scores,
            "model_version": version,
            "channel": channel,
            "expected_incremental_conversions": round(total, 4),
            "errors": errors,
        }

    @bentoml.api
    def profile(self, request: ProfileRequest, /) -> dict:
        """The unified profile: every feature view's latest values, the latest scores, consent per
        purpose. Example body: `{"customer_id": "cus_3f2a9c1b7d04"}`."""
        refs = [f"{view}:{f}" for view, fields in self.views.items() for f in fields]
        online = self.store.get_online_features(
            features=refs, entity_rows=[{"customer_id": request.customer_id}], full_feature_names=True
        ).to_dict()
        values = {ref: online[ref.replace(":", "__")][0] for ref in refs}
        if request.customer_id in self.erased or _missing(values["customer_profile:tenure_days"]):
            raise NotFound(f"customer_id: unknown customer '{request.customer_id}' (no profile in the online store)")
        clean = {ref: None if _missing(v) else v for ref, v in values.items()}
        grouped = {view: {f: clean[f"{view}:{f}"] for f in fields} for view, fields in self.views.items()}
        consent = {
            f.removeprefix("consent_"): None if v is None else bool(v) for f, v in grouped.pop("consent_state").items()
        }
        scores = {family: grouped.pop(family) for family in list(grouped) if family.endswith("_scores")}
        session = self.events.features([request.customer_id])[request.customer_id] if self.events else None
        return {
            "customer_id": request.customer_id,
            "as_of": self.as_of.isoformat(),
            "features": grouped,
            "scores": scores,
            "consent": consent,
            "session": session,
        }

    @bentoml.api(route="/events")
    def events_route(self, request: EventBatch, /) -> dict:
        """Session events (product views, cart adds, searches, complaints) pushed to the online and
        offline store; the next /profile and /next_best_product read them (CDP_EVENTS_WRITE=stream:
        queued for the consumer, visible within a second; `queued` counts them). Events of unknown,
        erased or profiling-withdrawn customers are per-id `errors`, never stored; a bad event is a
        400 naming it. Example body: `{"events": [{"customer_id": "cus_3f2a9c1b7d04",
        "event_type": "product_view", "timestamp": "2026-12-03T21:15:00Z", "product_id": "SKU00006"}]}`."""
        from cdp.serving.events import EventError
        from cdp.serving.stream import EventQueueDown

        if self.events is None:
            raise ServiceUnavailable("events: the session view is not registered yet; run `cdp features`")
        try:
            return self.events.accept(request.events)
        except EventError as problem:
            raise InvalidArgument(str(problem)) from None
        except EventQueueDown as down:
            raise ServiceUnavailable(str(down)) from None

    @bentoml.api(route="/healthz")
    def healthz(self) -> dict:
        """Liveness and the served model versions (no API key needed). Example body: `{}`."""
        return {
            "status": "ok",
            "online_store": self.store.config.online_store.type,
            **{f"{name}_model_version": v for name, (_, v) in self.champions.models.items()},
        }


def _float_frame(columns: dict[str, list]):
    """Online values as a frame: customer_id kept, every feature float (None -> NaN)."""
    import pandas as pd

    frame = pd.DataFrame(columns)
    values = frame.columns.drop("customer_id")
    frame[values] = frame[values].astype(float)
    return frame


def _channel_allowed(channel: str, online: dict, i: int) -> bool:
    """Consent for the campaign's channel from the online consent features (1 granted)."""
    column = {
        "email": "consent_email_marketing",
        "sms": "consent_sms_marketing",
        "paid_display": "consent_third_party_sharing",
    }.get(channel)
    if column is None:  # push: no consent purpose in the contract
        return True
    value = online[column][i]
    return not _missing(value) and float(value) == 1.0


CustomerScores.add_asgi_middleware(ApiKeyMiddleware)  # type: ignore[attr-defined]  # added by @bentoml.service
