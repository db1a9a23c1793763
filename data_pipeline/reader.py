"""Stream one rank's part of a Parquet split as TorchRec Batches, in bounded memory.

    reader = ShardReader("data/demo", "train", schema, batch_size=2048, rank=0, world_size=2)
    for batch in reader:        # one epoch; call reader.set_epoch(e) between epochs
        ...

Work is split by row group: each rank gets a disjoint set, balanced by rows (greedy
largest-first, deterministic), and reads it in split order (files in name order). With
`drop_last` (training), every rank yields the same number of full batches,
`min over ranks of rows_r // batch_size`, so collectives inside the step never wait on a
rank that ran out. Memory holds a few row groups plus the prefetch queue.

Speed: a row group (or a shuffle window) is turned into numpy columns once
(convert_arrow.Block); batches are slices of it, so the per-batch work is a few views and
one copy of the ids, whatever the number of columns. With `pin_memory=True` (CUDA only)
batches are pinned in the prefetch thread, so the copy to the GPU can be asynchronous.

Trust: every row group is checked as it is decoded (data_pipeline/validate.py): a sparse id
outside its table, a null id, a non-finite dense value or a bad label stops the run with a
`BadDataError` naming the file, row group, row, column and value; so does a row group that
cannot be decoded (a corrupt page). `describe_batch(k)` names the row groups batch k of the
epoch came from, so a non-finite loss can be traced to its input.

Position: `state_dict()` after k batches of an epoch is {"epoch", "batches"}; a new
reader given it with `load_state_dict` resumes at batch k + 1 exactly, skipping whole row
groups by their metadata row counts instead of decoding them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_arrow import Block, batch_of
from shardrec.data_pipeline.position import Span, relayout, standard_layout
from shardrec.data_pipeline.prefetch import prefetch
from shardrec.data_pipeline.schema import DatasetSchema, check_file_schema, split_files
from shardrec.data_pipeline.validate import BadDataError, Piece, Where, check_block
from torchrec.datasets.utils import Batch

# Batches whose source describe_batch() remembers: more than the prefetch queue plus the
# batches a train pipeline keeps in flight.
_REMEMBERED_BATCHES = 64


@dataclass(frozen=True)
class RowGroup:
    file: Path
    index: int
    rows: int

    def __str__(self) -> str:
        return f"{self.file} row group {self.index}"


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


def assign_row_groups(groups: list[RowGroup], world_size: int) -> list[list[int]]:
    """Split row groups over ranks, balanced by rows: largest first, each to the rank with the
    fewest rows so far (ties: the lower rank; equal sizes keep split order). Deterministic;
    the rows of any two ranks differ by at most the largest row group. Each rank's group
    indices come back in split order, so reads stay sequential within a file."""
    totals = [0] * world_size
    owned: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(groups)), key=lambda i: (-groups[i].rows, i)):
        r = min(range(world_size), key=lambda r: (totals[r], r))
        totals[r] += groups[i].rows
        owned[r].append(i)
    return [sorted(idx) for idx in owned]


def _group_names(pieces: list[Piece]) -> list[str]:
    return list(dict.fromkeys(f"{p.file} row group {p.row_group}" for p in pieces))


class EpochPosition:
    """A reader's position as checkpoints store it (see data_pipeline/position.py).

    Subclasses set `num_batches` (this epoch), `batch_size` and `world_size`, and start at
    batch `start_batch` of `epoch`.
    """

    num_batches: int = 0
    epoch: int = 0
    start_batch: int = 0
    batch_size: int = 0
    world_size: int = 1

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start_batch = epoch, 0

    def state_dict(self, batches_done: int) -> dict:
        """Position after `batches_done` batches of the current epoch."""
        return {"epoch": self.epoch, "batches": batches_done, "batch_size": self.batch_size,
                "world_size": self.world_size, "layout": None}

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` left off; a position saved at another world size or batch
        size is refused mid-epoch (ShardReader overrides this with a re-layout)."""
        self.epoch, batches = int(state["epoch"]), int(state["batches"])
        same = (state.get("world_size", self.world_size), state.get("batch_size", self.batch_size)) == \
            (self.world_size, self.batch_size)
        if not same and batches:
            raise UserError(f"this reader cannot continue an epoch begun at world size {state['world_size']} "
                            f"with {state['batch_size']} rows per rank; resume at that size, or from a "
                            "checkpoint at an epoch boundary")
        self.start_batch = batches if same else 0


