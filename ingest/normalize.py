"""Identifier normalization: emails and phone numbers in, canonical matching keys out.

Pure functions on single values (cached), Series helpers that work once per distinct value
(millions of rows with repeated identifiers normalize in seconds), and `add_identifiers`,
which ingest uses to add the normalized columns to a staged table. Field-issue reasons carry
masked identifiers only (`mask_email`, `phone_digits_hint`), never the raw value.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from cdp.ingest.contract import TableSpec
from cdp.settings import setting

DEFAULT_REGION = "US"  # only for callers outside ingest that parse one value with no data to go on
UNKNOWN_REGION = "ZZ"  # phonenumbers' "no region": only international (+CC) numbers parse
# regions tried for national-form numbers besides those whose country codes the data carries
COMMON_REGIONS = (
    "US", "GB", "CA", "AU", "IE", "NZ", "DE", "FR", "NL", "BE", "ES", "IT", "PT", "CH", "AT",
    "SE", "DK", "NO", "FI", "PL", "IN", "ZA", "BR", "MX", "JP", "SG",
)  # fmt: skip
_SAMPLE = 400
GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})

# email-validator is not installed in the venv: a strict ASCII regex (RFC 5322 dot-atom local
# part, LDH domain labels, alphabetic TLD) on the trimmed, lower-cased value.
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EMAIL_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[a-z]{{2,63}}")
_PHONE_CHARS_RE = re.compile(r"[\d\s().+/-]+")
_NON_DIGIT_RE = re.compile(r"\D")
_NANP_RE = re.compile(r"(?:\+?1)?([2-9]\d{9})")


REGIONS_FILE = "phone_regions.json"  # in staged/: the region(s) the last ingest used


def default_region() -> str:
    """Phone region for one value outside ingest (e.g. a subject lookup): $CDP_DEFAULT_REGION,
    else the first region the last `cdp ingest` of $CDP_HOME used, else "US"."""
    configured = region_setting()
    if configured:
        return configured[0]
    saved = Path(setting("home") or "data") / "staged" / REGIONS_FILE
    try:
        regions = json.loads(saved.read_text())["regions"]
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_REGION
    return regions[0] if regions and regions[0] != UNKNOWN_REGION else DEFAULT_REGION


def _clean_email(raw: Any) -> str | None:
    """Trimmed, lower-cased email if well-formed, else None."""
    if not isinstance(raw, str):
        return None
    value = raw.strip().lower()
    if len(value) > 254 or _EMAIL_RE.fullmatch(value) is None:
        return None
    if len(value.rsplit("@", 1)[0]) > 64:
        return None
    return value


@lru_cache(maxsize=1 << 20)
def canonical_email(raw: Any) -> str | None:
    """Matching key for an email: lower-case, no "+tag", gmail dots removed; None if malformed."""
    value = _clean_email(raw)
    if value is None:
        return None
    local, domain = value.rsplit("@", 1)
    local = local.split("+", 1)[0] or local  # "+tag" only: nothing to strip
    if domain in GMAIL_DOMAINS:
        local, domain = local.replace(".", "") or local, "gmail.com"
    return f"{local}@{domain}"


@lru_cache(maxsize=1 << 20)
def email_sha256(raw: Any) -> str | None:
    """SHA-256 hex of the trimmed, lower-cased email (enrichment join key); None if malformed."""
    value = _clean_email(raw)
    return None if value is None else hashlib.sha256(value.encode("utf-8")).hexdigest()


def region_setting() -> tuple[str, ...] | None:
    """$CDP_DEFAULT_REGION as regions (e.g. "GB" or "GB,IE"), or None: detect from the data."""
    value = setting("default_region") or ""
    regions = tuple(r.strip().upper() for r in value.split(",") if r.strip())
    for region in regions:
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"CDP_DEFAULT_REGION: '{region}' is not a region code (e.g. US, GB, DE)")
    return regions or None


def _valid_for(key: str, region: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(key, region))  # GB's +44 covers JE, GG, IM
    except phonenumbers.NumberParseException:
        return False


def _null_keys(sample: list[str]) -> list[str]:
    """Random digit strings shaped like `sample` (same length, same trunk '0'): how often a
    region's plan accepts *any* such string is the base rate its validity must beat."""
    rng = np.random.default_rng(0)
    out = []
    for key in sample:
        trunk = "0" if key.startswith("0") else ""
        body = rng.integers(0, 10, len(key) - len(trunk))
        body[0] = rng.integers(1, 10)
        out.append(trunk + "".join(map(str, body)))
    return out


def detect_regions(values: pd.Series) -> tuple[tuple[str, ...], str]:
    """The region(s) of national-form phone numbers, from the data itself.

    Candidates: the regions of the country codes that international numbers in the data carry,
    then `COMMON_REGIONS`. Each is scored by the share of sampled national numbers valid under
    it minus the share of random digit strings of the same shape valid under it (permissive plans
    such as DE or IN accept most strings, so validity alone is weak evidence). Near-ties go to the
    data's own country codes, then to the order of `COMMON_REGIONS`. A second region is added when
    it explains at least 5% of the sample that the first leaves invalid. Returns (regions, how)."""
    distinct = pd.Series(pd.unique(values.dropna()), dtype=object)
    return regions_of_keys(pd.Series(pd.unique(distinct.map(_phone_key).dropna()), dtype=object))


