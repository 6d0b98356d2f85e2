"""Matching helpers: nickname canonical names, date-of-birth conflicts, pseudo-labels."""

from __future__ import annotations

import pandas as pd

from cdp.identity.matching import _label_pairs, canonical_first_name, dob_conflict, names_related, splink_settings


def test_nicknames_map_to_one_canonical_name():
    assert canonical_first_name("bob") == canonical_first_name("robert") == "robert"
    assert canonical_first_name("jim") == canonical_first_name("james")
    assert canonical_first_name("zyxq") == "zyxq"


def test_nickname_relation_is_not_one_canonical_name():
    # Mandy is a nickname of Amanda, but her most common canonical form is another name
    assert canonical_first_name("mandy") != canonical_first_name("amanda")
    assert names_related("mandy", "amanda") and names_related("amanda", "mandy")
    assert names_related("erin", "aaron") and names_related("tony", "anthony")
    assert not names_related("john", "mary") and not names_related("alan", "alex")
    assert not names_related(None, "mary") and names_related("zyxq", "zyxq")


def test_dob_conflict_tolerates_typos_but_not_other_people():
    a = pd.Series(["1980-01-02", "1980-01-02", "1980-01-02", "1980-01-02", None])
    b = pd.Series(["1980-01-02", "1981-01-02", "1980-02-01", "1955-07-30", "1955-07-30"])
    assert dob_conflict(a, b).tolist() == [False, False, False, True, False]


def test_label_pairs_skip_shared_values():
    records = pd.DataFrame(
        {"unique_id": [f"r{i}" for i in range(16)], "email": ["a@x"] * 2 + ["shared@x"] * 13 + [None]}
    )
    pairs = _label_pairs(records, ["email"], max_group=12)
    assert pairs.values.tolist() == [["r0", "r1"]]


def test_settings_are_backend_agnostic_objects():
    settings = splink_settings()
    # serialisable for any dialect: Splink renders the SQL when a backend is chosen
    assert settings.get_settings("spark").as_dict()["link_type"] == "dedupe_only"


def test_partial_email_agreement_is_no_evidence():
    from cdp.identity.matching import _neutral_partial_email

    level = lambda label, m, u, **kw: {"label_for_charts": label, "m_probability": m, "u_probability": u, **kw}
    model = {
        "comparisons": [
            {
                "output_column_name": "email",
                "comparison_levels": [
                    {"label_for_charts": "email is NULL", "is_null_level": True},
                    level("Exact match on email", 0.97, 5e-6),
                    level("Exact match on username", 0.002, 4e-6),
                    level("Jaro-Winkler distance of email >= 0.88", 0.014, 5e-4),
                    level("All other comparisons", 0.02, 0.999),
                ],
            },
            {"output_column_name": "phone", "comparison_levels": [level("Exact match on phone", 0.9, 3e-6)]},
        ]
    }
    levels = {
        l["label_for_charts"]: l for c in _neutral_partial_email(model)["comparisons"] for l in c["comparison_levels"]
    }
    bf = lambda name: levels[name]["m_probability"] / levels[name]["u_probability"]
    assert bf("Exact match on username") == bf("Jaro-Winkler distance of email >= 0.88") == 1.0
    assert bf("Exact match on email") > 1e5 and bf("All other comparisons") < 0.1 and bf("Exact match on phone") > 1e5
