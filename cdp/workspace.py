"""Where every stage reads and writes: one workspace folder (default ./data, or $CDP_HOME)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cdp.settings import setting


@dataclass(frozen=True)
class Workspace:
    """Folders of one platform instance. Raw input is read-only; everything else is derived."""

    root: Path

    @classmethod
    def from_env(cls, root: str | Path | None = None) -> Workspace:
        chosen = root or setting("home") or "data"
        return cls(Path(chosen).expanduser().resolve())

    @property
    def raw(self) -> Path:  # data contract input, never written back by the pipeline
        return self.root / "raw"

    @property
    def truth(self) -> Path:  # synthetic ground truth; only evaluation code reads it
        return self.root / "truth"

    @property
    def staged(self) -> Path:  # validated, normalized tables
        return self.root / "staged"

    @property
    def quarantine(self) -> Path:
        return self.staged / "quarantine.parquet"

    @property
    def identity(self) -> Path:
        return self.root / "identity"

    @property
    def features(self) -> Path:  # Parquet offline store behind Feast
        return self.root / "features"

    @property
    def feast(self) -> Path:  # Feast registry + SQLite online store
        return self.root / "feast"

    @property
    def mlflow_uri(self) -> str:
        # CDP_MLFLOW_URI, not MLFLOW_TRACKING_URI: mlflow.set_tracking_uri() writes that variable, which
        # would make every later Workspace in the process follow the first one's database.
        return setting("mlflow_uri") or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def ensure(self) -> Workspace:
        for folder in (self.raw, self.staged, self.identity, self.features, self.feast, self.reports):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def use_workspace(ws: Workspace) -> None:
    """Point MLflow tracking and the registry at this workspace's database (every stage that logs or loads)."""
    import mlflow

    mlflow.set_tracking_uri(ws.mlflow_uri)
    mlflow.set_registry_uri(ws.mlflow_uri)
    # the experiment chosen for the previous workspace's runs (an id in *its* database) must not
    # follow us into this one: unset it, so runs without set_experiment go to this database's default
    import mlflow.tracking.fluent as fluent

    if getattr(fluent, "_active_experiment_id", None) is not None:
        fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
