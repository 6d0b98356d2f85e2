"""Crash-safe writes and the workspace lock.

`atomic_path(path)` yields a temporary path in the same folder; when the block ends without an
error the file is fsynced and renamed over `path` (`os.replace`, atomic on POSIX), so a reader, or
a re-run after `kill -9`, sees either the old complete file or the new complete file, never a
partial one. On an error the temporary file is removed and `path` is untouched.
`atomic_dir(path)` does the same for a folder of outputs: write into the yielded temporary folder,
it is swapped in whole. `workspace_lock(ws, command)` holds an exclusive `fcntl` lock on
`<workspace>/.cdp.lock` while a writing command runs; a second writer fails at once with
`WorkspaceBusy` naming the command holding it. Readers (`cdp serve`) never take the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from cdp.faults import checkpoint

TMP_MARK = ".tmp-"  # temporary names: `.<name>.tmp-<hex>`, hidden and never matching `*.parquet`


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; publish it as `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write of {path}: nothing was written to the temporary file")
        _fsync_file(tmp)
        checkpoint("before")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        checkpoint("after")
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_parquet_atomic(data, path: str | Path, **kwargs) -> None:
    """A pandas DataFrame (`index=False` by default) or a pyarrow Table, published atomically."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        if hasattr(data, "to_parquet"):
            kwargs.setdefault("index", False)
            data.to_parquet(tmp, **kwargs)
        else:
            pq.write_table(data, tmp, **kwargs)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, value, **kwargs) -> None:
    kwargs.setdefault("indent", 1)
    kwargs.setdefault("default", str)
    write_text_atomic(path, json.dumps(value, **kwargs))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; when the block succeeds it replaces `path`
    (the old folder is renamed aside, the new one renamed in, the old one removed). A crash between
    the two renames leaves `path` missing and `<path>.old-*` complete: `recover_dir` puts it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = _tmp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync_file(file)
        old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:12]}")
        checkpoint("before")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        checkpoint("after")
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(path: str | Path) -> None:
    """After a crash inside `atomic_dir`'s swap: restore the old folder if the new one is missing;
    remove leftovers otherwise."""
    path = Path(path)
    olds = sorted(path.parent.glob(f".{path.name}.old-*"))
    if olds and not path.exists():
        os.replace(olds.pop(), path)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def clean_temporaries(folder: str | Path) -> int:
    """Remove temporary files and folders a killed writer left in `folder` and below; how many."""
    removed = 0
    for tmp in sorted(Path(folder).rglob(f".*{TMP_MARK}*"), key=lambda p: len(p.parts)):
        if not tmp.exists():  # inside a temporary folder removed a moment ago
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed += 1
    return removed


class WorkspaceBusy(RuntimeError):
    """Another writing command holds the workspace lock."""


LOCK_NAME = ".cdp.lock"


@contextlib.contextmanager
def workspace_lock(root: str | Path, command: str) -> Iterator[None]:
    """Exclusive, non-blocking lock of the workspace for a writing command. The kernel releases it
    when the process ends, also after `kill -9`, so a stale lock never blocks the next run."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another command"
            raise WorkspaceBusy(
                f"workspace {root} is busy: {holder} is writing to it; wait for it to finish, then run this again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"`cdp {command}` (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
