"""Criteo Kaggle (train.txt) / Terabyte (day_0 .. day_23) TSV -> Parquet shards + schema.json.

    convert_criteo(["day_0.gz", "day_1.gz"], "data/criteo", table_size="mlperf", test_files=["day_1"])

Input lines: `label \\t I1..I13 \\t C1..C26`, no header; plain or gzip. Output columns:
    label    float32 0/1
    I1..I13  float32 log(1 + max(x, 0)); an empty field counts as 0 (the DLRM reference's transform)
    C1..C26  int64 ids in [0, table size):
             id 0 = empty field (reserved in both modes)
             hashing (default):  1 + (hash mod (size - 1)), `hash` = the 8 hex digits as an integer
             vocabulary (min_count=K): 1 = out of vocabulary (seen fewer than K times in the
             training split), 2.. = the kept values in ascending order; size = 2 + kept.
             The counting pass holds each feature's distinct training values in memory:
             for the Terabyte logs cap the hash space first (table_size, e.g. "mlperf")

Work is cut into fixed chunks of whole lines (convert_common.iter_chunks) grouped into tasks
that run in worker processes; each task writes its own Parquet file per split, so memory
is a few chunks plus one row group buffer per split and worker, whatever the input size.
The random split is drawn per line from a generator seeded by (seed, file index, chunk), so
the output does not depend on --workers. A malformed line stops the conversion with its
file and line (or is skipped and counted with on_error="skip"); output appears only when
everything succeeded. Like any multiprocessing user, a script calling convert_criteo with
workers > 1 needs an `if __name__ == "__main__":` guard, and its top-level imports are
repeated in each worker (keep torch out of them).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_common import (
    CHUNK_BYTES,
    ROW_GROUP_ROWS,
    SPLITS,
    SplitWriter,
    file_splits,
    is_gzip,
    iter_chunks,
    lines_before,
    merge_counts,
    run_tasks,
    staging,
    tally,
)
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature, write_schema

DENSE = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]
COLUMNS = ["label", *DENSE, *CATEGORICAL]
EMPTY_ID, OOV_ID = 0, 1
DEFAULT_TABLE_SIZE = 1_000_000
# The MLPerf DLRM (Criteo Terabyte) table sizes: min(cardinality, 40M) per feature, as in
# the MLPerf reference and TorchRec's DLRM example (--num_embeddings_per_feature). MLPerf
# got them by taking hash mod 40M and then a dictionary of the values seen; in hashing mode
# here they are the modulus instead, so features whose few values are not contiguous
# (C6 has 3) collide. For MLPerf's exact mapping use min_count=1 with this preset: values
# are then taken mod 40M before the dictionary, as MLPerf does.
MLPERF_SIZES = [40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956,
                405282, 10, 2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152,
                12973, 108, 36]
MLPERF_CAP = 40_000_000
# Most chunks in one task: bounds how much one worker's file covers, for load balance.
MAX_TASK_CHUNKS = 32

# Two hex characters (as a little-endian uint16) -> their byte; 256 = not hex.
_DIGITS = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
_HEX_PAIRS = np.full(1 << 16, 256, np.uint16)
for _a, _va in _DIGITS.items():
    for _b, _vb in _DIGITS.items():
        _HEX_PAIRS[_a | _b << 8] = _va << 4 | _vb

# Blocks of 1 MiB: the parser's working set then stays in cache (measured: about twice as
# fast as one block per 8 MiB chunk); columns come back in several Arrow chunks.
_READ = pcsv.ReadOptions(column_names=COLUMNS, use_threads=False, block_size=1 << 20)
# Fast path: the reader parses label and integers itself (empty -> null); the hashes stay
# strings. Diagnosis path (only for chunks that fail the fast path): everything as strings.
_TYPED = pcsv.ConvertOptions(
    column_types={"label": pa.int8(), **{c: pa.int64() for c in DENSE}, **{c: pa.string() for c in CATEGORICAL}},
    null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False)
_STRINGS = pcsv.ConvertOptions(column_types={c: pa.string() for c in COLUMNS}, strings_can_be_null=False)


def table_sizes(value: int | str | list[int] | None, cap: bool = False) -> list[int] | None:
    """--table-size: N, 'N1,...,N26' or 'mlperf' -> 26 sizes (cap=True: the vocabulary-mode
    modulus, where 'mlperf' means the uniform 40M cap)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "mlperf":
        return [MLPERF_CAP] * 26 if cap else list(MLPERF_SIZES)
    parts = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
    try:
        sizes = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise UserError(f"--table-size '{value}': expected N, 26 comma-separated sizes or 'mlperf'") from None
    if len(sizes) == 1:
        sizes *= 26
    if len(sizes) != 26 or min(sizes) < 2:
        raise UserError(f"--table-size '{value}': expected 1 or 26 sizes, each at least 2 "
                        f"(id {EMPTY_ID} is reserved for empty fields), got {len(sizes)}")
    return sizes


