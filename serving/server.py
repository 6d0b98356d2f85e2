"""Starting and stopping the real BentoML HTTP server (`bentoml serve`) for a workspace."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cdp.settings import setting
from cdp.workspace import Workspace

SERVICE = "cdp.serving.service:CustomerScores"


def _command(port: int, host: str = "127.0.0.1") -> list[str]:
    bentoml = Path(sys.executable).with_name("bentoml")
    return [str(bentoml), "serve", SERVICE, "--port", str(port), "--host", host]


def _consumer_command(ws: Workspace, server_pid: int) -> list[str]:
    """`cdp events consume` for a server with CDP_EVENTS_WRITE=stream: it writes what /events queues,
    and stops by itself once the server process is gone."""
    cdp = Path(sys.executable).with_name("cdp")
    return [str(cdp), "events", "consume", "--home", str(ws.root), "--exit-with", str(server_pid), "--quiet"]


def _streams_events(env: dict[str, str]) -> bool:
    return env.get("CDP_EVENTS_WRITE", str(setting("events_write"))).strip().lower() == "stream"


def _environment(ws: Workspace) -> dict[str, str]:
    env = dict(
        os.environ,
        CDP_HOME=str(ws.root),
        MLFLOW_TRACKING_URI=ws.mlflow_uri,
        CDP_MLFLOW_URI=ws.mlflow_uri,
        BENTOML_DO_NOT_TRACK="true",
    )
    return env


def exposure_problem(host: str, insecure: bool) -> str | None:
    """Why serving on `host` is refused (non-loopback without CDP_API_KEY, not --insecure), or None."""
    from cdp.serving.auth import is_loopback

    if is_loopback(host) or setting("api_key") or insecure:
        return None
    return (
        f"--host {host} is reachable from other machines and CDP_API_KEY is not set: set CDP_API_KEY "
        "(clients send Authorization: Bearer <key>), or pass --insecure to serve without a key"
    )


def banner(host: str, port: int) -> str:
    """What `cdp serve` prints once the server answers: URL, Swagger UI, a curl to copy."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}"
    auth = ' -H "Authorization: Bearer $CDP_API_KEY"' if setting("api_key") else ""
    return (
        f"serving on {url} (bound to {host})\n"
        f"Swagger UI: {url}/\n"
        f"try:  curl -s -X POST {url}/churn -H 'Content-Type: application/json'{auth} "
        """-d '{"customer_ids": ["<customer_id>"]}'\n"""
        "Ctrl-C stops."
    )


def _announce_when_ready(host: str, port: int, timeout: float = 120.0) -> None:
    """In a forked child: poll /healthz, print the banner once, exit (also when the server died)."""
    import urllib.request

    server_pid, deadline = os.getppid(), time.monotonic() + timeout
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/healthz"
    while time.monotonic() < deadline and os.getppid() == server_pid:
        try:
            request = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=1.0) as answer:
                if answer.status == 200:
                    print(banner(host, port), flush=True)
                    break
        except OSError:
            time.sleep(0.3)
    os._exit(0)


def serve_forever(ws: Workspace, port: int, host: str = "127.0.0.1", insecure: bool = False) -> None:
    """Replace this process with `bentoml serve` (os.execve): killing `cdp serve` kills the server,
    no orphan is left. A forked watcher prints the banner once /healthz answers."""
    env = _environment(ws)
    env["CDP_SERVE_HOST"] = host
    if insecure:
        env["CDP_INSECURE"] = "1"
    command = _command(port, host)
    sys.stdout.flush()
    if os.fork() == 0:
        _announce_when_ready(host, port)
    if _streams_events(env):  # the consumer writing what /events queues; this pid becomes the server's
        consumer = _consumer_command(ws, os.getpid())
        if os.fork() == 0:
            os.execve(consumer[0], consumer, env)
    os.chdir(ws.root)
    os.execve(command[0], command, env)


@contextmanager
def running_server(
    ws: Workspace,
    port: int,
    timeout: float = 90.0,
    log_path: Path | None = None,
    host: str = "127.0.0.1",
    extra_env: dict[str, str] | None = None,
    command: list[str] | None = None,
) -> Iterator[str]:
    """Start `bentoml serve` (or `command`), wait until /healthz answers, yield the base URL, then stop it.
    With CDP_EVENTS_WRITE=stream, also its events consumer (as `cdp serve` does)."""
    import httpx

    env = {**_environment(ws), **(extra_env or {})}
    with open(log_path or os.devnull, "w") as log:
        process = subprocess.Popen(
            command or _command(port, host),
            cwd=ws.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        consumer = (
            subprocess.Popen(_consumer_command(ws, process.pid), cwd=ws.root, env=env, stdout=log, stderr=log)
            if _streams_events(env)
            else None
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
            try:
                os.killpg(process.pid, 15)
                process.wait(timeout=20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
            if consumer is not None:  # it stops by itself once the server is gone (after its batch)
                try:
                    consumer.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    consumer.kill()
