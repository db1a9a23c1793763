"""arrow_to_batch on small hand-built tables, with expected values written out by hand."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from shardrec.data_pipeline.convert_arrow import arrow_to_batch
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature

SCHEMA = DatasetSchema(
    label="y",
    dense=["d1", "d2"],
    sparse=[SparseFeature("s", 10), SparseFeature("m", 100, multi_hot=True)],
)


def _table() -> pa.Table:
    # Row 1 of `m` is null and its slot in the offsets still spans two values (99, 98)
    # that must not leak into the batch; row 2 is an empty (non-null) list.
    m = pa.ListArray.from_arrays(
        pa.array([0, 2, 4, 4, 5], pa.int32()),
        pa.array([7, 8, 99, 98, 9], pa.int64()),
        mask=pa.array([False, True, False, False]),
    )
    assert m.to_pylist() == [[7, 8], None, [], [9]]
    return pa.table(
        {
            "y": pa.array([1, 0, 1, 0], pa.float32()),
            "d1": pa.array([0.5, 1.5, 2.5, 3.5], pa.float32()),
            "d2": pa.array([10, 20, 30, 40], pa.float32()),
            "s": pa.array([3, 1, 4, 1], pa.int64()),
            "m": m,
        },
        schema=SCHEMA.arrow_schema(),
    )


def _check(batch, labels, dense, s_values, m_values, m_lengths):
    assert batch.labels.dtype == torch.float32
    assert batch.dense_features.dtype == torch.float32
    assert batch.labels.tolist() == labels
    assert batch.dense_features.tolist() == dense
    kjt = batch.sparse_features
    assert kjt.keys() == ["s", "m"]
    assert kjt.values().dtype == torch.int64
    n = len(labels)
    # key-major layout: all rows of `s`, then all rows of `m`
    assert kjt.lengths().tolist() == [1] * n + m_lengths
    assert kjt.values().tolist() == s_values + m_values
    feats = kjt.to_dict()
    assert feats["s"].values().tolist() == s_values
    assert feats["s"].lengths().tolist() == [1] * n
    assert feats["m"].values().tolist() == m_values
    assert feats["m"].lengths().tolist() == m_lengths
    assert feats["m"].offsets().tolist() == [0, *np.cumsum(m_lengths).tolist()]


def test_whole_table_null_list_is_empty_bag():
    batch = arrow_to_batch(_table(), SCHEMA)
    _check(batch, labels=[1, 0, 1, 0],
           dense=[[0.5, 10], [1.5, 20], [2.5, 30], [3.5, 40]],
           s_values=[3, 1, 4, 1], m_values=[7, 8, 9], m_lengths=[2, 0, 0, 1])


def test_sliced_table_honours_offset():
    sliced = _table().slice(1, 3)
    batch = arrow_to_batch(sliced, SCHEMA)
    _check(batch, labels=[0, 1, 0],
           dense=[[1.5, 20], [2.5, 30], [3.5, 40]],
           s_values=[1, 4, 1], m_values=[9], m_lengths=[0, 0, 1])


def test_slice_ending_early():
    batch = arrow_to_batch(_table().slice(0, 2), SCHEMA)
    _check(batch, labels=[1, 0], dense=[[0.5, 10], [1.5, 20]],
           s_values=[3, 1], m_values=[7, 8], m_lengths=[2, 0])


def test_chunked_columns_sliced_across_chunks():
    t = _table()
    chunked = pa.concat_tables([t.slice(0, 2), t.slice(2)])
    assert chunked.column("m").num_chunks == 2
    batch = arrow_to_batch(chunked.slice(1, 2), SCHEMA)
    _check(batch, labels=[0, 1], dense=[[1.5, 20], [2.5, 30]],
           s_values=[1, 4], m_values=[], m_lengths=[0, 0])
    batch = arrow_to_batch(chunked.slice(0, 4), SCHEMA)
    _check(batch, labels=[1, 0, 1, 0],
           dense=[[0.5, 10], [1.5, 20], [2.5, 30], [3.5, 40]],
           s_values=[3, 1, 4, 1], m_values=[7, 8, 9], m_lengths=[2, 0, 0, 1])


def test_record_batch_input():
    rb = _table().to_batches()[0].slice(2)
    batch = arrow_to_batch(rb, SCHEMA)
    _check(batch, labels=[1, 0], dense=[[2.5, 30], [3.5, 40]],
           s_values=[4, 1], m_values=[9], m_lengths=[0, 1])


def test_tensors_do_not_alias_arrow_memory():
    """The batch owns writable memory: writing to it must not fail or change the table."""
    t = _table()
    batch = arrow_to_batch(t, SCHEMA)
    batch.dense_features += 1
    batch.labels += 1
    assert t.column("d1").to_pylist() == [0.5, 1.5, 2.5, 3.5]
    assert t.column("y").to_pylist() == [1, 0, 1, 0]


@pytest.mark.parametrize("order", [[1, 0, 3, 2], [3, 2, 1, 0]])
def test_taken_rows(order):
    """Shuffled (take) tables, as the reader's shuffle buffer produces them."""
    batch = arrow_to_batch(_table().take(pa.array(order)), SCHEMA)
    s = [3, 1, 4, 1]
    bags = [[7, 8], [], [], [9]]
    _check(batch, labels=[[1, 0, 1, 0][i] for i in order],
           dense=[[[0.5, 10], [1.5, 20], [2.5, 30], [3.5, 40]][i] for i in order],
           s_values=[s[i] for i in order], m_values=[v for i in order for v in bags[i]],
           m_lengths=[len(bags[i]) for i in order])