class ShardReader(EpochPosition):
    """Iterable of Batch for one rank; see the module docstring."""

    def __init__(self, dataset_dir: str | Path, split: str, schema: DatasetSchema, batch_size: int,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True, prefetch_batches: int = 4,
                 shuffle_buffer: int = 0, seed: int = 0, pin_memory: bool = False,
                 on_bad_dense: str = "error", validate: bool = True):
        if batch_size <= 0:  # the config loader checks the keys; this guards direct use
            raise UserError(f"batch size must be positive, got {batch_size}")
        if pin_memory and not torch.cuda.is_available():
            raise UserError("pin_memory needs CUDA (it speeds up copies to a GPU); this machine has none")
        self.schema, self.batch_size, self.drop_last = schema, batch_size, drop_last
        self.prefetch_batches, self.seed, self.pin_memory = prefetch_batches, seed, pin_memory
        self.rank, self.world_size = rank, world_size
        # validate=False (no value checks, no page checksums) exists for bench/bench_data.py,
        # which measures what the checks cost.
        self.on_bad_dense, self.validate = on_bad_dense, validate
        self._sources: OrderedDict[int, str] = OrderedDict()
        # A shuffle window is a whole number of batches so positions stay batch-aligned.
        self.window = -(-shuffle_buffer // batch_size) * batch_size if shuffle_buffer > 0 else 0
        self.columns = schema.arrow_schema().names
        self.all_groups = list_row_groups(split_files(dataset_dir, split), schema)
        standard = self._standard(world_size)
        self.groups = standard[rank]
        rows_per_rank = [sum(rows for _, _, rows in spans) for spans in standard]
        self.rows = rows_per_rank[rank]
        self._layout: list[list[Span]] | None = None  # this epoch's, when not the standard one
        if drop_last and min(rows_per_rank) // batch_size == 0:
            raise UserError(
                f"split '{split}' of '{dataset_dir}' has {min(rows_per_rank)} rows on its smallest rank, "
                f"fewer than one batch of {batch_size}: lower the batch size")
        self._set_batches(rows_per_rank)

    def _standard(self, world_size: int) -> list[list[Span]]:
        owned = assign_row_groups(self.all_groups, world_size)
        return standard_layout(owned, [g.rows for g in self.all_groups])

    def _set_batches(self, rows_per_rank: list[int]) -> None:
        bs = self.batch_size
        if self.drop_last:
            self.num_batches = min(rows_per_rank) // bs
        else:
            self.num_batches = -(-rows_per_rank[self.rank] // bs)
        # The most batches any rank yields: ranks with fewer must still join each collective.
        self.max_batches_any_rank = (self.num_batches if self.drop_last
                                     else max(-(-r // bs) for r in rows_per_rank))

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self._layout is not None:  # a re-laid-out epoch is over: back to the standard layout
            self._layout = None
            self._set_batches([sum(r for _, _, r in spans) for spans in self._standard(self.world_size)])

    def state_dict(self, batches_done: int) -> dict:
        return {**super().state_dict(batches_done), "layout": self._layout}

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` left off, at this reader's world size and batch size: the
        same ranks continue their own rows; other ones share out the rows not yet read
        (data_pipeline/position.py)."""
        self.set_epoch(int(state["epoch"]))
        layout, self.start_batch = relayout(
            {"world_size": self.world_size, "batch_size": self.batch_size, **state}, self._standard,
            self.world_size, self.batch_size, shuffled=bool(self.window))
        if layout is not None:
            if len(layout) != self.world_size or any(g >= len(self.all_groups) for spans in layout for g, _, _ in spans):
                raise UserError("the saved reader position does not fit this split's row groups (were files "
                                "added or removed since the checkpoint?)")
            self._layout = [[tuple(s) for s in spans] for spans in layout]
            self._set_batches([sum(r for _, _, r in spans) for spans in self._layout])

    def _epoch_spans(self) -> list[tuple[RowGroup, int, int]]:
        """This rank's (row group, first row, rows) of the epoch, in reading order."""
        if self._layout is not None:
            return [(self.all_groups[g], first, rows) for g, first, rows in self._layout[self.rank]]
        groups = self.groups
        if self.window:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(groups))
            groups = [groups[i] for i in order]
        return [(self.all_groups[g], 0, rows) for g, _, rows in groups]

    def _read(self, handles: dict[Path, pq.ParquetFile], g: RowGroup) -> pa.Table:
        """Decode and check one row group; any failure names the file and row group."""
        try:
            # With checksums verified, a page whose bytes changed after it was written (shardrec's
            # writers store a CRC per page) is refused instead of decoding into plausible ids.
            pf = handles.get(g.file) or handles.setdefault(
                g.file, pq.ParquetFile(g.file, page_checksum_verification=self.validate))
            table = pf.read_row_group(g.index, columns=self.columns)
        except (OSError, pa.ArrowException) as e:
            raise BadDataError(f"{g}: cannot be decoded, the file is corrupt or truncated ({e})") from None
        if table.num_rows != g.rows:
            raise BadDataError(f"{g}: decoded {table.num_rows} rows, its metadata says {g.rows}")
        return table

    def _tables(self, spans: list[tuple[RowGroup, int, int]], skip_rows: int) -> Iterator[tuple[pa.Table, Piece]]:
        """(table, where its rows come from) per span in order, starting `skip_rows` rows in
        (skipped by metadata, not decoded)."""
        handles: dict[Path, pq.ParquetFile] = {}
        for g, first, rows in spans:
            if skip_rows >= rows:
                skip_rows -= rows
                continue
            table = self._read(handles, g)
            first, rows = first + skip_rows, rows - skip_rows
            if (first, rows) != (0, g.rows):
                table = table.slice(first, rows)
            yield table, Piece(str(g.file), g.index, first, rows)
            skip_rows = 0

    def _windows(self, skip_rows: int) -> Iterator[list[tuple[pa.Table, Piece]]]:
        """The epoch's rows cut into windows of exactly `window` rows (the last may be short),
        each as the row-group pieces it is made of."""
        pending: list[tuple[pa.Table, Piece]] = []
        pending_rows = 0
        for table, piece in self._tables(self._epoch_spans(), skip_rows):
            pending.append((table, piece))
            pending_rows += table.num_rows
            while pending_rows >= self.window:
                window, rest, need = [], [], self.window
                for t, p in pending:
                    if need >= t.num_rows:
                        window.append((t, p))
                    elif need > 0:
                        window.append((t.slice(0, need), replace(p, rows=need)))
                        rest.append((t.slice(need), replace(p, first=p.first + need, rows=p.rows - need)))
                    else:
                        rest.append((t, p))
                    need -= min(need, t.num_rows)
                yield window
                pending, pending_rows = rest, sum(t.num_rows for t, _ in rest)
        if pending_rows:
            yield pending

    def _checked(self, block: Block, where: Where) -> Block:
        return check_block(block, where, self.on_bad_dense) if self.validate else block

    def _pieces(self) -> Iterator[list[tuple[Block, int, int]]]:
        """Per batch, the block rows it is made of: (block, start, stop) pieces, several only
        where a batch straddles row groups (no shuffle). Every block is checked once."""
        bs, start_rows = self.batch_size, self.start_batch * self.batch_size
        if self.window:
            # Rows are permuted within each window; windows are whole numbers of batches.
            first_window = start_rows // self.window
            skip = start_rows - first_window * self.window
            for w, window in enumerate(self._windows(first_window * self.window), start=first_window):
                table = pa.concat_tables([t for t, _ in window])
                perm = np.random.default_rng([self.seed, self.epoch, w]).permutation(table.num_rows)
                pieces = [p for _, p in window]
                block = self._checked(Block(table.take(perm), self.schema), Where(pieces, perm))
                block.source = f"shuffle window {w} of " + "; ".join(_group_names(pieces))
                for off in range(skip, block.n, bs):
                    yield [(block, off, min(off + bs, block.n))]
                skip = 0
            return
        pending: list[tuple[Block, int, int]] = []
        pending_rows = 0
        for table, piece in self._tables(self._epoch_spans(), start_rows):
            block, a = self._checked(Block(table, self.schema), Where([piece])), 0
            block.source = _group_names([piece])[0]
            while a < block.n:
                take = min(bs - pending_rows, block.n - a)
                pending.append((block, a, a + take))
                pending_rows, a = pending_rows + take, a + take
                if pending_rows == bs:
                    yield pending
                    pending, pending_rows = [], 0
        if pending:
            yield pending

    def describe_batch(self, k: int) -> str:
        """The row groups batch k (0-based) of the current epoch was cut from, while it is
        among the last batches read; '' when it is not."""
        return self._sources.get(k, "")

    def _batches(self) -> Iterator[Batch]:
        remaining = self.num_batches - self.start_batch
        self._sources.clear()
        for k, pieces in enumerate(self._pieces(), start=self.start_batch):
            if remaining <= 0:
                return
            if self.drop_last and sum(b - a for _, a, b in pieces) < self.batch_size:
                return
            self._sources[k] = "; ".join(dict.fromkeys(blk.source for blk, _, _ in pieces))
            while len(self._sources) > _REMEMBERED_BATCHES:
                self._sources.popitem(last=False)
            batch = batch_of(pieces, self.schema)
            # Pinned in the prefetch thread, so the copy to the GPU can be asynchronous.
            yield batch.pin_memory() if self.pin_memory else batch
            remaining -= 1

    def __iter__(self) -> Iterator[Batch]:
        return prefetch(self._batches(), self.prefetch_batches)
