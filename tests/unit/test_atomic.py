"""cdp.atomic: a failed write leaves the old file whole; a second writer is refused while one holds the lock."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from cdp.atomic import WorkspaceBusy, atomic_dir, atomic_path, workspace_lock, write_parquet_atomic


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "t.parquet"
    write_parquet_atomic(pd.DataFrame({"a": [1, 2]}), path)
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"PAR1")  # a 4-byte partial file, then the writer dies
        raise RuntimeError("killed")
    assert pd.read_parquet(path)["a"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]
    write_parquet_atomic(pd.DataFrame({"a": [3]}), path)
    assert pd.read_parquet(path)["a"].tolist() == [3]


def test_a_folder_is_swapped_whole(tmp_path):
    folder = tmp_path / "out"
    with atomic_dir(folder) as tmp:
        (tmp / "x.txt").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(folder) as tmp:
        (tmp / "x.txt").write_text("2")
        raise RuntimeError("killed")
    assert (folder / "x.txt").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_second_writer_is_refused_with_the_holders_name_and_lock_frees_on_exit(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from cdp.atomic import workspace_lock\n"
            f"with workspace_lock({str(tmp_path)!r}, 'resolve'):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(WorkspaceBusy, match=r"`cdp resolve` \(pid \d+\) is writing"),
            workspace_lock(tmp_path, "score"),
        ):
            pass
    finally:
        holder.kill()  # kill -9: the kernel releases the lock
        holder.wait()
    with workspace_lock(tmp_path, "score"):
        pass