@dataclass(frozen=True)
class Plan:
    """What every task needs; picklable for the worker processes."""

    out_dir: str
    sizes: tuple[int, ...] | None  # hashing mode: table sizes
    cap: tuple[int, ...] | None  # vocabulary mode: hash mod cap before counting (None: no cap)
    vocab_dir: str | None  # vocabulary mode: C1.npy ... (sorted kept values)
    split: tuple[float, float, float]
    seed: int
    on_error: str
    row_group_rows: int
    chunk_bytes: int


@dataclass(frozen=True)
class Task:
    file_idx: int
    path: str
    gz: bool
    first: int  # first chunk
    last: int | None  # one past the last chunk; None = to the end of the file
    split: str | None  # all rows go to this split (split by file); None = random by ratio
    count_only: bool = False  # vocabulary pass: count training values, write nothing


@dataclass
class Result:
    task: Task
    rows: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    # First malformed line (on_error="raise"): (byte offset of the task start, line within the task, message).
    error: tuple[int, int, str] | None = None
    start_offset: int = 0
    counts: list[tuple[np.ndarray, np.ndarray]] | None = None
    cpu_s: float = 0.0  # CPU time the task used (its process's), for honest per-core rates


class _Malformed(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


# ---------------------------------------------------------------------------------------
# One chunk: bytes -> valid rows (label (n,), dense (13, n), raw hashes (26, n), -1 = empty)


def _hex_columns(cols: list[pa.ChunkedArray]) -> tuple[np.ndarray, np.ndarray | None]:
    """F columns of 8-hex-digit strings -> (values (F, n) int64, -1 where empty;
    (F, n) bool mask of malformed values, or None when all are fine).

    Arrow has no hex-to-int cast. The hashes are fixed-width, so the non-empty values of a
    column chunk lie back to back in its string data buffer: concatenating the buffers and
    one reshape give every hash as 4 byte pairs; a 65536-entry table maps each pair of hex
    characters to its byte and a big-endian view packs the 4 bytes, with no per-row work.
    """
    n = len(cols[0])
    lengths = np.empty((len(cols), n), np.int64)
    pieces = []  # (data bytes, offsets) per column chunk, in (feature, row) order
    for j, col in enumerate(cols):
        row = 0
        for arr in col.chunks:
            offsets = np.frombuffer(arr.buffers()[1], np.int32, len(arr) + 1, arr.offset * 4)
            buf = arr.buffers()[2]
            pieces.append((np.frombuffer(buf, np.uint8) if buf is not None else np.zeros(0, np.uint8), offsets))
            lengths[j, row:row + len(arr)] = np.diff(offsets)
            row += len(arr)
    well_sized = lengths == 8
    bad = None
    if (well_sized | (lengths == 0)).all():
        raw = np.concatenate([d[o[0]:o[-1]] for d, o in pieces])
    else:  # some value has another width: gather the 8-wide ones, flag the rest
        bad = (lengths != 0) & ~well_sized
        raw = np.concatenate([d[o[:-1][np.diff(o) == 8, None] + np.arange(8)].ravel() for d, o in pieces])
    pairs = _HEX_PAIRS[raw.view(np.uint16)].reshape(-1, 4)
    if len(pairs) and pairs.max() > 255:  # (a cheap whole-array test first: the usual case is clean)
        invalid = (pairs > 255).any(axis=1)
        bad = np.zeros((len(cols), n), bool) if bad is None else bad
        bad.ravel()[np.flatnonzero(well_sized)[invalid]] = True
        pairs[invalid] = 0
    values = np.full((len(cols), n), -1, np.int64)
    values[well_sized] = pairs.astype(np.uint8).view(">u4").ravel()
    return values, bad


def _columns(table: pa.Table, names: list[str]) -> list[pa.ChunkedArray]:
    return [table.column(c) for c in names]


def _csv(data: bytes, convert: pcsv.ConvertOptions, bad_lines: list[tuple[int, str]]) -> pa.Table:
    def wrong_width(row) -> str:
        bad_lines.append((row.number, f"expected 40 tab-separated fields, found {row.actual_columns}"))
        return "skip"

    parse = pcsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False, double_quote=False,
                              ignore_empty_lines=False, invalid_row_handler=wrong_width)
    return pcsv.read_csv(pa.py_buffer(data), read_options=_READ, parse_options=parse, convert_options=convert)


