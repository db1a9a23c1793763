"""Any table of rows (CSV/TSV, Parquet, JSON lines; plain or .gz) -> a shardrec data set.

    convert_table(["clicks.csv"], "data/clicks", label="clicked", sparse=["user", "item"],
                  dense=["price"], multi_hot=["tags:|"], keep=["row_id"])

Writes DIR/{train,valid,test}/part-*.parquet, DIR/transforms.json and DIR/vocab/<col>.parquet
(how raw rows were encoded: see table_transforms.py, whose `TableTransforms.apply` encodes
later rows the same way) and DIR/schema.json, last.

Passes, each over every input in tasks of whole chunks run in worker processes (one per
core by default; convert_common.run_tasks):
  0. time split only: each row's time is written to a scratch file (8 bytes a row, on disk)
     and the cut points are found by a radix selection over those files (a few sequential
     reads of them, memory bounded by a block), exactly: the latest `test` fraction of the
     rows (by the time column) is test, the `valid` fraction before it valid. Rows that
     share the cut time all go to the later split.
  1. statistics of the train rows: value counts of the vocabulary columns and the mean and
     std of the standardized dense columns (skipped when nothing needs them). Memory: the
     distinct values of the columns (their vocabularies), not the rows.
  2. encode (the same `TableTransforms.encode` as `apply`) and write Parquet.

Splits: by ratio (a row's split is a hash of (seed, file index, the row's byte offset in
the file or its row number in a Parquet file), so every pass and any --workers agree), by
time (above) or by file. Tasks are cut from the inputs alone, never from --workers, so the
output is identical for any number of workers. A malformed row stops the conversion with
file:line (Parquet: file: row N) and what is wrong; with on_error="skip" it is skipped and
counted. Output appears only when everything succeeded (convert_common.staging).
Like any multiprocessing user, a script calling convert_table with workers > 1 needs an
`if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_common import (
    CHUNK_BYTES,
    ROW_GROUP_ROWS,
    SPLITS,
    SplitWriter,
    check_output_folder,
    file_splits,
    parse_split,
    run_tasks,
    staging,
    tally,
    worker_pool,
)
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature, write_schema
from shardrec.data_pipeline.table_transforms import (
    DENSE_TRANSFORMS,
    FORMATS,
    TRANSFORMS_FILE,
    VOCAB_DIR,
    Check,
    DenseColumn,
    InputOptions,
    KeptColumn,
    RawFile,
    SparseColumn,
    TableTransforms,
    _arrow_type,
    _categories,
    _offsets,
    _time_values,
    row_uniform,
    where_row,
)

# Tasks are sized from the input alone (so the output does not depend on --workers): enough
# tasks to feed this many cores, each at most MAX_TASK_CHUNKS chunks (8 MiB of text or one
# Parquet row group each).
TARGET_TASKS = 64
MAX_TASK_CHUNKS = 32
# Radix selection of the time cut points: candidates are sorted in memory once this few remain.
_SELECT_IN_MEMORY = 1 << 22
_BLOCK = 1 << 20
SPEC_KEYS = ("input", "out", "label", "label_threshold", "label_positive", "sparse", "dense", "multi_hot", "keep", "format",
             "delimiter", "header", "columns", "newlines_in_values", "split", "seed", "time_column", "train_files", "valid_files",
             "test_files", "min_count", "max_vocab", "hash_buckets", "dense_fill", "dense_transform", "workers",
             "on_error", "overwrite", "row_group_rows")


# ---------------------------------------------------------------------------------------
# Options: column roles from flags, a spec file or Python values.


def split_names(values: str | Sequence[str] | None) -> list[str]:
    """'a,b' or ['a', 'b,c'] (repeated flags) -> ['a', 'b', 'c']."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [n.strip() for v in values for n in str(v).split(",") if n.strip()]


_MULTI_ITEM = r"[^:,]+:(?:,|[^,]+)"


def parse_multi_hot(values: str | Sequence[str] | None) -> list[str]:
    """'genres:|,tags:;' (repeatable) -> ['genres:|', 'tags:;']. A separator may be ',' itself
    ('tags:,'); a bare name means the separator '|'."""
    out = []
    for v in [values] if isinstance(values, str) else list(values or []):
        v = str(v).strip()
        if re.fullmatch(rf"{_MULTI_ITEM}(?:,{_MULTI_ITEM})*", v):
            out += re.findall(_MULTI_ITEM, v)
        elif v and ":" not in v:
            out += [f"{n}:|" for n in split_names(v)]
        else:
            raise UserError(f"--multi-hot '{v}': expected COL:SEP items separated by commas, e.g. genres:|,tags:;")
    return out


