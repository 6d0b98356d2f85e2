"""Foreign formats of the synthetic data (cdp generate --phone-country / --date-order)."""

import phonenumbers
import pyarrow as pa
import pytest

from cdp.synthetic.formats import ForeignFormat, apply_format, gb_phone


def test_gb_phones_are_valid_one_to_one_and_keep_malformed_values():
    written = ["(206) 734-0001", "206-734-0001", "+1 971-999-9999", "212.200.0000", "123"]
    out = [gb_phone(w) for w in written]
    for value in out[:4]:
        assert phonenumbers.is_valid_number(phonenumbers.parse(value, "GB")), value
    same = [phonenumbers.format_number(phonenumbers.parse(v, "GB"), 0) for v in out[:2]]
    assert same[0] == same[1]  # one number, two ways of writing it: still one number
    assert out[2].startswith("+44 ") and out[4] == "123"
    assert len({phonenumbers.format_number(phonenumbers.parse(v, "GB"), 0) for v in out[1:4]}) == 3


def test_dates_day_first_and_malformed_kept():
    table = pa.table(
        {
            "record_id": ["a", "b"],
            "date_of_birth": ["1963-09-26", "O9/24/2002"],
            "created_at": ["2024-03-02T19:48:05Z", None],
            "updated_at": ["2024-03-02T19:48:05Z", "2024-03-02T19:48:05Z"],
            "phone": [None, "206-734-0001"],
        }
    )
    out = apply_format("crm_contacts", table, ForeignFormat("GB", "dmy"))
    assert out.column("date_of_birth").to_pylist() == ["26/09/1963", "O9/24/2002"]
    assert out.column("created_at").to_pylist() == ["02/03/2024 19:48:05", None]
    assert out.column("phone").to_pylist()[1].startswith("07")


def test_consent_phone_identifiers_are_written_like_the_profiles_phones():
    table = pa.table(
        {
            "identifier_type": ["phone", " Phone", "email", None],
            "identifier": ["(206) 734-0001", "206-734-0001", "a@b.com", "x"],
            "occurred_at": ["2024-03-02T19:48:05Z"] * 4,
        }
    )
    out = apply_format("consent_events", table, ForeignFormat("GB")).column("identifier").to_pylist()
    assert out[0] == gb_phone("(206) 734-0001") and out[1] == gb_phone("206-734-0001")
    assert out[0].startswith("07") and out[2:] == ["a@b.com", "x"]


def test_unknown_options_are_refused_naming_the_value():
    with pytest.raises(ValueError, match="phone_country: 'XX'"):
        ForeignFormat("XX")
    with pytest.raises(ValueError, match="date_order: 'ydm'"):
        ForeignFormat(None, "ydm")