def regions_of_keys(keys: pd.Series) -> tuple[tuple[str, ...], str]:
    """`detect_regions` on the distinct phone keys (`phone_key`) in order of first appearance."""
    international = keys[keys.str.startswith(("+", "00"))]
    national = keys[keys.str.fullmatch(r"\d{5,}") & ~keys.str.startswith("00")]
    international = international.sample(min(_SAMPLE, len(international)), random_state=0)
    codes = pd.to_numeric(
        international.map(lambda k: _country_code("+" + k[2:] if k.startswith("00") else k)), errors="coerce"
    ).dropna()
    own = [phonenumbers.region_code_for_country_code(int(c)) for c in codes.value_counts().index]
    own = [r for r in own if r != UNKNOWN_REGION]
    candidates = list(dict.fromkeys([*own, *COMMON_REGIONS]))
    if national.empty:
        return tuple(own[:1]) or (UNKNOWN_REGION,), "no national-form numbers" + (
            f"; international ones mostly +{phonenumbers.country_code_for_region(own[0])}" if own else ""
        )
    sample = national.sample(min(_SAMPLE, len(national)), random_state=0).tolist()
    null = _null_keys(sample[:60])
    base = {r: np.mean([_valid_for(k, r) for k in null]) for r in candidates}
    # screen every candidate on a few numbers, then score the strongest on the whole sample
    screen = {r: np.mean([_valid_for(k, r) for k in sample[:40]]) - base[r] for r in candidates}
    cut = sorted(screen.values(), reverse=True)[min(5, len(candidates)) - 1]
    valid = {r: np.array([_valid_for(k, r) for k in sample]) for r in candidates if screen[r] >= cut}
    lift = {r: v.mean() - base[r] for r, v in valid.items()}
    top = max(lift.values())
    slack = max(0.05, 2 / np.sqrt(len(sample)))  # what counts as a near-tie shrinks with the sample
    best = next(r for r in candidates if r in lift and lift[r] >= top - slack)
    chosen, left = [best], ~valid[best]
    if left.any():  # a second region is searched among all candidates, on what the first leaves
        rest = [k for k, bad in zip(sample, left) if bad]
        gain = {r: np.mean([_valid_for(k, r) for k in rest]) - base[r] for r in candidates if r != best}
        best_gain = max(gain.values())  # near-ties again to the data's own codes, then the usual order
        second = next(r for r in candidates if r in gain and gain[r] >= best_gain - 0.15)
        explained = np.array([_valid_for(k, second) for k in sample]) & left
        if gain[second] > 0.3 and explained.mean() >= 0.05:
            chosen.append(second)
            left &= ~explained
    shares = ", ".join(f"{r} {valid[r].mean() if r in valid else 1 - left.mean():.0%}" for r in chosen[:1])
    taken = {phonenumbers.country_code_for_region(r) for r in chosen}
    others = [r for r in lift if phonenumbers.country_code_for_region(r) not in taken]
    runner = max(others, key=lambda r: lift[r]) if others else None
    how = (
        f"{len(sample):,} sampled national-form numbers: {shares} valid"
        + (f", {chosen[1]} for the rest" if len(chosen) > 1 else "")
        + f"; {left.mean():.0%} valid under none"
        + (
            f"; next best {runner} ({valid[runner].mean():.0%} valid, {base[runner]:.0%} of random ones)"
            if runner
            else ""
        )
    )
    return tuple(chosen), how


def _country_code(key: str) -> int | None:
    try:
        return phonenumbers.parse(key, None).country_code
    except phonenumbers.NumberParseException:
        return None


def _phone_key(raw: Any) -> str | None:
    """Cheap pre-key: formatting-only characters collapse to digits (keeping a leading "+")."""
    if isinstance(raw, (int, np.integer)) and not isinstance(raw, bool):
        return str(raw)
    if not isinstance(raw, str):
        return None
    value = raw.strip()
    if not value:
        return None
    if _PHONE_CHARS_RE.fullmatch(value):
        return ("+" if value.startswith("+") else "") + _NON_DIGIT_RE.sub("", value)
    return value


def phone_key(raw: Any) -> str | None:
    """The pre-key region detection works on (formatting-only characters collapsed)."""
    return _phone_key(raw)


def _nanp_number(key: str, region: str) -> phonenumbers.PhoneNumber | None:
    """Fast path (no parse) for NANP regions: 10 digits, "1"+10 digits or "+1"+10 digits."""
    if phonenumbers.country_code_for_region(region) != 1:
        return None
    match = _NANP_RE.fullmatch(key)
    return None if match is None else phonenumbers.PhoneNumber(country_code=1, national_number=int(match.group(1)))


