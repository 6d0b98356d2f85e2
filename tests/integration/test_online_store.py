"""The bulk online writer stores exactly what Feast's own materialize stores (SQLite and Redis),
typed counts and flags included, and erasure reaches the Redis online store."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from cdp.workspace import Workspace
from tests.conftest import free_port
from tests.services import redis_server


@pytest.fixture
def copy_ws(pipeline_ws, tmp_path) -> Workspace:
    home = tmp_path / "ws"
    shutil.copytree(pipeline_ws.root, home)
    return Workspace(home)


def online_frame(ws: Workspace, ids: list[str]) -> pd.DataFrame:
    from cdp.featurestore.store import open_store, repo_definitions

    refs = [f"{view}:{f}" for view, fields in repo_definitions().FEATURES.items() for f in fields]
    return (
        open_store(ws)
        .get_online_features(features=refs, entity_rows=[{"customer_id": c} for c in ids])
        .to_df()
        .sort_values("customer_id", ignore_index=True)
    )


def reader_equals_feast(ws: Workspace, ids: list[str]) -> None:
    """cdp.featurestore.online_reader answers exactly what Feast's get_online_features answers: every feature
    view by reference, the score views (strings included) and each model's FeatureService."""
    from cdp.featurestore.online_reader import OnlineReader
    from cdp.featurestore.store import open_store, repo_definitions

    store = open_store(ws)
    reader = OnlineReader(store)
    definitions = repo_definitions()
    refs = [
        f"{view}:{f}"
        for group in (definitions.FEATURES, definitions.SCORE_FAMILIES)
        for view, fields in group.items()
        for f in fields
    ]
    asks = [refs, *(store.get_feature_service(s) for s in ("churn_v1", "next_best_product_v1", "campaign_response_v1"))]
    for features in asks:
        for batch in (ids, ids[:1], ["cus_nobody"]):
            feast = store.get_online_features(
                features=features, entity_rows=[{"customer_id": c} for c in batch]
            ).to_dict()
            ours = reader.read(features, batch)
            assert sorted(ours) == sorted(feast)
            pd.testing.assert_frame_equal(pd.DataFrame(ours)[sorted(feast)], pd.DataFrame(feast)[sorted(feast)])
    assert pd.DataFrame(reader.read(refs, ids))["tenure_days"].notna().sum() == len(ids) - 1


def bulk_equals_feast(ws: Workspace) -> None:
    from cdp.features.build import load_snapshots
    from cdp.featurestore.store import latest_snapshot, materialize_latest, open_store

    as_of = load_snapshots(ws)[0][-1]
    ids = [*latest_snapshot(ws, "customer_profile", as_of)["customer_id"].sample(150, random_state=4), "cus_nobody"]
    store = open_store(ws)
    feast_rows = materialize_latest(ws, store, as_of, engine="feast")
    by_feast = online_frame(ws, ids)
    bulk_rows = materialize_latest(ws, store, as_of, engine="bulk")
    by_bulk = online_frame(ws, ids)
    assert bulk_rows == feast_rows > 0
    assert by_feast["tenure_days"].notna().sum() == len(ids) - 1  # the frames are not trivially empty
    pd.testing.assert_frame_equal(by_bulk, by_feast)
    reader_equals_feast(ws, ids)
    typed_online_values(ws, ids)


def typed_online_values(ws: Workspace, ids: list[str]) -> None:
    """Counts come back as Python ints, flags as bools, the rest as floats, from Feast's
    get_online_features and from the fast reader alike, value for value."""
    from cdp.features.dtypes import feature_kind
    from cdp.featurestore.online_reader import OnlineReader
    from cdp.featurestore.store import open_store, repo_definitions

    store = open_store(ws)
    refs = [f"{view}:{f}" for view, fields in repo_definitions().FEATURES.items() for f in fields]
    feast = store.get_online_features(features=refs, entity_rows=[{"customer_id": c} for c in ids]).to_dict()
    ours = OnlineReader(store).read(refs, ids)
    seen = {"int": set(), "bool": set(), "float": set()}
    for ref in refs:
        name = ref.split(":", 1)[1]
        assert ours[name] == feast[name], name
        for value in feast[name]:
            if value is not None:
                seen[feature_kind(name)].add(type(value))
    assert seen == {"int": {int}, "bool": {bool}, "float": {float}}
    assert None not in feast["orders_90d"][:-1] and feast["orders_90d"][-1] is None  # cus_nobody: no row at all
    assert {False} <= set(feast["unsubscribed_365d"][:-1]) <= {True, False}


