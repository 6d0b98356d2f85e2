"""Training pipeline: point-in-time training set from Feast -> out-of-time split -> fit ->
evaluate -> MLflow run with metrics, plots and the model -> registry alias `champion` (only when
the new version beats the current champion on the same out-of-time rows: tracking.promote_if_better).

    train_set = build_training_set(store, spec, entities)
    train, valid = split_out_of_time(train_set, spec)
    model = fit(spec, train); metrics = evaluate(model, valid); register(...)
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cdp.featurestore.store import float_features
from cdp.models.churn import (
    CHURN,
    calibration_report,
    fit_calibrated,
    labelled_entities,
    person_level_customers,
)
from cdp.models.spec import ModelSpec
from cdp.settings import setting
from cdp.training.evaluate import binary_metrics, binary_plots
from cdp.training.explain import explain
from cdp.training.gate import Reference
from cdp.training.model_card import churn_card, log_model_card
from cdp.training.tracking import register_run_model, set_experiment
from cdp.workspace import Workspace, use_workspace

ID_COLUMNS = ["customer_id", "event_timestamp"]


@dataclass
class TrainResult:
    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    train_rows: int
    valid_rows: int
    train_snapshots: list[str]
    valid_snapshot: str
    oracle: dict[str, float] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # model-specific results (baselines, promotion gate, ...)

    def to_dict(self) -> dict:
        return asdict(self)


def build_training_set(store, spec: ModelSpec, entities: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join of the model's FeatureService onto (customer_id, event_timestamp, label).

    The DuckDB offline store keeps entity rows with no feature row (nulls); a training set
    must have exactly as many rows as asked for, so that is checked here.
    """
    service = store.get_feature_service(spec.feature_service)
    if "spark" in str(store.config.offline_store.type).lower():
        frame = _spark_training_set(store, service, entities)
    else:
        frame = store.get_historical_features(entity_df=entities, features=service).to_df()
    if len(frame) != len(entities):
        raise RuntimeError(f"point-in-time join returned {len(frame)} rows for {len(entities)} entity rows")
    float_features(frame, service)  # typed counts/flags as the float matrices the models fit on
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame.sort_values(ID_COLUMNS, ignore_index=True)


