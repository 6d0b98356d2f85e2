"""MLflow plumbing shared by every model: tracking URI, model logging, registry aliases, and the
promotion gate (a new version becomes `champion` only when it beats the current one).
"""
from __future__ import annotations

from importlib.metadata import version
from typing import Any, Callable

from cdp.paths import Workspace

# Explicit requirements: MLflow's inference takes 4-6 s per log_model (STACK_NOTES).
PIP_REQUIREMENTS = [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "lightgbm", "pandas", "numpy", "skops")]
SKOPS_TRUSTED = [
    "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier", "lightgbm.sklearn.LGBMRanker",
    "lightgbm.sklearn.LGBMRegressor", "collections.OrderedDict", "collections.defaultdict",
    "sklearn.calibration._CalibratedClassifier", "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.isotonic.IsotonicRegression", "sklearn.calibration._SigmoidCalibration",
    "sklearn.frozen._frozen.FrozenEstimator", "models.campaign_response.UpliftModel",
]
CHAMPION = "champion"


def use_workspace(ws: Workspace) -> None:
    import mlflow

    mlflow.set_tracking_uri(ws.mlflow_uri)
    mlflow.set_registry_uri(ws.mlflow_uri)


def set_experiment(ws: Workspace, name: str) -> None:
    """Use experiment `name`, keeping its artifacts inside the workspace (not ./mlruns of the cwd)."""
    import mlflow

    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=(ws.root / "mlartifacts" / name).as_uri())
    mlflow.set_experiment(name)


def champion_uri(model_name: str) -> str:
    return f"models:/{model_name}@{CHAMPION}"


def load_champion(ws: Workspace, model_name: str):
    """The champion sklearn model and its registered version (raises if none is registered)."""
    import mlflow
    from mlflow import MlflowClient

    use_workspace(ws)
    version_info = MlflowClient().get_model_version_by_alias(model_name, CHAMPION)
    model = mlflow.sklearn.load_model(champion_uri(model_name))
    return model, str(version_info.version)


def promote_if_better(model_name: str, version: str, metric: str, value: float,
                      score_champion: Callable[[Any], float] | None = None) -> dict:
    """Point alias `champion` at `version` when it is the first model or beats the champion.

    The champion is re-scored on the challenger's own out-of-time rows with `score_champion(model)`
    (same rows, same metric, higher is better); when that is not given or fails (e.g. the champion
    reads other features), the champion run's logged `metric` is used instead.
    Out: {"promoted", "champion_version", "previous_version", "previous_value", "compared_on"}.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        current = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        current = None
    previous_value, compared_on = None, "first model"
    if current is not None and str(current.version) != str(version):
        compared_on = "logged metric"
        if score_champion is not None:
            try:
                previous_value = float(score_champion(mlflow.sklearn.load_model(champion_uri(model_name))))
                compared_on = "same out-of-time rows"
            except Exception:  # noqa: BLE001 - any failure falls back to the logged metric
                previous_value = None
        if previous_value is None:
            previous_value = client.get_run(current.run_id).data.metrics.get(metric)
    promoted = current is None or previous_value is None or value > previous_value
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, str(version))
    return {"promoted": bool(promoted), "champion_version": str(version) if promoted else str(current.version),
            "previous_version": None if current is None else str(current.version),
            "previous_value": previous_value, "metric": metric, "value": float(value), "compared_on": compared_on}



def register_run_model(spec, model, value: float, features: list[str], plots: list, signature_input,
                       signature_output, score_champion: Callable[[Any], float], population) -> tuple[str, dict]:
    """Inside an active run: log plots + the feature list, the hashed ids of the customers whose
    data trained it (`population`, so erasure can name affected versions), log and register the
    model, then let the promotion gate decide on `champion` (`value` = its out-of-time metric).
    Returns (registered version, gate outcome)."""
    import json
    import tempfile
    from pathlib import Path

    import mlflow
    from mlflow.models import infer_signature

    from profiles.privacy import record_training_population

    record_training_population(mlflow.active_run().info.run_id, population)
    for path in plots:
        mlflow.log_artifact(str(path), artifact_path="plots")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "features.json").write_text(json.dumps(features, indent=1))
        mlflow.log_artifact(str(Path(tmp) / "features.json"))
    info = mlflow.sklearn.log_model(
        model, name="model", pip_requirements=PIP_REQUIREMENTS, registered_model_name=spec.name,
        signature=infer_signature(signature_input, signature_output), skops_trusted_types=SKOPS_TRUSTED)
    version = str(info.registered_model_version)
    gate = promote_if_better(spec.name, version, spec.primary_metric, value, score_champion)
    mlflow.set_tag("promotion", json.dumps(gate))
    return version, gate
