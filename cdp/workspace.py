"""Where every stage reads and writes: one workspace folder (default ./data, or $CDP_HOME)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from cdp.settings import setting


@dataclass(frozen=True)
class Artifact:
    """A named workspace file: where it lives (relative to the root) and which command makes it."""

    name: str
    relative: str
    made_by: str
    description: str


# The workspace catalog: every file one stage hands to another, named once. Stages ask for paths
# by name (`ws.path("identity_map")`) and check their inputs first (`ws.require(...)`).
CATALOG: dict[str, Artifact] = {
    a.name: a
    for a in (
        Artifact("staged_orders", "staged/orders.parquet", "cdp ingest", "validated, normalized tables"),
        Artifact("quarantine", "staged/quarantine.parquet", "cdp ingest", "rejected rows with reasons"),
        Artifact("field_issues", "staged/field_issues.parquet", "cdp ingest", "values nulled or kept, with reasons"),
        Artifact("identity_map", "identity/identity_map.parquet", "cdp resolve", "source record -> customer_id"),
        Artifact("identifier_map", "identity/identifier_map.parquet", "cdp resolve", "identifier -> customer_id"),
        Artifact("match_edges", "identity/match_edges.parquet", "cdp resolve", "accepted record links with evidence"),
        Artifact("splink_model", "identity/splink_model.json", "cdp resolve", "the trained match model"),
        Artifact(
            "blocked_identifiers",
            "identity/blocked_identifiers.parquet",
            "cdp resolve",
            "identifiers shared by too many people to link on",
        ),
        Artifact("households", "identity/households.parquet", "cdp resolve", "customer -> household"),
        Artifact("id_history", "identity/id_history.parquet", "cdp resolve", "merged/split customer ids"),
        Artifact("snapshots", "features/snapshots.json", "cdp features", "snapshot times and data end"),
        Artifact("customer_profile", "features/customer_profile.parquet", "cdp features", "the profile view"),
        Artifact("feast_registry", "feast/registry.db", "cdp features", "Feast registry (feast apply)"),
        Artifact("churn_scores", "features/churn_scores.parquet", "cdp score", "latest churn scores"),
        Artifact("demo_summary", "reports/demo_summary.json", "cdp demo", "figures of the last demo run"),
    )
}


class MissingArtifact(FileNotFoundError):
    """A stage's input is not in the workspace; the message names it and the command that makes it."""


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
        return self.path("quarantine")

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

    def path(self, name: str) -> Path:
        """Where the catalog's artifact `name` lives in this workspace."""
        return self.root / CATALOG[name].relative

    def require(self, *names: str) -> None:
        """Check a stage's inputs before it starts: the first missing one says what makes it."""
        for name in names:
            artifact = CATALOG[name]
            if not self.path(name).exists():
                label = name.replace("_", " ")
                raise MissingArtifact(
                    f"no {label} ({artifact.relative}) in {self.root}: run `{artifact.made_by}` first"
                )

    def ensure(self) -> Workspace:
        for folder in (self.raw, self.staged, self.identity, self.features, self.feast, self.reports):
            folder.mkdir(parents=True, exist_ok=True)
        private(self.root)
        return self


PRIVATE_UMASK = 0o077


def private(root: Path) -> None:
    """Personal data stays the owner's: the workspace folder is 0700 (also one made by an earlier
    version), and files and folders the process creates from now on are 0600 / 0700."""
    os.umask(PRIVATE_UMASK)
    if root.exists() and root.stat().st_mode & 0o077:
        root.chmod(0o700)


# Where MLflow stores absolute artifact URIs (a run's, a logged model's, an experiment's, a version's).
MLFLOW_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
)


_RELOCATED: set[tuple[Path, int]] = set()  # (workspace, database inode) already checked by this process


def relocate_mlflow(ws: Workspace) -> int:
    """Make a copied or moved workspace use its own models: MLflow records artifact locations as
    absolute URIs, so a copy would read (and write) the original's `mlartifacts/`. When the
    workspace's own SQLite database points at another folder's `mlartifacts`, those URIs are
    rewritten to this one's. A configured CDP_MLFLOW_URI (e.g. PostgreSQL) is left alone.
    Returns the number of locations rewritten."""
    import sqlite3

    database = ws.root / "mlflow.db"
    if setting("mlflow_uri") or not database.exists():
        return 0
    checked = (ws.root, database.stat().st_ino)  # a copy is a new file: checked again
    if checked in _RELOCATED:
        return 0
    _RELOCATED.add(checked)
    here = (ws.root / "mlartifacts").as_uri()
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db:
        try:
            locations = [row[0] for row in db.execute("SELECT artifact_location FROM experiments")]
        except sqlite3.OperationalError:  # not initialized by MLflow yet
            return 0
        elsewhere = {loc.split("/mlartifacts/")[0] + "/mlartifacts" for loc in locations if "/mlartifacts/" in loc}
        elsewhere.discard(here)
        rewritten = 0
        with db:
            for old in elsewhere:
                for table, column in MLFLOW_LOCATION_COLUMNS:
                    rewritten += db.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                        (here, len(old) + 1, len(old) + 1, old + "/"),
                    ).rowcount
        return rewritten


def use_workspace(ws: Workspace) -> None:
    """Point MLflow tracking and the registry at this workspace's database (every stage that logs
    or loads), with its artifact locations inside this workspace (`relocate_mlflow`)."""
    import mlflow

    relocate_mlflow(ws)

    mlflow.set_tracking_uri(ws.mlflow_uri)
    mlflow.set_registry_uri(ws.mlflow_uri)
    # the experiment chosen for the previous workspace's runs (an id in *its* database) must not
    # follow us into this one: unset it, so runs without set_experiment go to this database's default
    import mlflow.tracking.fluent as fluent

    if getattr(fluent, "_active_experiment_id", None) is not None:
        fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
