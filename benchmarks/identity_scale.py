"""Identity resolution at scale: full resolve of ~N source records, then incremental linking.

    python benchmarks/identity_scale.py --records 1000000            # ~18k synthetic people
    python benchmarks/identity_scale.py --records 1000000 --workdir /tmp/idscale --keep
    python benchmarks/identity_scale.py --records 1000000 --workdir /tmp/idscale --keep --check   # + compare with use_state=False

Steps: `cdp generate` machinery (synthetic/) with enough people for ~N records in the linkable
tables (crm_contacts, loyalty_members, online_accounts, orders, service_interactions,
marketing_sends, web_events: ~55 per person), ingest, then hold out the `--new` most recent
orders and sign-ups (by ordered_at / created_at / enrolled_at), full resolve of the rest, put the
held-out rows back and link them with `resolve --incremental`. Each resolve runs in its own
child process, so its wall time and peak memory (ru_maxrss of that process: DuckDB runs in
process, so its memory is counted) are its own. Prints one JSON summary at the end; with truth
available it also prints the pairwise F1 of both runs.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LINKABLE = (
    "crm_contacts",
    "loyalty_members",
    "online_accounts",
    "orders",
    "service_interactions",
    "marketing_sends",
    "web_events",
)
RECORDS_PER_PERSON = 55.2  # measured: 26k people -> 1.436M linkable staged records (seed 1)
NEW_FROM = {
    "orders": "ordered_at",
    "crm_contacts": "created_at",
    "loyalty_members": "enrolled_at",
    "online_accounts": "created_at",
}

STAGE = r"""
import json, resource, sys, time, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
from pathlib import Path
from cdp.workspace import Workspace
ws = Workspace(Path(sys.argv[1]))
started = time.perf_counter()
if sys.argv[2] == "full":
    from cdp.identity.resolve import resolve
    summary = resolve(ws).to_dict()
else:
    from cdp.identity.incremental import resolve_incremental
    summary = resolve_incremental(ws, use_state=sys.argv[2] == "incremental").to_dict()
seconds = time.perf_counter() - started
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
Path(sys.argv[3]).write_text(json.dumps({"seconds": round(seconds, 2), "peak_rss_mb": round(peak / 1024, 1),
                                         "summary": summary}))
