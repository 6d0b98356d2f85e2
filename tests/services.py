"""Real services for tests: private redis-server and PostgreSQL instances (Debian's packages) on free ports."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def redis_server(port: int, workdir: Path) -> Iterator[str]:
    """Start `redis-server` without persistence; yield its host:port; stop it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: `apt-get install redis-server` (.ci/run does this)")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def postgres_server(port: int) -> Iterator[str]:
    """A private PostgreSQL cluster (Debian's postgresql package) on a free port; yields a
    SQLAlchemy URL for database `cdp_mlflow` owned by user `cdp`. Runs the server as the
    `postgres` system user when the tests run as root (PostgreSQL refuses root)."""
    import os

    bindir = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
    if bindir is None:
        pytest.fail("PostgreSQL is not installed: `apt-get install postgresql` (.ci/run does this)")
    import tempfile

    # Its own folder under /tmp: the postgres user cannot enter pytest's root-only tmp folders.
    workdir = Path(tempfile.mkdtemp(prefix="cdp-pg-"))
    data, sockets = workdir / "pgdata", workdir / "pgsock"
    sockets.mkdir(parents=True, exist_ok=True)
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(workdir, "postgres")
        shutil.chown(sockets, "postgres")

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-w",
        "-l",
        str(workdir / "postgres.log"),
        "-o",
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off",
        "start",
    )
    try:
        psql = [str(bindir / "psql"), "-h", str(sockets), "-p", str(port), "-U", "postgres", "-q", "-c"]
        run(*psql, "CREATE USER cdp PASSWORD 'cdp'")
        run(*psql, "CREATE DATABASE cdp_mlflow OWNER cdp")
        yield f"postgresql+psycopg2://cdp:cdp@127.0.0.1:{port}/cdp_mlflow"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(workdir, ignore_errors=True)