def _fast(data: bytes, bad_lines: list) -> tuple[pa.Table, np.ndarray] | None:
    """Typed parse of a chunk; None when any field is malformed (wrong widths are handled)."""
    try:
        table = _csv(data, _TYPED, bad_lines)
    except pa.ArrowInvalid:  # an integer field that does not parse
        return None
    label = table.column("label")
    if table.num_rows and (label.null_count or not 0 <= pc.min(label).as_py() <= pc.max(label).as_py() <= 1):
        return None
    hashes, bad = _hex_columns(_columns(table, CATEGORICAL))
    return None if bad is not None else (table, hashes)


def _checks(table: pa.Table) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """All-string table -> (raw hashes, [(column, bad-row mask)] for the columns with bad rows)."""
    checks = [("label", ~pc.is_in(table.column("label"), pa.array(["0", "1"])).to_numpy(zero_copy_only=False))]
    for c in DENSE:
        col = table.column(c)
        ok = pc.or_(pc.equal(col, ""), pc.match_substring_regex(col, r"^-?[0-9]{1,18}$"))
        checks.append((c, ~ok.to_numpy(zero_copy_only=False)))
    hashes, bad = _hex_columns(_columns(table, CATEGORICAL))
    checks += [(c, bad[j]) for j, c in enumerate(CATEGORICAL)] if bad is not None else []
    return hashes, [(c, m) for c, m in checks if m.any()]


def _message(table: pa.Table, column: str, row: int) -> str:
    value = table.column(column)[row].as_py()
    if column == "label":
        return f"label {value!r} is not 0 or 1"
    return f"{column} {value!r} is " + ("not an integer" if column in DENSE else "not an 8-digit hex hash")


def _decode(data: bytes, on_error: str, skipped: dict[str, int]):
    """-> (lines in the chunk, line of each kept row (1-based), label (n,), dense (13, n), hashes (26, n)).

    Raises _Malformed at the first bad line when on_error == "raise"; otherwise counts the
    skipped lines by reason in `skipped`.
    """
    bad_lines: list[tuple[int, str]] = []
    fast = _fast(data, bad_lines)
    if fast is None:  # slow path: every field as a string, to find which rows are wrong and why
        bad_lines.clear()
        table = _csv(data, _STRINGS, bad_lines)
        hashes, checks = _checks(table)
    else:
        (table, hashes), checks = fast, []
    # Every line is a row or a rejected row (empty lines are rows: ignore_empty_lines=False).
    n_lines = table.num_rows + len(bad_lines)
    lines = np.delete(np.arange(1, n_lines + 1), [b[0] - 1 for b in bad_lines])
    if on_error == "raise":
        first = bad_lines[:1]
        for column, mask in checks:
            i = int(np.argmax(mask))
            first.append((int(lines[i]), _message(table, column, i)))
        if first:
            raise _Malformed(*min(first))
    if bad_lines:
        skipped["wrong_field_count"] = skipped.get("wrong_field_count", 0) + len(bad_lines)
    if checks:
        bad = np.zeros(table.num_rows, bool)
        for column, mask in checks:  # each bad row is counted once, under its first bad column
            key = "bad_label" if column == "label" else "bad_dense" if column in DENSE else "bad_categorical"
            skipped[key] = skipped.get(key, 0) + int((mask & ~bad).sum())
            bad |= mask
        table, hashes, lines = table.filter(pa.array(~bad)), hashes[:, ~bad], lines[~bad]
    if fast is None:  # cast the (now valid) strings; an empty integer field is 0 anyway
        table = table.set_column(0, "label", pc.cast(table.column("label"), pa.int8()))
        for c in DENSE:
            col = table.column(c)
            col = pc.cast(pc.if_else(pc.equal(col, ""), pa.scalar("0"), col), pa.int64())
            table = table.set_column(table.schema.get_field_index(c), c, col)
    label = table.column("label").to_numpy(zero_copy_only=False).astype(np.float32)
    dense = np.empty((len(DENSE), table.num_rows), np.float32)  # feature-major: columns stay contiguous
    for j, c in enumerate(DENSE):
        x = pc.fill_null(table.column(c), 0).to_numpy(zero_copy_only=False)
        dense[j] = np.log1p(np.maximum(x, 0))
    return n_lines, lines, label, dense, hashes


# ---------------------------------------------------------------------------------------
# Ids, tasks


def _capped(plan: Plan, h: np.ndarray, j: int) -> np.ndarray:
    """Vocabulary mode: the hash space is first cut to cap[j] values (MLPerf: mod 40M)."""
    return h % plan.cap[j] if plan.cap else h