@lru_cache(maxsize=1 << 20)
def _e164_key(key: str, region: str) -> str | None:
    number = _nanp_number(key, region)
    if number is None:
        try:
            number = phonenumbers.parse(key, region)
        except phonenumbers.NumberParseException:
            return None
    if not (phonenumbers.is_valid_number_for_region(number, region) or phonenumbers.is_valid_number(number)):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def e164_phone(raw: Any, region: str | tuple[str, ...] | None = None) -> str | None:
    """E.164 form of a phone number parsed with a default region (or the first of several under
    which it is valid); None unless a valid number."""
    key = _phone_key(raw)
    if key is None:
        return None
    regions = (region,) if isinstance(region, str) else region or (default_region(),)
    for r in regions:
        if (value := _e164_key(key, r.upper())) is not None:
            return value
    return None


def mask_email(raw: Any) -> str:
    """A report-safe hint of an email's shape, e.g. "j***@***"; never the value itself."""
    if not isinstance(raw, str) or not raw.strip():
        return "***"
    value = raw.strip()
    return f"{value[0]}***@***" if "@" in value else f"{value[0]}***"


def phone_digits_hint(raw: Any) -> str:
    """A report-safe description of a phone value: how many digits it has."""
    return f"{len(_NON_DIGIT_RE.sub('', str(raw)))} digits"


TEXT = pd.StringDtype("pyarrow")


def _factorize(series: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """(codes with -1 for null, distinct values); Arrow dictionary encoding for Arrow text."""
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        arr = pa.array(series.array)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        encoded = pc.dictionary_encode(arr)
        return (pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist())
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    return codes, list(uniques)


def map_unique(series: pd.Series, fn: Callable[[Any], Any]) -> pd.Series:
    """Apply `fn` once per distinct non-null value of `series` (object result; nulls -> None)."""
    codes, uniques = _factorize(series)
    mapped = np.empty(len(uniques) + 1, dtype=object)
    mapped[:-1] = [fn(u) for u in uniques]
    mapped[-1] = None  # code -1 (null) indexes the last slot
    return pd.Series(mapped[codes], index=series.index, dtype=object)


def map_text(series: pd.Series, fn: Callable[[Any], str | None]) -> pd.Series:
    """Like `map_unique` for a str-valued `fn`, returning Arrow-backed text (`TEXT`)."""
    codes, uniques = _factorize(series)
    mapped = pa.array([fn(u) for u in uniques], type=pa.large_string())
    taken = mapped.take(pa.array(codes, mask=codes < 0))
    return pd.Series(pd.arrays.ArrowStringArray(taken), index=series.index)


def normalize_emails(series: pd.Series) -> pd.Series:
    """Canonical matching key of every email in `series` (null where malformed or null)."""
    return map_text(series, canonical_email)


def hash_emails(series: pd.Series) -> pd.Series:
    """`email_sha256` of every email in `series` (null where malformed or null)."""
    return map_text(series, email_sha256)


def normalize_phones(series: pd.Series, region: str | tuple[str, ...] | None = None) -> pd.Series:
    """E.164 form of every phone in `series` (null where invalid or null)."""
    chosen = (region,) if isinstance(region, str) else region or (default_region(),)
    return map_text(series, lambda raw: e164_phone(raw, chosen))


def add_identifiers(staged: pd.DataFrame, spec: TableSpec, region: str | tuple[str, ...]) -> list[pd.Series]:
    """Add `<email>_norm`, `<email>_sha256`, `<phone>_e164` (consent: `identifier_norm`) to
    `staged` in place; return field-issue reasons per row (masked: never a raw identifier)."""
    issues: list[pd.Series] = []

    def emails(values: pd.Series, col: str) -> pd.Series:
        norm = normalize_emails(values)
        bad = values.notna() & norm.isna()
        if bad.any():
            issues.append(f"{col}: malformed email '" + map_unique(values[bad], mask_email) + "'")
        return norm

    def phones(values: pd.Series, col: str) -> pd.Series:
        e164 = normalize_phones(values, region)
        bad = values.notna() & e164.isna()
        if bad.any():
            where = "/".join(region) if isinstance(region, tuple) else region
            issues.append(
                f"{col}: not a valid phone number under {where} or as +country code ("
                + map_unique(values[bad], phone_digits_hint)
                + ")"
            )
        return e164

    for col in spec.emails:
        staged[f"{col}_norm"] = emails(staged[col], col)
        staged[f"{col}_sha256"] = hash_emails(staged[col])
    for col in spec.phones:
        staged[f"{col}_e164"] = phones(staged[col], col)
    if spec.name == "consent_events":
        kind, values = staged["identifier_type"], staged["identifier"]
        norm = values.copy()
        is_email = (kind == "email").fillna(False).astype(bool)
        is_phone = (kind == "phone").fillna(False).astype(bool)
        norm[is_email] = emails(values[is_email], "identifier")
        norm[is_phone] = phones(values[is_phone], "identifier")
        staged["identifier_norm"] = norm
    return issues