def _spark_training_set(store, service, entities: pd.DataFrame) -> pd.DataFrame:
    """The point-in-time join on Feast's Spark offline store without passing through the driver's
    heap: the entity rows go in as Parquet read by Spark (a pandas entity frame is embedded in the
    query plan) and the joined set comes back as Parquet part files written by the executors
    (`to_df()` collects it in the driver). Both ran out of a 4 GB driver at 480k entity rows; this
    path joined them in 2.8 GB (benchmarks/feature_scale.py --stage join --spark-output parquet).
    Staging goes to $CDP_SPARK_STAGING (default: the system temp folder; on a cluster, storage
    every executor can reach) and is removed afterwards."""
    import shutil

    from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
        get_spark_session_or_start_new_with_repoconfig,
    )

    spark = get_spark_session_or_start_new_with_repoconfig(store.config.offline_store)
    staging = Path(tempfile.mkdtemp(prefix="cdp-training-set-", dir=setting("spark_staging") or None))
    try:
        rows = entities.assign(
            event_timestamp=pd.to_datetime(entities["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
        )  # Spark cannot read nanosecond Parquet timestamps
        rows.to_parquet(staging / "entities.parquet", index=False)
        job = store.get_historical_features(
            entity_df=spark.read.parquet(str(staging / "entities.parquet")), features=service
        )
        job.to_spark_df().write.mode("overwrite").parquet(str(staging / "joined"))
        return pd.read_parquet(staging / "joined")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def feature_columns(frame: pd.DataFrame, spec: ModelSpec) -> list[str]:
    return [c for c in frame.columns if c not in (*ID_COLUMNS, spec.label)]


def split_out_of_time(frame: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate on the last snapshot; train only on snapshots whose label window closes before it."""
    valid_at = frame["event_timestamp"].max()
    train_end = valid_at - pd.Timedelta(days=spec.horizon_days)
    train = frame[frame["event_timestamp"] <= train_end]
    valid = frame[frame["event_timestamp"] == valid_at]
    if train.empty or valid.empty or train[spec.label].nunique() < 2:
        raise ValueError(
            "not enough history for an out-of-time split: need snapshots at least "
            f"{spec.horizon_days} days before {valid_at:%Y-%m-%d} with both label values"
        )
    return train, valid


def calibration_rows(train: pd.DataFrame, customers: set[str] | None = None) -> pd.DataFrame:
    """The latest training snapshot (its label window is fully observed before validation), limited
    to `customers` (person-level customers, not fragments) when given."""
    rows = train[train["event_timestamp"] == train["event_timestamp"].max()]
    return rows if customers is None else rows[rows["customer_id"].isin(customers)]


def fit(spec: ModelSpec, train: pd.DataFrame, seed: int = 0, calibration_customers: set[str] | None = None):
    """Booster on all but the latest training snapshot; calibration on that latest snapshot
    (`calibration_rows`: only `calibration_customers` when given)."""
    latest = train["event_timestamp"].max()
    fit_part, calibration_part = (
        train[train["event_timestamp"] < latest],
        calibration_rows(train, calibration_customers),
    )
    if fit_part.empty:
        raise ValueError("need at least two training snapshots (one to fit, one to calibrate)")
    if calibration_customers is not None and calibration_part[spec.label].nunique() < 2:
        # no profile tables (orders-only data): no customer is person-level, calibrate on everyone
        calibration_part = calibration_rows(train)
    if calibration_part[spec.label].nunique() < 2:
        raise ValueError(
            f"calibration: the latest training snapshot {latest:%Y-%m-%d} has "
            f"{len(calibration_part)} rows, not both label values"
        )
    return fit_calibrated(fit_part, calibration_part, feature_columns(train, spec), spec.label, seed)


def predict(model, frame: pd.DataFrame) -> np.ndarray:
    """Probabilities with columns in the order the model was fitted on."""
    return model.predict_proba(frame[list(model.feature_names_in_)])[:, 1]


def _calibration_metrics(
    spec: ModelSpec, train: pd.DataFrame, valid: pd.DataFrame, score: np.ndarray, persons: set[str]
) -> dict[str, float]:
    """ECE and Brier vs a constant (the calibration rows' churn rate) on all validation rows and on
    the person-level ones (`person_*`, with their ROC AUC)."""
    from sklearn.metrics import roc_auc_score

    constant = float(calibration_rows(train, persons)[spec.label].mean())
    y = valid[spec.label].to_numpy()
    person = valid["customer_id"].isin(persons).to_numpy()
    out = calibration_report(y, score, constant)
    out.update(calibration_report(y[person], score[person], constant, prefix="person_"))
    out["person_rows"] = int(person.sum())
    if len(np.unique(y[person])) == 2:
        out["person_roc_auc"] = float(roc_auc_score(y[person], score[person]))
    return out


def recency_baseline(valid: pd.DataFrame, spec: ModelSpec) -> Reference:
    """The simple rule a churn model must beat: rank by days since the last order (never ordered = riskiest)."""
    from sklearn.metrics import roc_auc_score

    days = valid["days_since_last_order"].fillna(np.inf).rank(pct=True).to_numpy()
    return Reference("recency (days since the last order)", float(roc_auc_score(valid[spec.label], days)))


def _run_params(features: list[str], train: pd.DataFrame, valid: pd.DataFrame) -> dict:
    spec = CHURN
    return {
        "feature_service": spec.feature_service,
        "label": spec.label,
        "horizon_days": spec.horizon_days,
        "estimator": "LGBMClassifier + isotonic (out-of-time calibration, person-level customers)",
        "n_features": len(features),
        "train_rows": len(train),
        "valid_rows": len(valid),
        "train_snapshots": len(train["event_timestamp"].unique()),
        "valid_snapshot": f"{valid['event_timestamp'].max():%Y-%m-%d}",
    }


def _log_and_register(
    ws: Workspace,
    model,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    score: np.ndarray,
    metrics: dict[str, float],
    oracle: dict[str, float],
    fit_seconds: float,
) -> tuple[str, str, dict]:
    """One MLflow run: params, metrics, plots, the model card, the model through the champion gate."""
    import mlflow
    from sklearn.metrics import roc_auc_score

    spec = CHURN
    y_valid = valid[spec.label].to_numpy()
    use_workspace(ws)
    set_experiment(ws, spec.name)
    features = feature_columns(train, spec)
    with mlflow.start_run(run_name=f"{spec.name}-{valid['event_timestamp'].max():%Y%m%d}") as run:
        mlflow.log_params(_run_params(features, train, valid))
        mlflow.log_metrics({**metrics, "fit_seconds": fit_seconds, **{f"oracle_{k}": v for k, v in oracle.items()}})
        with tempfile.TemporaryDirectory() as tmp:
            plots = binary_plots(y_valid, score, Path(tmp)) + explain(model, valid[features], Path(tmp), "churn")
            version, gate = register_run_model(
                spec,
                model,
                metrics[spec.primary_metric],
                features,
                plots,
                valid[features].head(50),
                score[:50],
                lambda champion: roc_auc_score(y_valid, predict(champion, valid)),
                train["customer_id"],
                ws=ws,
                metrics=metrics,
                evaluate_model=lambda candidate: binary_metrics(y_valid, predict(candidate, valid)),
                baseline=recency_baseline(valid, spec),
            )
            log_model_card(churn_card(run.info.run_id, version, gate, train, valid, score, metrics, plots))
    return run.info.run_id, version, gate


def train_churn(
    ws: Workspace,
    store,
    orders: pd.DataFrame,
    snapshots: list[pd.Timestamp],
    data_end: pd.Timestamp,
    oracle_fn=None,
    progress=None,
) -> TrainResult:
    spec = CHURN
    step = progress or (lambda *_: None)
    entities = labelled_entities(orders, snapshots, data_end, spec)
    step("point-in-time training set", 1, 4)
    frame = build_training_set(store, spec, entities)
    train, valid = split_out_of_time(frame, spec)
    step("fit LightGBM + calibration", 2, 4)
    started = time.perf_counter()
    # without profile tables (orders-only data) nobody is person-level: everyone counts as a person
    persons = person_level_customers(pd.read_parquet(ws.identity / "identity_map.parquet")) or set(frame["customer_id"])
    model = fit(spec, train, calibration_customers=persons)
    fit_seconds = time.perf_counter() - started
    score = predict(model, valid)
    y_valid = valid[spec.label].to_numpy()
    metrics = binary_metrics(y_valid, score)
    metrics.update(_calibration_metrics(spec, train, valid, score, persons))
    oracle = oracle_fn(valid[ID_COLUMNS].assign(label=y_valid), score) if oracle_fn else {}
    step("log to MLflow", 3, 4)

    run_id, version, gate = _log_and_register(ws, model, train, valid, score, metrics, oracle, fit_seconds)
    step("registered", 4, 4)
    return TrainResult(
        model_name=spec.name,
        version=version,
        run_id=run_id,
        metrics=metrics,
        train_rows=len(train),
        valid_rows=len(valid),
        train_snapshots=[f"{t:%Y-%m-%d}" for t in sorted(train["event_timestamp"].unique())],
        valid_snapshot=f"{valid['event_timestamp'].max():%Y-%m-%d}",
        oracle=oracle,
        extra={"promotion": gate},
    )