class _Ids:
    """Raw hashes (26, n), -1 = empty -> ids of feature j, per the plan's mode."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.vocab = ([np.load(Path(plan.vocab_dir) / f"{c}.npy", mmap_mode="r") for c in CATEGORICAL]
                      if plan.vocab_dir else None)

    def __call__(self, hashes: np.ndarray, j: int) -> np.ndarray:
        h = hashes[j]
        empty = h < 0
        if self.vocab is None:
            ids = 1 + h % (self.plan.sizes[j] - 1)
        else:
            vocab, r = self.vocab[j], _capped(self.plan, h, j)
            pos = np.searchsorted(vocab, r)
            found = vocab[np.minimum(pos, len(vocab) - 1)] == r if len(vocab) else np.zeros(len(r), bool)
            ids = np.where(found, pos + 2, OOV_ID)
        ids[empty] = EMPTY_ID
        return ids


def _output_schema() -> pa.Schema:
    return pa.schema([("label", pa.float32()), *[(c, pa.float32()) for c in DENSE],
                      *[(c, pa.int64()) for c in CATEGORICAL]])


def run_task(plan: Plan, task: Task) -> Result:
    """Convert (or count) one task's chunks; runs in a worker process."""
    result, cpu0 = Result(task), time.process_time()
    ids = _Ids(plan) if not task.count_only else None
    counts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in CATEGORICAL]
    writer = None if task.count_only else SplitWriter(
        Path(plan.out_dir), f"part-{task.file_idx:04d}-{task.first:06d}.parquet", _output_schema(),
        plan.row_group_rows)
    thresholds = np.cumsum(plan.split)[:-1]
    try:
        for chunk, offset, data in iter_chunks(task.path, task.first, task.last, task.gz, plan.chunk_bytes):
            if result.lines == 0:
                result.start_offset = offset
            try:
                n_lines, lines, label, dense, hashes = _decode(data, plan.on_error, result.skipped)
            except _Malformed as e:
                result.error = (result.start_offset, result.lines + e.line, e.message)
                return result
            if task.split is None:  # seeded per chunk, drawn per line: skipping a line moves no other
                u = np.random.default_rng([plan.seed, task.file_idx, chunk]).random(n_lines)
                split_idx = np.searchsorted(thresholds, u, side="right")[lines - 1]
            else:
                split_idx = np.full(len(lines), SPLITS.index(task.split))
            result.lines += n_lines
            if task.count_only:
                train = split_idx == 0
                for j in range(len(CATEGORICAL)):
                    h = hashes[j, train]
                    counts[j].append(np.unique(_capped(plan, h[h >= 0], j), return_counts=True))
                    if len(counts[j]) >= 16:  # keep memory to the distinct values, not the rows
                        counts[j] = [merge_counts(counts[j])]
                continue
            cols = [pa.array(label), *[pa.array(d) for d in dense],
                    *[pa.array(ids(hashes, j)) for j in range(len(CATEGORICAL))]]
            table = pa.Table.from_arrays(cols, schema=writer.schema)
            for s, name in enumerate(SPLITS):
                mask = split_idx == s
                if mask.all():
                    writer.write(name, table)
                elif mask.any():
                    writer.write(name, table.filter(pa.array(mask)))
        if task.count_only:
            result.counts = [merge_counts(c) for c in counts]
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        result.rows = dict(writer.rows)
    result.cpu_s = time.process_time() - cpu0
    return result


# ---------------------------------------------------------------------------------------
# The conversion


def _tasks(paths: list[Path], splits: list[str] | None, workers: int, chunk_bytes: int,
           count_only: bool = False) -> list[Task]:
    gz = [is_gzip(p) for p in paths]
    chunks = [1 if z else max(1, math.ceil(p.stat().st_size / chunk_bytes)) for p, z in zip(paths, gz)]
    # Enough tasks to keep every worker busy, none longer than MAX_TASK_CHUNKS chunks.
    per_task = max(1, min(MAX_TASK_CHUNKS, math.ceil(sum(chunks) / max(workers, 1))))
    tasks = []
    for i, (p, z, n) in enumerate(zip(paths, gz, chunks)):
        split = splits[i] if splits else None
        if count_only and split not in (None, "train"):
            continue  # the vocabulary comes from the training split only
        if z:
            tasks.append(Task(i, str(p), True, 0, None, split, count_only))
            continue
        for first in range(0, n, per_task):
            last = first + per_task if first + per_task < n else None  # the last task reads to EOF
            tasks.append(Task(i, str(p), False, first, last, split, count_only))
    return tasks