def test_registered_schema_types_counts_int64_and_flags_bool(pipeline_ws):
    """The registry holds Int64 counts and Bool flags (issue 13), the Parquet behind each view the
    matching Arrow types with no nulls; everything else is Float64."""
    import pyarrow.parquet as pq
    from feast.types import Bool, Float64, Int64

    from cdp.features.dtypes import COUNTS, FLAGS, WHOLE_DAYS
    from cdp.featurestore.store import open_store, repo_definitions

    assert {"orders_90d", "sessions_30d", "complaints_365d", "contacts_365d"} <= COUNTS
    assert {"unsubscribed_365d"} == FLAGS
    store = open_store(pipeline_ws)
    arrow = {Int64: "int64", Bool: "bool", Float64: "double"}
    for view in repo_definitions().FEATURES:
        table = pq.read_table(pipeline_ws.features / f"{view}.parquet")
        for field in store.get_feature_view(view).features:
            expected = Int64 if field.name in COUNTS | WHOLE_DAYS else Bool if field.name in FLAGS else Float64
            assert field.dtype == expected, (view, field.name, field.dtype)
            column = table.column(field.name)
            assert str(column.type) == arrow[expected], (view, field.name, column.type)
            if expected != Float64:
                assert column.null_count == 0, (view, field.name)


def test_bulk_writer_equals_feast_materialize_on_sqlite(copy_ws):
    bulk_equals_feast(copy_ws)


def test_bulk_writer_equals_feast_materialize_on_redis(copy_ws, monkeypatch):
    with redis_server(free_port(), copy_ws.root) as address:
        monkeypatch.setenv("CDP_ONLINE_STORE", "redis")
        monkeypatch.setenv("CDP_REDIS", address)
        bulk_equals_feast(copy_ws)


def test_a_redis_error_reply_fails_the_bulk_write(copy_ws, monkeypatch):
    """Redis refusing writes (here: out of memory) raises from the packed writer: a partial
    online store must never pass for a full one."""
    import redis
    from redis.exceptions import ResponseError

    from cdp.features.build import load_snapshots
    from cdp.featurestore.store import materialize_latest, open_store

    with redis_server(free_port(), copy_ws.root) as address:
        monkeypatch.setenv("CDP_ONLINE_STORE", "redis")
        monkeypatch.setenv("CDP_REDIS", address)
        client = redis.Redis(host=address.split(":")[0], port=int(address.split(":")[1]))
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        with pytest.raises(ResponseError, match="maxmemory"):
            materialize_latest(copy_ws, open_store(copy_ws), load_snapshots(copy_ws)[0][-1])
        client.config_set("maxmemory", 0)  # the connection is still usable after the failure
        materialize_latest(copy_ws, open_store(copy_ws), load_snapshots(copy_ws)[0][-1])
        assert client.dbsize() > 0


def test_a_wrong_online_store_setting_names_the_variable(monkeypatch, copy_ws):
    from cdp.featurestore.store import StoreConfigError, open_store

    monkeypatch.setenv("CDP_ONLINE_STORE", "cassandra")
    with pytest.raises(StoreConfigError, match="CDP_ONLINE_STORE='cassandra'"):
        open_store(copy_ws)


def test_erasure_reaches_the_redis_online_store(copy_ws, monkeypatch):
    import redis

    from cdp.features.build import load_snapshots
    from cdp.featurestore.store import materialize_latest, open_store
    from cdp.pipeline import score
    from cdp.privacy.erasure import erase_subjects
    from cdp.privacy.subjects import subject_for

    with redis_server(free_port(), copy_ws.root) as address:
        monkeypatch.setenv("CDP_ONLINE_STORE", "redis")
        monkeypatch.setenv("CDP_REDIS", address)
        materialize_latest(copy_ws, open_store(copy_ws), load_snapshots(copy_ws)[0][-1])
        score(copy_ws)
        scored = pd.read_parquet(copy_ws.features / "churn_scores.parquet")["customer_id"]
        person, other = scored.iloc[0], scored.iloc[1]
        client = redis.Redis(host=address.split(":")[0], port=int(address.split(":")[1]))
        keys_before = {k: client.hgetall(k) for k in client.scan_iter(count=1000)}
        assert any(person.encode() in k for k in keys_before)
        before_other = online_frame(copy_ws, [other])
        receipt = erase_subjects(copy_ws, [subject_for(copy_ws, person)], models=False)
        keys_after = {k: client.hgetall(k) for k in client.scan_iter(count=1000)}
        assert not any(
            person.encode() in k or any(person.encode() in v for v in fields.values())
            for k, fields in keys_after.items()
        )
        assert receipt["stores"]["feast online store (feature rows)"] > 0
        assert set(keys_before) - set(keys_after) == {k for k in keys_before if person.encode() in k}
        assert all(keys_after[k] == keys_before[k] for k in keys_after)  # everyone else untouched
        pd.testing.assert_frame_equal(online_frame(copy_ws, [other]), before_other)


def test_a_copied_workspace_reads_and_writes_its_own_files(pipeline_ws, copy_ws):
    """Feast's registry stores absolute paths; opening a moved/copied workspace re-points them,
    so pushes never land in the original's files."""
    from feast import FileSource

    from cdp.featurestore.store import open_store

    sources = [s for s in open_store(copy_ws).list_data_sources() if isinstance(s, FileSource)]
    assert sources and all(s.path.startswith(str(copy_ws.features)) for s in sources)
    original = [s for s in open_store(pipeline_ws).list_data_sources() if isinstance(s, FileSource)]
    assert all(s.path.startswith(str(pipeline_ws.features)) for s in original)
