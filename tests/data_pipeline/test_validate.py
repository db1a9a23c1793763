"""The reader refuses bad rows, naming file, row group, row, column, value and allowed range."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest
from corruption import copy_dataset, flip_bytes, map_column, set_value, split_files, truncate
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.reader import ShardReader
from shardrec.data_pipeline.schema import load_schema
from shardrec.data_pipeline.validate import BadDataError


def read_all(ds, split="train", **kw):
    reader = ShardReader(ds, split, load_schema(ds), 100, prefetch_batches=0, drop_last=False, **kw)
    return list(reader)


@pytest.fixture
def onehot_copy(onehot_ds, tmp_path):
    return copy_dataset(onehot_ds[0], tmp_path / "ds")


@pytest.fixture
def multihot_copy(multihot_ds, tmp_path):
    return copy_dataset(multihot_ds[0], tmp_path / "ds")


def assert_names(err, path, group, row, *words):
    msg = str(err.value)
    assert f"{path}, row group {group}, row {row}:" in msg, msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize("value, shown", [(2000 + 7, "id 2007"), (-3, "id -3"), (None, "null id")])
def test_bad_onehot_id_is_named(onehot_copy, value, shown):
    path = split_files(onehot_copy)[1]
    group, row = set_value(path, "C3", 317, value)  # C3 has 2000 rows
    with pytest.raises(BadDataError) as err:
        read_all(onehot_copy)
    assert_names(err, path, group, row, "'C3'", shown, "[0, 2000)")


def test_a_column_from_another_vocabulary_is_refused(onehot_copy):
    path = split_files(onehot_copy)[0]
    map_column(path, "C1", lambda v: v + 1_000_000)  # ids of a bigger, other vocabulary
    with pytest.raises(BadDataError) as err:
        read_all(onehot_copy)
    assert_names(err, path, 0, 0, "'C1'", "outside [0, 1460)", "max 10")


@pytest.mark.parametrize("value, shown", [([3, 5000], "id 5000"), ([1, None], "null id"), ([-1], "id -1")])
def test_bad_multihot_id_names_its_row(multihot_copy, value, shown):
    path = split_files(multihot_copy)[2]
    group, row = set_value(path, "C21", 123, value)
    with pytest.raises(BadDataError) as err:
        read_all(multihot_copy)
    assert_names(err, path, group, row, "'C21'", shown)


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (float("inf"), "inf"), (None, "null")])
def test_non_finite_dense_value_is_named(onehot_copy, value, shown):
    path = split_files(onehot_copy)[0]
    group, row = set_value(path, "I5", 650, value)
    with pytest.raises(BadDataError) as err:
        read_all(onehot_copy)
    assert_names(err, path, group, row, "'I5'", shown, "on_bad_dense=zero")


def test_on_bad_dense_zero_trains_on_zero_in_its_place(onehot_copy, onehot_ds):
    path = split_files(onehot_copy)[0]
    set_value(path, "I5", 3, float("nan"))
    set_value(path, "I2", 4, float("-inf"))
    fixed = read_all(onehot_copy, on_bad_dense="zero")[0].dense_features.numpy()
    clean = read_all(onehot_ds[0])[0].dense_features.numpy()
    schema = load_schema(onehot_copy)
    i5, i2 = schema.dense.index("I5"), schema.dense.index("I2")
    assert fixed[3, i5] == 0 and fixed[4, i2] == 0
    expected = clean.copy()
    expected[3, i5] = expected[4, i2] = 0
    np.testing.assert_array_equal(fixed, expected)


@pytest.mark.parametrize("value, shown", [(2.0, "2.0"), (float("nan"), "nan"), (None, "null")])
def test_bad_label_is_named(onehot_copy, value, shown):
    path = split_files(onehot_copy, "test")[0]
    group, row = set_value(path, "label", 5, value)
    with pytest.raises(BadDataError) as err:
        read_all(onehot_copy, split="test")
    assert_names(err, path, group, row, "label column 'label'", shown)


def test_corrupt_page_names_file_and_row_group(onehot_copy):
    path = split_files(onehot_copy)[1]
    flip_bytes(path, np.random.default_rng(0))
    with pytest.raises(BadDataError) as err:
        read_all(onehot_copy)
    assert re.search(re.escape(str(path)) + r" row group \d+: cannot be decoded", str(err.value))


def test_truncated_file_names_the_file(onehot_copy):
    path = split_files(onehot_copy)[2]
    truncate(path, 0.6)
    with pytest.raises(UserError, match=re.escape(str(path)) + ".*not a readable Parquet file"):
        read_all(onehot_copy)


def test_wrong_column_type_names_file_and_column(onehot_copy):
    path = split_files(onehot_copy)[0]
    map_column(path, "C2", lambda v: v.astype(str), pa.string())
    with pytest.raises(UserError, match=re.escape(str(path)) + ".*column 'C2' has type string"):
        read_all(onehot_copy)


def test_checks_change_nothing_on_valid_data(multihot_ds):
    ds = multihot_ds[0]
    checked, unchecked = read_all(ds), read_all(ds, validate=False)
    assert len(checked) == len(unchecked) > 5
    for a, b in zip(checked, unchecked):
        np.testing.assert_array_equal(a.dense_features.numpy(), b.dense_features.numpy())
        np.testing.assert_array_equal(a.sparse_features.values().numpy(), b.sparse_features.values().numpy())
        np.testing.assert_array_equal(a.labels.numpy(), b.labels.numpy())


@pytest.mark.parametrize("shuffle_buffer", [250, 1000])
def test_rows_are_named_through_shuffle_windows(onehot_copy, shuffle_buffer):
    """A window holds pieces of several row groups, permuted: the message still names the
    row where the file holds it."""
    path = split_files(onehot_copy)[1]
    group, row = set_value(path, "C4", 777, 5000)
    with pytest.raises(BadDataError) as err:
        read_all(onehot_copy, shuffle_buffer=shuffle_buffer, seed=3)
    assert_names(err, path, group, row, "'C4'", "id 5000")


def test_resumed_reader_names_rows_from_the_row_group_start(onehot_copy):
    path = split_files(onehot_copy)[0]
    group, row = set_value(path, "C4", 250, 5000)  # row group 0 (300 rows), read from row 200 on
    reader = ShardReader(onehot_copy, "train", load_schema(onehot_copy), 100, prefetch_batches=0)
    reader.load_state_dict({"epoch": 0, "batches": 2})
    with pytest.raises(BadDataError) as err:
        list(reader)
    assert (group, row) == (0, 250)
    assert_names(err, path, 0, 250, "'C4'")