def _run(plan: Plan, tasks: list[Task], workers: int) -> list[Result]:
    results = run_tasks(partial(run_task, plan), tasks, workers, stop=lambda r: r.error is not None,
                        desc="convert criteo")
    errors = [r for r in results if r.error is not None]
    if errors:
        r = min(errors, key=lambda r: (r.task.file_idx, r.task.first))
        offset, line, message = r.error
        line += lines_before(r.task.path, offset, r.task.gz)
        raise UserError(f"{r.task.path}:{line}: {message} "
                        "(pass --on-error skip to skip and count malformed lines)")
    return results


def _vocabulary(plan: Plan, paths, splits, workers, min_count: int,
                vocab_dir: Path) -> tuple[list[int], float]:
    """Counting pass over the training rows; saves each feature's kept values.
    Returns the table sizes and the CPU seconds the pass took."""
    results = _run(plan, _tasks(paths, splits, workers, plan.chunk_bytes, count_only=True), workers)
    vocab_dir.mkdir()
    sizes = []
    for j, c in enumerate(CATEGORICAL):
        values, counts = merge_counts([r.counts[j] for r in results])
        kept = values[counts >= min_count]
        np.save(vocab_dir / f"{c}.npy", kept)
        sizes.append(len(kept) + 2)  # + empty and out-of-vocabulary
    return sizes, sum(r.cpu_s for r in results)


def convert_criteo(inputs: list[str | os.PathLike], out: str | os.PathLike,
                   table_size: int | str | list[int] | None = None, min_count: int | None = None,
                   split: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                   valid_files: Sequence[str] = (), test_files: Sequence[str] = (), workers: int | None = None,
                   on_error: str = "raise", overwrite: bool = False, row_group_rows: int = ROW_GROUP_ROWS,
                   chunk_bytes: int = CHUNK_BYTES) -> DatasetSchema:
    """Convert Criteo TSV files into `out`; see the module docstring. With valid_files /
    test_files the split is by file (other files are train) and `split` is not used."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise UserError("no input files given")
    for p in paths:
        if not p.is_file():
            raise UserError(f"input file '{p}' does not exist")
    if on_error not in ("raise", "skip"):
        raise UserError(f"--on-error must be 'raise' or 'skip', got '{on_error}'")
    if min_count is not None and min_count < 1:
        raise UserError(f"--min-count must be at least 1, got {min_count}")
    workers = max(1, workers or os.cpu_count() or 1)
    splits = file_splits(paths, valid_files, test_files)
    vocab_mode = min_count is not None
    sizes = None if vocab_mode else table_sizes(table_size if table_size is not None else DEFAULT_TABLE_SIZE)
    with staging(out, overwrite) as tmp:
        plan = Plan(str(tmp), tuple(sizes) if sizes else None,
                    tuple(table_sizes(table_size, cap=True)) if vocab_mode and table_size is not None else None,
                    None, tuple(split), seed, on_error, row_group_rows, chunk_bytes)
        count_cpu = 0.0
        if vocab_mode:
            vocab_dir = tmp / "vocab"
            sizes, count_cpu = _vocabulary(plan, paths, splits, workers, min_count, vocab_dir)
            plan = replace(plan, vocab_dir=str(vocab_dir))
        results = _run(plan, _tasks(paths, splits, workers, chunk_bytes), workers)
        rows, skipped = tally(results)
        if not sum(rows.values()):
            raise UserError(f"no rows converted from {', '.join(map(str, paths))}")
        schema = DatasetSchema(label="label", dense=list(DENSE),
                               sparse=[SparseFeature(c, n) for c, n in zip(CATEGORICAL, sizes)],
                               splits={s: n for s, n in rows.items() if n})
        schema.source = {
            "converter": "shardrec convert criteo", "inputs": [str(p.resolve()) for p in paths],
            "mode": "vocabulary" if vocab_mode else "hash", "table_size": table_size, "min_count": min_count,
            "ids": ("0 = empty, 1 = out of vocabulary, 2.. = kept values in ascending order (vocab/C*.npy)"
                    if vocab_mode else "0 = empty, 1 + (hash mod (size - 1))"),
            "dense": "log(1 + max(x, 0)), empty = 0",
            "split": ({"by_file": {s: [p.name for p, f in zip(paths, splits) if f == s] for s in SPLITS}}
                      if splits else {"ratio": list(split), "seed": seed}),
            "lines": sum(r.lines for r in results), "on_error": on_error, "workers": workers,
            "worker_cpu_s": round(sum(r.cpu_s for r in results) + count_cpu, 3),
            "skipped_lines": sum(skipped.values()), "skipped": skipped,
        }
        write_schema(tmp, schema)
    return schema
