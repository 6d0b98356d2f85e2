"""Probabilistic matching of profile records (Fellegi-Sunter with Splink on DuckDB, or on Spark
with `CDP_IDENTITY_ENGINE=spark`: same settings and trained model, see `cdp.engines.spark`).

In:  staged `crm_contacts`, `loyalty_members`, `online_accounts` (names, date of birth,
     address, postcode, `email_norm`, `phone_e164`).
Out: `profile_records(ws)`: one row per profile record with matching columns
     (`unique_id` = "<table>|<key>", nickname-canonical first name, ...);
     `predict_edges(records)`: scored record pairs (unique_id_l, unique_id_r, match_weight,
     match_probability, gamma_<comparison>) above a floor probability, plus the trained model
     as a Splink settings dict (JSON-serialisable; only library comparisons and `block_on`
     rules, so the same model runs on Spark by swapping the DuckDBAPI for a SparkAPI).
The guards that decide which scored pairs may link live in `cdp.identity.resolve`.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from cdp.workspace import Workspace

PROFILE_SOURCES = {"crm_contacts": "record_id", "loyalty_members": "card_id", "online_accounts": "account_id"}
MATCH_COLUMNS = (
    "first_name",
    "first_canon",
    "first_nicks",
    "last_name",
    "dob",
    "postcode",
    "address",
    "city",
    "email",
    "email_local",
    "phone",
)


@lru_cache(maxsize=1)
def _namer():
    from nicknames import NickNamer

    return NickNamer()


@lru_cache(maxsize=1 << 16)
def canonical_first_name(name: str) -> str:
    """Nickname-canonical first name: among the name and the names it is a nickname of, the one
    with the most nicknames (Bob, Bobby -> robert; Liz -> elizabeth; Jim -> james)."""
    namer = _namer()
    candidates = {name} | set(namer.canonicals_of(name))
    return max(sorted(candidates), key=lambda c: len(namer.nicknames_of(c)))


@lru_cache(maxsize=1 << 16)
def nickname_set(name: str) -> str:
    """The name and every name it is a nickname or a canonical form of, as "|a|b|c|" (so SQL can
    test membership with instr(set, '|' || other || '|') on DuckDB and Spark alike).

    Nicknames are not one canonical form: Mandy is a nickname of Amanda but also of Miranda, so
    Amanda and Mandy can land on different `first_canon`s; two names are nicknames of each other
    when either one is in the other's set (`names_related`)."""
    namer = _namer()
    names = {name} | set(namer.canonicals_of(name)) | set(namer.nicknames_of(name))
    return "|" + "|".join(sorted(n for n in names if "|" not in n)) + "|"


def names_related(a: str | None, b: str | None) -> bool:
    """True when one first name is a nickname (or the canonical form) of the other."""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return f"|{b}|" in nickname_set(a) or f"|{a}|" in nickname_set(b)


# SQL over Splink's _l/_r columns (and our l./r. aliases via `nickname_sql`)
def nickname_sql(
    left: str = "first_name_l",
    right: str = "first_name_r",
    left_set: str = "first_nicks_l",
    right_set: str = "first_nicks_r",
) -> str:
    return f"(instr({left_set}, '|' || {right} || '|') > 0 OR instr({right_set}, '|' || {left} || '|') > 0)"


def _clean(series: pd.Series) -> pd.Series:
    """Lower-cased, trimmed text; empty -> null."""
    out = series.astype("string").str.strip().str.lower()
    return out.mask(out == "")


