"""MLflow plumbing shared by every model: tracking URI, model logging, registry aliases."""
from __future__ import annotations

from importlib.metadata import version

from cdp.paths import Workspace

# Explicit requirements: MLflow's inference takes 4-6 s per log_model (STACK_NOTES).
PIP_REQUIREMENTS = [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "lightgbm", "pandas", "numpy", "skops")]
SKOPS_TRUSTED = [
    "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier", "lightgbm.sklearn.LGBMRanker",
    "lightgbm.sklearn.LGBMRegressor", "collections.OrderedDict", "collections.defaultdict",
    "sklearn.calibration._CalibratedClassifier", "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.isotonic.IsotonicRegression", "sklearn.calibration._SigmoidCalibration",
    "sklearn.frozen._frozen.FrozenEstimator",
]
CHAMPION = "champion"


def use_workspace(ws: Workspace) -> None:
    import mlflow

    mlflow.set_tracking_uri(ws.mlflow_uri)
    mlflow.set_registry_uri(ws.mlflow_uri)


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