def per_column(value: Any, flag: str, cast) -> tuple[Any, dict[str, Any]]:
    """A global value, 'COL:V,...' / ['COL:V'] / {COL: V} per column, or both ('V,COL:V').
    -> (global value or None, {column: value})."""
    if value is None:
        return None, {}
    if isinstance(value, dict):
        items = list(value.items())
        glob = None
    else:
        glob, items = None, []
        for part in split_names(value) if not isinstance(value, (int, float)) else [value]:
            if isinstance(part, str) and ":" in part:
                name, _, v = part.rpartition(":")
                items.append((name.strip(), v.strip()))
            else:
                glob = part
    try:
        return (None if glob is None else cast(glob)), {k: cast(v) for k, v in items}
    except (TypeError, ValueError):
        raise UserError(f"{flag} '{value}': expected a value or COL:VALUE items") from None


def _int_at_least(flag: str, value, low: int) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag}: expected an integer, got {value!r}") from None
    if n < low or (isinstance(value, float) and value != n):
        raise UserError(f"{flag} must be an integer of at least {low}, got {value!r}")
    return n


def _transform(flag: str, value: str) -> str:
    if value not in DENSE_TRANSFORMS:
        raise UserError(f"{flag} '{value}': expected one of {', '.join(DENSE_TRANSFORMS)}")
    return value


def _fill(flag: str, value) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag}: expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise UserError(f"{flag}: expected a finite number, got {value!r}")
    return x


def build_columns(sparse=(), dense=(), multi_hot=(), min_count=1, max_vocab=None, hash_buckets=None,
                  dense_fill=0.0, dense_transform="none") -> tuple[list[DenseColumn], list[SparseColumn]]:
    """Column specs from names, dicts (spec files) and the global / per-column options."""
    buckets_all, buckets = per_column(hash_buckets, "--hash-buckets", int)
    fill_all, fills = per_column(dense_fill, "--dense-fill", float)
    tr_all, transforms = per_column(dense_transform, "--dense-transform", str)
    dense_cols = []
    for item in _items(dense, "dense"):
        d = _dict(item, "dense", ("name", "transform", "fill"))
        name = d["name"]
        dense_cols.append(DenseColumn(
            name, _transform(f"dense '{name}' transform", d.get("transform", transforms.get(name, tr_all or "none"))),
            _fill(f"dense '{name}' fill", d.get("fill", fills.get(name, 0.0 if fill_all is None else fill_all)))))
    sparse_cols = []
    multi = []
    for item in _items(multi_hot, "multi_hot"):
        if isinstance(item, str):
            name, sep = item.split(":", 1) if ":" in item else (item, "|")
            item = {"name": name.strip(), "sep": sep}
        multi.append(item)
    for item, is_multi in [(i, False) for i in _items(sparse, "sparse")] + [(i, True) for i in multi]:
        keys = ("name", "hash_buckets", "min_count", "max_vocab") + (("sep", "separator") if is_multi else ())
        d = _dict(item, "multi_hot" if is_multi else "sparse", keys)
        name = d["name"]
        sep = d.get("sep", d.get("separator", "|")) if is_multi else None
        if is_multi and (not isinstance(sep, str) or not sep):
            raise UserError(f"multi-hot column '{name}': the separator must be a non-empty string, got {sep!r}")
        nb = d.get("hash_buckets", buckets.get(name, buckets_all))
        sparse_cols.append(SparseColumn(
            name, multi_hot=is_multi, separator=sep,
            hash_buckets=_int_at_least(f"hash_buckets of '{name}'", nb, 2),
            min_count=_int_at_least(f"min_count of '{name}'", d.get("min_count", min_count), 1),
            max_vocab=_int_at_least(f"max_vocab of '{name}'", d.get("max_vocab", max_vocab), 1)))
    known = {c.name for c in dense_cols} | {c.name for c in sparse_cols}
    for what, table in (("--hash-buckets", buckets), ("--dense-fill", fills), ("--dense-transform", transforms)):
        for name in table:
            if name not in known:
                raise UserError(f"{what} names column '{name}', which is not a --dense/--sparse/--multi-hot column")
    return dense_cols, sparse_cols


