"""Monitoring of every scoring run, logged to the MLflow experiment `monitoring` (one run per
scored family, tagged with the champion's name and version; runs of one `cdp score` share a
`scoring_run` tag):

- feature drift of the scored population vs the champion's training set: PSI and null share per
  feature of the model's FeatureService (cdp.training.monitoring);
- score drift: PSI of the served scores vs the champion's validation scores (churn);
- the realized metric once labels mature: scores served at a snapshot S whose horizon is observed
  now are compared with the labels seen now, defined as training defines them: churn (90 days,
  `labelled_entities`) realized ROC AUC, next best product (30 days, `purchases_after`) realized
  NDCG@10, each vs the validation value of the version that served them. Campaign response
  (uplift needs the campaign's treated and control groups) is not measured yet.

The reference is a compact profile (bin edges and shares, category shares, null shares; never
rows), built from the Feast offline store at the champion's training snapshots the first time a
version is monitored and then cached as `monitoring/reference_profile.json` on the champion's own
training run. Recomputing instead of saving it inside each family's training code keeps one path
for every family (and for champions trained before monitoring existed); the offline store keeps
every snapshot (history is appended, not rewritten), so the point-in-time rows are the ones
training read. Only feature names and numbers are logged.
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from cdp.training.monitoring import null_share, profile, psi_against
from cdp.workspace import Workspace

EXPERIMENT = "monitoring"
PROFILE_ARTIFACT = "monitoring/reference_profile.json"
REFERENCE_SNAPSHOTS = 6  # the latest training snapshots profiled (older ones add cost, little signal)
REFERENCE_ROWS = 20_000  # customers sampled per snapshot for the profile
ID_COLUMNS = ("customer_id", "event_timestamp")
CHURN_PROMISED = "roc_auc"
TOP_PSI = 8  # features named in the run's top_psi tag (every PSI is in its metrics and drift.json)
MIN_PSI_ROWS = 200  # non-null values on each side for a feature's PSI to alert


class ReferenceUnavailable(ValueError):
    """The champion's training snapshots cannot be told from its run (the message says why)."""


def _day(value: str) -> pd.Timestamp:
    return pd.Timestamp(value.split(",")[0]).tz_localize("UTC")


def training_snapshots(
    ws: Workspace, params: dict[str, str], horizon_days: int, snapshots: list[pd.Timestamp]
) -> list[pd.Timestamp]:
    """The snapshots a champion trained on, from its run's parameters: the list itself
    (next best product), those whose label window closes before `valid_snapshot` (churn, clv), or
    those before the first held-out campaign (campaign response). The latest REFERENCE_SNAPSHOTS."""
    listed = params.get("train_snapshots", "")
    if "-" in listed:
        chosen = [_day(d) for d in listed.split(",")]
    elif "valid_snapshot" in params:
        cut = _day(params["valid_snapshot"]) - pd.Timedelta(days=horizon_days)
        chosen = [s for s in snapshots if s <= cut]
    elif "valid_campaigns" in params:
        campaigns = pd.read_parquet(ws.staged / "campaigns.parquet", columns=["campaign_id", "start_at"])
        held_out = campaigns[campaigns["campaign_id"].isin(params["valid_campaigns"].split(","))]
        first = pd.to_datetime(held_out["start_at"], utc=True).min()
        chosen = [s for s in snapshots if s < first]
    else:
        raise ReferenceUnavailable("its run records neither train_snapshots, valid_snapshot nor valid_campaigns")
    if not chosen:
        raise ReferenceUnavailable(f"no snapshot of the workspace falls in its training period ({params})")
    return [pd.Timestamp(s).tz_convert("UTC") for s in chosen[-REFERENCE_SNAPSHOTS:]]


def population(ws: Workspace, orders: pd.DataFrame, at: pd.Timestamp, limit: int | None = None) -> pd.DataFrame:
    """The customers batch scoring scores at `at`: active in the year before, profiling allowed."""
    from cdp.features.consent import filter_profiling_consent
    from cdp.models.churn import scoring_entities

    entities, _ = filter_profiling_consent(ws, scoring_entities(orders, at), at)
    if limit is not None and len(entities) > limit:
        entities = entities.sample(limit, random_state=0).sort_values("customer_id")
    return entities


def service_features(ws: Workspace, store, service: str, entities: pd.DataFrame, at: pd.Timestamp) -> pd.DataFrame:
    from cdp.featurestore.latest import latest_service_features

    return latest_service_features(ws, store, service, entities, at)


