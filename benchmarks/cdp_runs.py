"""What the oracle benchmarks share: run a `cdp` command as a user would, read the run it logged.

Imported by the scripts in this folder (`python benchmarks/<script>.py` puts it on sys.path).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str], env: dict[str, str]) -> float:
    """Run `cmd` (seconds it took); stop the benchmark with its output's tail if it fails."""
    started = time.perf_counter()
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def latest_run(home: Path, experiment_name: str) -> tuple[dict[str, float], dict[str, str]]:
    """Metrics and params of the newest MLflow run of `experiment_name` in the workspace at `home`."""
    from mlflow import MlflowClient

    from cdp.workspace import Workspace, use_workspace

    use_workspace(Workspace(home))
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    latest = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    return latest.data.metrics, latest.data.params
