"""MLflow plumbing shared by every model: tracking URI, model logging, registry aliases, and the
promotion gate (a new version becomes `champion` only when it beats the current one).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import version
from typing import Any

from cdp.training.gate import Reference, better_direction, decide
from cdp.workspace import Workspace

# Explicit requirements: MLflow's inference takes 4-6 s per log_model (STACK_NOTES).
PIP_REQUIREMENTS = [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "lightgbm", "pandas", "numpy", "skops")]
SKOPS_TRUSTED = [
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRanker",
    "lightgbm.sklearn.LGBMRegressor",
    "collections.OrderedDict",
    "collections.defaultdict",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.isotonic.IsotonicRegression",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.frozen._frozen.FrozenEstimator",
    "cdp.models.campaign_response.UpliftModel",
    "sklearn.pipeline.Pipeline",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression",
    "numpy.dtype",
    "cdp.models.clv.CLVModel",
]
CHAMPION = "champion"


def git_commit() -> str:
    """The commit of the package's source checkout (with `-dirty` when modified), or "unknown"
    (installed from a wheel): which code made a model, next to its hyperparameters."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty else "")


def set_experiment(ws: Workspace, name: str) -> None:
    """Use experiment `name`, keeping its artifacts inside the workspace (not ./mlruns of the cwd)."""
    import mlflow

    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=(ws.root / "mlartifacts" / name).as_uri())
    mlflow.set_experiment(name)
    # mlflow.set_experiment also exports MLFLOW_EXPERIMENT_ID, which outlives set_tracking_uri and
    # would point the next workspace's runs at an experiment id its database may not have.
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def registry_client(ws: Workspace):
    """A client bound to the workspace's MLflow database. Unlike `use_workspace` it leaves the
    process-wide MLflow URIs alone, so a background thread (the service's champion reloader) can
    read the registry without re-pointing whatever else the process is doing at its workspace."""
    from mlflow import MlflowClient

    from cdp.workspace import relocate_mlflow

    relocate_mlflow(ws)
    return MlflowClient(tracking_uri=ws.mlflow_uri, registry_uri=ws.mlflow_uri)


class UnsafeModel(ValueError):
    """A model artifact that is not a skops-serialized sklearn model of allow-listed types."""


def load_model_uri(uri: str):
    """The sklearn model at `uri`, loaded only when it is safe to load.

    MLflow would unpickle whatever `MLmodel` names (`pickle`/`cloudpickle` run code on load) and
    for skops it trusts the `skops_trusted_types` written into that same artifact, so a tampered
    artifact can run its payload. Here the flavour and format are checked first, the payload is
    never unpickled, and skops loads with the allow-list held in code (`SKOPS_TRUSTED`)."""
    from pathlib import Path

    import mlflow
    import skops.io
    from mlflow.models import Model

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    mlmodel = local / "MLmodel"
    if not mlmodel.is_file():
        raise UnsafeModel(f"model at {uri}: no MLmodel file; refusing to load it")
    try:
        flavors = Model.load(str(mlmodel)).flavors or {}
    except Exception as exc:  # malformed YAML or fields: not a model we wrote
        raise UnsafeModel(f"model at {uri}: MLmodel cannot be read ({exc}); refusing to load it") from None
    sklearn = flavors.get("sklearn")
    if not isinstance(sklearn, dict):
        raise UnsafeModel(
            f"model at {uri}: flavour(s) {sorted(flavors)} are not loaded; only sklearn models saved "
            "with serialization_format: skops are (retrain it with `cdp train`)"
        )
    fmt = sklearn.get("serialization_format")
    if fmt != "skops":
        raise UnsafeModel(
            f"model at {uri}: serialization_format {fmt!r} can run code when loaded; only 'skops' is "
            "loaded (retrain it with `cdp train`)"
        )
    name = str(sklearn.get("pickled_model") or "")
    path = (local / name).resolve()
    if not name or local.resolve() not in path.parents or not path.is_file():
        raise UnsafeModel(f"model at {uri}: pickled_model {name!r} is not a file inside the model folder")
    untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(SKOPS_TRUSTED))
    if untrusted:
        raise UnsafeModel(
            f"model at {uri}: types {untrusted} are not in the allow-list held in code "
            "(cdp.training.tracking.SKOPS_TRUSTED); refusing to load it"
        )
    return skops.io.load(path, trusted=SKOPS_TRUSTED)


def load_version(model_name: str, version: str, client=None):
    """The sklearn model of one registered version, read from its storage location (so the
    version is pinned: an alias that moves meanwhile cannot swap in another model), loaded by
    `load_model_uri` (skops with the allow-list held in code; anything else refused)."""
    from mlflow import MlflowClient

    client = client or MlflowClient()
    return load_model_uri(client.get_model_version_download_uri(model_name, str(version)))