def _churn_validation_scores(ws: Workspace, store, orders, data_end, params, model) -> pd.Series:
    """The champion's scores on its own validation rows (labelled entities at valid_snapshot)."""
    from cdp.models.churn import CHURN, labelled_entities
    from cdp.training.train import predict

    valid_at = _day(params["valid_snapshot"])
    entities = labelled_entities(orders, [valid_at], data_end, CHURN)[list(ID_COLUMNS)]
    frame = service_features(ws, store, CHURN.feature_service, entities, valid_at)
    return pd.Series(predict(model, frame))


def build_reference(ws: Workspace, store, timeline, name: str, version: str) -> dict[str, Any]:
    """The compact reference profile of champion `name` v`version` (see the module docstring)."""
    from cdp.features.build import load_snapshots
    from cdp.training.registry import family
    from cdp.training.tracking import load_version, registry_client

    spec = family(name).spec
    client = registry_client(ws)
    run = client.get_run(client.get_model_version(name, version).run_id)
    snapshots, data_end = load_snapshots(ws)
    dates = training_snapshots(ws, run.data.params, spec.horizon_days, snapshots)
    frames = [
        service_features(ws, store, spec.feature_service, population(ws, timeline.orders, at, REFERENCE_ROWS), at)
        for at in dates
    ]
    train = pd.concat(frames, ignore_index=True)
    features = [c for c in train.columns if c not in ID_COLUMNS]
    score, promised = None, {}
    if name == "churn":
        model = load_version(name, version, client)
        score = profile(_churn_validation_scores(ws, store, timeline.orders, data_end, run.data.params, model))
        promised = {CHURN_PROMISED: run.data.metrics.get(CHURN_PROMISED)}
    return {
        "model": name,
        "version": str(version),
        "run_id": run.info.run_id,
        "built_from": "Feast offline store at the training snapshots (active, profiling-allowed customers)",
        "snapshots": [f"{d:%Y-%m-%d}" for d in dates],
        "rows": len(train),
        "features": {f: profile(train[f]) for f in features},
        "score": score,
        "promised": promised,
    }


def reference_profile(ws: Workspace, store, timeline, name: str, version: str) -> dict[str, Any]:
    """The cached profile on the champion's training run, built and logged there on first use."""
    from cdp.training.tracking import registry_client

    client = registry_client(ws)
    run_id = client.get_model_version(name, version).run_id
    if any(a.path == PROFILE_ARTIFACT for a in client.list_artifacts(run_id, "monitoring")):
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(client.download_artifacts(run_id, PROFILE_ARTIFACT, tmp)).read_text())
    reference = build_reference(ws, store, timeline, name, version)
    client.log_text(run_id, json.dumps(reference, indent=1), PROFILE_ARTIFACT)
    return reference


def feature_drift(reference: dict[str, Any], current: pd.DataFrame, ignored: set[str]) -> list[dict[str, Any]]:
    """Per reference feature: PSI, null share now and in training, the rise of the null share, and
    whether its PSI may alert: not for `ignored` features (CDP_MONITOR_IGNORE_FEATURES) nor with
    fewer than MIN_PSI_ROWS non-null values on either side (PSI's own sampling noise, about
    bins/rows, would cross the threshold by chance)."""
    rows = []
    for feature, ref in reference["features"].items():
        values = current[feature] if feature in current else pd.Series(dtype=float)
        now = null_share(values) if feature in current else 1.0
        counted = min(int(values.notna().sum()), round(ref["rows"] * (1 - ref["null_share"])))
        rows.append(
            {
                "feature": feature,
                "psi": psi_against(ref, values),
                "psi_rows": counted,
                "psi_alerts": feature not in ignored and counted >= MIN_PSI_ROWS,
                "null_share": now,
                "null_share_training": ref["null_share"],
                "null_jump": now - ref["null_share"],
            }
        )
    return rows


