"""How `shardrec convert table` turns raw rows into model inputs, saved with the data set so
that rows seen later (predictions) are encoded exactly the same way.

    transforms = TableTransforms.load("data/clicks")      # DIR/transforms.json + DIR/vocab/
    for batch in transforms.read(["new_rows.csv"]):       # raw rows, input order
        table = transforms.apply(batch)                   # the columns the converter writes

`apply` returns, in input order: the label (float32 0/1) when the raw rows have the label
column, the dense columns (float32), the sparse columns (int64, or list<int64> for
multi-hot) and the kept columns unchanged. The converter encodes with the same code: its
writing pass calls `apply` on the rows its first pass decoded (`canonical`), or, with
nothing to learn first, `decode` + `encode_decoded` (the two halves of `apply`) on the
input, so training data and prediction inputs share one code path.

Rules (what DIR/transforms.json records):
  label    a column of 0/1 or true/false; or, with a threshold X, 1.0 where value >= X; or,
           with positive values, 1.0 where the value (as text, spaces trimmed) is one of them.
  dense    a number per row. Missing (empty, null, NaN, NA, N/A, NULL, None) -> `fill`,
           written as is (the fill is in output units). Transforms on present values:
           none; log1p = log(1 + max(x, 0)) (negative values clamp at 0);
           standardize = (x - mean) / std with the train split's mean and population std
           (std 1 when the column is constant). Infinite values are malformed.
  sparse   any type; the value is read as text (123 -> "123", true -> "true") and mapped:
           vocabulary: id 0 = missing or out of vocabulary, 1.. = the kept values of the
           train split by descending count (ties: ascending value), vocab/<col>.parquet
           row k holding id k + 1;  hashing: id 0 = missing, 1 + (h mod (buckets - 1)).
  multi    a string split by the column's separator (or a list column); empty tokens are
           dropped; every token goes through the column's vocabulary or hash; a missing
           value is an empty list.
  h        `hash_strings`: a 64-bit hash of the value's UTF-8 bytes, computed with numpy
           uint64 arithmetic (so every machine and run agrees; Python's hash() does not).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_common import CHUNK_BYTES, is_gzip, iter_chunks, lines_before

TRANSFORMS_FILE = "transforms.json"
TRANSFORMS_FORMAT = "shardrec-table-transforms"
TRANSFORMS_VERSION = 1
VOCAB_DIR = "vocab"
HASH_NAME = "shardrec-strhash64-v1"
FORMATS = ("csv", "tsv", "parquet", "jsonl")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
              ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
DENSE_TRANSFORMS = ("none", "log1p", "standardize")
MISSING_ID = 0
# Dense text meaning "no value" (compared after trimming, case-insensitive), besides empty.
_DENSE_MISSING = ["", "na", "n/a", "nan", "null", "none"]
_FLOAT32_MAX = float(np.finfo(np.float32).max)
PARQUET_BATCH_ROWS = 65536
# The remedy a text file that is not UTF-8 is told (`convert interactions` offers --encoding instead).
NOT_UTF8_HINT = "re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8"

# ---------------------------------------------------------------------------------------
# Hashing: stable 64-bit hashes of strings and of row positions, in numpy.

_C1, _C2, _S33 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53), np.uint64(33)
_GOLDEN = 0x9E3779B97F4A7C15
_LEN_MULT = np.uint64(0xD6E8FEB86659FD93)
_MASKS = np.array([0] + [(1 << (8 * r)) - 1 for r in range(1, 8)] + [(1 << 64) - 1], dtype=np.uint64)


def _fmix(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer (a bijection with full avalanche), in place."""
    x ^= x >> _S33
    x *= _C1
    x ^= x >> _S33
    x *= _C2
    x ^= x >> _S33
    return x


def _offsets(arr: pa.Array) -> np.ndarray:
    wide = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    dtype = np.int64 if wide else np.int32
    return np.frombuffer(arr.buffers()[1], dtype, len(arr) + 1, arr.offset * np.dtype(dtype).itemsize)


def hash_strings(arr: pa.Array) -> np.ndarray:
    """uint64 hash of each value's bytes (string or binary Array; a null hashes as "").

    Definition (shardrec-strhash64-v1): cut the bytes into 8-byte little-endian words
    w_0, w_1, ... (the last zero-padded); h = fmix(sum_k fmix(w_k + (k + 1) * 0x9E3779B97F4A7C15)
    xor len * 0xD6E8FEB86659FD93) with wrap-around uint64 arithmetic, fmix = MurmurHash3's
    64-bit finalizer. Equal-length values that differ in one word never collide.
    """
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64)
    off = _offsets(arr).astype(np.int64)
    lo, hi = int(off[0]), int(off[-1])
    data = np.zeros(hi - lo + 8, np.uint8)  # 8 spare bytes: every 8-byte load stays inside
    buf = arr.buffers()[2]
    if buf is not None and hi > lo:
        data[:hi - lo] = np.frombuffer(buf, np.uint8, hi - lo, lo)
    starts, lens = off[:-1] - lo, np.diff(off)
    # Unaligned 8-byte words at every byte offset (a strided view, no copy).
    words = np.ndarray((len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))
    acc = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        acc += _fmix((words[starts] & _MASKS[np.minimum(lens, 8)]) + np.uint64(_GOLDEN))
        idx, k = np.flatnonzero(lens > 8), 1
        while len(idx):  # only the values longer than 8 k bytes take part in round k
            rem = lens[idx] - 8 * k
            w = words[starts[idx] + 8 * k] & _MASKS[np.minimum(rem, 8)]
            acc[idx] += _fmix(w + np.uint64(((k + 1) * _GOLDEN) & (2**64 - 1)))
            idx, k = idx[rem > 8], k + 1
        return _fmix(acc ^ (lens.astype(np.uint64) * _LEN_MULT))


def bucket_ids(hashes: np.ndarray, buckets: int) -> np.ndarray:
    """Hash -> id in [1, buckets): id 0 stays for missing values."""
    return (hashes % np.uint64(buckets - 1)).astype(np.int64) + 1


