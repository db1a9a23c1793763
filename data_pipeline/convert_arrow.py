"""Arrow table -> TorchRec Batch, without Python loops over rows.

This is the one conversion used by every input path (the Parquet shard reader and the Ray
Data path), so a batch looks the same however it was read.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data_pipeline.schema import DatasetSchema


def _column(table: pa.Table | pa.RecordBatch, name: str) -> pa.Array:
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def arrow_to_batch(table: pa.Table | pa.RecordBatch, schema: DatasetSchema) -> Batch:
    """Convert B rows to a Batch.

    Returns Batch(dense_features (B, D) float32, sparse_features KJT with keys
    schema.sparse_names and lengths (F*B,) int32 laid out key-major, labels (B,) float32).
    Multi-hot list columns give their values and lengths straight from the Arrow offsets; a
    null list counts as empty.
    """
    n = table.num_rows
    dense = np.empty((n, len(schema.dense)), dtype=np.float32)
    for j, name in enumerate(schema.dense):
        dense[:, j] = _column(table, name).to_numpy(zero_copy_only=False)
    # np.array copies: Arrow buffers are read-only and torch wants writable memory.
    labels = np.array(_column(table, schema.label).to_numpy(zero_copy_only=False), dtype=np.float32)

    values, lengths = [], []
    for f in schema.sparse:
        arr = _column(table, f.name)
        if f.multi_hot:
            # list_flatten honours slicing and skips nulls; list_value_length gives null
            # for a null list, which is an empty bag.
            values.append(pc.list_flatten(arr).to_numpy(zero_copy_only=False))
            lengths.append(pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False))
        else:
            values.append(arr.to_numpy(zero_copy_only=False))
            lengths.append(np.ones(n, dtype=np.int32))
    kjt = KeyedJaggedTensor(
        keys=schema.sparse_names,
        values=torch.from_numpy(np.concatenate(values).astype(np.int64, copy=False)),
        lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32, copy=False)),
    )
    return Batch(dense_features=torch.from_numpy(dense), sparse_features=kjt, labels=torch.from_numpy(labels))
