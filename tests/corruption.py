"""Helpers that damage a copy of a data set in known ways (for the integrity and fuzz tests).

Every edit keeps the file's row-group layout, so a test knows which row group and row
offset an error message must name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def copy_dataset(src: str | Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def split_files(ds: Path, split: str = "train") -> list[Path]:
    return sorted((Path(ds) / split).glob("*.parquet"))


def row_group_sizes(path: Path) -> list[int]:
    meta = pq.ParquetFile(path).metadata
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def rewrite(path: Path, table: pa.Table, sizes: list[int] | None = None) -> None:
    """Write `table` over `path` with the given row-group sizes (default: the file's own)."""
    sizes = sizes or row_group_sizes(path)
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, table.schema, write_page_checksum=True) as writer:
        start = 0
        for n in sizes:
            writer.write_table(table.slice(start, n), row_group_size=n)
            start += n
    tmp.replace(path)


def locate(path: Path, row: int) -> tuple[int, int]:
    """(row group, row offset in it) of the file's row `row`."""
    for group, n in enumerate(row_group_sizes(path)):
        if row < n:
            return group, row
        row -= n
    raise IndexError(row)


def set_value(path: Path, column: str, row: int, value) -> tuple[int, int]:
    """Set one cell (None = null; a list for a multi-hot column); returns locate(path, row)."""
    table = pq.read_table(path)
    col = table.column(column)
    values = col.to_pylist()
    values[row] = value
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, col.type))
    rewrite(path, table)
    return locate(path, row)


def map_column(path: Path, column: str, fn, type_: pa.DataType | None = None) -> None:
    """Replace a whole column by fn(numpy values) (optionally of another Arrow type)."""
    table = pq.read_table(path)
    col = table.column(column)
    new = pa.array(fn(col.to_numpy()), type_ or col.type)
    rewrite(path, table.set_column(table.schema.get_field_index(column), column, new))


def cast_column(path: Path, column: str, type_: pa.DataType) -> None:
    table = pq.read_table(path)
    col = pc.cast(table.column(column), type_)
    rewrite(path, table.set_column(table.schema.get_field_index(column), pa.field(column, type_), col))


def drop_column(path: Path, column: str) -> None:
    rewrite(path, pq.read_table(path).drop_columns([column]))


def truncate(path: Path, keep_fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep_fraction))])


def flip_bytes(path: Path, rng: np.random.Generator, count: int = 8) -> None:
    """Overwrite `count` bytes inside the data pages (the footer stays intact)."""
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    body_end = len(data) - footer
    for pos in rng.integers(4, body_end, size=count):
        data[pos] ^= 0xFF
    path.write_bytes(bytes(data))
