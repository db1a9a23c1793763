"""Pieces shared by the converters (Criteo TSV, MovieLens): the staging folder, split
options, Parquet writers that emit fixed-size row groups, and reading big text inputs in
parallel (fixed chunks of whole lines, tasks in worker processes).

A converter writes into a hidden temporary folder next to the output and renames it at
the end, so an interrupted or failed conversion never leaves a partial data set behind
(a folder with schema.json is always complete).
"""

from __future__ import annotations

import gzip
import importlib.util
import multiprocessing
import os
import shutil
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.schema import SCHEMA_FILE
from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")
SPLITS = ("train", "valid", "test")
# Big enough that Parquet decoding runs at full speed, small enough that a few of them
# per rank fit in memory and that ranks can be balanced by row groups.
ROW_GROUP_ROWS = 128 * 1024


def parse_split(text: str | tuple | list) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' (or a 3-sequence) -> fractions of train/valid/test, summing to 1."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise UserError(f"--split '{text}': expected three numbers like 0.8,0.1,0.1") from None
    if len(values) != 3 or any(v < 0 for v in values) or values[0] <= 0:
        raise UserError(f"--split '{text}': expected three non-negative fractions "
                        "train,valid,test with train > 0, like 0.8,0.1,0.1")
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def check_output_folder(out: Path, overwrite: bool) -> None:
    """A data set may be written to `out` when it does not exist, or with `overwrite` when it
    is an empty folder or a shardrec data set (it has schema.json): --overwrite never deletes
    a folder of something else (a typo'd `--out .` or `--out ~`)."""
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise UserError(f"output folder '{out}' already exists (pass --overwrite to replace it)")
    if not out.is_dir() or out.is_symlink():
        raise UserError(f"--overwrite: '{out}' is not a folder; remove it yourself if it should go")
    if any(out.iterdir()) and not (out / SCHEMA_FILE).is_file():
        raise UserError(f"--overwrite: '{out}' is neither empty nor a shardrec data set (no {SCHEMA_FILE}); "
                        "refusing to delete it. Remove it yourself or choose another --out")