def profile_records(ws: Workspace) -> pd.DataFrame:
    """One row per staged profile record with the matching columns (nulls where absent)."""
    frames = []
    for table, key in PROFILE_SOURCES.items():
        path = ws.staged / f"{table}.parquet"
        if not path.exists():
            continue
        staged = pd.read_parquet(path)
        n = len(staged)

        def col(c: str, staged: pd.DataFrame = staged, n: int = n) -> pd.Series:
            return staged[c] if c in staged else pd.Series([None] * n, index=staged.index, dtype=object)

        dob = pd.to_datetime(col("date_of_birth"), errors="coerce")
        frames.append(
            pd.DataFrame(
                {
                    "unique_id": table + "|" + staged[key].astype(str),
                    "source_table": table,
                    "source_key": staged[key].astype(str),
                    "first_name": _clean(col("first_name")),
                    "last_name": _clean(col("last_name")),
                    "dob": dob.dt.strftime("%Y-%m-%d").astype("string"),
                    "postcode": _clean(col("postcode")),
                    "address": _clean(col("address_line")),
                    "city": _clean(col("city")),
                    "email": col("email_norm").astype("string"),
                    "phone": col("phone_e164").astype("string"),
                }
            )
        )
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["unique_id", *MATCH_COLUMNS])
    firsts = records["first_name"].dropna().unique()
    canon = {f: canonical_first_name(f) for f in firsts}
    records["first_canon"] = records["first_name"].map(canon).astype("string")
    records["first_nicks"] = records["first_name"].map({f: nickname_set(f) for f in firsts}).astype("string")
    records["email_local"] = records["email"].str.split("@").str[0].astype("string")
    records = records.drop_duplicates("unique_id").reset_index(drop=True)
    return drop_common_values(records)


# A value carried by more than this share of the profile records (and by at least COMMON_MIN_RECORDS
# of them) is a placeholder or a near-constant column (a postcode equal on 98% of records): it is
# no evidence that two records are one person, so it is matched as unknown (null): no agreement
# weight, no blocking rule on it, no term-frequency bonus.
COMMON_SHARE = 0.05
COMMON_MIN_RECORDS = 20
PLACEHOLDER_TEXT = frozenset(
    {"unknown", "n/a", "na", "none", "null", "nil", "-", "--", ".", "x", "xx", "xxx", "test", "tbc", "tba", "?"}
)
PLACEHOLDER_DOB = frozenset({"1900-01-01", "1901-01-01", "0001-01-01", "9999-12-31"})
# columns whose values are checked, and the derived columns that go with them
COMMON_VALUE_COLUMNS = {
    "first_name": ("first_canon", "first_nicks"),
    "last_name": (),
    "dob": (),
    "postcode": (),
    "address": (),
    "city": (),
    "email": ("email_local",),
    "phone": (),
}


def drop_common_values(records: pd.DataFrame) -> pd.DataFrame:
    """Null placeholder and near-constant values of the matching columns (see COMMON_SHARE).
    What was dropped is in `records.attrs["common_values"]`: [{column, value, records, share}]."""
    dropped: list[dict[str, Any]] = []
    n = len(records)
    for column, derived in COMMON_VALUE_COLUMNS.items():
        if column not in records or n == 0:
            continue
        counts = records[column].value_counts(dropna=True)
        limit = max(COMMON_SHARE * n, COMMON_MIN_RECORDS)
        placeholders = PLACEHOLDER_DOB if column == "dob" else PLACEHOLDER_TEXT
        bad = [v for v, c in counts.items() if c > limit or str(v) in placeholders]
        if not bad:
            continue
        hit = records[column].isin(bad).fillna(False).to_numpy(bool)
        for c in (column, *derived):
            if c in records:
                records.loc[hit, c] = pd.NA
        dropped += [
            {"column": column, "value": str(v), "records": int(counts[v]), "share": round(float(counts[v]) / n, 4)}
            for v in bad
        ]
    records.attrs["common_values"] = dropped
    return records


# gamma levels of splink_settings() the guards read: first names at least "first/last swapped"
# (swap, Jaro-Winkler >= 0.9, nickname or exact; 1 is Jaro-Winkler >= 0.75, 0 disagree), postcode exact
FIRST_NAME_CLOSE_LEVEL = 2
POSTCODE_EXACT_LEVEL = 4  # exact postcode (postcode_comparison)


