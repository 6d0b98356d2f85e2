"""Starting and stopping the real BentoML HTTP server (`bentoml serve`) for a workspace."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cdp.workspace import Workspace

SERVICE = "cdp.serving.service:CustomerScores"


def _command(port: int) -> list[str]:
    bentoml = Path(sys.executable).with_name("bentoml")
    return [str(bentoml), "serve", SERVICE, "--port", str(port), "--host", "127.0.0.1"]


def _environment(ws: Workspace) -> dict[str, str]:
    env = dict(
        os.environ,
        CDP_HOME=str(ws.root),
        MLFLOW_TRACKING_URI=ws.mlflow_uri,
        CDP_MLFLOW_URI=ws.mlflow_uri,
        BENTOML_DO_NOT_TRACK="true",
    )
    return env


def serve_forever(ws: Workspace, port: int) -> None:
    subprocess.run(_command(port), cwd=ws.root, env=_environment(ws), check=False)


@contextmanager
def running_server(ws: Workspace, port: int, timeout: float = 90.0, log_path: Path | None = None) -> Iterator[str]:
    """Start `bentoml serve`, wait until /healthz answers, yield the base URL, then stop it."""
    import httpx

    log = open(log_path or os.devnull, "w")
    process = subprocess.Popen(
        _command(port), cwd=ws.root, env=_environment(ws), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with code {process.returncode}; see {log_path}")
            try:
                if httpx.post(f"{url}/healthz", json={}, timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"bentoml serve not ready after {timeout:.0f}s; see {log_path}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
        log.close()
