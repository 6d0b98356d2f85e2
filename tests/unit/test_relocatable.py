"""A copied or moved workspace trains and serves its own models (issue 16 item 8)."""

from __future__ import annotations

import shutil

from cdp.workspace import Workspace


def _artifact_files(ws: Workspace) -> set[str]:
    return {str(p.relative_to(ws.root)) for p in (ws.root / "mlartifacts").rglob("*") if p.is_file()}


def test_a_moved_copy_uses_and_writes_its_own_artifacts(pipeline_ws, tmp_path):
    from cdp import pipeline
    from cdp.training.tracking import current_champion, registry_client

    source_files = _artifact_files(pipeline_ws)
    first, moved = tmp_path / "first", tmp_path / "moved"
    shutil.copytree(pipeline_ws.root, first)
    shutil.copytree(first, moved)  # a copy of a copy, whose source then disappears
    shutil.rmtree(first)
    ws = Workspace(moved)

    client = registry_client(ws)
    champion = current_champion(client, "churn")
    assert champion is not None
    location = client.get_model_version_download_uri("churn", champion.version)
    assert location.startswith((moved / "mlartifacts").as_uri() + "/"), location

    summary = pipeline.score(ws)  # loads every champion from the moved copy's own artifacts
    assert summary["customers_scored"] > 0
    pipeline.train(ws, "churn")
    new = _artifact_files(ws) - source_files
    assert any(name.startswith("mlartifacts/churn/") for name in new)  # the new model is in the copy
    assert _artifact_files(pipeline_ws) == source_files  # and nothing was written into the source
