"""Daily refresh vs a full pipeline run on the same data, through the product path (issue 18).

    nice -n 10 python benchmarks/refresh.py --customers 100000 --days 30 [--seed 7] [--train] [--home DIR]

`cdp generate --customers N --daily-drops D` on a fresh workspace; the drops are held back and the
initial load runs `cdp ingest`, `cdp resolve`, `cdp features` (and `cdp train churn` with --train,
so that refresh and the full run also score). Then each day's drop files are copied into raw/ and
`cdp refresh` is timed; finally a second workspace with all the data runs the same commands from
scratch (`cdp ingest`, `cdp resolve`, `cdp features`, and `cdp score` with --train) and that sum is
the full run. Prints each refresh's seconds, the full run's, and the ratio (target: <= 10% at 100k).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 0.10


def run(cmd: list[str], home: Path, echo: bool = False) -> float:
    started = time.perf_counter()
    print("$", " ".join(cmd), "--home", home, flush=True)
    env = {**os.environ, "CDP_HOME": str(home)}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    if "nothing new" in result.stdout:
        print("  nothing new")
    elif echo:  # the stage summary (per-stage seconds)
        print(result.stdout[result.stdout.find("refresh") :], end="")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--train", action="store_true", help="train churn after the initial load so both score")
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    root = args.home or Path(tempfile.mkdtemp(prefix="cdp-refresh-"))
    daily, full, held = root / "daily", root / "full", root / "held"
    cdp = [str(Path(sys.executable).with_name("cdp"))]
    run(
        [
            *cdp,
            "generate",
            "--customers",
            str(args.customers),
            "--seed",
            str(args.seed),
            "--daily-drops",
            str(args.days),
        ],
        daily,
    )
    shutil.copytree(daily / "raw", full / "raw")
    for folder in [d for d in (daily / "raw").iterdir() if d.is_dir()]:
        shutil.move(folder, held / folder.name)
    initial = sum(run([*cdp, c], daily) for c in ("ingest", "resolve", "features"))
    if args.train:
        run([*cdp, "train", "churn"], daily)
    print(f"initial load: {initial:.1f} s")
    refreshes = []
    for day in sorted({p.name for p in held.rglob("*.parquet")}):
        for file in held.glob(f"*/{day}"):
            (daily / "raw" / file.parent.name).mkdir(exist_ok=True)
            shutil.copy2(file, daily / "raw" / file.parent.name / day)
        refreshes.append(run([*cdp, "refresh"], daily, echo=True))
        print(f"  refresh {day}: {refreshes[-1]:.1f} s")
    again = run([*cdp, "refresh"], daily)
    stages = ["ingest", "resolve", "features"]
    if args.train:
        shutil.copy2(daily / "mlflow.db", full / "mlflow.db")  # the same champion
        shutil.copytree(daily / "mlartifacts", full / "mlartifacts")  # its runs are relocated to full/
        stages.append("score")
    full_seconds = {c: run([*cdp, c], full) for c in stages}
    total = sum(full_seconds.values())
    mean = sum(refreshes) / len(refreshes)
    print(f"\n{args.customers:,} customers, {args.days} daily drops, workspace {root}")
    print(f"full run on all the data: {total:.1f} s  ({', '.join(f'{c} {s:.1f}' for c, s in full_seconds.items())})")
    print(f"refresh: mean {mean:.1f} s, max {max(refreshes):.1f} s; second run with nothing new {again:.1f} s")
    print(f"ratio refresh / full: mean {mean / total:.1%}, max {max(refreshes) / total:.1%} (target <= {TARGET:.0%})")


if __name__ == "__main__":
    main()
