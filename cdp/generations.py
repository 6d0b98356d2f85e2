"""Which run of each stage the workspace's files come from, so no stage runs on mixed inputs.

A writing stage (ingest, resolve, features, score) marks itself running in
`<workspace>/generations/<stage>.json` before it writes anything and, when every output is
published, records a fresh generation id and the generations of the inputs it read. Before a stage
starts, `check_inputs` refuses (MixedGenerations, one line naming the file and the command to
re-run) when an input stage was interrupted (still marked running: after `kill -9` its folder may
hold old and new files side by side) or was re-run after the stage that read it (e.g. features on
an identity map built from an earlier ingest). A workspace made before generations existed has no
records: nothing is checked until the stages are run again.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from cdp.atomic import clean_temporaries, write_json_atomic
from cdp.workspace import Workspace

# stage -> (the folder it writes, the stages whose outputs it reads, the command that runs it)
STAGES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ingest": ("staged", (), "cdp ingest"),
    "resolve": ("identity", ("ingest",), "cdp resolve"),
    "features": ("features", ("ingest", "resolve"), "cdp features"),
    "score": ("features", ("features",), "cdp score"),
}
READS = {**{stage: inputs for stage, (_, inputs, _) in STAGES.items()}, "train": ("features",)}


class MixedGenerations(ValueError):
    """A stage's inputs come from an interrupted run, or from runs that do not belong together."""


def _record_path(ws: Workspace, stage: str) -> Path:
    return ws.root / "generations" / f"{stage}.json"


def record(ws: Workspace, stage: str) -> dict | None:
    path = _record_path(ws, stage)
    return json.loads(path.read_text()) if path.exists() else None


def check_inputs(ws: Workspace, stage: str) -> None:
    """Refuse to run `stage` on inputs of an interrupted run or of mismatched runs."""
    for upstream in READS[stage]:
        folder, _, command = STAGES[upstream]
        made = record(ws, upstream)
        if made is None:
            continue
        if made.get("running"):
            raise MixedGenerations(
                f"{folder}/ is incomplete: `{command}` started at {made['started_at']} did not finish "
                f"(interrupted?); run `{command}` again, then this command"
            )
        for source, generation in made.get("inputs", {}).items():
            current = record(ws, source)
            if current and not current.get("running") and current.get("generation") != generation:
                raise MixedGenerations(
                    f"{folder}/ was built from an earlier `{STAGES[source][2]}` than the one now in "
                    f"{STAGES[source][0]}/; run `{command}` again, then this command"
                )


@contextlib.contextmanager
def writing_stage(ws: Workspace, stage: str) -> Iterator[None]:
    """Around a writing stage: check its inputs, mark it running, record its generation when done.
    An error or a kill leaves it marked running, so nothing downstream uses its half-written files
    until it is run again."""
    check_inputs(ws, stage)
    folder = ws.root / STAGES[stage][0]
    if folder.exists():
        clean_temporaries(folder)  # what a killed earlier run left half-written
    inputs = {u: made["generation"] for u in READS[stage] if (made := record(ws, u)) and made.get("generation")}
    started = datetime.now(UTC).isoformat(timespec="seconds")
    path = _record_path(ws, stage)
    write_json_atomic(path, {"stage": stage, "running": True, "started_at": started})
    yield
    write_json_atomic(
        path,
        {
            "stage": stage,
            "generation": uuid.uuid4().hex,
            "started_at": started,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "inputs": inputs,
        },
    )
