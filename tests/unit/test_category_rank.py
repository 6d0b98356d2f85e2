"""Unknown categorical values (kept as given by ingest) rank as "other", not null."""

import duckdb
import pandas as pd

from cdp.features.views import INCOME_RANK, OTHER_RANK, TIER_RANK, _case, rank_of


def test_sql_rank_maps_unknown_tier_to_other_and_keeps_null():
    con = duckdb.connect()
    con.register("t", pd.DataFrame({"tier": ["gold", "diamond", None, "bronze"]}))
    ranks = con.execute(f"SELECT {_case('tier', TIER_RANK, OTHER_RANK)} AS r FROM t").df()["r"].tolist()
    assert ranks[0] == 3 and ranks[1] == OTHER_RANK and ranks[3] == 1
    assert pd.isna(ranks[2])


def test_pandas_rank_matches_sql_rank():
    values = pd.Series([">150k", "unknown-band", None])
    out = rank_of(values, INCOME_RANK)
    assert out.iloc[0] == 6 and out.iloc[1] == OTHER_RANK and pd.isna(out.iloc[2])
