"""Arrow table -> TorchRec Batch, without Python loops over rows.

This is the one conversion used by every input path (the Parquet shard reader and the Ray
Data path), so a batch looks the same however it was read.

    block = Block(table, schema)          # numpy columns of a whole row group / window, once
    batch = block.batch(0, 2048)          # cheap per batch: views and one copy of the ids
    batch = batch_of([(b1, 1900, 2000), (b2, 0, 1948)], schema)   # a batch straddling two blocks
    batch = arrow_to_batch(table, schema) # = Block(table, schema).batch(0, table.num_rows)

Converting once per row group, not per batch, keeps the per-batch cost to a few numpy
slices: the Arrow calls per column (40 for Criteo) are paid once per 100k rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from shardrec.data_pipeline.schema import DatasetSchema
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


def _numpy(col: pa.Array | pa.ChunkedArray, dtype) -> np.ndarray:
    """A writable numpy copy (Arrow buffers are read-only and torch wants writable memory)."""
    return np.array(col.to_numpy(zero_copy_only=False), dtype=dtype)


class Block:
    """The numpy columns of N rows:

        labels  (N,) float32
        dense   (N, D) float32, row-major, so a batch of rows is a contiguous view
        onehot  (F1, N) int64, the one-hot features in schema order, feature-major, so a batch
                of rows of all of them is one 2-D slice
        multi   {feature index: (offsets (N + 1,) int64, lengths (N,) int32, values (nnz,) int64)};
                a null list is an empty bag

    and what data_pipeline.validate needs to name nulls, which numpy cannot hold: the
    `id_nulls` {feature: first row with a null id} (stored as 0), `dense_nulls` (columns with
    nulls, stored as NaN) and `label_nulls` (stored as NaN). Arrow keeps null counts, so
    this costs nothing on data without nulls.
    """

    def __init__(self, table: pa.Table | pa.RecordBatch, schema: DatasetSchema):
        self.schema, self.n = schema, table.num_rows
        self.source = ""  # where the rows came from (set by the reader, for error messages)
        label = table.column(schema.label)
        self.label_nulls = label.null_count > 0
        self.labels = _numpy(label, np.float32)
        self.dense = np.empty((self.n, len(schema.dense)), np.float32)
        self.dense_nulls: set[str] = set()
        for j, name in enumerate(schema.dense):
            col = table.column(name)
            if col.null_count:
                self.dense_nulls.add(name)
            self.dense[:, j] = col.to_numpy(zero_copy_only=False)  # a null becomes NaN
        self.segments = _segments(schema)
        self.onehot = np.empty((sum(f.multi_hot is False for f in schema.sparse), self.n), np.int64)
        self.multi: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.id_nulls: dict[str, int] = {}
        row = 0
        for k, f in enumerate(schema.sparse):
            col = table.column(f.name)
            if not f.multi_hot:
                if col.null_count:
                    self.id_nulls[f.name] = int(np.flatnonzero(_numpy(col.is_null(), bool))[0])
                    col = col.fill_null(0)
                self.onehot[row] = col.to_numpy(zero_copy_only=False)
                row += 1
                continue
            # list_flatten honours slicing and skips nulls; a null list has length null -> 0.
            lengths = _numpy(pc.list_value_length(col).fill_null(0), np.int32)
            offsets = np.zeros(self.n + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            flat = pc.list_flatten(col)
            if flat.null_count:
                first = int(np.flatnonzero(_numpy(flat.is_null(), bool))[0])
                self.id_nulls[f.name] = int(np.searchsorted(offsets, first, side="right")) - 1
                flat = flat.fill_null(0)
            self.multi[k] = (offsets, lengths, _numpy(flat, np.int64))

    def batch(self, start: int, stop: int) -> Batch:
        return batch_of([(self, start, stop)], self.schema)


def _segments(schema: DatasetSchema) -> list[tuple[int, int] | int]:
    """The sparse features in schema order as runs of one-hot rows (first, last + 1) and
    single multi-hot feature indices, so consecutive one-hot features are copied at once."""
    out: list[tuple[int, int] | int] = []
    row = 0
    for k, f in enumerate(schema.sparse):
        if f.multi_hot:
            out.append(k)
        elif out and isinstance(out[-1], tuple):
            out[-1] = (out[-1][0], row + 1)
            row += 1
        else:
            out.append((row, row + 1))
            row += 1
    return out


def batch_of(pieces: list[tuple[Block, int, int]], schema: DatasetSchema) -> Batch:
    """One Batch from row ranges [start, stop) of blocks, in order.

    Returns Batch(dense_features (B, D) float32, sparse_features KJT with keys
    schema.sparse_names and lengths (F*B,) int32 laid out key-major, labels (B,) float32).
    With one piece, dense and labels are views of the block (no copy); the KJT's values and
    lengths are filled into arrays allocated once per batch.
    """
    if len(pieces) == 1:
        block, a, b = pieces[0]
        dense, labels, onehot = block.dense[a:b], block.labels[a:b], block.onehot[:, a:b]
    else:
        dense = np.concatenate([blk.dense[a:b] for blk, a, b in pieces])
        labels = np.concatenate([blk.labels[a:b] for blk, a, b in pieces])
        onehot = np.concatenate([blk.onehot[:, a:b] for blk, a, b in pieces], axis=1)
    n, first = len(labels), pieces[0][0]
    if not first.multi:  # all one-hot (Criteo): the (F, B) slice is the KJT's values, in one copy
        values = np.ascontiguousarray(onehot).reshape(-1)
        lengths = np.ones(onehot.shape[0] * n, np.int32)
    else:
        nnz = {k: sum(int(blk.multi[k][0][b] - blk.multi[k][0][a]) for blk, a, b in pieces) for k in first.multi}
        values = np.empty(onehot.shape[0] * n + sum(nnz.values()), np.int64)
        lengths = np.empty(len(schema.sparse) * n, np.int32)
        v = ln = 0
        for seg in first.segments:
            if isinstance(seg, tuple):  # a run of one-hot features: one 2-D copy
                rows = seg[1] - seg[0]
                values[v:v + rows * n].reshape(rows, n)[:] = onehot[seg[0]:seg[1]]
                lengths[ln:ln + rows * n] = 1
                v, ln = v + rows * n, ln + rows * n
                continue
            for blk, a, b in pieces:
                offsets, lens, flat = blk.multi[seg]
                values[v:v + offsets[b] - offsets[a]] = flat[offsets[a]:offsets[b]]
                lengths[ln:ln + b - a] = lens[a:b]
                v, ln = v + int(offsets[b] - offsets[a]), ln + b - a
    kjt = KeyedJaggedTensor(keys=schema.sparse_names, values=torch.from_numpy(values),
                            lengths=torch.from_numpy(lengths))
    return Batch(dense_features=torch.from_numpy(dense), sparse_features=kjt, labels=torch.from_numpy(labels))


def arrow_to_batch(table: pa.Table | pa.RecordBatch, schema: DatasetSchema) -> Batch:
    """Convert B rows to a Batch (see batch_of); the batch owns its memory."""
    return Block(table, schema).batch(0, table.num_rows)


def placeholder_batch(schema: DatasetSchema) -> Batch:
    """One row of zeros (empty multi-hot bags): what a rank with no rows of a split feeds a
    sharded forward, which every rank must join; its outputs are ignored."""
    columns = [pa.array([[] if pa.types.is_list(f.type) else 0], f.type) for f in schema.arrow_schema()]
    return arrow_to_batch(pa.Table.from_arrays(columns, schema=schema.arrow_schema()), schema)
