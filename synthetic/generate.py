"""Generate a synthetic retailer: raw/<table>.parquet for all 13 contract tables + truth/.

In: an output root, number of customers, seed, window end. Out: files on disk and a
`GenerationSummary`. Deterministic for a given (customers, seed, end). The pipeline reads
only raw/; truth/ (people, latent traits, record->person, uplift, dirty rows) is for evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cdp.ingest.contract import TABLES
from cdp.workspace import Workspace

from .campaigns import run_campaigns
from .catalog import make_catalog, products_truth
from .common import data_window, rng_for, window_seconds
from .consent import make_consent
from .enrichment import make_enrichment
from .formats import ForeignFormat, apply_format
from .identities import make_identities
from .mess import make_dirty
from .orders import ORIGINS, build_orders, natural_orders
from .people import CHANNELS, Population, make_population
from .reference import CATEGORY_NAMES
from .service import make_service
from .trend import PricePlan, apply_trend, trend_persons_columns
from .web import make_web_events

Progress = Callable[[str, int, int], None]
# tables whose rows identify a person -> the column used as source_key in record_persons
IDENTIFYING = {
    "crm_contacts": "record_id",
    "loyalty_members": "card_id",
    "online_accounts": "account_id",
    "orders": "order_id",
    "web_events": "event_id",
    "service_interactions": "interaction_id",
    "marketing_sends": "send_id",
    "consent_events": "event_id",
    "enrichment": "email_sha256",
}
# progress steps: "generate <part>" while drawing, then "write <table>" per raw table, then "write truth"
STAGES = (
    tuple(
        f"generate {s}"
        for s in (
            "people",
            "identities",
            "consent",
            "order times",
            "campaigns",
            "orders",
            "web events",
            "service interactions",
            "enrichment",
        )
    )
    + tuple(f"write {t}" for t in TABLES)
    + ("write truth",)
)


@dataclass(frozen=True)
class GenerationSummary:
    people: int
    seed: int
    window_start: str
    window_end: str
    rows: dict[str, int] = field(default_factory=dict)  # raw rows per table (incl. dirty)
    truth_rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _ts(seconds: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(seconds, dtype=np.int64) * 1_000_000, type=pa.timestamp("us", tz="UTC"))


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="snappy")


def persons_truth(pop: Population) -> pa.Table:
    """One row per person: identity facts and every latent parameter the oracle needs."""
    pid = pa.array(pop.person_id, type=pa.string())
    s = lambda v: pa.array(v, type=pa.string(), from_pandas=True)
    return pa.table(
        {
            "person_id": pid,
            "first_name": s(pop.first),
            "last_name": s(pop.last),
            "date_of_birth": pa.array(pop.dob_day.astype(np.int32), type=pa.int32()).cast(pa.date32()),
            "email": s(pop.email),
            "email2": s(pop.email2),
            "mobile": s(pop.mobile),
            "phone2": s(pop.phone2),
            "home_phone": s(pop.home_phone),
            "household_id": pa.array(pop.household, mask=pop.household < 0, type=pa.int64()),
            "city": s(pop.city),
            "postcode": s(pop.postcode),
            "address_line": s(pop.address),
            "moved": pa.array(pop.moved),
            "moved_at": pa.array(pop.move_s * 1_000_000, mask=~pop.moved, type=pa.timestamp("us", tz="UTC")),
            "old_city": s(pop.old_city),
            "old_postcode": s(pop.old_postcode),
            "old_address_line": s(pop.old_address),
            "signup_at": _ts(pop.signup_s),
            "churn_at": _ts(pop.churn_s),
            "order_rate": pa.array(pop.lam),
            "dead_order_rate": pa.array(pop.r_dead),
            "churn_hazard": pa.array(pop.hazard),
            "engagement": pa.array(pop.engagement),
            "price_sensitivity": pa.array(pop.price_sens),
            "service_pain": pa.array(pop.pain),
            "preferred_channel": s(np.array(CHANNELS, dtype=object)[pop.pref_channel]),
            "home_store_id": s(np.array(pop.stores.store_id, dtype=object)[pop.home_store]),
        }
    )


def next_purchase_truth(pop: Population) -> pa.Table:
    """Long format (person_id, category, probability): the true next-purchase category mix."""
    k = len(CATEGORY_NAMES)
    return pa.table(
        {
            "person_id": pa.array(np.repeat(pop.person_id, k), type=pa.string()),
            "category": pa.array(np.tile(np.array(CATEGORY_NAMES, dtype=object), pop.n), type=pa.string()),
            "probability": pa.array(pop.affinity.ravel()),
        }
    )


def _finalize(
    name: str, table: pa.Table, raw_dir: Path, seed: int, person_ids: pa.Array, fmt: ForeignFormat = ForeignFormat()
) -> tuple[int, pa.Table, pa.Table | None]:
    """Dirty one raw table, write it (in the foreign format `fmt`, if any), and return
    (rows, dirty rows truth, record->person truth)."""
    table, dirty = make_dirty(name, table, rng_for(seed, f"mess:{name}"))
    records = None
    if name in IDENTIFYING:
        n = table.num_rows
        records = pa.table(
            {
                "source_table": pa.array([name], type=pa.string()).take(pa.array(np.zeros(n, dtype=np.int32))),
                "source_key": table.column(IDENTIFYING[name]),
                "person_id": person_ids.take(table.column("_person")),
                "row": pa.array(np.arange(n, dtype=np.int64)),
            }
        )
    if "_person" in table.column_names:
        table = table.drop_columns(["_person"])
    if tuple(table.column_names) != TABLES[name].columns:
        raise AssertionError(f"{name}: columns {table.column_names} differ from the contract")
    _write(apply_format(name, table, fmt), raw_dir / f"{name}.parquet")
    types = {
        "row": pa.int64(),
        "kind": pa.string(),
        "column": pa.string(),
        "other_row": pa.int64(),
        "row_error": pa.bool_(),
    }
    dirty_table = pa.table(
        {
            "table": pa.array([name] * len(dirty["row"]), type=pa.string()),
            **{k: pa.array(dirty[k], type=t) for k, t in types.items()},
        }
    )
    return table.num_rows, dirty_table, records


def generate(
    out_root: Path,
    customers: int,
    seed: int,
    end: str = "2025-12-31",
    progress: Progress | None = None,
    trend: bool = False,
    fmt: ForeignFormat = ForeignFormat(),
) -> GenerationSummary:
    """Write raw/ and truth/ under `out_root`; returns row counts and the elapsed seconds.

    `trend`: churn also follows falling engagement and category price rises (synthetic/trend.py;
    truth/price_rises.parquet and the trend columns of truth/persons). Off by default: the demo's
    data (and its identity figures) stay as they were.
    `fmt`: phones / dates written as a non-US retailer would (synthetic/formats.py); same people."""
    if customers < 1:
        raise ValueError("customers must be at least 1")
    t_start = time.perf_counter()
    ws = Workspace(Path(out_root))
    ws.raw.mkdir(parents=True, exist_ok=True)
    ws.truth.mkdir(parents=True, exist_ok=True)
    start_s, stop_s = window_seconds(end)
    done = 0

    def step(name: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(name, done, len(STAGES))

    # Generation runs first (numpy, one thread); dirtying and writing then run on two threads
    # (Arrow releases the GIL). Overlapping both was slower on 2 cores (allocation contention).
    raw: dict[str, pa.Table] = {}
    truth: dict[str, pa.Table] = {}
    pop = make_population(customers, seed, start_s, stop_s)
    prices: PricePlan | None = apply_trend(pop, seed, start_s, stop_s) if trend else None
    step("generate people")
    truth["persons"] = persons_truth(pop)
    if prices is not None:
        for name, column in trend_persons_columns(pop).items():
            truth["persons"] = truth["persons"].append_column(name, column)
        truth["price_rises"] = prices.table()
    truth["next_purchase"] = next_purchase_truth(pop)
    catalog = make_catalog(seed)
    raw["products"] = catalog.table
    truth["products_truth"] = products_truth(catalog)
    ids = make_identities(pop, seed, stop_s)
    step("generate identities")
    raw.update(crm_contacts=ids.crm, loyalty_members=ids.loyalty, online_accounts=ids.accounts)
    consent = make_consent(pop, ids, seed, stop_s)
    step("generate consent")
    natural = natural_orders(rng_for(seed, "orders"), pop, start_s, stop_s)
    step("generate order times")
    camp = run_campaigns(pop, ids, consent, natural, seed, start_s, stop_s)
    step("generate campaigns")
    raw.update(
        campaigns=camp.campaigns,
        marketing_sends=camp.sends,
        marketing_responses=camp.responses,
        consent_events=consent.table(),
    )
    truth["sends_truth"] = _sends_truth(pop, camp.truth)
    raw["orders"], raw["order_lines"], order_truth = build_orders(
        rng_for(seed, "order_details"), pop, ids, catalog, camp.orders, camp.category, prices
    )
    truth["orders_truth"] = _orders_truth(pop, order_truth, camp.truth["send_id"])
    step("generate orders")
    del natural, order_truth
    raw["web_events"] = make_web_events(pop, ids, catalog, seed, start_s, stop_s)
    step("generate web events")
    raw["service_interactions"] = make_service(pop, ids, seed, start_s, stop_s)
    step("generate service interactions")
    raw["enrichment"] = make_enrichment(pop, ids, seed, start_s, stop_s)
    step("generate enrichment")

    person_ids = pa.array(pop.person_id, type=pa.string())
    rows: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        raw_jobs = {name: pool.submit(_finalize, name, raw.pop(name), ws.raw, seed, person_ids, fmt) for name in TABLES}
        writes = [pool.submit(_write, table, ws.truth / f"{name}.parquet") for name, table in truth.items()]
        dirty_parts, record_parts = [], []
        for name, job in raw_jobs.items():  # contract order: deterministic truth files
            rows[name], dirty, records = job.result()
            dirty_parts.append(dirty)
            if records is not None:
                record_parts.append(records)
            step(f"write {name}")
        for name, table in (
            ("record_persons", pa.concat_tables(record_parts)),
            ("dirty_rows", pa.concat_tables(dirty_parts)),
        ):
            truth[name] = table
            writes.append(pool.submit(_write, table, ws.truth / f"{name}.parquet"))
        for write in writes:
            write.result()
    step("write truth")
    w0, w1 = data_window(end)
    return GenerationSummary(
        people=customers,
        seed=seed,
        window_start=w0.isoformat(),
        window_end=w1.isoformat(),
        rows=rows,
        truth_rows={k: v.num_rows for k, v in truth.items()},
        seconds=round(time.perf_counter() - t_start, 3),
    )


def _sends_truth(pop: Population, st: dict[str, np.ndarray]) -> pa.Table:
    """Per send: the true uplift tau and the response probabilities under both arms."""
    return pa.table(
        {
            "send_id": st["send_id"],
            "campaign_id": pa.array([f"CMP{c + 1:02d}" for c in st["campaign"]]),
            "person_id": pa.array(pop.person_id[st["person"]], type=pa.string()),
            "group": pa.array(np.where(st["treated"], "treatment", "control")),
            "sent_at": _ts(st["sent_s"]),
            "tau": pa.array(st["tau"]),
            "p_respond_treated": pa.array(st["p_t"]),
            "p_respond_control": pa.array(st["p_c"]),
            "extra_order_prob": pa.array(st["q"]),
            "natural_thinning": pa.array(st["k"]),
        }
    )


def _orders_truth(pop: Population, ot: dict, send_ids: pa.Array) -> pa.Table:
    """Per generated order: its person, true time, origin and the send that caused it."""
    return pa.table(
        {
            "order_id": ot["order_id"],
            "person_id": pa.array(pop.person_id, type=pa.string()).take(pa.array(ot["person"])),
            "ordered_at": _ts(ot["time_s"]),
            "origin": pa.array(list(ORIGINS), type=pa.string()).take(pa.array(ot["origin"])),
            "send_id": send_ids.take(pa.array(np.maximum(ot["send"], 0), mask=ot["send"] < 0)),
        }
    )


__all__ = ["GenerationSummary", "data_window", "generate", "next_purchase_truth", "persons_truth"]
