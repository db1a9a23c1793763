"""Checks on every block of rows a reader decodes, before any of it reaches a model.

    block = Block(table, schema)
    check_block(block, Where([Piece("data/x/train/part-00003.parquet", row_group=2, first=0, rows=n)]))

A sparse id outside [0, num_embeddings) would be clamped to row 0 by FBGEMM (or crash a
data-parallel table with a raw index error), and one NaN in a dense column turns the loss
into NaN: both finish "successfully" with a ruined model unless the input is refused here.
A sequence feature's list longer than its max_length (schema.json) is refused as well.

Cost: the checks run on the numpy arrays the reader builds anyway (convert_arrow.Block):
per block one max over the (F, N) one-hot ids and each multi-hot feature's values, read as
unsigned (so a negative id is out of range too), one `isfinite` over the (N, D) dense matrix, min/max of the labels,
one max over each sequence feature's list lengths (against its max_length); nulls were
counted by Arrow while the block was built. No per-row Python: only when a check fails is
the first offending row searched for, to name it. bench/bench_data.py measures the cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_arrow import Block

log = logging.getLogger(__name__)


class BadDataError(UserError):
    """A value in the data set that no model may train on; the message says where it is."""


@dataclass(frozen=True)
class Piece:
    """`rows` consecutive rows of a block, from row `first` of a file's row group (or of
    another source, such as a Ray Data batch, with row_group None)."""

    file: str
    row_group: int | None
    first: int
    rows: int


class Where:
    """Names the origin of a block's row: the block is the pieces concatenated in order,
    then (shuffle windows) reordered by `perm` (block row k = concatenated row perm[k])."""

    def __init__(self, pieces: list[Piece], perm: np.ndarray | None = None):
        self.pieces, self.perm = pieces, perm

    def __call__(self, k: int) -> str:
        k = int(self.perm[k]) if self.perm is not None else k
        for p in self.pieces:
            if k < p.rows:
                group = f", row group {p.row_group}" if p.row_group is not None else ""
                return f"{p.file}{group}, row {p.first + k}"
            k -= p.rows
        return f"row {k} past the end of its block"


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _check_labels(block: Block, where: Where) -> None:
    y = block.labels
    if not len(y) or (y.min() >= 0 and y.max() <= 1):  # a NaN fails both comparisons
        return
    k = _first(~((y >= 0) & (y <= 1)))
    shown = "null" if block.label_nulls and np.isnan(y[k]) else repr(float(y[k]))
    raise BadDataError(f"{where(k)}: label column '{block.schema.label}' has {shown}; expected a value "
                       "in [0, 1] (clicks are 0 or 1)")


def _check_dense(block: Block, where: Where, on_bad: str) -> None:
    if not block.dense.size or np.isfinite(block.dense).all():
        return
    bad = ~np.isfinite(block.dense)
    k, j = (int(i) for i in np.argwhere(bad)[0])
    name = block.schema.dense[j]
    shown = "null" if name in block.dense_nulls and np.isnan(block.dense[k, j]) else repr(float(block.dense[k, j]))
    if on_bad == "error":
        raise BadDataError(
            f"{where(k)}: dense column '{name}' has {shown} ({int(bad.sum())} non-finite or null values in "
            "this block); expected a finite float (fix the data, or set dataset.on_bad_dense=zero to train "
            "on 0 in their place)")
    log.warning("%s: dense column '%s' has %s (%d non-finite or null values in this block); using 0 "
                "(dataset.on_bad_dense=zero)", where(k), name, shown, int(bad.sum()))
    block.dense[bad] = 0


def _id_error(where: Where, k: int, name: str, value: int, size: int, lo: int, hi: int) -> BadDataError:
    return BadDataError(f"{where(k)}: sparse column '{name}' has id {value}, outside [0, {size}) "
                        f"(num_embeddings of '{name}' in schema.json); min {lo}, max {hi} in this block")


def _check_ids(block: Block, where: Where) -> None:
    schema = block.schema
    if block.id_nulls:
        name, k = next(iter(block.id_nulls.items()))
        raise BadDataError(f"{where(k)}: sparse column '{name}' has a null id; expected an id in "
                           f"[0, {schema.sparse[schema.sparse_names.index(name)].num_embeddings}) "
                           "(a multi-hot row may be an empty or null list, not hold nulls)")
    # Seen as unsigned, a negative id is huge: one max per feature checks both bounds.
    if block.n and len(block.onehot):
        sizes = np.array([f.num_embeddings for f in schema.sparse if not f.multi_hot], np.uint64)
        bad = block.onehot.view(np.uint64).max(axis=1) >= sizes
        if bad.any():
            i = _first(bad)
            name = [f.name for f in schema.sparse if not f.multi_hot][i]
            row = block.onehot[i]
            k = _first((row < 0) | (row >= sizes[i].astype(np.int64)))
            raise _id_error(where, k, name, int(row[k]), int(sizes[i]), int(row.min()), int(row.max()))
    for idx, (offsets, _, values) in block.multi.items():
        f = schema.sparse[idx]
        if not len(values) or int(values.view(np.uint64).max()) < f.num_embeddings:
            continue
        v = _first((values < 0) | (values >= f.num_embeddings))
        k = int(np.searchsorted(offsets, v, side="right")) - 1  # the row whose list holds value v
        raise _id_error(where, k, f.name, int(values[v]), f.num_embeddings, int(values.min()), int(values.max()))


def _check_lengths(block: Block, where: Where) -> None:
    """A list longer than its feature's max_length (sequence features) is refused: the
    lengths are the ones Block took from Arrow's list_value_length, one max per feature."""
    for idx, (_, lengths, _) in block.multi.items():
        f = block.schema.sparse[idx]
        if f.max_length <= 0 or not len(lengths) or int(lengths.max()) <= f.max_length:
            continue
        k = _first(lengths > f.max_length)
        raise BadDataError(f"{where(k)}: sequence column '{f.name}' has a list of {int(lengths[k])} ids, longer than "
                           f"its max_length {f.max_length} (schema.json); longest in this block "
                           f"{int(lengths.max())}")


def check_block(block: Block, where: Where, on_bad_dense: str = "error") -> Block:
    """Raise `BadDataError` naming file, row group, row, column, value and the allowed range
    when a label is null or outside [0, 1], a dense value is non-finite or null (with
    `on_bad_dense="zero"`: set to 0 in the block instead, with a warning), a sparse id is
    null or outside [0, num_embeddings), or a sequence's list is longer than its max_length.
    Returns the block."""
    _check_labels(block, where)
    _check_dense(block, where, on_bad_dense)
    _check_ids(block, where)
    _check_lengths(block, where)
    return block