def row_uniform(seed: int, file_index: int, positions: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) number per row from a hash of (seed, file index, the row's position),
    the same in every pass and for any number of workers."""
    with np.errstate(over="ignore"):
        key = _fmix(np.array([seed & (2**64 - 1)], np.uint64) * np.uint64(_GOLDEN) + np.uint64(file_index))
        h = _fmix(_fmix(positions.astype(np.uint64) + key))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class Vocabulary:
    """Values -> ids (value k of `values` has id k + 1; anything else 0), looked up through
    an open-addressing table of the values' 64-bit hashes, with every hit checked against
    the value itself (so a hash collision can never map a value to the wrong id)."""

    def __init__(self, values: pa.Array):
        self.values = _as_string(values)
        h = hash_strings(self.values)
        n = len(h)
        size = 1 << max(4, (3 * n).bit_length())  # load factor 1/6 .. 1/3
        self.mask = np.uint64(size - 1)
        self.keys = np.zeros(size, np.uint64)
        self.ids = np.zeros(size, np.int64)
        pos = (h & self.mask).astype(np.int64)
        pending = np.arange(n)
        while len(pending):  # linear probing, one round per probe step, vectorized
            p = pos[pending]
            free = self.ids[p] == 0
            slots, first = np.unique(p[free], return_index=True)
            winners = pending[free][first]
            self.keys[slots], self.ids[slots] = h[winners], winners + 1
            pending = np.setdiff1d(pending, winners, assume_unique=True)
            pos[pending] = (pos[pending] + 1) & (size - 1)

    def __len__(self) -> int:
        return len(self.values)

    def lookup(self, strings: pa.Array) -> np.ndarray:
        """ids of non-null strings (0 for values not in the vocabulary)."""
        strings = _as_string(strings)
        h = hash_strings(strings)
        mask = int(self.mask)
        pos = (h & self.mask).astype(np.int64)
        cand = np.zeros(len(h), np.int64)  # the id whose hash matches, 0 = none
        active = np.arange(len(h))
        while len(active):  # probe until an equal hash or an empty slot
            p = pos[active]
            tid = self.ids[p]
            hit = (tid != 0) & (self.keys[p] == h[active])
            cand[active[hit]] = tid[hit]
            active = active[(tid != 0) & ~hit]
            pos[active] = (pos[active] + 1) & mask
        rows = np.flatnonzero(cand)
        out = np.zeros(len(h), np.int64)
        if len(rows):  # one check of every hash match against the value itself
            same = pc.equal(strings.take(pa.array(rows)), self.values.take(pa.array(cand[rows] - 1)))
            same = same.to_numpy(zero_copy_only=False)
            out[rows[same]] = cand[rows[same]]
            for r in rows[~same]:  # a 64-bit hash collision (practically never): probe on, value by value
                p, value = (int(pos[r]) + 1) & mask, strings[int(r)].as_py()
                while self.ids[p]:
                    if self.keys[p] == h[r] and self.values[int(self.ids[p]) - 1].as_py() == value:
                        out[r] = self.ids[p]
                        break
                    p = (p + 1) & mask
        return out


# ---------------------------------------------------------------------------------------
# Reading raw rows: CSV/TSV and JSON lines in chunks of whole lines, Parquet by row groups.


@dataclass
class InputOptions:
    """How input files are read: `format` forces one (else from each file's extension),
    `delimiter` overrides the format's (',' for csv, tab for tsv), `columns` names the
    fields of headerless CSV/TSV files (header=False). `newlines_in_values`: quoted CSV
    fields may hold line breaks (review texts, addresses); such a file is read by one task,
    in order, cutting pieces only at line breaks outside quotes."""

    format: str | None = None
    delimiter: str | None = None
    header: bool = True
    columns: list[str] | None = None
    newlines_in_values: bool = False


def detect_format(path: str | os.PathLike, forced: str | None = None) -> str:
    """csv, tsv, parquet or jsonl, from --format or the extension (a .gz suffix is skipped)."""
    if forced:
        if forced not in FORMATS:
            raise UserError(f"--format '{forced}': expected one of {', '.join(FORMATS)}")
        return forced
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    ext = Path(name).suffix
    if ext not in EXTENSIONS:
        raise UserError(f"{path}: cannot tell the format from the extension '{ext or '(none)'}' "
                        f"(known: {', '.join(EXTENSIONS)}, optionally .gz); pass --format csv|tsv|parquet|jsonl")
    return EXTENSIONS[ext]


@dataclass
class RawChunk:
    """Rows of one chunk: `table` (only the columns asked for), `positions` (each row's byte
    offset in the file, or its row number for Parquet, 0-based) and the rows that could not
    be read at all: (position, reason, message)."""

    table: pa.Table
    positions: np.ndarray
    bad: list[tuple[int, str, str]] = field(default_factory=list)


def _line_starts(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start offset and length (without the newline) of every line of `data`."""
    buf = np.frombuffer(data, np.uint8)
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], nl + 1]).astype(np.int64)
    ends = np.concatenate([nl, [len(buf)]]).astype(np.int64)
    if len(starts) and starts[-1] == len(buf):
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends - starts