def current_champion(client, model_name: str):
    """The ModelVersion aliased `champion` in `client`'s registry, or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def champion_version(ws: Workspace, model_name: str) -> str | None:
    """The version aliased `champion` in the workspace's registry, or None."""
    current = current_champion(registry_client(ws), model_name)
    return None if current is None else str(current.version)


def has_champion(ws: Workspace, model_name: str) -> bool:
    return champion_version(ws, model_name) is not None


def load_latest(ws: Workspace, model_name: str) -> tuple[Any, str, bool]:
    """(model, version, is champion): the champion, else the latest registered version, e.g. to
    inspect a model the gate refused. Raises LookupError when nothing is registered."""
    client = registry_client(ws)
    if has_champion(ws, model_name):
        model, version = load_champion(ws, model_name)
        return model, version, True
    versions = client.search_model_versions(f"name='{model_name}'")
    if not versions:
        raise LookupError(f"no '{model_name}' model registered: run `cdp train {model_name.replace('_', '-')}`")
    version = str(max(int(v.version) for v in versions))
    return load_version(model_name, version, client), version, False


def load_champion(ws: Workspace, model_name: str):
    """The champion sklearn model and its registered version (raises if none is registered)."""
    client = registry_client(ws)
    version = str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    return load_version(model_name, version, client), version


def apply_gate(
    model_name: str,
    version: str,
    metric: str,
    value: float,
    score_champion: Callable[[Any], float] | None = None,
    baseline: Reference | None = None,
) -> dict:
    """The champion gate (cdp.training.gate.decide) for a registered `version`: alias `champion`
    moves to it only when it beats its same-run `baseline` and the current champion.

    The champion is re-scored on the challenger's own out-of-time rows with `score_champion(model)`
    (same rows, same metric); when that is not given or fails (e.g. the champion reads other
    features), the champion run's logged `metric` is used instead.
    Out: {"promoted", "champion_version", "previous_version", "previous_value", "compared_on",
    "verdict", "baseline", "baseline_value", "metric", "value"}."""
    from mlflow import MlflowClient

    client = MlflowClient()
    current = current_champion(client, model_name)
    previous_value, compared_on = None, "first model"
    if current is not None and str(current.version) != str(version):
        compared_on = "logged metric"
        if score_champion is not None:
            try:
                previous_value = float(score_champion(load_version(model_name, current.version, client)))
                compared_on = "same out-of-time rows"
            except Exception:
                previous_value = None
        if previous_value is None:
            previous_value = client.get_run(current.run_id).data.metrics.get(metric)
    champion = (
        None if current is None or previous_value is None else Reference(f"champion v{current.version}", previous_value)
    )
    decision = decide(metric, value, baseline, champion)
    if decision.promoted:
        client.set_registered_model_alias(model_name, CHAMPION, str(version))
    return {
        "promoted": decision.promoted,
        "champion_version": str(version) if decision.promoted else (None if current is None else str(current.version)),
        "previous_version": None if current is None else str(current.version),
        "previous_value": previous_value,
        "metric": metric,
        "value": float(value),
        "compared_on": compared_on,
        "verdict": decision.reason,
        "baseline": None if baseline is None else baseline.name,
        "baseline_value": None if baseline is None else float(baseline.value),
    }