def _items(value, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return split_names(value) if key != "multi_hot" else parse_multi_hot(value)
    if isinstance(value, dict):
        raise UserError(f"'{key}': expected a list of column names or entries, got a mapping")
    return list(value)


def _dict(item, key: str, allowed: tuple[str, ...]) -> dict:
    if isinstance(item, str):
        return {"name": item}
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise UserError(f"'{key}' entry {item!r}: expected a column name or a mapping with 'name'")
    unknown = set(item) - set(allowed)
    if unknown:
        raise UserError(f"'{key}' entry '{item['name']}': unknown key(s) {', '.join(sorted(unknown))} "
                        f"(allowed: {', '.join(allowed)})")
    return item


def load_spec(path: str | os.PathLike) -> dict:
    """A YAML spec: the convert table options as keys (input, out, label, sparse, ...)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"spec file '{p}' does not exist")
    try:
        obj = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{p}: expected a mapping of options (input, out, label, sparse, ...)")
    unknown = sorted(set(obj) - set(SPEC_KEYS))
    if unknown:
        raise UserError(f"{p}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(SPEC_KEYS)})")
    return obj


# ---------------------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True)
class Task:
    index: int  # names the output file: part-<index>.parquet
    file_index: int
    path: str
    file: dict  # RawFile.state(): format, compression, columns (not inspected again per task)
    first: int  # first chunk (text) or row group (Parquet)
    last: int | None  # one past the last; None = to the end
    split: str | None  # split by file: every row goes here


@dataclass(frozen=True)
class Plan:
    """What every task needs; picklable for the worker processes."""

    work_dir: str
    input: InputOptions
    transforms: dict  # TableTransforms.to_json() before statistics (passes 0 and 1)
    columns: tuple[str, ...]  # the columns read
    split_mode: str  # ratio | time | files
    ratios: tuple[float, float, float]
    seed: int
    time_column: str | None
    cuts: tuple[float | None, float | None]  # time split: valid from, test from
    on_error: str
    row_group_rows: int
    chunk_bytes: int
    keep_types: tuple[tuple[str, str], ...]
    staged: bool = False  # pass 1 writes scratch rows for pass 2 (statistics needed first)
    count_columns: tuple[str, ...] = ()  # pass 1: vocabulary columns
    stat_columns: tuple[str, ...] = ()  # pass 1: standardized dense columns


@dataclass
class Result:
    task: Task
    rows: dict[str, int] = field(default_factory=dict)
    read: int = 0  # rows read (parsed), bad ones included
    skipped: dict[str, int] = field(default_factory=dict)
    error: tuple[int, str] | None = None  # (position, message) of the first malformed row
    counts: dict[str, list[tuple[pa.Array, np.ndarray]]] | None = None
    stats: dict[str, tuple[int, float, float]] | None = None  # (n, mean, M2)
    times: str | None = None  # pass 0: file of float64 times
    time_count: int = 0
    cpu_s: float = 0.0


def _tasks(raws: list[RawFile], splits: list[str] | None, only_train: bool = False) -> list[Task]:
    sizes = [r.num_chunks() for r in raws]
    per_task = max(1, min(MAX_TASK_CHUNKS, math.ceil(sum(sizes) / TARGET_TASKS)))
    tasks: list[Task] = []
    for i, (raw, n) in enumerate(zip(raws, sizes)):
        split = splits[i] if splits else None
        if only_train and split not in (None, "train"):
            continue
        for first in range(0, n, per_task):
            last = first + per_task if first + per_task < n else None
            tasks.append(Task(len(tasks), i, str(raw.path), raw.state(), first, last, split))
    return tasks


_LOADED: dict[tuple, TableTransforms] = {}


def _loaded(work_dir: str) -> TableTransforms:
    """The saved transforms, loaded once per worker process (vocabulary tables included).
    Keyed by the file's identity: a later conversion into the same folder reloads."""
    st = (Path(work_dir) / TRANSFORMS_FILE).stat()
    key = (work_dir, st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = TableTransforms.load(work_dir)
    return _LOADED[key]


def _merge_stats(a: tuple[int, float, float], b: tuple[int, float, float]) -> tuple[int, float, float]:
    """Chan et al.'s pairwise merge of (count, mean, sum of squared deviations)."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    if n == 0:
        return 0, 0.0, 0.0
    delta = mb - ma
    return n, ma + delta * nb / n, sa + sb + delta * delta * na * nb / n


def merge_value_counts(parts: list[tuple[pa.Array, np.ndarray]]) -> tuple[pa.Array, np.ndarray]:
    """Sum (values, counts) pairs of string values -> distinct values and their counts."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return pa.array([], pa.string()), np.zeros(0, np.int64)
    if len(parts) == 1:
        return parts[0]
    d = pc.dictionary_encode(pa.concat_arrays([p[0] for p in parts]))
    counts = np.bincount(d.indices.to_numpy(), weights=np.concatenate([p[1] for p in parts]),
                         minlength=len(d.dictionary))
    return d.dictionary, np.rint(counts).astype(np.int64)  # (exact below 2**53)


def _count(values: pa.Array, rows: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Value counts of values[rows] (strings or dictionary<string>; null and "" left out)."""
    d = _categories(values)
    idx = d.indices.fill_null(-1).to_numpy(zero_copy_only=False)[rows]
    counts = np.bincount(idx[idx >= 0], minlength=len(d.dictionary))
    counts[np.diff(_offsets(d.dictionary)) == 0] = 0
    nz = np.flatnonzero(counts)
    return d.dictionary.take(pa.array(nz)), counts[nz].astype(np.int64)


class _Splitter:
    """Each row's split (0 train, 1 valid, 2 test; -1 = its time is unreadable)."""

    def __init__(self, plan: Plan, task: Task):
        self.plan, self.task = plan, task
        self.thresholds = np.cumsum(plan.ratios)[:-1]

    def __call__(self, table: pa.Table, positions: np.ndarray) -> tuple[np.ndarray, Check | None]:
        n = table.num_rows
        if self.task.split is not None:
            return np.full(n, SPLITS.index(self.task.split), np.int8), None
        if self.plan.split_mode == "ratio":
            u = row_uniform(self.plan.seed, self.task.file_index, positions)
            return np.searchsorted(self.thresholds, u, side="right").astype(np.int8), None
        t, check = _time_check(table, self.plan.time_column)
        valid_from, test_from = self.plan.cuts
        out = np.zeros(n, np.int8)
        with np.errstate(invalid="ignore"):
            if valid_from is not None:
                out[t >= valid_from] = 1
            if test_from is not None:
                out[t >= test_from] = 2
        if check is not None:
            out[check.mask] = -1
        return out, check


def _time_check(table: pa.Table, column: str) -> tuple[np.ndarray, Check | None]:
    col = table.column(column)
    try:
        t, bad = _time_values(col)
    except UserError as e:
        raise UserError(f"--time-column '{column}': {e}") from None
    bad = bad | np.isnan(t)
    if not bad.any():
        return t, None
    arr = col.combine_chunks()
    return t, Check("bad_time", bad, lambda r: (
        f"time column '{column}' is missing" if not arr[r].is_valid or arr[r].as_py() in ("", None) else
        f"time column '{column}': value {arr[r].as_py()!r} is neither a number nor an ISO 8601 date/time"))


SPLIT_COLUMN = "__shardrec_split__"  # scratch rows: 0 train, 1 valid, 2 test


def _scratch(plan: Plan, task: Task) -> Path:
    return Path(plan.work_dir) / ".work" / f"rows-{task.index:05d}.arrows"


def run_task(plan: Plan, mode: str, task: Task) -> Result:
    """One task of a pass; runs in a worker process. Modes:
    "time"   pass 0: the row times to a scratch file;
    "read"   pass 1: read, decode and check the rows; count the train rows' values; write
             the rows in canonical form to scratch (plan.staged) or encoded to Parquet;
    "encode" pass 2: scratch rows -> TableTransforms.apply -> Parquet."""
    result, cpu0 = Result(task), time.process_time()
    try:
        if mode == "encode":
            _encode_task(plan, task, result)
        else:
            _read_task(plan, mode, task, result)
    finally:
        result.cpu_s = time.process_time() - cpu0
    return result


def _encode_task(plan: Plan, task: Task, result: Result) -> None:
    transforms = _loaded(plan.work_dir)
    writer = SplitWriter(Path(plan.work_dir), f"part-{task.index:05d}.parquet", transforms.output_schema(),
                         plan.row_group_rows, use_dictionary=False)
    path = _scratch(plan, task)
    try:
        if path.is_file():
            with pa.OSFile(str(path)) as source:  # (not mapped: a batch at a time stays resident)
                for batch in pa.ipc.open_stream(source):
                    # The same code as for prediction inputs: apply() ignores the split column.
                    _write_splits(writer, transforms.apply(batch),
                                  batch.column(SPLIT_COLUMN).to_numpy(zero_copy_only=False))
            path.unlink()
    finally:
        writer.close()
        result.rows = dict(writer.rows)


def _write_splits(writer, table: pa.Table, split_idx: np.ndarray, good: np.ndarray | None = None) -> None:
    for s, name in enumerate(SPLITS):
        mask = split_idx == s if good is None else good & (split_idx == s)
        if mask.all():
            writer.write(name, table)
        elif mask.any():
            writer.write(name, table.filter(pa.array(mask)))


def _read_task(plan: Plan, mode: str, task: Task, result: Result) -> None:
    raw = RawFile.restore(task.file)
    splitter = _Splitter(plan, task)
    keep_types = {k: _arrow_type(t) for k, t in plan.keep_types}
    writer = times = scratch = None
    counts: dict[str, list] = {c: [] for c in plan.count_columns}
    stats = {c: (0, 0.0, 0.0) for c in plan.stat_columns}
    if mode == "time":
        times = open(Path(plan.work_dir) / ".work" / f"time-{task.index:05d}.f64", "wb")
        result.times = times.name
    elif plan.staged:
        transforms = TableTransforms.from_json(plan.transforms)
        schema = transforms.canonical_schema(keep_types).append(pa.field(SPLIT_COLUMN, pa.int8()))
        scratch = pa.ipc.new_stream(str(_scratch(plan, task)), schema)
    else:  # nothing to learn first: the saved transforms, straight to Parquet
        transforms = _loaded(plan.work_dir)
        writer = SplitWriter(Path(plan.work_dir), f"part-{task.index:05d}.parquet", transforms.output_schema(),
                             plan.row_group_rows, use_dictionary=False)
    try:
        numeric = [] if mode == "time" else [d.name for d in transforms.dense] + (
            [transforms.label] if transforms.label_threshold is not None else [])
        for chunk in raw.chunks(task.first, task.last, plan.columns, numeric):
            result.read += chunk.table.num_rows + len(chunk.bad)
            first = (chunk.bad[0][0], chunk.bad[0][2]) if chunk.bad else None  # (position, message)
            if mode == "time":
                t, check = _time_check(chunk.table, plan.time_column)
                checks = [check] if check else []
            else:
                split_idx, check = splitter(chunk.table, chunk.positions)
                dec = transforms.decode(chunk.table, require_label=True)
                if check is not None:
                    dec.checks.insert(0, check)
                checks = dec.checks
            for c in checks:
                if c.mask.any():
                    r = int(np.argmax(c.mask))
                    if first is None or chunk.positions[r] < first[0]:
                        first = (int(chunk.positions[r]), c.message(r))
            if first is not None and plan.on_error == "raise":
                result.error = first
                return
            good = np.ones(chunk.table.num_rows, bool)
            for c in checks:
                good &= ~c.mask
            if mode == "time":
                times.write(np.ascontiguousarray(t[good], np.float64).tobytes())
                result.time_count += int(good.sum())
                continue
            for _, reason, _ in chunk.bad:
                result.skipped[reason] = result.skipped.get(reason, 0) + 1
            for k, v in dec.counts().items():
                result.skipped[k] = result.skipped.get(k, 0) + v
            if plan.staged:
                _collect(transforms, dec, good & (split_idx == 0), counts, stats)
                table = transforms.canonical(dec, good, keep_types)
                table = table.append_column(SPLIT_COLUMN, pa.array(split_idx[good], pa.int8()))
                scratch.write_table(table)
                for s, name in enumerate(SPLITS):
                    result.rows[name] = result.rows.get(name, 0) + int((split_idx[good] == s).sum())
            else:
                _write_splits(writer, transforms.encode_decoded(dec, None, keep_types), split_idx, good)
        if plan.staged and mode == "read":
            result.counts = {c: [merge_value_counts(v)] for c, v in counts.items()}
            result.stats = stats
    finally:
        if writer is not None:
            writer.close()
            result.rows = dict(writer.rows)
        for f in (times, scratch):
            if f is not None:
                f.close()


def _collect(transforms: TableTransforms, dec, rows: np.ndarray, counts: dict, stats: dict) -> None:
    """Pass 1: add the value counts and dense moments of `rows` of a decoded chunk."""
    for s in transforms.sparse:
        if s.name not in counts:
            continue
        if s.multi_hot:
            offsets, tokens = dec.multi[s.name]
            token_rows = np.repeat(rows, np.diff(offsets))
            counts[s.name].append(_count(tokens, token_rows))
        else:
            counts[s.name].append(_count(dec.sparse[s.name], rows))
        if len(counts[s.name]) >= 16:  # memory: the distinct values, not the rows
            counts[s.name] = [merge_value_counts(counts[s.name])]
    for name in stats:
        x = dec.dense[name][rows]
        x = x[~np.isnan(x)]
        if len(x):
            m = float(x.mean())
            stats[name] = _merge_stats(stats[name], (len(x), m, float(((x - m) ** 2).sum())))


# ---------------------------------------------------------------------------------------
# The passes


def _run(plan: Plan, mode: str, tasks: list[Task], workers: int, raws: list[RawFile], desc: str,
         on_result=None, pool=None) -> list[Result]:
    def stop(r: Result) -> bool:
        if on_result is not None and r.error is None:
            on_result(r)  # merged as results arrive, so the parent holds one merged copy
        return r.error is not None

    results = run_tasks(partial(run_task, plan, mode), tasks, workers, stop=stop, desc=desc, pool=pool)
    errors = [r for r in results if r.error is not None]
    if errors:
        r = min(errors, key=lambda r: (r.task.file_index, r.error[0]))
        position, message = r.error
        raise UserError(f"{where_row(raws[r.task.file_index], position)}: {message} "
                        "(pass --on-error skip to skip and count malformed rows)")
    return results


class _CountMerger:
    """Value counts per column, merged as task results arrive (amortized: a merge whenever
    the pending parts outgrow what is merged), so memory stays a small multiple of the
    vocabulary whatever the number of tasks."""

    def __init__(self, columns):
        self.merged = {c: (pa.array([], pa.string()), np.zeros(0, np.int64)) for c in columns}
        self.pending: dict[str, list] = {c: [] for c in columns}
        self.stats: dict[str, tuple[int, float, float]] = {}

    def __call__(self, r: Result) -> None:
        for c, parts in (r.counts or {}).items():
            self.pending[c] += parts
            if sum(len(p[0]) for p in self.pending[c]) > max(len(self.merged[c][0]), 1 << 16):
                self.merged[c] = merge_value_counts([self.merged[c], *self.pending[c]])
                self.pending[c] = []
        for c, s in (r.stats or {}).items():
            self.stats[c] = _merge_stats(self.stats.get(c, (0, 0.0, 0.0)), s)
        r.counts = None

    def result(self, c: str) -> tuple[pa.Array, np.ndarray]:
        return merge_value_counts([self.merged[c], *self.pending[c]])


def _build_vocabulary(col: SparseColumn, values: pa.Array, counts: np.ndarray, root: Path, used: set[str]) -> None:
    """Keep values seen >= min_count times (at most max_vocab, the most frequent), ordered by
    descending count, ties by ascending value; save them as root/vocab/<col>.parquet."""
    if len(values):
        order = pc.sort_indices(pa.table({"v": values, "c": counts}),
                                sort_keys=[("c", "descending"), ("v", "ascending")]).to_numpy()
        n = int((counts[order] >= col.min_count).sum())
        order = order[:n if col.max_vocab is None else min(n, col.max_vocab)]
        values, counts = values.take(pa.array(order)), counts[order]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", col.name) or "column"
    name, k = safe, 1
    while name.lower() in used:
        k += 1
        name = f"{safe}-{k}"
    used.add(name.lower())
    (root / VOCAB_DIR).mkdir(exist_ok=True)
    rel = f"{VOCAB_DIR}/{name}.parquet"
    pq.write_table(pa.table({"value": pa.array(values, pa.string()), "count": pa.array(counts, pa.int64())}),
                   root / rel)
    col.vocab_size, col.vocab_file = len(values), rel


def _order_key(x: np.ndarray) -> np.ndarray:
    """float64 -> uint64 with the same order (IEEE 754 bits, negatives flipped)."""
    bits = np.ascontiguousarray(x, np.float64).view(np.uint64)
    neg = (bits >> np.uint64(63)).astype(bool)
    return np.where(neg, ~bits, bits | np.uint64(1 << 63))


def _blocks(files: list[str]):
    for f in files:
        data = np.memmap(f, np.float64, mode="r") if os.path.getsize(f) else np.zeros(0)
        for i in range(0, len(data), _BLOCK):
            yield np.array(data[i:i + _BLOCK])


def select_kth(files: list[str], k: int) -> float:
    """The k-th smallest (0-based) float64 in the files, by radix selection on 16-bit digits
    of order-preserving keys: each round is one sequential read of the files, memory one block."""
    prefix, shift, below, count = 0, 64, 0, None
    while True:
        if count is not None and (count <= _SELECT_IN_MEMORY or shift == 0):
            cand = [b[(_order_key(b) >> np.uint64(shift)) == prefix] if shift < 64 else b for b in _blocks(files)]
            return float(np.sort(np.concatenate(cand))[k - below])
        shift -= 16
        hist = np.zeros(1 << 16, np.int64)
        for b in _blocks(files):
            key = _order_key(b)
            if shift + 16 < 64:
                key = key[(key >> np.uint64(shift + 16)) == prefix]
            hist += np.bincount(((key >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.int64), minlength=1 << 16)
        cum = np.cumsum(hist)
        d = int(np.searchsorted(cum, k - below, side="right"))
        below += int(cum[d - 1]) if d else 0
        count = int(hist[d])
        prefix = (prefix << 16) | d


def _kept_types(raws: list[RawFile], keep: list[str]) -> list[KeptColumn]:
    """Kept columns are written with the first input's type: string for CSV/TSV, the file's
    type for Parquet, the type of the first rows for JSON lines (null or unsupported: string)."""
    if not keep:
        return []
    raw = raws[0]
    if raw.format in ("csv", "tsv"):
        types = {c: pa.string() for c in keep}
    elif raw.format == "parquet":
        schema = raw.parquet.schema_arrow
        types = {c: schema.field(c).type for c in keep}
    else:
        chunk = next(raw.chunks(0, 1, keep), None)
        types = {c: chunk.table.column(c).type if chunk else pa.string() for c in keep}
    out = []
    for c in keep:
        t = types[c]
        if pa.types.is_dictionary(t):
            t = t.value_type
        try:
            _arrow_type(str(t))
            ok = not pa.types.is_null(t)
        except UserError:
            ok = False
        out.append(KeptColumn(c, str(t) if ok else "string"))
    return out


def convert_table(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, label: str, *,
                  label_threshold: float | None = None, label_positive: str | Sequence[str] | None = None,
                  sparse=(), dense=(), multi_hot=(), keep=(),
                  format: str | None = None, delimiter: str | None = None, header: bool = True,
                  columns: Sequence[str] | None = None, newlines_in_values: bool = False, split: str | Sequence[float] | None = None, seed: int = 0,
                  time_column: str | None = None, train_files: Sequence[str] = (), valid_files: Sequence[str] = (),
                  test_files: Sequence[str] = (), min_count: int = 1, max_vocab: int | None = None,
                  hash_buckets=None, dense_fill=0.0, dense_transform="none", workers: int | None = None,
                  on_error: str = "raise", overwrite: bool = False, row_group_rows: int = ROW_GROUP_ROWS,
                  chunk_bytes: int = CHUNK_BYTES) -> DatasetSchema:
    """Convert `inputs` into the data set folder `out`; see the module docstring. Returns the
    schema written (its `source` holds the rows read and skipped)."""
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    if not paths:
        raise UserError("no input files given (--input)")
    if not label:
        raise UserError("--label is required: the column holding the click / target")
    if on_error not in ("raise", "skip"):
        raise UserError(f"--on-error must be 'raise' or 'skip', got '{on_error}'")
    if format is not None and format not in FORMATS:
        raise UserError(f"--format '{format}': expected one of {', '.join(FORMATS)}")
    if not header and not columns:
        raise UserError("--no-header needs --columns naming the fields, e.g. --columns label,user,item")
    workers = max(1, _int_at_least("--workers", workers, 1) or os.cpu_count() or 1)
    row_group_rows = _int_at_least("--row-group-rows", row_group_rows, 1)
    if label_threshold is not None:
        label_threshold = _fill("--label-threshold", label_threshold)
    positive = split_names(label_positive) if label_positive is not None else None
    if positive is not None and (not positive or label_threshold is not None):
        raise UserError("--label-positive needs one or more values and excludes --label-threshold")
    dense_cols, sparse_cols = build_columns(sparse, dense, multi_hot, min_count, max_vocab, hash_buckets,
                                            dense_fill, dense_transform)
    keep_names = split_names(keep) if isinstance(keep, str) else [str(k) for k in keep]
    if not dense_cols and not sparse_cols:
        raise UserError("no feature columns: name some with --sparse, --dense or --multi-hot")
    roles: dict[str, str] = {}
    for name, role in ([(label, "--label")] + [(c.name, "--dense") for c in dense_cols]
                       + [(c.name, "--multi-hot" if c.multi_hot else "--sparse") for c in sparse_cols]
                       + [(k, "--keep") for k in keep_names]):
        if name in roles:
            raise UserError(f"column '{name}' is given twice ({roles[name]} and {role}); each column has one role")
        roles[name] = role
    by_file = bool(train_files or valid_files or test_files)
    if by_file and (split is not None or time_column):
        raise UserError("--train-files/--valid-files/--test-files exclude --split and --time-column: split by file, "
                        "by ratio or by time")
    ratios = parse_split(split if split is not None else "0.8,0.1,0.1")
    options = InputOptions(format, delimiter, bool(header), list(split_names(columns)) if columns else None,
                           bool(newlines_in_values))
    raws = [RawFile(p, options, chunk_bytes) for p in paths]
    wanted = {**roles, **({time_column: "--time-column"} if time_column else {})}
    for raw in raws:
        raw.check_columns(wanted)
    splits = file_splits(paths, list(valid_files), list(test_files), list(train_files)) if by_file else None
    split_mode = "files" if by_file else "time" if time_column else "ratio"
    kept = _kept_types(raws, keep_names)
    transforms = TableTransforms(label, label_threshold, dense_cols, sparse_cols, kept, options,
                                 label_positive=positive)
    read_cols = tuple(dict.fromkeys([*transforms.needed_columns(), *([time_column] if time_column else [])]))
    plan = Plan("", options, transforms.to_json(), read_cols, split_mode, tuple(ratios), seed, time_column,
                (None, None), on_error, row_group_rows, chunk_bytes, tuple((k.name, k.type) for k in kept))
    started = time.perf_counter()
    cpu = 0.0
    check_output_folder(Path(out), overwrite)
    Path(out).parent.mkdir(parents=True, exist_ok=True)  # like `shardrec synth`: --out data/x makes data/
    with staging(out, overwrite) as tmp, ExitStack() as stack:
        (tmp / ".work").mkdir()
        plan = replace(plan, work_dir=str(tmp))
        tasks = _tasks(raws, splits)
        # One pool for every pass: workers start (and load the vocabularies) once.
        pool = stack.enter_context(worker_pool(__name__, min(workers, len(tasks)))) if workers > 1 and len(tasks) > 1 \
            else None
        rows_by_time = None
        if split_mode == "time":
            plan, rows_by_time, c = _time_cuts(plan, raws, workers, pool)
            cpu += c
        count_cols = tuple(s.name for s in sparse_cols if s.hash_buckets is None)
        stat_cols = tuple(d.name for d in dense_cols if d.transform == "standardize")
        if count_cols or stat_cols:
            # Pass 1 reads, checks, counts and keeps the rows in canonical form; pass 2 encodes them.
            merger = _CountMerger(count_cols)
            plan = replace(plan, staged=True, count_columns=count_cols, stat_columns=stat_cols)
            results = _run(plan, "read", tasks, workers, raws, "convert table: read", merger, pool)
            cpu += sum(r.cpu_s for r in results)
            _finish_statistics(transforms, merger, tmp)
            transforms.save(tmp)
            encoded = _run(plan, "encode", tasks, workers, raws, "convert table: write", None, pool)
            cpu += sum(r.cpu_s for r in encoded)
            for r, e in zip(sorted(results, key=lambda r: r.task.index), sorted(encoded, key=lambda r: r.task.index)):
                r.rows = e.rows  # what was written
        else:  # hashing only, no statistics: one pass, read -> Parquet
            transforms.save(tmp)
            results = _run(plan, "read", tasks, workers, raws, "convert table", None, pool)
            cpu += sum(r.cpu_s for r in results)
        rows, skipped = tally(results)
        if not sum(rows.values()):
            raise UserError(f"no rows converted from {', '.join(map(str, paths))}"
                            + (f" ({sum(skipped.values())} malformed rows skipped)" if skipped else ""))
        schema = DatasetSchema(
            label=label, dense=[d.name for d in dense_cols],
            sparse=[SparseFeature(s.name, s.num_embeddings, s.multi_hot) for s in sparse_cols],
            splits={s: n for s, n in rows.items() if n})
        split_info: dict[str, Any]
        if split_mode == "files":
            split_info = {"by_file": {s: [p.name for p, f in zip(paths, splits) if f == s] for s in SPLITS}}
        elif split_mode == "time":
            split_info = {"by_time": time_column, "fractions": list(ratios), "valid_from": plan.cuts[0],
                          "test_from": plan.cuts[1], "rows_with_time": rows_by_time}
        else:
            split_info = {"ratio": list(ratios), "seed": seed}
        schema.source = {
            "converter": "shardrec convert table", "inputs": [str(p.resolve()) for p in paths],
            "formats": [r.format + (".gz" if r.gz else "") for r in raws], "transforms": TRANSFORMS_FILE,
            "label": transforms.label_rule, "split": split_info,
            "kept_columns": keep_names, "rows_read": sum(r.read for r in results), "on_error": on_error,
            "skipped_rows": sum(skipped.values()), "skipped": skipped, "workers": workers,
            "worker_cpu_s": round(cpu, 3), "wall_s": round(time.perf_counter() - started, 3),
        }
        shutil.rmtree(tmp / ".work", ignore_errors=True)
        write_schema(tmp, schema)
    _LOADED.clear()  # (filled in this process when workers == 1)
    return schema


def _finish_statistics(transforms: TableTransforms, merger: _CountMerger, root: Path) -> None:
    """Vocabularies (saved under root/vocab/) and dense means and stds from pass 1."""
    used: set[str] = set()
    for s in transforms.sparse:
        if s.hash_buckets is None:
            _build_vocabulary(s, *merger.result(s.name), root, used)
    for d in transforms.dense:
        if d.transform == "standardize":
            n, mean, m2 = merger.stats.get(d.name, (0, 0.0, 0.0))
            std = math.sqrt(m2 / n) if n else 0.0
            d.mean, d.std = (mean if n else 0.0), (std if std > 0 else 1.0)


def _time_cuts(plan: Plan, raws: list[RawFile], workers: int, pool) -> tuple[Plan, int, float]:
    """Pass 0: the time of every readable row to scratch files, then the two cut points."""
    p0 = replace(plan, columns=(plan.time_column,))
    results = _run(p0, "time", _tasks(raws, None), workers, raws, "convert table: time cut points", None, pool)
    files = [r.times for r in sorted(results, key=lambda r: r.task.index) if r.time_count]
    n = sum(r.time_count for r in results)
    if n == 0:
        raise UserError(f"--time-column '{plan.time_column}': no row has a readable time")
    n_test = round(n * plan.ratios[2])
    n_valid = round(n * plan.ratios[1])
    test_from = select_kth(files, n - n_test) if n_test else None
    valid_from = select_kth(files, max(0, n - n_test - n_valid)) if n_valid else None
    for r in results:
        if r.times:
            Path(r.times).unlink(missing_ok=True)
    return replace(plan, cuts=(valid_from, test_from)), n, sum(r.cpu_s for r in results)
