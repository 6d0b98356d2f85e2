"""Identity quality on foreign-format data against the same data in clean form (issue 15, target 2).

    python benchmarks/foreign_identity.py --customers 100000
    python benchmarks/foreign_identity.py --customers 20000 --workdir /tmp/foreign --json out.json

Two workspaces from the same seed, so the same people and records: `clean` (`cdp generate`) and
`foreign` (`cdp generate --phone-country GB --date-order dmy`: phones in GB national form,
dates and timestamps as day-first text). Each runs `cdp ingest`, `cdp resolve` and
`cdp eval-identity` as subprocesses with default settings; CDP_DEFAULT_REGION and CDP_DATE_ORDER
are removed from the environment (ingest must detect both). Prints the identified-records and
profile-records precision / recall / F1 of both and the differences.
Targets: identified-records F1 of foreign within 0.01 of clean; profile F1 >= 0.985 at
precision >= 0.995.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"clean": [], "foreign": ["--phone-country", "GB", "--date-order", "dmy"]}
SCOPES = ("identified_records", "profile_records")
METRICS = ("pairwise_precision", "pairwise_recall", "pairwise_f1")


def _cdp(*args: str) -> str:
    exe = Path(sys.executable).with_name("cdp")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "cdp.cli.app"]
    env = {k: v for k, v in os.environ.items() if k not in ("CDP_DEFAULT_REGION", "CDP_DATE_ORDER")}
    run = subprocess.run([*command, *args], capture_output=True, text=True, env={**env, "COLUMNS": "200"})
    if run.returncode != 0:
        raise RuntimeError(f"cdp {' '.join(args)} exited {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run.stdout


def run_variant(home: Path, customers: int, seed: int, options: list[str]) -> dict:
    seconds = {}
    for step, args in (
        ("generate", ["generate", "--customers", str(customers), "--seed", str(seed), *options]),
        ("ingest", ["ingest"]),
        ("resolve", ["resolve"]),
        ("eval-identity", ["eval-identity"]),
    ):
        started = time.perf_counter()
        out = _cdp(*args, "--home", str(home))
        seconds[step] = round(time.perf_counter() - started, 1)
        if step == "ingest":
            ingest_notes = [
                line.strip()
                for line in out.splitlines()
                if line.startswith("note:") and ("region" in line or " as " in line)
            ]
    result = json.loads((home / "reports" / "identity_eval.json").read_text())
    return {
        **{scope: {m: result[scope][m] for m in METRICS if m in result[scope]} for scope in SCOPES},
        "seconds": seconds,
        "ingest_notes": ingest_notes[:10],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="keep the two workspaces here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="cdp-foreign-"))
    results: dict = {"customers": args.customers, "seed": args.seed}
    try:
        for name, options in VARIANTS.items():
            home = root / name
            shutil.rmtree(home, ignore_errors=True)
            results[name] = run_variant(home, args.customers, args.seed, options)
            print(name, json.dumps(results[name]), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    clean, foreign = results["clean"], results["foreign"]
    results["identified_f1_gap"] = round(
        clean["identified_records"]["pairwise_f1"] - foreign["identified_records"]["pairwise_f1"], 4
    )
    profile = foreign["profile_records"]
    results["targets_met"] = {
        "identified_f1_within_0.01": results["identified_f1_gap"] <= 0.01,
        "profile_f1>=0.985_at_precision>=0.995": profile["pairwise_f1"] >= 0.985
        and profile["pairwise_precision"] >= 0.995,
    }
    print(json.dumps({k: results[k] for k in ("identified_f1_gap", "targets_met")}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
