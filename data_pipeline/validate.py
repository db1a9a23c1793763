"""Checks on every block of rows a reader decodes, before any of it reaches a model.

    table = check_table(table, schema, Origin("data/x/train/part-00003.parquet", row_group=2))

A sparse id outside [0, num_embeddings) would be clamped to row 0 by FBGEMM (or crash a
data-parallel table with a raw index error), and one NaN in a dense column turns the loss
into NaN: both finish "successfully" with a ruined model unless the input is refused here.

Cost: one vectorised pass per column with Arrow's kernels (`min_max` for ids and labels,
`sum` for dense floats, where a NaN or inf makes the sum non-finite) and the null counts
Arrow keeps anyway; no per-row Python. Only when a check fails is the first offending row
searched for, to name it. bench/bench_data.py measures the cost against unchecked reading.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from configs.errors import UserError
from data_pipeline.schema import DatasetSchema

log = logging.getLogger(__name__)


class BadDataError(UserError):
    """A value in the data set that no model may train on; the message says where it is."""


@dataclass(frozen=True)
class Origin:
    """Where a table of rows came from: a file and row group, or another source."""

    file: str
    row_group: int | None = None

    def at(self, row: int) -> str:
        group = f", row group {self.row_group}" if self.row_group is not None else ""
        return f"{self.file}{group}, row {row}"


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return col.to_numpy(zero_copy_only=False)


def _check_label(col, name: str, origin: Origin) -> None:
    if col.null_count:
        raise BadDataError(f"{origin.at(_first(_numpy(col.is_null())))}: label column '{name}' is null; "
                           "expected 0 or 1")
    lo, hi = (v.as_py() for v in pc.min_max(col).values())
    total = pc.sum(col).as_py()
    if lo is None or (lo >= 0 and hi <= 1 and math.isfinite(total)):
        return
    values = _numpy(col)
    row = _first(~((values >= 0) & (values <= 1)))  # also catches NaN
    raise BadDataError(f"{origin.at(row)}: label column '{name}' has {values[row]!r}; expected a "
                       "value in [0, 1] (clicks are 0 or 1)")


def _bad_dense_rows(col) -> np.ndarray:
    values = _numpy(col)  # nulls come out as NaN
    return ~np.isfinite(values)


def _check_dense(table: pa.Table, schema: DatasetSchema, origin: Origin, on_bad: str) -> pa.Table:
    for name in schema.dense:
        col = table.column(name)
        total = pc.sum(col).as_py()
        if not col.null_count and (total is None or math.isfinite(total)):
            continue
        bad = _bad_dense_rows(col)
        if not bad.any():  # a finite column whose float64 sum overflowed
            continue
        row = _first(bad)
        value = "null" if not col[row].is_valid else repr(col[row].as_py())
        if on_bad == "error":
            raise BadDataError(
                f"{origin.at(row)}: dense column '{name}' has {value} ({int(bad.sum())} non-finite or null "
                "values in this block); expected a finite float (fix the data, or set "
                "dataset.on_bad_dense=zero to train on 0 in their place)")
        log.warning("%s: dense column '%s' has %d non-finite or null values (first: %s); "
                    "using 0 (dataset.on_bad_dense=zero)", origin.at(row), name, int(bad.sum()), value)
        fixed = np.where(bad, np.float32(0), _numpy(col)).astype(np.float32)
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(fixed))
    return table


def _check_ids(col, name: str, size: int, origin: Origin, multi_hot: bool) -> None:
    values = pc.list_flatten(col) if multi_hot else col
    if values.null_count:
        row = _first(_numpy(values.is_null()))
        if multi_hot:
            row = _numpy(pc.list_parent_indices(col))[row]
        raise BadDataError(f"{origin.at(row)}: sparse column '{name}' has a null id; expected an id in "
                           f"[0, {size}) (a multi-hot row may be an empty or null list, not hold nulls)")
    lo, hi = (v.as_py() for v in pc.min_max(values).values())
    if lo is None or (lo >= 0 and hi < size):
        return
    flat = _numpy(values)
    k = _first((flat < 0) | (flat >= size))
    row = _numpy(pc.list_parent_indices(col))[k] if multi_hot else k
    raise BadDataError(f"{origin.at(row)}: sparse column '{name}' has id {int(flat[k])}, outside [0, {size}) "
                       f"(num_embeddings of '{name}' in schema.json); min {lo}, max {hi} in this block")


def check_table(table: pa.Table, schema: DatasetSchema, origin: Origin, on_bad_dense: str = "error") -> pa.Table:
    """Raise `BadDataError` naming origin, row, column, value and the allowed range when a
    label is null or outside [0, 1], a dense value is non-finite or null (with
    `on_bad_dense="zero"`: replaced by 0 instead, with a warning), or a sparse id is null
    or outside [0, num_embeddings). Returns the table (with zeroed dense values, if any).
    Row numbers count from the table's first row (the row group's, for a whole row group)."""
    _check_label(table.column(schema.label), schema.label, origin)
    table = _check_dense(table, schema, origin, on_bad_dense)
    for f in schema.sparse:
        _check_ids(table.column(f.name), f.name, f.num_embeddings, origin, f.multi_hot)
    return table
