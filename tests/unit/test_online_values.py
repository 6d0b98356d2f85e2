"""The fast online path's value encoding is Feast's: what the bulk writer serializes for Int64,
Bool and Float64 features is what protobuf serializes, and the fast reader decodes any such
Value as Feast's own conversion does (type included)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type

from cdp.featurestore.online_reader import decode
from cdp.featurestore.online_writer import _column


@pytest.mark.parametrize(
    ("values", "dtype", "proto"),
    [
        ([0, 1, 127, 128, 300, 2**40, -1, -(2**63), 2**63 - 1], "Int64", lambda v: Value(int64_val=v)),
        ([True, False], "Bool", lambda v: Value(bool_val=v)),
        ([0.0, -2.5, 1e300], "Float64", lambda v: Value(double_val=v)),
    ],
)
def test_writer_serializes_as_protobuf_and_reader_decodes_as_feast(values, dtype, proto):
    column = _column(pd.Series(values), dtype, "f")
    assert column.blobs == [proto(v).SerializeToString() for v in values]
    decoded = [decode(b) for b in column.blobs]
    expected = [feast_value_type_to_python_type(proto(v)) for v in values]
    assert decoded == expected and [type(v) for v in decoded] == [type(v) for v in expected]
    assert column.texts == [str(v) for v in values]  # Feast's SQLite value_text


def test_null_counts_and_flags_are_feasts_empty_value():
    for dtype, series in (("Int64", pd.Series([3.0, np.nan])), ("Bool", pd.Series([True, None], dtype=object))):
        column = _column(series, dtype, "f")
        assert column.blobs[1] == b"" and decode(column.blobs[1]) is None and column.texts[1] is None


def test_a_fractional_count_or_a_non_flag_is_refused_naming_the_feature():
    with pytest.raises(ValueError, match=r"feature 'orders_90d' \(Int64\): cannot store 1\.5 in 1 row"):
        _column(pd.Series([1.0, 1.5]), "Int64", "orders_90d")
    with pytest.raises(ValueError, match=r"feature 'unsubscribed_365d' \(Bool\): cannot store 2"):
        _column(pd.Series([0, 2]), "Bool", "unsubscribed_365d")


def test_feature_tables_refuse_a_null_count_naming_view_and_column():
    from cdp.features.views import typed_column

    assert typed_column("purchase_behaviour", "orders_90d", pd.Series([2.0, 0.0])).tolist() == [2, 0]
    with pytest.raises(ValueError, match=r"'purchase_behaviour': orders_90d must be a non-null whole number"):
        typed_column("purchase_behaviour", "orders_90d", pd.Series([2.0, None]))
    assert typed_column("purchase_behaviour", "days_since_last_order", pd.Series([2, None])).isna().tolist() == [
        False,
        True,
    ]