def _matured(ws: Workspace, table: str, prefix: str, horizon_days: int, data_end: pd.Timestamp, columns: list[str]):
    """(S, the scores stored at S) for the latest scoring snapshot S of `table` (features/<table>
    .parquet, history kept by batch scoring) whose horizon is observed by `data_end`; else None."""
    path = ws.features / f"{table}.parquet"
    if not path.exists():
        return None
    served = pd.read_parquet(path, columns=["customer_id", *columns, f"{prefix}_model_version", f"{prefix}_scored_at"])
    at = pd.to_datetime(served[f"{prefix}_scored_at"], utc=True)
    matured = at[at + pd.Timedelta(days=horizon_days) <= data_end]
    if matured.empty:
        return None
    snapshot = matured.max()
    return snapshot, served[at == snapshot].rename(columns={f"{prefix}_model_version": "model_version"})


def _outcome(ws: Workspace, name: str, metric: str, snapshot, served: pd.DataFrame, rows: int, value: float) -> dict:
    """The realized value beside the validation value of the version that served most rows."""
    from cdp.training.tracking import registry_client

    version = str(served["model_version"].mode().iloc[0])
    client = registry_client(ws)
    promised = client.get_run(client.get_model_version(name, version).run_id).data.metrics.get(metric)
    return {
        "snapshot": f"{snapshot:%Y-%m-%d}",
        "model_version": version,
        "rows": rows,
        "realized": float(value),
        "promised": None if promised is None else float(promised),
        "metric": metric,
    }


def realized_churn(ws: Workspace, timeline, data_end: pd.Timestamp) -> dict[str, Any] | None:
    """Realized ROC AUC of the latest stored churn scores whose 90-day window is observed now
    (labels: `labelled_entities`, training's definition), vs the validation ROC AUC of the version
    that served them. None before any scores mature."""
    from sklearn.metrics import roc_auc_score

    from cdp.models.churn import CHURN, labelled_entities

    found = _matured(ws, "churn_scores", "churn", CHURN.horizon_days, data_end, ["churn_probability"])
    if found is None:
        return None
    snapshot, served = found
    labels = labelled_entities(timeline.orders, [snapshot], data_end, CHURN)
    joined = served.merge(labels[["customer_id", CHURN.label]], on="customer_id", how="inner")
    if joined[CHURN.label].nunique() < 2:
        return None
    value = roc_auc_score(joined[CHURN.label], joined["churn_probability"])
    return _outcome(ws, CHURN.name, CHURN.primary_metric, snapshot, joined, len(joined), value)


def realized_next_best_product(ws: Workspace, timeline, data_end: pd.Timestamp) -> dict[str, Any] | None:
    """Realized NDCG@10 of the latest stored top-10 lists whose 30-day window is observed now: the
    products each scored customer bought in [S, S + 30 days) (`purchases_after`, training's truth),
    ranked as validation ranks them (`rank_metrics`, over customers who bought), vs validation."""
    from cdp.models.next_best_product import NEXT_BEST_PRODUCT, catalogue, purchases_after
    from cdp.training.ranking import rank_metrics

    spec = NEXT_BEST_PRODUCT
    found = _matured(ws, "next_best_product_scores", "nbp", spec.horizon_days, data_end, ["nbp_top_products"])
    if found is None:
        return None
    snapshot, served = found
    recs = served.assign(product_id=served["nbp_top_products"].str.split(",")).explode("product_id")
    recs["rank"] = recs.groupby("customer_id").cumcount() + 1
    bought = purchases_after(timeline.order_lines, snapshot, spec.horizon_days)
    bought = bought[bought["customer_id"].isin(served["customer_id"])]
    if bought.empty:
        return None
    value = rank_metrics(recs[["customer_id", "product_id", "rank"]], bought, len(catalogue(ws)))[spec.primary_metric]
    return _outcome(ws, spec.name, spec.primary_metric, snapshot, served, bought["customer_id"].nunique(), value)


REALIZED = {"churn": realized_churn, "next_best_product": realized_next_best_product}


def _key(prefix: str, feature: str) -> str:
    return f"{prefix}.{re.sub(r'[^A-Za-z0-9_./ -]', '_', feature)}"


def _largest(rows: list[dict[str, Any]], field: str) -> tuple[str | None, float | None]:
    known = [r for r in rows if pd.notna(r[field])]
    if not known:
        return None, None
    top = max(known, key=lambda r: r[field])
    return top["feature"], float(top[field])


