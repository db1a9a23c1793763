"""Mistakes a user can make are UserErrors naming the folder, file, column or value."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.reader import ShardReader
from shardrec.data_pipeline.schema import SCHEMA_FILE, load_schema, split_files


def test_missing_dataset_folder_load_schema(tmp_path):
    missing = tmp_path / "no-such-data"
    with pytest.raises(UserError) as err:
        load_schema(missing)
    assert str(missing) in str(err.value)
    assert "does not exist" in str(err.value)


def test_missing_dataset_folder_shard_reader(tmp_path, indexed):
    schema = indexed([[5]]).schema
    missing = tmp_path / "no-such-data"
    with pytest.raises(UserError) as err:
        ShardReader(missing, "train", schema, 4)
    assert str(missing) in str(err.value)


def test_folder_without_schema(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError) as err:
        load_schema(tmp_path)
    assert str(tmp_path) in str(err.value) and SCHEMA_FILE in str(err.value)


@pytest.mark.parametrize("content, words", [
    ("{not json", ["not valid JSON"]),
    (json.dumps({"format": "csv", "label": "y", "dense": [], "sparse": []}), ["format"]),
    (json.dumps({"format": "shardrec-parquet", "dense": [], "sparse": []}), ["label"]),
    (json.dumps({"format": "shardrec-parquet", "label": "y", "dense": [],
                 "sparse": [{"name": "C7", "num_embeddings": 0}]}), ["C7", "num_embeddings"]),
    (json.dumps({"format": "shardrec-parquet", "label": "y", "dense": [],
                 "sparse": [{"name": "C1", "size": 3}]}), ["malformed"]),
])
def test_bad_schema_json(tmp_path, content, words):
    (tmp_path / SCHEMA_FILE).write_text(content)
    with pytest.raises(UserError) as err:
        load_schema(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / SCHEMA_FILE) in msg
    for w in words:
        assert w in msg


def test_missing_split(indexed):
    ds = indexed([[5]])
    (ds.path / "valid").mkdir()
    with pytest.raises(UserError) as err:
        ShardReader(ds.path, "test", ds.schema, 4)
    msg = str(err.value)
    assert "'test'" in msg and str(ds.path) in msg
    assert "train" in msg and "valid" in msg  # the splits that do exist


def test_split_without_parquet_files(indexed):
    ds = indexed([[5]])
    (ds.path / "empty").mkdir()
    (ds.path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no .parquet files") as err:
        split_files(ds.path, "empty")
    assert str(ds.path / "empty") in str(err.value)


def _rewrite(path, transform):
    table = transform(pq.read_table(path))
    pq.write_table(table, path)


@pytest.mark.parametrize("column, transform, words", [
    ("half", lambda t: t.drop_columns(["half"]), ["missing"]),
    ("m", lambda t: t.drop_columns(["m"]), ["missing"]),
    ("label", lambda t: t.drop_columns(["label"]), ["missing"]),
    ("half", lambda t: t.set_column(t.schema.get_field_index("half"), "half",
                                    t.column("half").cast(pa.float64())), ["double", "float"]),
    ("s", lambda t: t.set_column(t.schema.get_field_index("s"), "s",
                                 t.column("s").cast(pa.int32())), ["int32", "int64"]),
    ("s", lambda t: t.set_column(t.schema.get_field_index("s"), "s",
                                 pa.array([[1]] * t.num_rows, pa.list_(pa.int64()))), ["list"]),
    ("m", lambda t: t.set_column(t.schema.get_field_index("m"), "m",
                                 pa.array([1] * t.num_rows, pa.int64())), ["list"]),
    ("m", lambda t: t.set_column(t.schema.get_field_index("m"), "m",
                                 t.column("m").cast(pa.list_(pa.int32()))), ["int32"]),
])
def test_shard_not_matching_schema(indexed, column, transform, words):
    ds = indexed([[5, 5], [6], [4]])
    bad = ds.path / "train" / "part-00001.parquet"
    _rewrite(bad, transform)
    with pytest.raises(UserError) as err:
        ShardReader(ds.path, "train", ds.schema, 2, drop_last=False)
    msg = str(err.value)
    assert str(bad) in msg
    assert f"'{column}'" in msg
    for w in words:
        assert w in msg


def test_unreadable_shard(indexed):
    ds = indexed([[5], [5]])
    bad = ds.path / "train" / "part-00001.parquet"
    bad.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(UserError) as err:
        ShardReader(ds.path, "train", ds.schema, 2)
    assert str(bad) in str(err.value)


def test_batch_larger_than_a_rank_with_drop_last(indexed):
    ds = indexed([[10], [5]])  # rank 0: 10 rows, rank 1: 5 rows
    with pytest.raises(UserError) as err:
        ShardReader(ds.path, "train", ds.schema, 8, rank=0, world_size=2, drop_last=True)
    msg = str(err.value)
    assert "batch" in msg and "8" in msg and "5 rows" in msg
    # one rank short is enough: both ranks must refuse, or they would disagree on length
    with pytest.raises(UserError):
        ShardReader(ds.path, "train", ds.schema, 8, rank=1, world_size=2, drop_last=True)
    # without drop_last the short batch is simply yielded
    r1 = ShardReader(ds.path, "train", ds.schema, 8, rank=1, world_size=2, drop_last=False)
    assert [len(b.labels) for b in r1] == [5]
    # and a batch that fits every rank is fine with drop_last
    assert len(ShardReader(ds.path, "train", ds.schema, 5, rank=0, world_size=2)) == 1


def test_more_ranks_than_row_groups_with_drop_last(indexed):
    ds = indexed([[10], [10]])
    with pytest.raises(UserError, match="batch"):
        ShardReader(ds.path, "train", ds.schema, 4, rank=0, world_size=3, drop_last=True)


@pytest.mark.parametrize("batch_size", [0, -3])
def test_non_positive_batch_size(indexed, batch_size):
    ds = indexed([[5]])
    with pytest.raises(UserError, match="batch size"):
        ShardReader(ds.path, "train", ds.schema, batch_size)
