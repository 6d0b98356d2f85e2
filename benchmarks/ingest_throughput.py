"""`cdp ingest` throughput: rows read per second on a generated workspace, this tree vs a baseline.

    nice -n 10 python benchmarks/ingest_throughput.py                       # ~20k customers
    nice -n 10 python benchmarks/ingest_throughput.py --customers 50000 --baseline /work/main --repeat 3

Generates raw/ once with this tree's `cdp generate` (CSV/Parquet exactly as a user's), copies it
into one workspace per `cdp` executable (this tree's, and `<baseline>/.venv/bin/cdp` when given),
and times `cdp ingest --home <ws>` as a child process (wall time, best of `--repeat`; process
start and imports included, as a user sees them). Prints rows/s per tree and the ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rows_in(raw: Path) -> int:
    """Rows read by ingest: every contract table's file in raw/."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    total = 0
    for path in raw.iterdir():
        if path.suffix == ".parquet":
            total += pq.read_metadata(path).num_rows
        elif path.suffix == ".csv":
            total += pacsv.read_csv(path).num_rows
    return total


def time_ingest(cdp: Path, raw: Path, workdir: Path, repeat: int) -> float:
    """Best wall time of `cdp ingest` over `repeat` runs on a fresh copy of raw/."""
    best = float("inf")
    for i in range(repeat):
        ws = workdir / f"{cdp.parents[2].name}-{i}"
        shutil.rmtree(ws, ignore_errors=True)
        shutil.copytree(raw, ws / "raw")
        started = time.perf_counter()
        done = subprocess.run([str(cdp), "ingest", "--home", str(ws)], capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"{cdp} ingest failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        best = min(best, seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another checkout with its own .venv (e.g. /work/main)"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ingest_bench_"))
    gen = workdir / "generated"
    if not (gen / "raw").exists():
        subprocess.run(
            [str(ROOT / ".venv/bin/cdp"), "generate", "--customers", str(args.customers), "--seed", str(args.seed)]
            + ["--home", str(gen)],
            check=True,
            capture_output=True,
        )
    rows = rows_in(gen / "raw")
    trees = {"this tree": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    result: dict[str, object] = {"customers": args.customers, "rows_read": rows}
    for label, tree in trees.items():
        seconds = time_ingest(tree / ".venv/bin/cdp", gen / "raw", workdir, args.repeat)
        result[label] = {"tree": str(tree), "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds)}
        print(f"{label:>10}: {tree}  {seconds:6.2f} s  {rows / seconds:,.0f} rows/s  ({rows:,} rows)")
    if args.baseline:
        ratio = result["this tree"]["rows_per_s"] / result["baseline"]["rows_per_s"]  # type: ignore[index]
        result["throughput_ratio"] = round(ratio, 3)
        print(f"throughput this tree / baseline: {ratio:.3f} (target >= 0.8)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