def log_monitoring_run(
    ws: Workspace, name: str, version: str, as_of: pd.Timestamp, scoring_run: str, outcome: dict[str, Any]
) -> str:
    """One MLflow run in `monitoring` for one family of one scoring run; returns its id."""
    import mlflow

    from cdp.training.tracking import set_experiment
    from cdp.workspace import use_workspace

    use_workspace(ws)
    set_experiment(ws, EXPERIMENT)
    rows = outcome["features"]
    metrics = {_key("psi", r["feature"]): r["psi"] for r in rows if pd.notna(r["psi"])}
    metrics |= {_key("null_share", r["feature"]): r["null_share"] for r in rows}
    summary = {k: v for k, v in outcome.items() if k != "features"}
    metrics |= {k: v for k, v in summary.items() if isinstance(v, float) and pd.notna(v)}
    tags = {"model": name, "model_version": str(version), "scored_at": f"{as_of:%Y-%m-%dT%H:%M:%SZ}"}
    tags |= {"scoring_run": scoring_run, **{k: str(v) for k, v in summary.items() if isinstance(v, str)}}
    with mlflow.start_run(run_name=f"{name}-v{version}-{as_of:%Y%m%d}", tags=tags) as run:
        mlflow.log_metrics(metrics)
        mlflow.log_dict({**summary, "features": rows}, "drift.json")
    return run.info.run_id


def monitor_family(ws: Workspace, store, timeline, name: str, version: str, as_of, scores: pd.Series) -> dict:
    """Drift (and, once labels mature, the realized metric) of one family's scoring run, not yet logged."""
    from cdp.features.build import load_snapshots
    from cdp.training.registry import family

    reference = reference_profile(ws, store, timeline, name, version)
    current = service_features(
        ws, store, family(name).spec.feature_service, population(ws, timeline.orders, as_of), as_of
    )
    from cdp.settings import setting

    ignored = {f.strip() for f in setting("monitor_ignore_features").split(",") if f.strip()}
    rows = feature_drift(reference, current, ignored)
    outcome: dict[str, Any] = {"features": rows, "rows_scored": float(len(scores))}
    alerting = sorted((r for r in rows if r["psi_alerts"] and pd.notna(r["psi"])), key=lambda r: -r["psi"])
    outcome["max_psi_feature"], outcome["max_psi"] = _largest(alerting, "psi")
    outcome["top_psi"] = ", ".join(f"{r['feature']}={r['psi']:.4f}" for r in alerting[:TOP_PSI])
    outcome["psi_not_alerting"] = ", ".join(
        f"{r['feature']} ({'ignored' if r['feature'] in ignored else str(r['psi_rows']) + ' rows'}: {r['psi']:.3f})"
        for r in rows
        if not r["psi_alerts"] and pd.notna(r["psi"])
    )[:4000]  # an MLflow tag; drift.json has every feature
    outcome["max_null_jump_feature"], outcome["max_null_jump"] = _largest(rows, "null_jump")
    if reference.get("score"):
        outcome["score_psi"] = psi_against(reference["score"], scores)
    realized = REALIZED[name](ws, timeline, load_snapshots(ws)[1]) if name in REALIZED else None
    if realized is not None:
        outcome |= {
            "realized_metric": realized["metric"],
            "realized_snapshot": realized["snapshot"],
            "realized_model_version": realized["model_version"],
            "realized_rows": float(realized["rows"]),
            "realized_value": realized["realized"],
            "promised_value": realized["promised"],
        }
    return {k: v for k, v in outcome.items() if v is not None}


def monitor_scoring(ws: Workspace, store, timeline, as_of: pd.Timestamp, scored: dict[str, tuple[str, pd.Series]]):
    """Called by batch scoring once every family is pushed. `scored`: family -> (champion version,
    its served scores). One monitoring run per family; returns a short summary per family (or why
    a family's reference could not be built, e.g. a champion whose run lacks its snapshots)."""
    scoring_run = uuid.uuid4().hex[:12]
    summary: dict[str, Any] = {"experiment": EXPERIMENT, "scoring_run": scoring_run}
    for name, (version, scores) in scored.items():
        try:
            outcome = monitor_family(ws, store, timeline, name, version, as_of, scores)
        except ReferenceUnavailable as error:
            summary[name] = {"not_monitored": f"{name} v{version}: no training reference: {error}"}
            continue
        run_id = log_monitoring_run(ws, name, version, as_of, scoring_run, outcome)
        summary[name] = {
            k: (round(v, 4) if isinstance(v, float) else v)
            for k, v in outcome.items()
            if k in ("max_psi", "max_psi_feature", "score_psi", "realized_value", "promised_value")
        } | {"run_id": run_id}
    return summary