def dob_comparison() -> Any:
    """Dates of birth ('YYYY-MM-DD' text) as evidence, not a veto: exact, one typed digit, day and
    month swapped, same day and month in another year (a mistyped year), within a year, else."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    part = lambda side, start, length: f"substr(dob_{side}, {start}, {length})"
    swapped = (
        f"{part('l', 1, 4)} = {part('r', 1, 4)} AND {part('l', 6, 2)} = {part('r', 9, 2)} "
        f"AND {part('l', 9, 2)} = {part('r', 6, 2)}"
    )
    return cl.CustomComparison(
        output_column_name="dob",
        comparison_levels=[
            cll.NullLevel("dob"),
            cll.ExactMatchLevel("dob"),
            cll.DamerauLevenshteinLevel("dob", 1),
            cll.CustomLevel(swapped, label_for_charts="day and month swapped"),
            cll.CustomLevel(
                f"{part('l', 6, 5)} = {part('r', 6, 5)}", label_for_charts="same day and month, other year"
            ),
            cll.AbsoluteDateDifferenceLevel("dob", input_is_string=True, threshold=1, metric="year"),
            cll.ElseLevel(),
        ],
    )


# DOB gamma levels of dob_comparison(): 5 exact, 4 one typed digit, 3 day/month swapped,
# 2 same day and month in another year, 1 within a year, 0 else, -1 null
DOB_EXACT_LEVEL = 5
DOB_CLOSE_LEVEL = 2


def postcode_comparison() -> Any:
    """Postcode and city as one comparison (a postcode agreeing implies its city: counted once):
    exact postcode, one typed digit with the same city, same city, one typed digit, else."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    return cl.CustomComparison(
        output_column_name="postcode",
        comparison_levels=[
            cll.CustomLevel(
                "(postcode_l IS NULL OR postcode_r IS NULL) AND (city_l IS NULL OR city_r IS NULL)"
            ).configure(is_null_level=True),
            cll.ExactMatchLevel("postcode").configure(tf_adjustment_column="postcode"),
            cll.And(cll.DamerauLevenshteinLevel("postcode", 1), cll.ExactMatchLevel("city")),
            cll.ExactMatchLevel("city"),
            cll.DamerauLevenshteinLevel("postcode", 1),
            cll.ElseLevel(),
        ],
    )


def address_comparison() -> Any:
    """Address lines: exact, Jaro-Winkler >= 0.95 / 0.8, then the house number alone agreeing
    ('10' against '10 macgregor street': a line written without its street, or another street
    spelling), else. Levels the trained m and u weigh: a neighbour's number agrees by chance."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    number = lambda side: f"split_part(address_{side}, ' ', 1)"
    return cl.CustomComparison(
        output_column_name="address",
        comparison_levels=[
            cll.NullLevel("address"),
            cll.ExactMatchLevel("address"),
            cll.JaroWinklerLevel("address", 0.95),
            cll.JaroWinklerLevel("address", 0.8),
            cll.CustomLevel(
                f"substr(address_l, 1, 1) BETWEEN '0' AND '9' AND {number('l')} = {number('r')}",
                label_for_charts="same house number",
            ),
            cll.ElseLevel(),
        ],
    )


def splink_settings(blocking_rules: list[Any] | None = None) -> Any:
    """Model specification: comparisons and blocking rules (backend-agnostic Splink objects).
    `blocking_rules`: instead of BLOCKING_RULES (e.g. after `budget_blocking_rules`)."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import SettingsCreator

    first = cl.CustomComparison(
        output_column_name="first_name",
        comparison_levels=[
            cll.NullLevel("first_name"),
            cll.ExactMatchLevel("first_name").configure(tf_adjustment_column="first_name"),
            cll.CustomLevel(f"first_canon_l = first_canon_r OR {nickname_sql()}", label_for_charts="nickname match"),
            cll.JaroWinklerLevel("first_name", 0.9),
            cll.CustomLevel("first_name_l = last_name_r", label_for_charts="first/last swapped"),
            cll.JaroWinklerLevel("first_name", 0.75),
            cll.ElseLevel(),
        ],
    )
    last = cl.CustomComparison(
        output_column_name="last_name",
        comparison_levels=[
            cll.NullLevel("last_name"),
            cll.ExactMatchLevel("last_name").configure(tf_adjustment_column="last_name"),
            cll.JaroWinklerLevel("last_name", 0.9),
            cll.CustomLevel("last_name_l = first_name_r", label_for_charts="first/last swapped"),
            cll.JaroWinklerLevel("last_name", 0.75),
            cll.ElseLevel(),
        ],
    )
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=[
            first,
            last,
            dob_comparison(),
            postcode_comparison(),
            address_comparison(),
            cl.EmailComparison("email"),
            cl.ExactMatch("phone").configure(term_frequency_adjustments=True),
        ],
        blocking_rules_to_generate_predictions=[
            _rule(r) for r in (BLOCKING_RULES if blocking_rules is None else blocking_rules)
        ],
        retain_matching_columns=True,
        retain_intermediate_calculation_columns=True,
        additional_columns_to_retain=["source_table", "source_key"],
    )