def compare_with_champion(
    model_name: str, challenger_metrics: dict[str, float], evaluate_model: Callable[[Any], dict[str, float]] | None
) -> dict:
    """Challenger vs current champion on the challenger's own out-of-time rows.

    `evaluate_model(model)` computes the full metric dict of any model on those rows; the
    champion is loaded from the registry and re-scored with it. When it cannot be re-scored
    (no champion yet, other features, ...) its run's logged metrics are shown instead and
    `compared_on` says so. Out: {"champion_version", "compared_on", "champion_metrics", "rows"}.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    current = current_champion(client, model_name)
    champion_metrics: dict[str, float] = {}
    compared_on = "no champion yet"
    if current is not None:
        compared_on = "champion's logged metrics (its own out-of-time rows)"
        if evaluate_model is not None:
            try:
                champion_metrics = {
                    k: float(v) for k, v in evaluate_model(load_version(model_name, current.version, client)).items()
                }
                compared_on = "same out-of-time rows (champion re-scored)"
            except Exception:
                champion_metrics = {}
        if not champion_metrics:
            champion_metrics = dict(client.get_run(current.run_id).data.metrics)
    rows = []
    for metric, value in challenger_metrics.items():
        other = champion_metrics.get(metric)
        rows.append(
            {
                "metric": metric,
                "challenger": float(value),
                "champion": None if other is None else float(other),
                "delta": None if other is None else float(value) - float(other),
                "better": better_direction(metric),
            }
        )
    return {
        "model": model_name,
        "champion_version": None if current is None else str(current.version),
        "champion_run_id": None if current is None else current.run_id,
        "compared_on": compared_on,
        "champion_metrics": champion_metrics,
        "rows": rows,
    }


def comparison_markdown(comparison: dict, challenger_version: str, gate: dict | None = None) -> str:
    """The comparison as a markdown table (logged next to the JSON, readable in the MLflow UI)."""
    champion = comparison["champion_version"]
    lines = [
        f"# {comparison['model']}: challenger v{challenger_version} vs champion "
        f"{'v' + champion if champion else '(none)'}",
        "",
        f"Compared on: {comparison['compared_on']}.",
        "",
        f"| metric | challenger v{challenger_version} | champion {'v' + champion if champion else '-'} "
        "| delta | better is |",
        "|---|---:|---:|---:|---|",
    ]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    for row in comparison["rows"]:
        lines.append(
            f"| {row['metric']} | {fmt(row['challenger'])} | {fmt(row['champion'])} | "
            f"{fmt(row['delta'])} | {row['better']} |"
        )
    if gate is not None:
        verdict = gate.get("verdict") or (
            "promoted to champion" if gate["promoted"] else "not promoted (champion kept)"
        )
        lines += ["", f"Gate on `{gate['metric']}` ({gate['compared_on']}): {verdict}."]
    return "\n".join(lines) + "\n"


def log_comparison(comparison: dict, challenger_version: str, gate: dict | None) -> None:
    """Inside an active run: reports/champion_comparison.{json,md}."""
    import json
    import tempfile
    from pathlib import Path

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "champion_comparison.json").write_text(
            json.dumps({**comparison, "challenger_version": challenger_version, "gate": gate}, indent=1, default=str)
        )
        (Path(tmp) / "champion_comparison.md").write_text(comparison_markdown(comparison, challenger_version, gate))
        mlflow.log_artifacts(tmp, artifact_path="reports")


REGISTRY_CHATTER = ("Successfully registered model", "Registered model", "Created version")


@contextlib.contextmanager
def _registry_chatter_dropped() -> Iterator[None]:
    """MLflow prints "Registered model 'x' already exists..." and "Created version 'n'" to stderr
    on every registration; the CLI reports the version itself. Anything else is passed through."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        rest = [line for line in captured.getvalue().splitlines() if not line.startswith(REGISTRY_CHATTER)]
        if rest:
            sys.stderr.write("\n".join(rest) + "\n")


def register_run_model(
    spec,
    model,
    value: float,
    features: list[str],
    plots: list,
    signature_input,
    signature_output,
    score_champion: Callable[[Any], float],
    population,
    ws: Workspace,
    metrics: dict[str, float] | None = None,
    evaluate_model: Callable[[Any], dict[str, float]] | None = None,
    baseline: Reference | None = None,
) -> tuple[str, dict]:
    """Inside an active run: log plots + the feature list, the hashed ids of the customers whose
    data trained it (`population`, so erasure can name affected versions), log and register the
    model, compare it with the current champion on the same out-of-time rows
    (`evaluate_model(model) -> metrics`; reports/champion_comparison.{json,md}), then let the
    promotion gate decide on `champion` (`value` = its out-of-time metric).
    Returns (registered version, gate outcome)."""
    import json
    import tempfile
    from pathlib import Path

    import mlflow
    from mlflow.models import infer_signature

    from cdp.privacy.subjects import record_training_population

    run = mlflow.active_run()
    assert run is not None, "log_run_artifacts runs inside an MLflow run"
    mlflow.log_params(spec.logged_hyperparameters())
    mlflow.set_tag("git_commit", git_commit())
    record_training_population(ws, run.info.run_id, population)
    for path in plots:
        mlflow.log_artifact(str(path), artifact_path="plots")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "features.json").write_text(json.dumps(features, indent=1))
        mlflow.log_artifact(str(Path(tmp) / "features.json"))
    comparison = compare_with_champion(spec.name, metrics or {spec.primary_metric: value}, evaluate_model)
    rescored = comparison["compared_on"].startswith("same")
    if rescored and spec.primary_metric in comparison["champion_metrics"]:
        champion_value = comparison["champion_metrics"][spec.primary_metric]
        score_champion = lambda _champion: champion_value
    with _registry_chatter_dropped():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=spec.name,
            signature=infer_signature(signature_input, signature_output),
            skops_trusted_types=SKOPS_TRUSTED,
        )
    version = str(info.registered_model_version)
    if baseline is not None:  # `cdp promote` applies the same gate later: keep the baseline with the run
        mlflow.log_metric(f"baseline_{spec.primary_metric}", float(baseline.value))
        mlflow.set_tag("baseline", baseline.name)
    gate = apply_gate(spec.name, version, spec.primary_metric, value, score_champion, baseline)
    if not gate["promoted"]:
        mlflow.set_tag("no_champion_reason", gate["verdict"])
    mlflow.set_tag("promotion", json.dumps(gate))
    log_comparison(comparison, version, gate)
    return version, gate
