"""Opening the Feast feature store of a workspace, applying definitions, materializing.

Feast is imported lazily: `import feast` costs seconds and must stay out of `--help`.
The yaml is `feature_repo/feature_store.yaml` unless CDP_FEATURE_STORE_YAML names another
(that is how the scale-out profile swaps engines without code changes).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cdp.paths import REPO_ROOT, Workspace

if TYPE_CHECKING:
    from feast import FeatureStore

FEATURE_REPO = REPO_ROOT / "feature_repo"
SCORE_SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
    ("churn_probability", pa.float64()), ("churn_model_version", pa.string()),
    ("churn_scored_at", pa.string()),
])


def repo_definitions() -> ModuleType:
    """feature_repo/definitions.py as a module (the folder is a Feast repo, not a package)."""
    spec = importlib.util.spec_from_file_location("cdp_feature_definitions", FEATURE_REPO / "definitions.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def open_store(ws: Workspace) -> "FeatureStore":
    from feast import FeatureStore

    # ibis (inside Feast's DuckDB store) warns on every query about a DuckDB rename; not for users.
    warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
    os.environ["CDP_HOME"] = str(ws.root)  # expanded inside feature_store.yaml
    ws.feast.mkdir(parents=True, exist_ok=True)
    yaml = Path(os.environ.get("CDP_FEATURE_STORE_YAML", FEATURE_REPO / "feature_store.yaml"))
    return FeatureStore(repo_path=str(FEATURE_REPO), fs_yaml_file=yaml)


def apply_definitions(ws: Workspace) -> "FeatureStore":
    scores = ws.features / "churn_scores.parquet"
    if not scores.exists():  # the PushSource's batch file needs explicit column types
        pq.write_table(SCORE_SCHEMA.empty_table(), scores)
    store = open_store(ws)
    store.apply(repo_definitions().definitions(ws.features))
    return store


def materialize_latest(ws: Workspace, store: "FeatureStore", as_of: pd.Timestamp) -> None:
    """Load the latest snapshot of every batch feature view into the online store."""
    definitions = repo_definitions()
    os.environ.setdefault("TQDM_DISABLE", "1")  # Feast's per-view tqdm bars would flood the CLI's own progress
    with contextlib.redirect_stdout(io.StringIO()):  # and so would its banner per view
        store.materialize(start_date=(as_of - definitions.SNAPSHOT_TTL).to_pydatetime(),
                          end_date=(as_of + pd.Timedelta(seconds=1)).to_pydatetime(),
                          feature_views=list(definitions.FEATURES))
