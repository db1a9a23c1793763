"""Stream one rank's part of a Parquet split as TorchRec Batches, in bounded memory.

    reader = ShardReader("data/demo", "train", schema, batch_size=2048, rank=0, world_size=2)
    for batch in reader:        # one epoch; call reader.set_epoch(e) between epochs
        ...

Work is split by row group: rank r reads row groups r, r + W, r + 2W, ... of the split
(files in name order). With `drop_last` (training), every rank yields the same number of
full batches, `min over ranks of rows_r // batch_size`, so collectives inside the step
never wait on a rank that ran out. Memory holds a few row groups plus the prefetch queue.

Position: `state_dict()` after k batches of an epoch is {"epoch", "batches"}; a new
reader given it with `load_state_dict` resumes at batch k + 1 exactly, skipping whole row
groups by their metadata row counts instead of decoding them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from torchrec.datasets.utils import Batch

from configs.errors import UserError
from data_pipeline.convert_arrow import arrow_to_batch
from data_pipeline.prefetch import prefetch
from data_pipeline.schema import DatasetSchema, check_file_schema, split_files


@dataclass(frozen=True)
class RowGroup:
    file: Path
    index: int
    rows: int


def list_row_groups(files: list[Path], schema: DatasetSchema) -> list[RowGroup]:
    """All row groups of the files, checking each file's columns against schema.json."""
    groups = []
    for path in files:
        try:
            meta = pq.ParquetFile(path).metadata
        except (pa.ArrowInvalid, OSError) as e:
            raise UserError(f"{path}: not a readable Parquet file ({e})") from None
        check_file_schema(path, meta.schema.to_arrow_schema(), schema)
        groups += [RowGroup(path, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
    return groups


class ShardReader:
    """Iterable of Batch for one rank; see the module docstring."""

    def __init__(self, dataset_dir: str | Path, split: str, schema: DatasetSchema, batch_size: int,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True, prefetch_batches: int = 4,
                 shuffle_buffer: int = 0, seed: int = 0):
        if batch_size <= 0:
            raise UserError(f"batch size must be positive, got {batch_size}")
        self.schema, self.batch_size, self.drop_last = schema, batch_size, drop_last
        self.prefetch_batches, self.seed = prefetch_batches, seed
        # A shuffle window is a whole number of batches so positions stay batch-aligned.
        self.window = -(-shuffle_buffer // batch_size) * batch_size if shuffle_buffer > 0 else 0
        self.columns = schema.arrow_schema().names
        groups = list_row_groups(split_files(dataset_dir, split), schema)
        self.groups = groups[rank::world_size]
        rows_per_rank = [sum(g.rows for g in groups[r::world_size]) for r in range(world_size)]
        self.rows = rows_per_rank[rank]
        if drop_last:
            self.num_batches = min(rows_per_rank) // batch_size
            if self.num_batches == 0:
                raise UserError(
                    f"split '{split}' of '{dataset_dir}' has {min(rows_per_rank)} rows on its smallest rank, "
                    f"fewer than one batch of {batch_size}: lower the batch size"
                )
        else:
            self.num_batches = -(-self.rows // batch_size)
        # The most batches any rank yields: ranks with fewer must still join each collective.
        self.max_batches_any_rank = (self.num_batches if drop_last
                                     else max(-(-r // batch_size) for r in rows_per_rank))
        self.epoch, self._start_batch = 0, 0

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._start_batch = epoch, 0

    def state_dict(self, batches_done: int) -> dict:
        """Position after `batches_done` batches of the current epoch."""
        return {"epoch": self.epoch, "batches": batches_done}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self._start_batch = int(state["epoch"]), int(state["batches"])

    def _epoch_groups(self) -> list[RowGroup]:
        if not self.window:
            return self.groups
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.groups))
        return [self.groups[i] for i in order]

    def _tables(self, groups: list[RowGroup], skip_rows: int) -> Iterator[pa.Table]:
        """Row groups in order, starting `skip_rows` rows in (skipped by metadata)."""
        handles: dict[Path, pq.ParquetFile] = {}
        for g in groups:
            if skip_rows >= g.rows:
                skip_rows -= g.rows
                continue
            pf = handles.get(g.file) or handles.setdefault(g.file, pq.ParquetFile(g.file))
            table = pf.read_row_group(g.index, columns=self.columns)
            yield table.slice(skip_rows) if skip_rows else table
            skip_rows = 0

    def _row_chunks(self) -> Iterator[pa.Table]:
        """Tables of exactly batch_size rows (the last may be short), shuffled per window."""
        start_rows = self._start_batch * self.batch_size
        window = self.window or self.batch_size
        first_window = start_rows // window
        skip_batches = (start_rows - first_window * window) // self.batch_size
        pending: list[pa.Table] = []
        pending_rows = 0
        window_idx = first_window

        def emit(table: pa.Table):
            nonlocal skip_batches
            if self.window:
                perm = np.random.default_rng([self.seed, self.epoch, window_idx]).permutation(table.num_rows)
                table = table.take(perm)
            for off in range(0, table.num_rows, self.batch_size):
                if skip_batches:
                    skip_batches -= 1
                    continue
                yield table.slice(off, self.batch_size)

        for table in self._tables(self._epoch_groups(), first_window * window):
            pending.append(table)
            pending_rows += table.num_rows
            while pending_rows >= window:
                merged = pa.concat_tables(pending)
                yield from emit(merged.slice(0, window))
                rest = merged.slice(window)
                pending, pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
                window_idx += 1
        if pending_rows:
            yield from emit(pa.concat_tables(pending))

    def _batches(self) -> Iterator[Batch]:
        remaining = self.num_batches - self._start_batch
        for table in self._row_chunks():
            if remaining <= 0:
                return
            if self.drop_last and table.num_rows < self.batch_size:
                return
            yield arrow_to_batch(table, self.schema)
            remaining -= 1

    def __iter__(self) -> Iterator[Batch]:
        return prefetch(self._batches(), self.prefetch_batches)