@contextmanager
def staging(out: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """Yield an empty temporary folder next to `out`; on a clean exit it replaces `out`.

    Whatever happens inside (an error, Ctrl-C), the temporary folder is removed and an
    existing `out` is left as it was.
    """
    out = Path(out)
    check_output_folder(out, overwrite)
    if not out.parent.is_dir():
        raise UserError(f"the parent folder of '{out}' does not exist")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class SplitWriter:
    """One Parquet file per split under `root/<split>/<name>`, opened on first rows.

    Rows are buffered until a whole row group (`row_group_rows`) is ready, so files get
    equal row groups whatever size the incoming tables have (only each file's last group
    is short). `rows` counts what each split received. `parquet_options` go to every
    pq.ParquetWriter (e.g. use_dictionary=False).
    """

    def __init__(self, root: Path, name: str, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS,
                 **parquet_options):
        self.root, self.name, self.schema, self.row_group_rows = root, name, schema, row_group_rows
        self.parquet_options = parquet_options
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._pending: dict[str, list[pa.Table]] = {}
        self.rows: dict[str, int] = {}

    def write(self, split: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        pending = self._pending.setdefault(split, [])
        pending.append(table)
        self.rows[split] = self.rows.get(split, 0) + table.num_rows
        buffered = sum(t.num_rows for t in pending)
        if buffered >= self.row_group_rows:
            merged = pa.concat_tables(pending)
            full = buffered - buffered % self.row_group_rows
            self._writer(split).write_table(merged.slice(0, full), row_group_size=self.row_group_rows)
            rest = merged.slice(full)
            self._pending[split] = [rest] if rest.num_rows else []

    def _writer(self, split: str) -> pq.ParquetWriter:
        if split not in self._writers:
            (self.root / split).mkdir(parents=True, exist_ok=True)
            # Page checksums let the reader tell a corrupted page from data (see reader._read).
            self._writers[split] = pq.ParquetWriter(self.root / split / self.name, self.schema,
                                                    write_page_checksum=True, **self.parquet_options)
        return self._writers[split]

    def close(self) -> None:
        for split, pending in self._pending.items():
            if pending:
                self._writer(split).write_table(pa.concat_tables(pending), row_group_size=self.row_group_rows)
        self._pending = {}
        for w in self._writers.values():
            w.close()
        self._writers = {}


# ---------------------------------------------------------------------------------------
# Reading big text inputs in parallel: fixed chunks of whole lines, tasks in processes.

# Nominal chunk size. Chunk j of a file holds the lines that start in bytes [j*C, (j+1)*C),
# so chunk boundaries depend only on the file, never on how chunks are grouped into tasks
# (or on --workers): anything seeded per chunk (e.g. a random split) is reproducible.
CHUNK_BYTES = 8 << 20


def is_gzip(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_input(path: str | os.PathLike, gz: bool):
    # gzip streams cannot be split, so a .gz file is always one task read from its start.
    return gzip.open(path, "rb") if gz else open(path, "rb", buffering=1 << 20)


def iter_chunks(path: str | os.PathLike, first: int, last: int | None, gz: bool,
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, int, bytes]]:
    """Yield (chunk index, byte offset, bytes of whole lines) for chunks first..last-1 (last
    None: to the end of the file). A line longer than a chunk leaves the next chunks empty
    (they are not yielded). A truncated or corrupt compressed input is a UserError naming
    the file."""
    try:
        yield from _chunks(path, first, last, gz, chunk_bytes)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise UserError(f"{path}: truncated or corrupt gzip input ({type(e).__name__}: {e}); "
                        "re-download or re-compress it") from None


def _chunks(path, first: int, last: int | None, gz: bool, chunk_bytes: int) -> Iterator[tuple[int, int, bytes]]:
    with open_input(path, gz) as f:
        if first:
            f.seek(first * chunk_bytes - 1)
            f.readline()  # finish the line that started in chunk first-1
        pos = f.tell()
        j = first
        while last is None or j < last:
            end = (j + 1) * chunk_bytes - 1
            if pos > end:  # the previous chunk's last line ran past this whole chunk
                j += 1
                continue
            body = f.read(end - pos)
            data = body + f.readline() if len(body) == end - pos else body
            if data:
                yield j, pos, data
            pos += len(data)
            if not data or not data.endswith(b"\n"):
                return  # end of file
            j += 1


def lines_before(path: str | os.PathLike, offset: int, gz: bool) -> int:
    """Newlines in the first `offset` bytes (to turn a task's line number into the file's)."""
    count = 0
    with open_input(path, gz) as f:
        while offset > 0:
            block = f.read(min(offset, 16 << 20))
            if not block:
                break
            count += block.count(b"\n")
            offset -= len(block)
    return count


def tally(results: list) -> tuple[dict[str, int], dict[str, int]]:
    """(rows written per split, malformed rows skipped per reason) summed over tasks' results
    (each with `rows` and `skipped` dicts)."""
    rows = {s: sum(r.rows.get(s, 0) for r in results) for s in SPLITS}
    skipped: dict[str, int] = {}
    for r in results:
        for reason, n in r.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    return rows, skipped


def run_tasks(fn: Callable[[T], R], tasks: list[T], workers: int,
              stop: Callable[[R], bool] = lambda r: False, desc: str = "tasks",
              pool: ProcessPoolExecutor | None = None) -> list[R]:
    """fn over tasks, in `workers` processes (inline for one worker or one task, which also
    keeps small conversions free of process start-up). Results come in completion order;
    once `stop(result)` is true, tasks not yet started are cancelled. A progress bar of
    finished tasks shows on a terminal. `pool` (from `worker_pool`) reuses worker processes
    across calls instead of starting new ones."""
    with tqdm(total=len(tasks), desc=desc, unit="task", disable=None, leave=False) as bar:
        return _run_tasks(fn, tasks, workers, stop, bar, pool)


def worker_pool(module: str, workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes for run_tasks.

    Not fork: the parent may hold threads (Arrow's pool, torch) that fork would copy
    mid-lock. A fork server is a fresh process that imports `module` (the tasks' code) once;
    workers fork from it without paying the imports again. pyarrow imports pandas (when
    present) on its first compute or to_numpy call, about 0.25 s of CPU: preload that too."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([module] + (["pandas"] if importlib.util.find_spec("pandas") else []))
    return ProcessPoolExecutor(workers, mp_context=ctx)


def _run_tasks(fn, tasks: list, workers: int, stop, bar, pool: ProcessPoolExecutor | None = None) -> list:
    if workers <= 1 or len(tasks) <= 1:
        results = []
        for t in tasks:
            results.append(fn(t))
            bar.update()
            if stop(results[-1]):
                break
        return results
    if pool is not None:
        return _collect(pool, fn, tasks, stop, bar)
    module = fn.func.__module__ if isinstance(fn, partial) else fn.__module__
    with worker_pool(module, min(workers, len(tasks))) as own:
        return _collect(own, fn, tasks, stop, bar)


def _collect(pool: ProcessPoolExecutor, fn, tasks: list, stop, bar) -> list:
    results = []
    futures = [pool.submit(fn, t) for t in tasks]
    try:
        for fut in as_completed(futures):
            results.append(fut.result())
            bar.update()
            if stop(results[-1]):
                break
    finally:
        for fut in futures:
            fut.cancel()
    return results


def file_splits(paths: list[Path], valid_files, test_files, train_files=()) -> list[str] | None:
    """Split by file: 'day_23' names day_23, day_23.gz or a full path; others go to train.
    With `train_files` too, every input must be named by one of the three lists."""
    if not valid_files and not test_files and not train_files:
        return None

    def names(p: Path) -> set[str]:
        return {p.name, p.name.split(".")[0], str(p)}

    out = ["train"] * len(paths)
    named = [False] * len(paths)
    for split, patterns in (("train", train_files), ("valid", valid_files), ("test", test_files)):
        for pat in patterns:
            hits = [i for i, p in enumerate(paths) if pat in names(p)]
            if not hits:
                raise UserError(f"--{split}-files '{pat}' names none of the inputs "
                                f"({', '.join(p.name for p in paths)})")
            for i in hits:
                if named[i] and out[i] != split:
                    raise UserError(f"input '{paths[i]}' is named by both --{out[i]}-files and --{split}-files")
                out[i], named[i] = split, True
    if train_files:
        for i, p in enumerate(paths):
            if not named[i]:
                raise UserError(f"input '{p}' is named by none of --train-files/--valid-files/--test-files")
    return out


def merge_counts(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum (values, counts) pairs: -> sorted distinct values and their total counts."""
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    values, inverse = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
    return values, np.bincount(inverse, weights=np.concatenate([p[1] for p in parts])).astype(np.int64)
