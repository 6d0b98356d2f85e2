"""`bentoml build` of bentofile.yaml into a throwaway BENTOML_HOME (as README documents it, with
UV_CONSTRAINT=constraints.txt): the bento that `bentoml containerize` turns into an image holds the
service code, the Feast repo and requirements locked to exactly the versions the tests run on.
~15 s (the lock asks the package index)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_bentoml_build_packs_the_service_code_and_pinned_requirements(tmp_path):
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "UV_CONSTRAINT": str(REPO_ROOT / "constraints.txt"),
    }  # the lock resolves within our pins
    bentoml = [sys.executable, "-m", "bentoml"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(REPO_ROOT / "dist"), str(REPO_ROOT)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    subprocess.run(
        [*bentoml, "build", str(REPO_ROOT)],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    listed = subprocess.run(
        [*bentoml, "get", "cdp_scores:latest", "-o", "yaml"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    info = yaml.safe_load(listed)
    assert info["name"] == "cdp_scores" and info["service"] == "cdp.serving.service:CustomerScores"
    bento = next((tmp_path / "bentoml" / "bentos" / "cdp_scores").glob("*/bento.yaml")).parent
    wheel = next((bento / "env" / "python" / "wheels").glob("cdp_ml-*.whl"))
    with zipfile.ZipFile(wheel) as packed:
        names = set(packed.namelist())
    for needed in (
        "cdp/serving/service.py",
        "cdp/featurestore/store.py",
        "cdp/featurestore/spark.py",
        "cdp/models/churn.py",
        "cdp/training/tracking.py",
        "cdp/features/definitions.py",
        "cdp/feature_repo/feature_store.redis.spark.yaml",
        "cdp/config/scale.env",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("tests/", "data/"))]
    direct = (
        bento / "env" / "python" / "requirements.txt"
    ).read_text()  # direct pins (with a wheel, bentoml names the lock .lock.txt)
    assert "feast[duckdb,redis]==0.67.0" in direct and "bentoml==1.4.39" in direct
    locked = _pins((bento / "env" / "python" / "requirements.lock.txt").read_text())
    constraints = _pins((REPO_ROOT / "constraints.txt").read_text())
    assert {"feast", "mlflow", "lightgbm", "pandas", "bentoml", "redis", "pyspark", "psycopg2-binary"} <= set(locked)
    assert len(locked) > 100  # the whole closure, not just the direct pins
    assert {name: version for name, version in locked.items() if constraints.get(name) != version} == {}
    assert Path(bento / "env" / "docker").is_dir()


def _pins(text: str) -> dict[str, str]:
    """name -> version of every `name[extras]==version` line (names lower-cased, extras dropped)."""
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;#]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(3)
    return pins
