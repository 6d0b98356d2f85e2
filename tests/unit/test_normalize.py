"""Identifier normalization: phones to E.164, emails to canonical keys and SHA-256."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from cdp.ingest.normalize import (
    canonical_email,
    e164_phone,
    email_sha256,
    mask_email,
    normalize_emails,
    normalize_phones,
)


@pytest.mark.parametrize(
    "raw", ["+1 212-734-1234", "2127341234", "(212) 734-1234", "212.734.1234", "1-212-734-1234", " +1 (212) 734 1234 "]
)
def test_us_phone_formats_give_one_e164(raw: str) -> None:
    assert e164_phone(raw) == "+12127341234"


@pytest.mark.parametrize("raw", ["12", "call me", "", "   ", None, float("nan"), "555-123-4567"])
def test_malformed_phones_are_none(raw: object) -> None:
    assert e164_phone(raw) is None


def test_phone_region_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert e164_phone("+44 20 7946 0958") == "+442079460958"
    assert e164_phone("020 7946 0958") is None  # not a US number
    assert e164_phone("020 7946 0958", region="GB") == "+442079460958"
    monkeypatch.setenv("CDP_DEFAULT_REGION", "GB")
    assert e164_phone("020 7946 0958") == "+442079460958"


def test_canonical_email() -> None:
    assert canonical_email("Jane.Doe+shop@Gmail.com") == "janedoe@gmail.com"
    assert canonical_email("  j.doe@googlemail.com ") == "jdoe@gmail.com"
    assert canonical_email("Jane.Doe+news@Example.COM") == "jane.doe@example.com"


@pytest.mark.parametrize(
    "raw", ["not an email", "a@b", "@example.com", "a..b@example.com", "a@exa mple.com", "jane@example", "", None, 42]
)
def test_malformed_emails_are_none(raw: object) -> None:
    assert canonical_email(raw) is None
    assert email_sha256(raw) is None


def test_email_sha256_is_of_trimmed_lower_not_canonical() -> None:
    raw = "  Jane.Doe+shop@Gmail.com "
    expected = hashlib.sha256(b"jane.doe+shop@gmail.com").hexdigest()
    assert email_sha256(raw) == expected
    assert email_sha256("jane.doe+shop@gmail.com") == expected


def test_mask_email_hides_the_value() -> None:
    assert mask_email("jane@example.com") == "j***@***"
    assert "example" not in mask_email("bad@example")


def test_series_helpers_keep_index_and_nulls() -> None:
    emails = pd.Series(["A.B+x@gmail.com", None, "bad", "A.B+x@gmail.com"], index=[5, 6, 7, 8])
    phones = pd.Series(["212.734.1234", None, "call me", "(212) 734-1234"], index=[5, 6, 7, 8])
    norm = normalize_emails(emails)
    e164 = normalize_phones(phones, "US")
    assert list(norm.index) == [5, 6, 7, 8] and list(e164.index) == [5, 6, 7, 8]
    assert norm.tolist()[0] == norm.tolist()[3] == "ab@gmail.com"
    assert norm.isna().tolist() == [False, True, True, False]
    assert e164.tolist()[0] == e164.tolist()[3] == "+12127341234"
    assert e164.isna().tolist() == [False, True, True, False]


def test_phone_regions_are_detected_from_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    from cdp.ingest.normalize import detect_regions, region_setting

    gb = pd.Series(["07911 123456", "020 7123 4567", "07400 123456", "0161 496 0000", None, "+44 7400 654321"])
    regions, how = detect_regions(gb)
    assert regions == ("GB",) and "GB 100%" in how
    assert e164_phone("07911 123456", regions) == "+447911123456"
    us = pd.Series(["(212) 734-1234", "212.734.1235", "+1 415 555 2671", "2125550199"])
    assert detect_regions(us)[0] == ("US",)
    monkeypatch.setenv("CDP_DEFAULT_REGION", "gb, ie")
    assert region_setting() == ("GB", "IE")
    monkeypatch.setenv("CDP_DEFAULT_REGION", "XX")
    with pytest.raises(ValueError, match="XX"):
        region_setting()


def test_a_second_phone_region_is_added_when_the_data_needs_it() -> None:
    from cdp.ingest.normalize import detect_regions

    gb = [f"07911 1234{i:02d}" for i in range(40)]
    ie = [f"085 123 45{i:02d}" for i in range(10)]  # Irish mobiles, national form
    regions, _ = detect_regions(pd.Series(gb + ie + ["+353 85 123 4599"]))
    assert regions[0] in ("GB", "IE") and set(regions) == {"GB", "IE"}
    assert e164_phone("085 123 4501", regions) == "+353851234501"