"""


def _stage(root: Path, kind: str) -> dict:
    """Run one resolve in a child process: {'seconds', 'peak_rss_mb', 'summary'}."""
    result = root / f"identity_scale_{kind}.json"
    out = subprocess.run(
        [sys.executable, "-c", STAGE, str(root), kind, str(result)], cwd=ROOT, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} resolve failed:\n{out.stderr[-3000:]}")
    return json.loads(result.read_text())


def count_records(staged: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    return {
        t: pq.ParquetFile(staged / f"{t}.parquet").metadata.num_rows
        for t in LINKABLE
        if (staged / f"{t}.parquet").exists()
    }


def hold_out(staged: Path, new: int) -> dict[str, pd.DataFrame]:
    """Remove the `new` most recent orders/sign-ups from staged/; returns the full tables."""
    full = {t: pd.read_parquet(staged / f"{t}.parquet") for t in NEW_FROM}
    times = pd.concat(
        [
            pd.DataFrame({"table": t, "row": range(len(f)), "at": pd.to_datetime(f[c], utc=True, errors="coerce")})
            for t, (f, c) in ((t, (full[t], NEW_FROM[t])) for t in NEW_FROM)
        ],
        ignore_index=True,
    )
    latest = times.dropna(subset=["at"]).nlargest(new, "at")
    for table, frame in full.items():
        rows = latest.loc[latest["table"] == table, "row"].to_numpy()
        frame.drop(index=frame.index[rows]).to_parquet(staged / f"{table}.parquet", index=False)
    return full


def same_outputs(a: Path, b: Path) -> dict[str, bool]:
    """Do two identity/ folders hold the same identity_map, identifier_map, id_history (but
    resolved_at), households and blocked identifiers (as a set)?"""
    out = {}
    for name in ("identity_map", "identifier_map", "id_history", "households", "blocked_identifiers"):
        x, y = (pd.read_parquet(folder / f"{name}.parquet") for folder in (a, b))
        if name == "id_history":
            x, y = x.drop(columns="resolved_at"), y.drop(columns="resolved_at")
        if name == "blocked_identifiers":
            x, y = (f.sort_values(["guard", "node"]).reset_index(drop=True) for f in (x, y))
        out[name] = bool(x.equals(y))
    return out


def _f1(root: Path) -> float | None:
    from cdp.identity.evaluate import evaluate_workspace
    from cdp.workspace import Workspace

    ws = Workspace(root)
    if not (ws.truth / "record_persons.parquet").exists():
        return None
    return evaluate_workspace(ws)["overall"]["pairwise_f1"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="target linkable source records")
    parser.add_argument("--new", type=int, default=10_000, help="records to link incrementally")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None, help="workspace (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="reuse generated data in --workdir if present")
    parser.add_argument(
        "--check",
        action="store_true",
        help="also run the incremental without its saved state (reading every record, as before "
        "incremental_state/) on a copy and compare the outputs",
    )
    args = parser.parse_args(argv)
    if args.records < 1000 or args.new < 1:
        parser.error(f"--records must be >= 1000 and --new >= 1 (got records={args.records}, new={args.new})")

    import warnings

    warnings.filterwarnings("ignore")
    from cdp import pipeline
    from cdp.workspace import Workspace

    root = args.workdir or Path(tempfile.mkdtemp(prefix="identity_scale_"))
    ws = Workspace(root)
    people = max(100, math.ceil(args.records / RECORDS_PER_PERSON))
    report: dict = {"people": people}
    if not (args.keep and (ws.staged / "orders.parquet").exists()):
        started = time.perf_counter()
        pipeline.generate(ws, people, seed=args.seed)
        report["generate_seconds"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        pipeline.ingest(ws)
        report["ingest_seconds"] = round(time.perf_counter() - started, 1)
    for stale in ("identity_map.parquet", "identifier_map.parquet", "id_history.parquet"):
        (ws.identity / stale).unlink(missing_ok=True)
    counts = count_records(ws.staged)
    report["linkable_records"] = sum(counts.values())
    report["records_per_table"] = counts
    print(f"{report['linkable_records']} linkable records from {people} people in {root}", flush=True)

    full_tables = hold_out(ws.staged, args.new)
    try:
        report["full"] = _stage(root, "full")
        print(
            f"full resolve of {report['linkable_records'] - args.new} records: {report['full']['seconds']} s, "
            f"peak RSS {report['full']['peak_rss_mb']} MB",
            flush=True,
        )
    finally:
        for table, frame in full_tables.items():
            frame.to_parquet(ws.staged / f"{table}.parquet", index=False)
    if args.check:  # the same incremental without the saved state (reads every record), on a copy
        twin = Path(tempfile.mkdtemp(prefix="identity_scale_check_"))
        (twin / "staged").symlink_to(ws.staged.resolve(), target_is_directory=True)
        shutil.copytree(ws.identity, twin / "identity")
    report["incremental"] = _stage(root, "incremental")
    report["incremental_over_full"] = round(report["incremental"]["seconds"] / report["full"]["seconds"], 4)
    report["incremental"]["pairwise_f1_all_records"] = _f1(root)
    print(
        f"incremental linking of {args.new} new records: {report['incremental']['seconds']} s, "
        f"peak RSS {report['incremental']['peak_rss_mb']} MB; incremental/full = {report['incremental_over_full']}",
        flush=True,
    )
    if args.check:
        report["incremental_full_scan"] = _stage(twin, "incremental_full_scan")
        report["check_same_outputs"] = same_outputs(ws.identity, twin / "identity")
        shutil.rmtree(twin, ignore_errors=True)
        print(
            f"incremental reading every record (use_state=False): {report['incremental_full_scan']['seconds']} s; "
            f"same outputs: {report['check_same_outputs']}",
            flush=True,
        )
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