def _record_starts(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Like _line_starts, for CSV whose quoted fields may hold line breaks: a line break ends
    a record only outside quotes, i.e. after an even number of '"' (a doubled "" inside a
    quoted field keeps the count even). `data` starts at a record start."""
    buf = np.frombuffer(data, np.uint8)
    nl = np.flatnonzero(buf == 10)
    quotes_before = np.cumsum(buf == 34)[nl] if len(nl) else np.zeros(0, np.int64)
    ends_at = nl[quotes_before % 2 == 0]
    starts = np.concatenate([[0], ends_at + 1]).astype(np.int64)
    ends = np.concatenate([ends_at, [len(buf)]]).astype(np.int64)
    if len(starts) and starts[-1] == len(buf):
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends - starts


def _complete_records(data: bytes) -> int:
    """Bytes of `data` up to the end of its last record: after its last line break outside quotes."""
    starts, _ = _record_starts(data)
    buf = np.frombuffer(data, np.uint8)
    if len(buf) and buf[-1] == 10 and np.count_nonzero(buf == 34) % 2 == 0:
        return len(buf)
    return int(starts[-1]) if len(starts) else 0


def _blank(data: bytes, starts: np.ndarray, lengths: np.ndarray, whitespace: bool) -> np.ndarray:
    """Lines that are empty (or only '\\r'; with `whitespace`, only whitespace)."""
    buf = np.frombuffer(data, np.uint8)
    blank = lengths == 0
    one = np.flatnonzero(lengths == 1)
    blank[one] = buf[starts[one]] == 13
    if whitespace:  # lines that start with whitespace may be nothing else
        first = np.zeros(len(starts), np.uint8)
        some = lengths > 0
        first[some] = buf[starts[some]]
        for i in np.flatnonzero(~blank & np.isin(first, [9, 11, 12, 13, 32])):
            blank[i] = not data[starts[i]:starts[i] + lengths[i]].strip()
    return blank


class RawFile:
    """One input file: its format, compression and column names; `chunks()` reads its rows.

    Text files are read in fixed chunks of whole lines (convert_common.iter_chunks: chunk j
    holds the lines starting in bytes [j*C, (j+1)*C)), so a converter can hand chunk ranges
    to worker processes; a .gz file is read from its start. A quoted CSV field may not hold
    a line break (chunks are cut at line ends).
    """

    def __init__(self, path: str | os.PathLike, options: InputOptions, chunk_bytes: int = CHUNK_BYTES):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"input file '{self.path}' does not exist")
        self.format = detect_format(self.path, options.format)
        self.options, self.chunk_bytes = options, chunk_bytes
        self.gz = self.format != "parquet" and is_gzip(self.path)
        self.header_bytes = 0  # length of the header line (CSV/TSV with a header)
        if self.format in ("csv", "tsv"):
            delim = options.delimiter or ("," if self.format == "csv" else "\t")
            if len(delim) != 1:
                raise UserError(f"--delimiter {delim!r}: expected a single character")
            self.delimiter = delim
            self.columns = self._csv_columns()
        elif self.format == "parquet":
            try:
                self.parquet = pq.ParquetFile(self.path)
            except (pa.ArrowInvalid, OSError) as e:
                raise UserError(f"{self.path}: not a readable Parquet file ({e})") from None
            self.columns = self.parquet.schema_arrow.names
        else:
            first = next(iter_chunks(self.path, 0, 1, self.gz, chunk_bytes), None)
            table = self._json(first[2], 0, None).table if first else pa.table({})
            self.columns = table.column_names

    def state(self) -> dict:
        """What `restore` needs to read chunks without inspecting the file again."""
        return {"path": str(self.path), "options": asdict(self.options), "chunk_bytes": self.chunk_bytes,
                "format": self.format, "gz": self.gz, "columns": list(self.columns),
                "header_bytes": self.header_bytes, "delimiter": getattr(self, "delimiter", None)}

    @classmethod
    def restore(cls, state: dict) -> RawFile:
        raw = cls.__new__(cls)
        raw.path, raw.options = Path(state["path"]), InputOptions(**state["options"])
        raw.chunk_bytes, raw.format, raw.gz = state["chunk_bytes"], state["format"], state["gz"]
        raw.columns, raw.header_bytes, raw.delimiter = state["columns"], state["header_bytes"], state["delimiter"]
        if raw.format == "parquet":
            try:
                raw.parquet = pq.ParquetFile(raw.path)
            except (pa.ArrowInvalid, OSError) as e:
                raise UserError(f"{raw.path}: not a readable Parquet file ({e})") from None
        return raw

    # -- columns

    def _csv_columns(self) -> list[str]:
        if not self.options.header:
            if not self.options.columns:
                raise UserError(f"{self.path}: --no-header needs --columns naming the fields (e.g. --columns label,user,item)")
            return list(self.options.columns)
        first = next(iter_chunks(self.path, 0, 1, self.gz, min(self.chunk_bytes, 1 << 16)), None)
        if first is None:
            raise UserError(f"{self.path}: the file is empty (expected a header line)")
        line = first[2].split(b"\n", 1)[0]
        self.header_bytes = len(line) + 1
        text = line.rstrip(b"\r")
        if text.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark (Excel)
            text = text[3:]
        try:
            row = pcsv.read_csv(pa.py_buffer(text + b"\n"),
                                read_options=pcsv.ReadOptions(autogenerate_column_names=True, use_threads=False),
                                parse_options=self._parse_options(None),
                                convert_options=pcsv.ConvertOptions(strings_can_be_null=False, column_types={}))
        except pa.ArrowInvalid as e:
            raise UserError(f"{self.path}:1: cannot read the header line ({e})") from None
        names = [str(row.column(i)[0].as_py()) for i in range(row.num_columns)] if row.num_rows else []
        if not names or names == [""]:
            raise UserError(f"{self.path}:1: the header line is empty")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UserError(f"{self.path}:1: the header names column(s) {', '.join(map(repr, dup))} more than once")
        if self.options.columns and list(self.options.columns) != names:
            raise UserError(f"{self.path}: --columns is for headerless files (--no-header); this file's header "
                            f"names {', '.join(names)}")
        return names

    def check_columns(self, wanted: dict[str, str]) -> None:
        """`wanted`: column -> role (for the message); every one must be in the file."""
        for name, role in wanted.items():
            if name not in self.columns:
                raise UserError(f"{self.path}: no column '{name}' ({role}); the file has columns: "
                                f"{', '.join(self.columns) or '(none)'}")

    # -- chunks

    def num_chunks(self) -> int:
        """Text: chunks of chunk_bytes (one for .gz); Parquet: row groups."""
        if self.format == "parquet":
            return self.parquet.metadata.num_row_groups
        if self.gz or self._multiline:
            return 1
        return max(1, -(-self.path.stat().st_size // self.chunk_bytes))

    @property
    def _multiline(self) -> bool:
        return self.options.newlines_in_values and self.format in ("csv", "tsv")

    def chunks(self, first: int = 0, last: int | None = None, columns: Sequence[str] | None = None,
               numeric: Sequence[str] = ()) -> Iterator[RawChunk]:
        """Rows of chunks first..last-1 (last None: to the end), only `columns` (None: all).
        CSV/TSV fields are strings, except that the `numeric` columns are parsed as float64
        by the CSV reader when every field of the chunk is a plain number (faster than
        strings and a cast; the same parser, so the same values); otherwise they stay
        strings for the careful path of `_numbers`."""
        if self.format == "parquet":
            yield from self._parquet(first, last, columns)
            return
        if self.gz or self._multiline:
            first, last = 0, None
        carry, carry_offset = b"", 0  # a record cut by a piece's end (multi-line fields)
        for j, offset, data in iter_chunks(self.path, first, last, self.gz, self.chunk_bytes):
            if j == 0 and self.header_bytes:
                data, offset = data[self.header_bytes:], offset + self.header_bytes
            if self._multiline:
                if carry:
                    data, offset = carry + data, carry_offset
                cut = _complete_records(data)
                carry, carry_offset, data = data[cut:], offset + cut, data[:cut]
            if not data:
                continue
            if self.format == "jsonl":
                yield self._json(data, offset, columns)
            else:
                yield self._csv(data, offset, columns, numeric)
        if carry:  # the last record (no final line break, or an unclosed quote: the parser says)
            yield self._csv(carry, carry_offset, columns, numeric)

    def _parse_options(self, handler) -> pcsv.ParseOptions:
        return pcsv.ParseOptions(delimiter=self.delimiter, invalid_row_handler=handler, ignore_empty_lines=True,
                                 newlines_in_values=self._multiline)

    def _csv(self, data: bytes, base: int, columns: Sequence[str] | None, numeric: Sequence[str] = ()) -> RawChunk:
        starts, lengths = (_record_starts if self._multiline else _line_starts)(data)
        rows = starts[~_blank(data, starts, lengths, whitespace=False)]
        invalid: list[tuple[int, int]] = []

        def wrong_width(row) -> str:
            invalid.append((row.number, row.actual_columns))
            return "skip"

        include = list(self.columns if columns is None else columns)
        # Arrow checks every string field for valid UTF-8 (about an eighth of the parse);
        # bytes below 128 are valid UTF-8 whatever follows, and bytes.isascii() checks a chunk
        # in well under a millisecond, so the parser's own check runs only where it can fail.
        check_utf8 = not data.isascii()
        types = {c: pa.string() for c in include}
        fast = {**types, **{c: pa.float64() for c in numeric if c in types}}
        attempts = [fast, types] if fast != types else [types]
        for column_types in attempts:
            invalid.clear()
            try:
                table = pcsv.read_csv(
                    pa.py_buffer(data),
                    read_options=pcsv.ReadOptions(column_names=self.columns, use_threads=False, block_size=max(len(data) + 1, 1 << 20)),
                    parse_options=self._parse_options(wrong_width),
                    convert_options=pcsv.ConvertOptions(include_columns=include, column_types=column_types,
                                                        null_values=[""], strings_can_be_null=True,
                                                        quoted_strings_can_be_null=True, check_utf8=check_utf8))
                break
            except pa.ArrowInvalid as e:
                if column_types is not attempts[-1]:
                    continue  # a numeric column holds something else: every field as a string
                # Arrow's "Row #N" counts the non-blank lines of `data` from 1, the rows
                # that wrong_width skips included; "column #K" indexes the file's columns.
                m = re.search(r"column #(\d+): Row #(\d+): CSV conversion error to string: invalid UTF8", str(e))
                if m and int(m.group(1)) < len(self.columns) and 0 < int(m.group(2)) <= len(rows):
                    raise UserError(f"{where_row(self, int(base + rows[int(m.group(2)) - 1]))}: column "
                                    f"'{self.columns[int(m.group(1))]}' is not valid UTF-8 text ({NOT_UTF8_HINT})"
                                    ) from None
                raise UserError(f"{self.path}: cannot parse the CSV near byte {base} ({e})") from None
        if table.num_rows + len(invalid) != len(rows):
            raise UserError(f"{self.path}: a quoted field holds a line break somewhere in bytes {base}.."
                            f"{base + len(data)}: pass --newlines-in-values (the file is then read by one "
                            "task, cutting only at line breaks outside quotes)")
        bad_idx = np.array([number - 1 for number, _ in invalid], np.int64)
        bad = [(int(base + rows[i]), "wrong_field_count", f"expected {len(self.columns)} fields, found {width}")
               for i, (_, width) in zip(bad_idx, invalid)]
        keep = np.delete(np.arange(len(rows)), bad_idx)
        return RawChunk(table, base + rows[keep], bad)

    def _json(self, data: bytes, base: int, columns: Sequence[str] | None) -> RawChunk:
        """JSON lines: one object per line. A line that is not a JSON object, or whose value
        types differ from the earlier lines' (a number where they have text), is bad."""
        starts, lengths = _line_starts(data)
        nonblank = ~_blank(data, starts, lengths, whitespace=True)
        lines, ends = starts[nonblank], (starts + lengths)[nonblank]

        def joined() -> bytes:  # the remaining lines, so that Arrow's "row N" is lines[N]
            return b"".join(data[a:b] + b"\n" for a, b in zip(lines.tolist(), ends.tolist()))

        bad: list[tuple[int, str, str]] = []
        body, rounds = (data if nonblank.all() else joined()), 0
        while len(lines):
            try:
                table = pjson.read_json(pa.py_buffer(body), read_options=pjson.ReadOptions(
                    use_threads=False, block_size=max(len(body) + 1, 1 << 20)))
                if table.num_rows == len(lines):
                    break
                message = f"{table.num_rows} rows read from {len(lines)} lines"  # find bad lines by hand
            except pa.ArrowInvalid as e:
                message = str(e)
            rounds += 1
            m = re.search(r"in row (\d+)", message)
            if m and int(m.group(1)) < len(lines) and rounds <= 8:
                drop = {int(m.group(1)): message}
            else:  # many bad lines: check every line with Python's json at once
                drop = {i: "not a JSON object" for i, (a, b) in enumerate(zip(lines.tolist(), ends.tolist()))
                        if not _json_object(data[a:b])}
                if not drop:
                    raise UserError(f"{self.path}: cannot read JSON lines in bytes {base}..{base + len(data)} "
                                    f"({message})")
            for i, msg in drop.items():
                text = re.sub(r"^JSON parse error: |\s*in row \d+$", "", msg)
                text = re.sub(r"Column\(/?([^)]*)\)", r"column '\1'", text)
                text = re.sub(r"column '' changed from object to \w+", "the line is not an object", text)
                bad.append((int(base + lines[i]), "bad_json", f"not a valid JSON object line ({text})"))
            lines, ends = np.delete(lines, list(drop)), np.delete(ends, list(drop))
            body = joined()
        else:
            table = pa.table({})
        bad.sort()
        n = len(lines)
        if columns is not None:  # keys absent from every line of the chunk: all missing
            table = pa.table({c: table.column(c) if c in table.column_names else pa.nulls(n) for c in columns})
        return RawChunk(table, base + lines, bad)

    def _parquet(self, first: int, last: int | None, columns: Sequence[str] | None) -> Iterator[RawChunk]:
        meta = self.parquet.metadata
        last = meta.num_row_groups if last is None else min(last, meta.num_row_groups)
        start = sum(meta.row_group(i).num_rows for i in range(first))
        for g in range(first, last):
            try:
                for batch in self.parquet.iter_batches(PARQUET_BATCH_ROWS, row_groups=[g],
                                                       columns=None if columns is None else list(columns),
                                                       use_threads=False):
                    yield RawChunk(pa.Table.from_batches([batch]), np.arange(start, start + batch.num_rows))
                    start += batch.num_rows
            except (OSError, pa.ArrowException) as e:
                raise UserError(f"{self.path}: row group {g} cannot be read ({e})") from None


def _json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------
# Column roles and the saved transforms.


@dataclass
class DenseColumn:
    name: str
    transform: str = "none"  # none | log1p | standardize
    fill: float = 0.0  # written for missing values (output units)
    mean: float | None = None  # standardize: train split statistics
    std: float | None = None


@dataclass
class SparseColumn:
    name: str
    multi_hot: bool = False
    separator: str | None = None  # multi-hot string columns: the token separator
    hash_buckets: int | None = None  # hashing mode; None = vocabulary mode
    min_count: int = 1
    max_vocab: int | None = None
    vocab_size: int | None = None  # vocabulary mode, once built
    vocab_file: str | None = None  # relative to the data set folder

    @property
    def num_embeddings(self) -> int:
        if self.hash_buckets is not None:
            return self.hash_buckets
        if self.vocab_size is None:
            raise ValueError(f"sparse column '{self.name}': vocabulary not built yet")
        return self.vocab_size + 1


@dataclass
class KeptColumn:
    name: str
    type: str = "string"  # the Arrow type it is written with (str(pa.DataType))


def _arrow_type(text: str) -> pa.DataType:
    simple = {"string": pa.string(), "large_string": pa.large_string(), "int64": pa.int64(), "int32": pa.int32(),
              "int16": pa.int16(), "int8": pa.int8(), "uint64": pa.uint64(), "uint32": pa.uint32(),
              "uint16": pa.uint16(), "uint8": pa.uint8(), "double": pa.float64(), "float": pa.float32(),
              "bool": pa.bool_(), "binary": pa.binary(), "date32[day]": pa.date32(), "null": pa.null()}
    if text in simple:
        return simple[text]
    m = re.fullmatch(r"timestamp\[(s|ms|us|ns)(?:, tz=(.+))?\]", text)
    if m:
        return pa.timestamp(m.group(1), m.group(2))
    raise UserError(f"transforms.json: kept column type '{text}' is not supported")


@dataclass
class Check:
    """Rows that failed one check: `mask` (bool per row), the reason they are counted under,
    and `message(row)` describing the row's problem."""

    reason: str
    mask: np.ndarray
    message: Callable[[int], str]


@dataclass
class Decoded:
    """Raw rows read into canonical form (what the statistics pass and `encode` share):
    label float32 (None without a label column), dense float64 (NaN = missing), sparse
    values as dictionary<int32, string> arrays (null = missing; multi-hot: per-row offsets
    and the flat tokens as strings), kept columns as they came, and the failed checks."""

    n: int
    label: np.ndarray | None = None
    raw_label: np.ndarray | pa.Array | None = None  # threshold: the value (float64); positive: the text
    dense: dict[str, np.ndarray] = field(default_factory=dict)
    sparse: dict[str, pa.Array] = field(default_factory=dict)
    multi: dict[str, tuple[np.ndarray, pa.Array]] = field(default_factory=dict)
    keep: dict[str, pa.Array] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    def bad(self) -> np.ndarray:
        out = np.zeros(self.n, bool)
        for c in self.checks:
            out |= c.mask
        return out

    def first_error(self) -> tuple[int, str] | None:
        """(row, message) of the first bad row; the row's first failing check names it."""
        best = None
        for c in self.checks:
            if c.mask.any():
                r = int(np.argmax(c.mask))
                if best is None or r < best[0]:
                    best = (r, c.message(r))
        return best

    def counts(self) -> dict[str, int]:
        """Bad rows by reason, each row once (under its first failing check)."""
        seen, out = np.zeros(self.n, bool), {}
        for c in self.checks:
            k = int((c.mask & ~seen).sum())
            if k:
                out[c.reason] = out.get(c.reason, 0) + k
            seen |= c.mask
        return out


def _as_string(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Any column -> a string Array (ints "123", bools "true"; null stays null)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = (pa.concat_arrays([_as_string(c) for c in arr.chunks]) if arr.num_chunks > 1
               else arr.chunk(0) if arr.num_chunks else pa.array([], arr.type))
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if arr.type == pa.string():
        return arr
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.string())
    return pc.cast(arr, pa.string())


def _categories(arr: pa.Array | pa.ChunkedArray) -> pa.DictionaryArray:
    """Any column -> dictionary<int32, string> (null = missing): the distinct values are
    then mapped to ids once each. A dictionary column of strings is used as it is."""
    if isinstance(arr, pa.ChunkedArray) and arr.num_chunks == 1:
        arr = arr.chunk(0)
    if (isinstance(arr, pa.Array) and pa.types.is_dictionary(arr.type) and arr.type.value_type == pa.string()
            and arr.type.index_type == pa.int32()):
        return arr
    return pc.dictionary_encode(_as_string(arr))


def _value(arr: pa.Array | pa.ChunkedArray, row: int) -> str:
    v = arr[row].as_py()
    return "missing" if v is None else repr(v)


def _bisect_bad(arr: pa.Array, fn: Callable[[pa.Array], object]) -> np.ndarray:
    """Rows of `arr` on which fn (a vectorized conversion) fails, found by bisection:
    fn is called O(bad rows x log n) times instead of once per row."""
    bad = np.zeros(len(arr), bool)

    def walk(lo: int, hi: int) -> None:
        try:
            fn(arr.slice(lo, hi - lo))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            if hi - lo == 1:
                bad[lo] = True
                return
            mid = (lo + hi) // 2
            walk(lo, mid)
            walk(mid, hi)

    if len(arr):
        walk(0, len(arr))
    return bad


def _numbers(arr: pa.Array | pa.ChunkedArray, missing_words: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Any column -> (float64 values, NaN = missing; bool mask of values that are not numbers)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t, bad = arr.type, np.zeros(len(arr), bool)
    if pa.types.is_null(t):
        return np.full(len(arr), np.nan), bad
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        x = pc.cast(arr, pa.float64(), safe=False)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            x = pc.cast(arr, pa.float64())
        except pa.ArrowInvalid:  # text with spaces, NA words or garbage: the careful path
            s = pc.utf8_trim_whitespace(arr)
            s = pc.if_else(pc.is_in(pc.utf8_lower(s), pa.array(_DENSE_MISSING)), pa.scalar(None, s.type), s)
            bad = _bisect_bad(s, lambda a: pc.cast(a, pa.float64()))
            if bad.any():
                s = pc.if_else(pa.array(bad), pa.scalar(None, s.type), s)
            x = pc.cast(s, pa.float64())
    else:
        raise UserError(f"a column of type {t} cannot be read as numbers")
    return np.asarray(x.to_numpy(zero_copy_only=False), np.float64), bad


def _time_values(arr: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A time column -> (float64: the number, or seconds since 1970 for dates and times;
    NaN = missing; mask of unreadable values). Text may be numbers or ISO 8601 times."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        ns = pc.cast(pc.cast(arr, pa.timestamp("ns", getattr(t, "tz", None))), pa.int64())
        return np.asarray(ns.to_numpy(zero_copy_only=False), np.float64) / 1e9, np.zeros(len(arr), bool)
    x, bad = _numbers(arr)
    if not bad.any():
        return x, bad
    text = pc.if_else(pa.array(bad), arr, pa.scalar(None, arr.type))

    def as_time(a):
        try:
            return pc.cast(a, pa.timestamp("ns"))
        except pa.ArrowInvalid:  # with a zone offset ('Z', '+02:00'): read as UTC
            return pc.cast(pc.cast(a, pa.timestamp("ns", "UTC")), pa.timestamp("ns"))

    still = _bisect_bad(text, as_time)
    ok = bad & ~still
    if ok.any():
        good = pc.if_else(pa.array(ok), text, pa.scalar(None, arr.type))
        ns = np.asarray(pc.cast(as_time(good), pa.int64()).to_numpy(zero_copy_only=False), np.float64)
        x = np.where(ok, ns / 1e9, x)
    return x, still


class TableTransforms:
    """The mapping from raw columns to model inputs (see the module docstring)."""

    def __init__(self, label: str, label_threshold: float | None = None, dense: list[DenseColumn] | None = None,
                 sparse: list[SparseColumn] | None = None, keep: list[KeptColumn] | None = None,
                 input: InputOptions | None = None, root: str | os.PathLike | None = None,
                 label_positive: list[str] | None = None):
        self.label, self.label_threshold = label, label_threshold
        self.label_positive = list(label_positive) if label_positive else None
        self.dense, self.sparse, self.keep = list(dense or []), list(sparse or []), list(keep or [])
        self.input = input or InputOptions()
        self.root = Path(root) if root is not None else None
        self._vocab: dict[str, Vocabulary] = {}

    # -- persistence

    @property
    def feature_columns(self) -> list[str]:
        return [d.name for d in self.dense] + [s.name for s in self.sparse]

    def to_json(self) -> dict:
        return {
            "format": TRANSFORMS_FORMAT, "version": TRANSFORMS_VERSION,
            "input": asdict(self.input),
            "label": {"column": self.label, "threshold": self.label_threshold, "positive": self.label_positive,
                      "rule": self.label_rule},
            "dense": [asdict(d) for d in self.dense],
            "sparse": [{**asdict(s), "num_embeddings": s.num_embeddings if s.hash_buckets or s.vocab_size is not None
                        else None} for s in self.sparse],
            "keep": [asdict(k) for k in self.keep],
            "hash": {"name": HASH_NAME, "ids": "0 = missing, 1 + (hash mod (hash_buckets - 1))"},
            "vocabulary_ids": "0 = missing or out of vocabulary; row k of vocab_file has id k + 1",
        }

    @property
    def label_rule(self) -> str:
        if self.label_threshold is not None:
            return f"1.0 if value >= {self.label_threshold} else 0.0"
        if self.label_positive:
            return f"1.0 if value (as text, spaces trimmed) is one of {self.label_positive} else 0.0"
        return "0/1 or true/false"

    @classmethod
    def from_json(cls, obj: dict, root: str | os.PathLike | None = None, where: str = TRANSFORMS_FILE) -> TableTransforms:
        if obj.get("format") != TRANSFORMS_FORMAT:
            raise UserError(f"{where}: 'format' must be '{TRANSFORMS_FORMAT}', got {obj.get('format')!r}")
        if obj.get("version") != TRANSFORMS_VERSION:
            raise UserError(f"{where}: version {obj.get('version')!r} is not supported (expected {TRANSFORMS_VERSION})")
        try:
            sparse = [SparseColumn(**{k: v for k, v in s.items() if k != "num_embeddings"}) for s in obj["sparse"]]
            return cls(label=obj["label"]["column"], label_threshold=obj["label"].get("threshold"),
                       label_positive=obj["label"].get("positive"),
                       dense=[DenseColumn(**d) for d in obj["dense"]], sparse=sparse,
                       keep=[KeptColumn(**k) for k in obj.get("keep", [])],
                       input=InputOptions(**obj.get("input", {})), root=root)
        except (KeyError, TypeError) as e:
            raise UserError(f"{where}: missing or malformed entry ({e})") from None

    @classmethod
    def load(cls, dataset_dir: str | os.PathLike) -> TableTransforms:
        """The transforms saved by `shardrec convert table` in DIR (DIR/transforms.json)."""
        path = Path(dataset_dir) / TRANSFORMS_FILE
        if not path.is_file():
            raise UserError(f"'{dataset_dir}' has no {TRANSFORMS_FILE}: only data sets made by `shardrec convert "
                            "table` record how raw rows are encoded")
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
        return cls.from_json(obj, root=dataset_dir, where=str(path))

    def save(self, dataset_dir: str | os.PathLike) -> None:
        path = Path(dataset_dir) / TRANSFORMS_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)

    def vocabulary(self, col: SparseColumn) -> Vocabulary:
        if col.name not in self._vocab:
            if self.root is None or col.vocab_file is None:
                raise UserError(f"sparse column '{col.name}': no vocabulary saved (transforms not loaded from a data set)")
            path = self.root / col.vocab_file
            try:
                values = pq.read_table(path, columns=["value"]).column("value")
            except (OSError, pa.ArrowException) as e:
                raise UserError(f"{path}: cannot read the vocabulary of '{col.name}' ({e})") from None
            if len(values) != col.vocab_size:
                raise UserError(f"{path}: {len(values)} values, {TRANSFORMS_FILE} says {col.vocab_size}")
            self._vocab[col.name] = Vocabulary(values)
        return self._vocab[col.name]

    # -- raw rows

    def read(self, paths: list[str] | list[os.PathLike]) -> Iterator[pa.RecordBatch]:
        """Raw rows of the files, in input order, as record batches (all columns). Formats as
        the converter reads them (the extension, or the saved --format); CSV/TSV fields are
        strings. A row that cannot be read is a UserError naming file and line."""
        for p in paths:
            raw = RawFile(p, self.input)
            for chunk in raw.chunks():
                if chunk.bad:
                    pos, _, message = chunk.bad[0]
                    raise UserError(f"{where_row(raw, pos)}: {message}")
                yield from chunk.table.to_batches()

    def output_schema(self, with_label: bool = True, keep: bool = True) -> pa.Schema:
        fields = [pa.field(self.label, pa.float32())] if with_label else []
        fields += [pa.field(d.name, pa.float32()) for d in self.dense]
        fields += [pa.field(s.name, pa.list_(pa.int64()) if s.multi_hot else pa.int64()) for s in self.sparse]
        if keep:
            fields += [pa.field(k.name, _arrow_type(k.type)) for k in self.keep]
        return pa.schema(fields)

    def needed_columns(self) -> list[str]:
        return list(dict.fromkeys([self.label, *self.feature_columns, *(k.name for k in self.keep)]))

    # -- decoding (shared by the statistics pass and encode)

    def decode(self, batch: pa.RecordBatch | pa.Table, require_label: bool = False) -> Decoded:
        """Read every role's column into canonical form and check it (no vocabulary needed)."""
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        names = table.column_names
        missing = [c for c in self.feature_columns if c not in names]
        if require_label and self.label not in names:
            missing.insert(0, self.label)
        if missing:
            raise UserError(f"the rows have no column '{missing[0]}' (they have: {', '.join(names) or 'none'})")
        dec = Decoded(table.num_rows)
        label = table.column(self.label) if self.label in names else None
        if label is not None and not require_label and len(label) and label.null_count == len(label):
            label = None  # rows to score with an empty label column: as if it were absent
        if label is not None:
            dec.label = self._label(label, dec)
        for d in self.dense:
            col = table.column(d.name)
            try:
                x, bad = _numbers(col)
            except UserError as e:
                raise UserError(f"dense column '{d.name}': {e}") from None
            with np.errstate(invalid="ignore"):
                inf = np.isinf(x) | ((np.abs(x) > _FLOAT32_MAX) & (d.transform != "log1p"))
            if bad.any() or inf.any():
                x = np.where(bad | inf, np.nan, x)  # (x may be a read-only view of Arrow memory)
            if bad.any():
                dec.checks.append(Check("bad_dense", bad, lambda r, c=col, n=d.name:
                                        f"dense column '{n}': value {_value(c, r)} is not a number"))
            if inf.any():
                dec.checks.append(Check("bad_dense", inf, lambda r, c=col, n=d.name:
                                        f"dense column '{n}': value {_value(c, r)} is not a finite float32 number"))
            dec.dense[d.name] = x
        for s in self.sparse:
            col = table.column(s.name)
            try:
                if s.multi_hot:
                    dec.multi[s.name] = self._tokens(col, s)
                else:
                    dec.sparse[s.name] = _categories(col)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise UserError(f"sparse column '{s.name}' of type {col.type} cannot be read as categories ({e})") from None
        for k in self.keep:
            if k.name in names:
                dec.keep[k.name] = table.column(k.name)
        return dec

    def _label(self, col: pa.ChunkedArray, dec: Decoded) -> np.ndarray:
        name = self.label
        arr = col.combine_chunks()
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if self.label_threshold is not None:
            try:
                x, bad = _numbers(arr)
            except UserError:
                raise UserError(f"label column '{name}' of type {arr.type} is not numeric; --label-threshold needs "
                                "numbers") from None
            missing = np.isnan(x) & ~bad
            if bad.any():
                dec.checks.append(Check("bad_label", bad, lambda r: f"label column '{name}': value {_value(arr, r)} "
                                        f"is not a number (--label-threshold {self.label_threshold} needs numbers)"))
            if missing.any():
                dec.checks.append(Check("bad_label", missing, lambda r: f"label column '{name}' is missing"))
            dec.raw_label = x
            with np.errstate(invalid="ignore"):
                return (x >= self.label_threshold).astype(np.float32)
        t = arr.type
        if self.label_positive:
            text = pc.utf8_trim_whitespace(_as_string(arr))
            dec.raw_label = text
            missing = ~np.asarray(pc.is_valid(text).to_numpy(zero_copy_only=False), bool)
            if missing.any():
                dec.checks.append(Check("bad_label", missing, lambda r: f"label column '{name}' is missing"))
            return np.asarray(pc.is_in(text, pa.array(self.label_positive, pa.string())).to_numpy(
                zero_copy_only=False), np.float32)
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            s = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
            one = pc.is_in(s, pa.array(["1", "true", "1.0"])).to_numpy(zero_copy_only=False)
            zero = pc.is_in(s, pa.array(["0", "false", "0.0"])).to_numpy(zero_copy_only=False)
            x = one.astype(np.float32)
            bad = ~(one | zero)
        elif pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t):
            v = np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), np.float64)
            bad = ~((v == 0) | (v == 1))
            x = (v == 1).astype(np.float32)
        else:
            raise UserError(f"label column '{name}' has type {t}; expected 0/1, true/false or numbers with "
                            "--label-threshold")
        if bad.any():
            dec.checks.append(Check("bad_label", bad, lambda r: (
                f"label column '{name}' is missing" if not arr[r].is_valid else
                f"label column '{name}': value {_value(arr, r)} is not 0/1 or true/false; --label-threshold X "
                "makes the label value >= X, --label-positive V makes it value == V")))
        return x

    def _tokens(self, col: pa.ChunkedArray, s: SparseColumn) -> tuple[np.ndarray, pa.Array]:
        """Multi-hot: (offsets (n + 1,) int64, tokens) with empty and null tokens dropped."""
        arr = col.combine_chunks()
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if pa.types.is_null(arr.type):
            return np.zeros(len(arr) + 1, np.int64), pa.array([], pa.string())
        if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
            arr = pc.split_pattern(_as_string(arr), s.separator or "|")
        lengths = np.asarray(pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False), np.int64)
        flat = _as_string(pc.list_flatten(arr))
        keep = pc.and_(pc.is_valid(flat), pc.not_equal(flat, "")).fill_null(False).to_numpy(zero_copy_only=False)
        ends = np.cumsum(lengths)
        kept_before = np.concatenate([[0], np.cumsum(keep)])
        offsets = np.concatenate([[0], kept_before[ends]]).astype(np.int64)
        if not keep.all():
            flat = flat.filter(pa.array(keep))
        return offsets, flat

    # -- encoding

    def _ids(self, s: SparseColumn, values: pa.Array) -> np.ndarray:
        """Strings or dictionary<string> (null = missing) -> int64 ids; each distinct value
        is hashed or looked up once."""
        if len(values) == 0:
            return np.zeros(0, np.int64)
        d = _categories(values)
        distinct = d.dictionary
        if s.hash_buckets is not None:
            ids = bucket_ids(hash_strings(distinct), s.hash_buckets)
        else:
            ids = self.vocabulary(s).lookup(distinct)
        ids[np.diff(_offsets(distinct)) == 0] = MISSING_ID  # the empty string is missing
        ids = np.append(ids, MISSING_ID)
        idx = d.indices.fill_null(len(distinct)).to_numpy(zero_copy_only=False)
        return ids[idx]

    def canonical_schema(self, keep_types: dict[str, pa.DataType] | None = None) -> pa.Schema:
        """The schema of `canonical` tables."""
        label_type = (pa.float64() if self.label_threshold is not None else pa.string() if self.label_positive
                      else pa.float32())
        fields = [pa.field(self.label, label_type)]
        fields += [pa.field(d.name, pa.float64()) for d in self.dense]
        fields += [pa.field(s.name, pa.list_(pa.string()) if s.multi_hot else pa.dictionary(pa.int32(), pa.string()))
                   for s in self.sparse]
        fields += [pa.field(k.name, (keep_types or {}).get(k.name) or _arrow_type(k.type)) for k in self.keep]
        return pa.schema(fields)

    def canonical(self, dec: Decoded, rows: np.ndarray | None = None,
                  keep_types: dict[str, pa.DataType] | None = None) -> pa.Table:
        """Decoded rows as raw rows again, in canonical types (label: 0/1 float32, or the
        float64 value with a threshold; dense float64, NaN = missing; sparse dictionary of
        strings; multi-hot list of tokens; kept columns in their output type; with
        label_positive the label's text). `apply` of
        this table equals `apply` of the rows it was decoded from; the converter stores it
        between its passes so that the input is parsed once."""
        schema = self.canonical_schema(keep_types)
        cols = [pa.array(dec.label, pa.float32()) if dec.raw_label is None else dec.raw_label]
        cols += [pa.array(dec.dense[d.name]) for d in self.dense]
        for s in self.sparse:
            if s.multi_hot:
                offsets, tokens = dec.multi[s.name]
                cols.append(pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), tokens))
            else:
                cols.append(dec.sparse[s.name])
        for k in self.keep:
            cols.append(_cast_kept(k.name, dec.keep[k.name], schema.field(k.name).type))
        table = pa.Table.from_arrays(cols, schema=schema)
        if rows is not None and not rows.all():
            table = table.filter(pa.array(rows))
        return table

    def encode_decoded(self, dec: Decoded, keep_rows: np.ndarray | None = None,
                       keep_types: dict[str, pa.DataType] | None = None) -> pa.Table:
        """Decoded rows -> the output table (rows where keep_rows is true)."""
        cols, fields = [], []
        if dec.label is not None:
            cols.append(pa.array(dec.label, pa.float32()))
            fields.append(pa.field(self.label, pa.float32()))
        for d in self.dense:
            x = dec.dense[d.name]
            if d.transform == "log1p":
                x = np.log1p(np.maximum(x, 0))
            elif d.transform == "standardize":
                if d.mean is None or d.std is None:
                    raise UserError(f"dense column '{d.name}': standardize has no statistics yet")
                x = (x - d.mean) / (d.std or 1.0)
            out = np.where(np.isnan(x), np.float32(d.fill), x).astype(np.float32)
            cols.append(pa.array(out))
            fields.append(pa.field(d.name, pa.float32()))
        for s in self.sparse:
            if s.multi_hot:
                offsets, tokens = dec.multi[s.name]
                values = pa.array(self._ids(s, tokens), pa.int64())
                cols.append(pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values))
                fields.append(pa.field(s.name, pa.list_(pa.int64())))
            else:
                cols.append(pa.array(self._ids(s, dec.sparse[s.name]), pa.int64()))
                fields.append(pa.field(s.name, pa.int64()))
        for k in self.keep:
            if k.name in dec.keep:
                col = dec.keep[k.name]
                want = (keep_types or {}).get(k.name)
                if want is not None:
                    col = _cast_kept(k.name, col, want)
                cols.append(col)
                fields.append(pa.field(k.name, col.type))
        table = pa.Table.from_arrays(cols, schema=pa.schema(fields)) if cols else pa.table({})
        if keep_rows is not None and not keep_rows.all():
            table = table.filter(pa.array(keep_rows))
        return table

    def encode(self, batch: pa.RecordBatch | pa.Table, on_error: str = "raise") -> tuple[pa.Table, Decoded]:
        """Raw rows -> (output table, the decoded rows with their checks). on_error "raise":
        the first bad row is a UserError naming the row; "skip": bad rows are left out."""
        dec = self.decode(batch)
        bad = dec.bad()
        if bad.any() and on_error == "raise":
            row, message = dec.first_error()
            raise UserError(f"row {row}: {message}")
        return self.encode_decoded(dec, ~bad if bad.any() else None), dec

    def apply(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        """Raw rows -> the columns exactly as the converter writes them, in input order: the
        label if the rows have the label column, dense float32, sparse int64 or list<int64>,
        kept columns unchanged (those the rows have). A label column without any value (all
        empty) counts as absent. A malformed row is a UserError naming its row number
        (0-based) within `batch`, the column and the value."""
        return self.encode(batch, "raise")[0]


def _cast_kept(name: str, col, want: pa.DataType):
    if col.type == want:
        return col
    try:
        return pc.cast(col, want)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise UserError(f"kept column '{name}': values of type {col.type} do not fit its type {want} "
                        f"(taken from the first rows of the first input) ({e})") from None


def where_row(raw: RawFile, position: int) -> str:
    """'file:line' for a text file's byte offset, 'file: row N' (1-based) for Parquet."""
    if raw.format == "parquet":
        return f"{raw.path}: row {position + 1}"
    return f"{raw.path}:{lines_before(raw.path, position, raw.gz) + 1}"
