"""The model families, registered once. Training (`cdp train`), promotion (`cdp promote`), service
readiness and batch scoring iterate this registry instead of dispatching on names by hand.

Each family: its spec (name, FeatureService, label, horizon, primary metric, hyperparameters), how it
trains (point-in-time set -> fit -> out-of-time evaluation -> gate against its baseline), how its
out-of-time rows are rebuilt for a later comparison (`cdp promote`), and whether the service loads it.
One spelling per name: `churn`, `next_best_product`, `campaign_response`, `clv`; the CLI accepts
the dashed form (`next-best-product`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cdp.models.campaign_response import CAMPAIGN_RESPONSE, customer_category_views
from cdp.models.churn import CHURN
from cdp.models.clv import CLV
from cdp.models.next_best_product import NEXT_BEST_PRODUCT
from cdp.models.spec import ModelSpec
from cdp.settings import setting
from cdp.training.capability import CapabilityOff
from cdp.workspace import Workspace

Evaluator = Callable[[Any], dict[str, float]]
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainingContext:
    """What every family reads: the workspace, its Feast store, the timeline and the snapshots."""

    ws: Workspace
    store: Any
    timeline: Any
    snapshots: list[pd.Timestamp]
    data_end: pd.Timestamp


@dataclass(frozen=True)
class Family:
    spec: ModelSpec
    train: Callable[[TrainingContext, Progress | None], Any]  # -> TrainResult
    evaluator: Callable[[TrainingContext, dict[str, str]], tuple[Evaluator, str]]  # a run's out-of-time rows
    served: bool  # loaded by the BentoML service
    needs: tuple[str, ...] = ()  # optional contract tables this model cannot train without

    def check_inputs(self, ws: Workspace) -> None:
        """Raise CapabilityOff when a table this model needs was not provided (or has no rows)."""
        import pyarrow.parquet as pq

        for table in self.needs:
            path = ws.staged / f"{table}.parquet"
            if not path.exists() or pq.read_metadata(path).num_rows == 0:
                raise CapabilityOff(
                    f"{self.command}: no {table} rows in {ws.staged} (raw/{table} absent or empty), so "
                    f"{self.command.replace('-', ' ')} is off: it needs {' and '.join(self.needs)} "
                    "(see `cdp contract`)"
                )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def command(self) -> str:
        return self.spec.name.replace("_", "-")


class UnknownModel(ValueError):
    """A model name that is not registered; the message lists the ones that are."""


def snapshot_day(value: str) -> pd.Timestamp:
    return pd.Timestamp(value.split(",")[0]).tz_localize("UTC")


# ---- churn -----------------------------------------------------------------------------------


def _train_churn(ctx: TrainingContext, progress: Progress | None):
    from cdp.training.oracle import churn_oracle
    from cdp.training.train import train_churn

    orders = ctx.timeline.orders
    return train_churn(
        ctx.ws, ctx.store, orders, ctx.snapshots, ctx.data_end, oracle_fn=churn_oracle(ctx.ws), progress=progress
    )


def _evaluate_churn(ctx: TrainingContext, params: dict[str, str]) -> tuple[Evaluator, str]:
    from cdp.models.churn import labelled_entities
    from cdp.training.evaluate import binary_metrics
    from cdp.training.train import build_training_set, predict

    spec, valid_at = CHURN, snapshot_day(params["valid_snapshot"])
    frame = build_training_set(ctx.store, spec, labelled_entities(ctx.timeline.orders, [valid_at], ctx.data_end, spec))
    y = frame[spec.label].to_numpy()
    return (lambda model: binary_metrics(y, predict(model, frame))), f"snapshot {valid_at:%Y-%m-%d} ({len(frame)} rows)"


# ---- next best product -------------------------------------------------------------------------


def _train_next_best_product(ctx: TrainingContext, progress: Progress | None):
    from cdp.models.next_best_product import catalogue
    from cdp.training.ranking import train_next_best_product

    lines = ctx.timeline.order_lines
    return train_next_best_product(
        ctx.ws, ctx.store, lines, catalogue(ctx.ws), ctx.snapshots, ctx.data_end, progress=progress
    )


def _evaluate_next_best_product(ctx: TrainingContext, params: dict[str, str]) -> tuple[Evaluator, str]:
    from cdp.models.next_best_product import catalogue, purchases_after, top_k
    from cdp.training.ranking import MAX_VALID_CUSTOMERS, K, eligible_customers, rank_metrics, snapshot_frame

    spec, valid_at, lines = NEXT_BEST_PRODUCT, snapshot_day(params["valid_snapshot"]), ctx.timeline.order_lines
    customers = eligible_customers(lines, valid_at, MAX_VALID_CUSTOMERS, 99)  # training's seed + 99 (seed 0)
    valid, stats = snapshot_frame(ctx.store, lines, catalogue(ctx.ws), valid_at, customers, spec.label)
    bought = purchases_after(lines, valid_at, spec.horizon_days)
    bought = bought[bought["customer_id"].isin(customers)]
    n_items = len(stats.items)

    def evaluate(ranker) -> dict[str, float]:
        return rank_metrics(top_k(valid, ranker.predict(valid[list(ranker.feature_name_)]), K), bought, n_items)

    return evaluate, f"snapshot {valid_at:%Y-%m-%d} ({len(customers)} customers)"


# ---- campaign response --------------------------------------------------------------------------


def _train_campaign_response(ctx: TrainingContext, progress: Progress | None):
    from cdp.training.uplift import latest_event, outcome_events, train_campaign_response

    t = ctx.timeline
    campaigns = pd.read_parquet(ctx.ws.staged / "campaigns.parquet")
    outcome = str(setting("campaign_outcome"))
    return train_campaign_response(
        ctx.ws,
        ctx.store,
        t.sends,
        campaigns,
        outcome_events(t, outcome),
        t.order_lines,
        customer_category_views(ctx.ws),
        ctx.snapshots,
        progress=progress,
        data_end=latest_event(t),
        outcome=outcome,
    )


def _evaluate_campaign_response(ctx: TrainingContext, params: dict[str, str]) -> tuple[Evaluator, str]:
    from cdp.training.uplift import build_send_set, latest_event, outcome_events, uplift_metrics

    if params.get("split", "").startswith("cross-fitted"):  # no rows the kept model has not seen
        raise ValueError(
            "campaign-response: this version was cross-fitted (one experiment, no later campaign to test on); "
            "its out-of-fold Qini was gated when it was trained: retrain with `cdp train campaign-response`, "
            "or promote it with --force"
        )
    t, spec = ctx.timeline, CAMPAIGN_RESPONSE
    campaigns = pd.read_parquet(ctx.ws.staged / "campaigns.parquet")
    events = outcome_events(t, params.get("outcome", "order"))  # what the version was trained to predict
    views = customer_category_views(ctx.ws)
    frame = build_send_set(
        ctx.store, t.sends, campaigns, events, t.order_lines, views, ctx.snapshots[0], latest_event(t)
    )
    held_out = params["valid_campaigns"].split(",")
    valid = frame[frame["campaign_id"].isin(held_out)]
    y, treated = valid[spec.label].to_numpy(), valid["treated"].to_numpy()
    return (
        lambda model: uplift_metrics(y, treated, model.predict(valid))
    ), f"campaigns {','.join(held_out)} ({len(valid)} sends)"


# ---- customer lifetime value ----------------------------------------------------------------------


def _train_clv(ctx: TrainingContext, progress: Progress | None):
    from cdp.training.clv import train_clv

    store = _with_service(ctx.ws, ctx.store, CLV.feature_service)
    return train_clv(ctx.ws, store, ctx.timeline.orders, ctx.snapshots, ctx.data_end, progress=progress)


def _evaluate_clv(ctx: TrainingContext, params: dict[str, str]) -> tuple[Evaluator, str]:
    from cdp.training.clv import clv_metrics, evaluation_set

    cutoff = snapshot_day(params["valid_snapshot"])
    frame = evaluation_set(ctx.store, ctx.timeline.orders, cutoff, CLV.horizon_days)
    actual = frame[CLV.label].to_numpy(float)
    return (
        lambda model: clv_metrics(actual, model.predict(frame))
    ), f"cutoff {cutoff:%Y-%m-%d} ({len(frame)} customers)"


def _with_service(ws: Workspace, store, service: str):
    """The store, re-applying the definitions once if a FeatureService added since `cdp features`
    (e.g. clv_v1 in an older workspace) is not in the registry yet."""
    from cdp.featurestore.store import apply_definitions

    try:
        store.get_feature_service(service)
        return store
    except Exception:
        return apply_definitions(ws)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(CHURN, _train_churn, _evaluate_churn, served=True),
        Family(NEXT_BEST_PRODUCT, _train_next_best_product, _evaluate_next_best_product, served=True),
        Family(
            CAMPAIGN_RESPONSE,
            _train_campaign_response,
            _evaluate_campaign_response,
            served=True,
            needs=("campaigns", "marketing_sends"),
        ),
        Family(CLV, _train_clv, _evaluate_clv, served=False),
    )
}
SERVED = tuple(name for name, f in FAMILIES.items() if f.served)


def family(model: str) -> Family:
    """The registered family for `model` (dashed or underscored spelling)."""
    name = model.strip().replace("-", "_")
    if name not in FAMILIES:
        known = ", ".join(f.command for f in FAMILIES.values())
        raise UnknownModel(f"model: unknown model '{model}' (available: {known})")
    return FAMILIES[name]


def training_context(ws: Workspace) -> TrainingContext:
    from cdp.features.build import load_snapshots
    from cdp.features.timeline import load_timeline
    from cdp.featurestore.store import open_store

    snapshots, data_end = load_snapshots(ws)
    return TrainingContext(ws, open_store(ws), load_timeline(ws), snapshots, data_end)