# Blocking rules as column tuples (block_on) or one SQL string (first/last name swapped).
BLOCKING_RULES: tuple[tuple[str, ...] | str, ...] = (
    ("first_canon", "last_name"),
    ("dob",),
    ("last_name", "postcode"),
    ("first_canon", "postcode"),
    ("email_local",),
    ("phone",),
    "l.first_name = r.last_name AND l.last_name = r.first_name",
    # single fields catch records with typos in the others; budget_blocking_rules tightens them
    # where they would produce too many pairs (large data, common surnames)
    ("last_name",),
    ("first_canon",),
    ("postcode",),
)
# Columns added, in order, to tighten a rule whose candidate pairs exceed the budget.
TIGHTEN_WITH = ("last_name", "first_canon", "dob", "postcode")


def _rule(rule: tuple[str, ...] | str) -> Any:
    from splink import block_on

    return rule if isinstance(rule, str) else block_on(*rule)


def comparison_budget(n_records: int) -> int:
    """Most candidate pairs one blocking rule may produce: 1M, or 50 per record on larger inputs."""
    return max(1_000_000, 50 * n_records)


def count_rule_pairs(records: pd.DataFrame, columns: tuple[str, ...]) -> int:
    """Exact number of record pairs an equi-join blocking rule on `columns` generates (sum of
    n*(n-1)/2 over groups of non-null values): cheap, without building the pairs."""
    keyed = records.dropna(subset=list(columns))
    if keyed.empty:
        return 0
    size = keyed.groupby(list(columns), sort=False).size().to_numpy(dtype=np.int64)
    return int((size * (size - 1) // 2).sum())


def budget_blocking_rules(
    records: pd.DataFrame, budget: int | None = None
) -> tuple[list[tuple[str, ...] | str], list[str]]:
    """Count each blocking rule's comparisons before it runs; tighten a rule over `budget` with
    the next column of TIGHTEN_WITH that brings it under, or drop it. -> (rules, notes)."""
    budget = comparison_budget(len(records)) if budget is None else budget
    rules: list[tuple[str, ...] | str] = []
    notes: list[str] = []
    for rule in BLOCKING_RULES:
        if isinstance(rule, str):  # the name-swap rule: bounded by the first+last name blocks
            rules.append(rule)
            continue
        count = count_rule_pairs(records, rule)
        if count <= budget:
            rules.append(rule)
            continue
        tightened = None
        for extra in (c for c in TIGHTEN_WITH if c not in rule):
            candidate = (*rule, extra)
            n = count_rule_pairs(records, candidate)
            if 0 < n <= budget:  # a rule that pairs nothing is no tighter rule: drop it
                tightened = (candidate, n)
                break
        name = "+".join(rule)
        if tightened:
            rules.append(tightened[0])
            notes.append(
                f"blocking rule {name}: {count:,} pairs over the budget of {budget:,}, "
                f"tightened to {'+'.join(tightened[0])} ({tightened[1]:,} pairs)"
            )
        else:
            notes.append(f"blocking rule {name}: {count:,} pairs over the budget of {budget:,}, dropped")
    return rules, notes


@dataclass(frozen=True)
class MatchResult:
    edges: pd.DataFrame  # unique_id_l, unique_id_r, match_weight, match_probability, gamma_*
    model: dict[str, Any]  # trained Splink settings (save as JSON to re-use)
    notes: tuple[str, ...] = ()  # what training did that the user should know (budgeted rules, EM)


def _arrow(records: pd.DataFrame):
    import pyarrow as pa

    columns = ["unique_id", "source_table", "source_key", *MATCH_COLUMNS]
    # explicit text types: all-null columns must not become INTEGER
    return pa.table(
        {
            c: pa.array(records[c].astype(object).where(records[c].notna(), None).tolist(), type=pa.string())
            for c in columns
        }
    )


def _linker(records: pd.DataFrame, settings: Any):
    """A Splink linker over `records` on the configured engine (CDP_IDENTITY_ENGINE); a trained
    model saved by another engine is re-rendered for this engine's SQL dialect."""
    from splink import Linker

    from cdp.engines.spark import identity_engine, model_for_dialect, splink_db_api

    engine = identity_engine()
    if isinstance(settings, dict):
        settings = model_for_dialect(settings, engine, splink_settings())
    db_api = splink_db_api(engine)
    return Linker(
        db_api.register(_arrow(records), dataset_display_name="profiles", table_name=_table_name("profiles")),
        settings,
        log_level=logging.WARNING,
    )


def _table_name(base: str) -> str:
    """Input table names are unique per linker: Spark's temporary views are shared by the session."""
    return f"{base}_{uuid.uuid4().hex[:8]}"


def predict_new(
    records: pd.DataFrame, is_new: np.ndarray, model: dict[str, Any], floor_probability: float = 0.5
) -> pd.DataFrame:
    """Incremental scoring with a trained model: pairs (new, existing) and (new, new) of the
    blocked candidates at or above `floor_probability`; never (existing, existing).

    Term frequencies come from all `records` (existing + new), as a full run would see them.
    Same columns as `train_and_predict(...).edges`, with unique_id_l < unique_id_r."""
    is_new = np.asarray(is_new, dtype=bool)
    empty = pd.DataFrame(columns=["unique_id_l", "unique_id_r", "match_weight", "match_probability"])
    if not is_new.any() or not model:
        return empty
    linker = _linker(records, model)
    for column in sorted(
        {
            c["tf_adjustment_column"]
            for comp in model.get("comparisons", [])
            for c in comp.get("comparison_levels", [])
            if c.get("tf_adjustment_column")
        }
    ):
        linker.table_management.compute_tf_table(column)
    db_api = linker._db_api
    new = db_api.register(_arrow(records[is_new]), table_name=_table_name("__new_profiles"))
    frames = []
    if (~is_new).any():
        old = db_api.register(_arrow(records[~is_new]), table_name=_table_name("__existing_profiles"))
        frames.append(
            linker.inference.predict_between(
                new, old, threshold_match_probability=floor_probability, warning_mode="never"
            ).as_pandas_dataframe()
        )
    if is_new.sum() > 1:
        frames.append(
            linker.inference.predict_within(
                new, threshold_match_probability=floor_probability, warning_mode="never"
            ).as_pandas_dataframe()
        )
    edges = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else empty
    if edges.empty:
        return empty
    swap = edges["unique_id_l"] > edges["unique_id_r"]
    edges.loc[swap, ["unique_id_l", "unique_id_r"]] = edges.loc[swap, ["unique_id_r", "unique_id_l"]].to_numpy()
    keep = [
        "unique_id_l",
        "unique_id_r",
        "match_weight",
        "match_probability",
        *[c for c in edges.columns if c.startswith("gamma_")],
    ]
    return (
        edges[keep]
        .drop_duplicates(["unique_id_l", "unique_id_r"])
        .sort_values(["unique_id_l", "unique_id_r"])
        .reset_index(drop=True)
    )


def train_and_predict(
    records: pd.DataFrame, floor_probability: float = 0.5, seed: int = 1, model: dict[str, Any] | None = None
) -> MatchResult:
    """Train (u by random sampling, m from deterministic pseudo-labels, by EM where those are
    missing or scarce; or reuse `model`) and score the blocked pairs at or above `floor_probability`.
    Blocking rules are counted first and tightened or dropped over `comparison_budget`."""
    if len(records) < 2:
        return MatchResult(
            pd.DataFrame(columns=["unique_id_l", "unique_id_r", "match_weight", "match_probability"]), model or {}
        )
    notes: list[str] = []
    if model is None:
        rules, notes = budget_blocking_rules(records)
        model, train_notes = _train(records, seed, rules)
        notes += train_notes
    linker = _linker(records, model)
    edges = linker.inference.predict(
        threshold_match_probability=floor_probability, warning_mode="never"
    ).as_pandas_dataframe()
    keep = [
        "unique_id_l",
        "unique_id_r",
        "match_weight",
        "match_probability",
        *[c for c in edges.columns if c.startswith("gamma_")],
    ]
    edges = edges[keep].sort_values(["unique_id_l", "unique_id_r"]).reset_index(drop=True)
    return MatchResult(edges, model, tuple(notes))


def _label_pairs(records: pd.DataFrame, by: list[str], max_group: int = 12) -> pd.DataFrame:
    """Pseudo-labels: pairs of records that agree exactly on all of `by` (groups above
    `max_group` records are shared values, not one person, and are skipped)."""
    keyed = records.dropna(subset=by)[["unique_id", *by]]
    size = keyed.groupby(by)["unique_id"].transform("size")
    keyed = keyed[(size > 1) & (size <= max_group)]
    pairs = keyed.merge(keyed, on=by, suffixes=("_l", "_r"))
    pairs = pairs[pairs["unique_id_l"] < pairs["unique_id_r"]]
    return pairs[["unique_id_l", "unique_id_r"]].reset_index(drop=True)


# Pseudo-label sets, in order of preference: pairs that agree exactly on the key columns.
# A set can only teach m for comparisons that do not read its key columns (pairs chosen for
# agreeing on a field always agree on it), so each comparison takes its m from the first set
# here that had labels and whose key it does not read.
LABEL_SETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("email", ("email",)),
    ("phone+name", ("phone", "first_canon", "last_name")),
    ("phone+dob", ("phone", "dob")),
    ("name+dob", ("first_canon", "last_name", "dob")),
)
COMPARISON_READS = {
    "first_name": {"first_name", "first_canon", "first_nicks", "last_name"},
    "last_name": {"last_name", "first_name"},
    "dob": {"dob"},
    "postcode": {"postcode", "city"},
    "address": {"address"},
    "email": {"email", "email_local"},
    "phone": {"phone"},
}


# Fewer pseudo-labelled pairs than this (all sets together) is "scarce": m values come from EM.
MIN_LABEL_PAIRS = 200
# EM training blocks: each teaches m for the comparisons that do not read its columns.
EM_BLOCKS: tuple[tuple[str, ...], ...] = (("first_canon", "last_name"), ("dob",), ("last_name", "postcode"))


def _set_prior(linker: Any, records: pd.DataFrame) -> str | None:
    """Prior P(two random records match) from the deterministic rules; when they find no pairs
    (no shared emails, no exact name+DOB) or cannot be used, assume about one duplicate per record
    (1 / n): a prior of 0 makes every match weight -inf (log of 0). -> a note when it fell back."""
    from splink import block_on

    n = len(records)
    fallback = min(0.5, 1.0 / max(n, 2))
    try:
        linker.training.estimate_probability_two_random_records_match(
            [block_on("email"), block_on("first_name", "last_name", "dob")], recall=0.6
        )
        prior = float(linker._settings_obj._probability_two_random_records_match)
    except (ValueError, ZeroDivisionError, ArithmeticError):  # tiny inputs or no exact matches at all
        prior = 0.0
    if 0.0 < prior < 1.0:
        return None
    linker._settings_obj._probability_two_random_records_match = fallback
    return f"prior match probability: no exact email or name+DOB pairs, assumed 1/{n:,}"


def _train(records: pd.DataFrame, seed: int, rules: list[Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """u from random pairs; m from pseudo-labels made by the deterministic identifiers (LABEL_SETS):
    on retail data, pairs sharing an email give m for every comparison but email, and pairs
    sharing a phone *and* a full name give m for email; without emails names learn from
    phone+dob pairs and the phone from name+dob pairs.

    Where those labels are missing or scarce (fewer than MIN_LABEL_PAIRS, or a comparison no
    label set can teach), m comes from Splink's EM on blocking rules (EM_BLOCKS). EM is not the
    first choice: households (same surname, address, home phone) look like one person to
    unsupervised EM and bias m towards merging; labels override EM wherever they exist.
    -> (model, notes)."""
    from splink import block_on

    notes: list[str] = []
    linker = _linker(records, splink_settings(rules))
    training = linker.training
    prior_note = _set_prior(linker, records)
    if prior_note:
        notes.append(prior_note)
    training.estimate_u_using_random_sampling(max_pairs=3e6, seed=seed)
    labels_by_set = {name: _label_pairs(records, list(by)) for name, by in LABEL_SETS}
    n_labels = sum(len(v) for v in labels_by_set.values())
    columns = [c["output_column_name"] for c in linker.misc.save_model_to_json()["comparisons"]]
    source_of = lambda column: next(
        (n for n, by in LABEL_SETS if len(labels_by_set[n]) and not set(by) & COMPARISON_READS.get(column, {column})),
        None,
    )
    untaught = [c for c in columns if source_of(c) is None]
    em_learned: dict[str, dict[str, Any]] = {}
    em_taught: set[str] = set()
    if n_labels < MIN_LABEL_PAIRS or untaught:
        for block in EM_BLOCKS:
            if count_rule_pairs(records, block) == 0:
                continue
            try:
                training.estimate_parameters_using_expectation_maximisation(
                    block_on(*block), estimate_without_term_frequencies=True
                )
            except (ValueError, ZeroDivisionError, ArithmeticError) as error:  # e.g. no pairs in the block
                notes.append(f"EM on {'+'.join(block)} skipped: {error}")
                continue
            em_taught |= {c for c in columns if not set(block) & COMPARISON_READS.get(c, {c})}
        em_learned = {c["output_column_name"]: c for c in linker.misc.save_model_to_json()["comparisons"]}
        notes.append(
            f"m values by EM for {', '.join(untaught) if n_labels >= MIN_LABEL_PAIRS else 'all comparisons'} "
            f"({n_labels} pseudo-labelled pairs)"
        )
    base = linker.misc.save_model_to_json()
    learned: dict[str, dict[str, dict[str, Any]]] = {}
    for name, _by in LABEL_SETS:
        labels = labels_by_set[name]
        if labels.empty:
            continue
        table = linker.table_management.register_table(
            labels, _table_name(f"__labels_{name.replace('+', '_')}"), overwrite=True
        )
        training.estimate_m_from_pairwise_labels(table)
        learned[name] = {c["output_column_name"]: c for c in linker.misc.save_model_to_json()["comparisons"]}
    model = base
    for i, comparison in enumerate(model["comparisons"]):
        column = comparison["output_column_name"]
        source = source_of(column)
        # labels first when there are enough of them; EM where they are scarce or cannot teach
        if source and (n_labels >= MIN_LABEL_PAIRS or column not in em_taught):
            model["comparisons"][i] = learned[source][column]
        elif column in em_taught:
            model["comparisons"][i] = em_learned[column]
    return _neutral_partial_email(model), notes


def _neutral_partial_email(model: dict[str, Any]) -> dict[str, Any]:
    """Partial email agreement (same username at another domain, similar address) counts as no
    evidence: Bayes factor 1 (u := m). Emails are made from names (pamela.johnson@...), so among
    records whose names already agree, two *different* people have similar emails far more often
    than the random pairs that estimated u; counted as independent evidence (+4 to +9 bits) it
    merged same-named neighbours (at 100k people: most false links above the threshold)."""
    for comparison in model.get("comparisons", []):
        if comparison.get("output_column_name") != "email":
            continue
        for level in comparison["comparison_levels"]:
            label = str(level.get("label_for_charts", "")).lower()
            if level.get("is_null_level") or label.startswith("exact match on email") or "other" in label:
                continue
            if level.get("m_probability") is not None:
                level["u_probability"] = level["m_probability"]
    return model


def score_pair(records: pd.DataFrame, model: dict[str, Any], left: str, right: str) -> pd.DataFrame:
    """Score one pair of profile records (by unique_id) with a trained model: all columns,
    including gamma_*, mw_* (per-comparison match weights) and match_probability."""
    linker = _linker(records, model)
    frame = records.set_index("unique_id")

    def rec(uid: str) -> dict[str, Any]:
        values = frame.loc[uid, ["source_table", "source_key", *MATCH_COLUMNS]].items()
        return {"unique_id": uid, **{c: (None if pd.isna(v) else v) for c, v in values}}

    return linker.inference.score_pair(rec(left), rec(right)).as_pandas_dataframe()


# A field is "reliable" when the trained model says true matches almost never disagree on it
# (m of its "All other comparisons" level below this): then a disagreement is a strong
# contradiction and the household guards refuse it. On noisy data (FEBRL: 5% of true pairs have
# another date of birth, 10% another first name) it is evidence in the weight only.
RELIABLE_ELSE_M = 0.01


def else_m(model: dict[str, Any] | None, column: str) -> float | None:
    """m probability of the last (else) level of comparison `column` in a trained model."""
    for comparison in (model or {}).get("comparisons", []):
        if comparison.get("output_column_name") == column:
            levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
            m = levels[-1].get("m_probability") if levels else None
            return None if m is None else float(m)
    return None


def reliable(model: dict[str, Any] | None, column: str) -> bool:
    """True unless the model learned that true matches often disagree on `column`."""
    m = else_m(model, column)
    return m is None or m < RELIABLE_ELSE_M


def dob_conflict(a: pd.Series, b: pd.Series) -> np.ndarray:
    """True where both dates of birth are known and cannot be the same person's: they differ by
    more than a year and not by one typed digit, two transposed digits, a day/month swap or the
    year alone (same day and month: a mistyped year)."""
    da, db = pd.to_datetime(a, errors="coerce"), pd.to_datetime(b, errors="coerce")
    known = da.notna().to_numpy() & db.notna().to_numpy()
    sa, sb = a.astype("string").fillna("").to_numpy(), b.astype("string").fillna("").to_numpy()
    one_digit = np.array(
        [len(x) == len(y) and sum(p != q for p, q in zip(x, y)) <= 1 for x, y in zip(sa, sb)], dtype=bool
    )
    transposed = np.array(
        [
            len(x) == len(y)
            and len(d := [i for i, (p, q) in enumerate(zip(x, y)) if p != q]) == 2
            and d[1] == d[0] + 1
            and x[d[0]] == y[d[1]]
            and x[d[1]] == y[d[0]]
            for x, y in zip(sa, sb)
        ],
        dtype=bool,
    )
    other_year = (da.dt.month.to_numpy() == db.dt.month.to_numpy()) & (da.dt.day.to_numpy() == db.dt.day.to_numpy())
    swapped = (
        (da.dt.year.to_numpy() == db.dt.year.to_numpy())
        & (da.dt.month.to_numpy() == db.dt.day.to_numpy())
        & (da.dt.day.to_numpy() == db.dt.month.to_numpy())
    )
    far = np.abs((da - db).dt.days.to_numpy(dtype=float, na_value=0)) > 366
    return known & far & ~one_digit & ~transposed & ~swapped & ~other_year
