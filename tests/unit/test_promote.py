"""`cdp promote`: the out-of-time gate, explicit refusals, --force recorded as tags, and the
champion-comparison report every training run logs. Works on a copy of the session workspace."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
from mlflow import MlflowClient

from cdp.models.churn import CHURN
from cdp.training.tracking import champion_version as tracked_champion_version
from cdp.workspace import Workspace, use_workspace


def cli(*args: str, home) -> tuple[int, str]:
    from typer.testing import CliRunner

    from cdp.cli.app import app

    result = CliRunner().invoke(app, [*args, "--home", str(home)], terminal_width=200)
    return result.exit_code, " ".join(
        (result.output + (repr(result.exception) if result.exit_code not in (0, 1, 2) else "")).split()
    )


@pytest.fixture(scope="module")
def promote_ws(pipeline_ws, tmp_path_factory):
    """A copy of the session workspace with a deliberately worse churn version (trained on shuffled
    labels) after its champion. Version numbers are read, not assumed: other tests may have added
    and deleted versions in the session registry before the copy."""
    import cdp.training.train as train_module
    from cdp import pipeline

    home = tmp_path_factory.mktemp("promote") / "ws"
    shutil.copytree(pipeline_ws.root, home)
    ws = Workspace(home)
    honest_fit = train_module.fit

    def shuffled_fit(spec, train, seed=0, **options):
        noisy = train.copy()
        noisy[spec.label] = np.random.default_rng(1).permutation(noisy[spec.label].to_numpy())
        return honest_fit(spec, noisy, seed, **options)

    good = champion_version(ws)
    train_module.fit = shuffled_fit
    try:
        worse = pipeline.train(ws, "churn")
    finally:
        train_module.fit = honest_fit
    worse["champion_before"] = good
    return ws, worse


def champion_version(ws: Workspace) -> str | None:
    return tracked_champion_version(ws, CHURN.name)


def test_training_logs_a_comparison_with_the_champion(promote_ws, stage_results):
    ws, worse = promote_ws
    assert int(worse["version"]) > int(worse["champion_before"]) and not worse["extra"]["promotion"]["promoted"]
    use_workspace(ws)
    import mlflow

    path = mlflow.artifacts.download_artifacts(run_id=worse["run_id"], artifact_path="reports/champion_comparison.json")
    report = json.loads(pathlib.Path(path).read_text())
    assert report["champion_version"] == worse["champion_before"] and report["compared_on"].startswith(
        "same out-of-time rows"
    )
    rows = {r["metric"]: r for r in report["rows"]}
    # the champion re-scored on the challenger's rows: same rows as its own validation here
    assert rows["roc_auc"]["champion"] == pytest.approx(stage_results["train"]["metrics"]["roc_auc"])
    assert rows["roc_auc"]["challenger"] == pytest.approx(worse["metrics"]["roc_auc"])
    assert worse["metrics"]["roc_auc"] < 0.6
    assert rows["brier"]["better"] == "lower" and rows["roc_auc"]["delta"] < 0


def test_promote_refuses_a_worse_challenger_and_says_why(promote_ws):
    ws, worse = promote_ws
    good, bad = worse["champion_before"], worse["version"]
    code, output = cli("promote", "churn", home=ws.root)  # latest version = the worse one
    assert code == 1, output
    # shuffled labels lose to the recency rule measured in the same run: the first check of the gate
    assert "refused" in output and "no model better than recency" in output and "--force" in output
    assert champion_version(ws) == good
    report = json.loads((ws.reports / f"promotion_churn_v{bad}.json").read_text())
    assert report["decision"] == "refused" and report["challenger_value"] < report["champion_value"]


def test_force_is_explicit_and_recorded_then_the_gate_restores_the_better_model(promote_ws):
    ws, worse = promote_ws
    good, bad = worse["champion_before"], worse["version"]
    code, output = cli("promote", "churn", "--version", bad, "--force", "--reason", "test override", home=ws.root)
    assert code == 0 and "forced" in output, output
    assert champion_version(ws) == bad
    tags = MlflowClient().get_model_version(CHURN.name, bad).tags
    assert tags["promotion_forced"] == "true" and tags["promotion_forced_reason"] == "test override"
    assert json.loads(tags["promotion"])["passed_gate"] is False
    code, output = cli("promote", "churn", "--version", good, home=ws.root)  # the good one beats the forced one
    assert code == 0 and "promoted" in output, output
    assert champion_version(ws) == good
    assert "promotion_forced" not in MlflowClient().get_model_version(CHURN.name, good).tags
    code, output = cli("promote", "churn", "--version", good, home=ws.root)
    assert code == 0 and "already champion" in output


def test_bad_requests_are_clear_errors(promote_ws):
    ws, _ = promote_ws
    code, output = cli("promote", "nope", home=ws.root)
    assert code == 2 and "unknown model 'nope'" in output
    code, output = cli("promote", "churn", "--version", "99", home=ws.root)
    assert code == 2 and "no version 99" in output


def test_the_champion_reloader_leaves_the_process_mlflow_uris_alone(pipeline_ws, promote_ws):
    """The service's reloader thread reads its own workspace's registry; it once called
    use_workspace(), which re-pointed a concurrent `cdp promote` in the same process at the other
    workspace's champion (a flaky CI failure of the test above)."""
    import mlflow

    from cdp.serving.service import Champions

    ws, _ = promote_ws
    champions = Champions(pipeline_ws, (CHURN.name,))  # the service's workspace, not ws
    use_workspace(ws)
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    champions.models.clear()  # force a real reload
    assert champions.reload() == [CHURN.name]
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before == (ws.mlflow_uri, ws.mlflow_uri)
    assert champions.get(CHURN.name)[1] == champion_version(pipeline_ws)
