"""Reading the inputs of `shardrec convert interactions` (see convert_interactions.py):
interaction files and user/item feature tables, and encoding the side features.

Files are read with convert_table's RawFile (CSV/TSV/Parquet/JSON lines, optionally .gz).
A text file whose extension is neither .csv nor .tsv (.txt, .data, MovieLens' u.user ...)
is read as delimited text: the delimiter is --delimiter, else sniffed from the first line
(the most frequent of tab, '|' and ',', else a space). With --encoding other than UTF-8 a
text file is first copied as UTF-8 into a scratch folder (line numbers are unchanged, and
messages name the original file). The `user item item ...` layout is read here too.

Values of ids, keys and categorical columns are compared as text with surrounding spaces
trimmed (an int 7 and a string "7" are the same id).
"""

from __future__ import annotations

import codecs
import gzip
import re
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_common import is_gzip, open_input
from shardrec.data_pipeline.convert_table import parse_multi_hot, split_names
from shardrec.data_pipeline.table_transforms import (
    EXTENSIONS,
    NOT_UTF8_HINT,
    InputOptions,
    RawFile,
    _as_string,
    _numbers,
    where_row,
)

NAMED_DELIMITERS = {"\\t": "\t", "tab": "\t", "space": " ", "pipe": "|", "comma": ","}


def parse_delimiter(text: str | None) -> str | None:
    """None, one character, or '\\t' / tab / space / pipe / comma."""
    if text is None:
        return None
    d = NAMED_DELIMITERS.get(text.lower(), text)
    if len(d) != 1:
        raise UserError(f"--delimiter {text!r}: expected one character (or \\t, tab, space, pipe, comma)")
    return d


def check_encoding(encoding: str | None) -> str | None:
    """None for UTF-8 (read as is), else the codec's name."""
    if encoding is None:
        return None
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise UserError(f"--encoding '{encoding}': unknown encoding (e.g. utf-8, latin-1, cp1252)") from None
    return None if name in ("utf-8", "ascii") else name


def read_text(path: Path, encoding: str | None) -> bytes:
    """A whole text file (plain or gzip) as UTF-8 bytes."""
    try:
        with open_input(path, is_gzip(path)) as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise UserError(f"{path}: truncated or corrupt gzip input ({e})") from None
    if encoding:
        try:
            data = data.decode(encoding).encode()
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not {encoding} text ({e})") from None
    return data


def sniff_delimiter(path: Path) -> str:
    """The most frequent of tab, '|' and ',' in the first non-empty line, else a space."""
    with open_input(path, is_gzip(path)) as f:
        head = f.read(1 << 16)
    line = next((x for x in head.split(b"\n") if x.strip()), b"")
    counts = {d: line.count(d.encode()) for d in ("\t", "|", ",")}
    best = max(counts, key=counts.get)
    return best if counts[best] else " "


@dataclass
class Source:
    raw: RawFile
    shown: Path  # the path messages name (the input, not its UTF-8 copy)

    def fix(self, message: str) -> str:
        return message.replace(str(self.raw.path), str(self.shown))


class Rows:
    """The rows of some files, in file order then line order, kept as the reader's chunks
    (types may differ between chunks and files); columns come out converted."""

    def __init__(self, chunks: list[tuple[pa.Table, int, np.ndarray]], sources: list[Source]):
        self.chunks, self.sources = chunks, sources
        self.starts = np.cumsum([0] + [t.num_rows for t, _, _ in chunks])
        self.num_rows = int(self.starts[-1])

    def where(self, i: int) -> str:
        """'file:line' (Parquet: 'file: row N') of row i."""
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        _, f, positions = self.chunks[k]
        src = self.sources[f]
        return src.fix(where_row(src.raw, int(positions[i - self.starts[k]])))

    def fail(self, bad: np.ndarray, message: Callable[[int], str]) -> None:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UserError(f"{self.where(i)}: {message(i)}")

    def strings(self, name: str, what: str, required: bool = True) -> pa.Array:
        """The column as trimmed text; missing (null or empty) is an error when required."""
        parts = [pc.utf8_trim_whitespace(pc.cast(_as_string(t.column(name)), pa.large_string()))
                 for t, _, _ in self.chunks]
        out = pa.concat_arrays(parts) if parts else pa.array([], pa.large_string())
        if required:
            missing = np.asarray(pc.fill_null(pc.equal(out, ""), True).to_numpy(zero_copy_only=False), bool)
            self.fail(missing, lambda i: f"missing {what} (column '{name}')")
        return out

    def numbers(self, name: str, what: str, parse=_numbers, allow_missing: bool = False) -> np.ndarray:
        """float64 values; text that is not a number (or time, with parse=_time_values) is an error."""
        values, bad = [], []
        for t, _, _ in self.chunks:
            x, b = parse(t.column(name))
            values.append(x)
            bad.append(b)
        x = np.concatenate(values) if values else np.zeros(0)
        b = np.concatenate(bad) if bad else np.zeros(0, bool)
        kind = "number" if parse is _numbers else "number or ISO 8601 time"
        self.fail(b, lambda i: f"{what} {self.strings(name, what, required=False)[i].as_py()!r} "
                                f"(column '{name}') is not a {kind}")
        if not allow_missing:
            self.fail(np.isnan(x), lambda i: f"missing {what} (column '{name}')")
        return x

    def lists(self, name: str, sep: str) -> pa.Array:
        """list<large_string>: text split at `sep` (a list column is taken as it is), tokens
        trimmed, empty tokens dropped, a missing value an empty list."""
        parts = []
        for t, _, _ in self.chunks:
            col = t.column(name).combine_chunks()
            if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
                col = pc.split_pattern(pc.cast(_as_string(col), pa.large_string()), sep)
            flat = pc.utf8_trim_whitespace(pc.cast(pc.list_flatten(col), pa.large_string()))
            parent = pc.list_parent_indices(col).to_numpy(zero_copy_only=False)
            keep = np.asarray(pc.fill_null(pc.not_equal(flat, ""), False).to_numpy(zero_copy_only=False), bool)
            offsets = np.zeros(len(col) + 1, np.int32)
            np.cumsum(np.bincount(parent[keep], minlength=len(col)), out=offsets[1:])
            parts.append(pa.ListArray.from_arrays(pa.array(offsets), flat.filter(pa.array(keep))))
        return pa.concat_arrays(parts) if parts else pa.array([], pa.list_(pa.large_string()))


def read_rows(paths: Sequence[str | Path], wanted: dict[str, str], *, delimiter: str | None, header: bool | None,
              columns: Sequence[str] | None, encoding: str | None, scratch: Path, columns_flag: str) -> Rows:
    """Read the `wanted` columns (name -> flag, for messages) of every file."""
    if header is False and not columns:
        raise UserError(f"--header false needs {columns_flag} naming the fields, e.g. {columns_flag} user,item")
    header = (not columns) if header is None else header
    chunks, sources = [], []
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"input file '{path}' does not exist")
        name = path.name.lower().removesuffix(".gz")
        fmt = EXTENSIONS.get(Path(name).suffix)
        src = path
        if fmt in ("parquet", "jsonl"):
            options = InputOptions(format=fmt)
        else:
            if encoding:
                scratch.mkdir(parents=True, exist_ok=True)
                src = Path(tempfile.mkdtemp(dir=scratch)) / path.name.removesuffix(".gz")
                src.write_bytes(read_text(path, encoding))
            delim = delimiter or {"csv": ",", "tsv": "\t"}.get(fmt) or sniff_delimiter(src)
            options = InputOptions(format="csv", delimiter=delim, header=header,
                                   columns=list(columns) if columns else None)
        try:
            raw = RawFile(src, options)
            raw.check_columns(wanted)
            for chunk in raw.chunks(columns=list(wanted)):
                if chunk.bad:
                    raise UserError(f"{where_row(raw, chunk.bad[0][0])}: {chunk.bad[0][2]}")
                chunks.append((chunk.table, len(sources), chunk.positions))
        except UserError as e:
            message = str(e).replace(str(src), str(path))
            if NOT_UTF8_HINT in message and not encoding:
                message = message.replace(NOT_UTF8_HINT, "pass --encoding (e.g. latin-1), or re-encode the file as UTF-8")
            elif "UTF8" in message and not encoding:
                message += "; if the file is not UTF-8 text, pass --encoding (e.g. latin-1)"
            raise UserError(message) from None
        sources.append(Source(raw, path))
    return Rows(chunks, sources)


def read_user_items(paths: Sequence[str | Path], encoding: str | None) -> tuple[pa.Array, pa.Array, int]:
    """Lines `user item item ...` (whitespace separated, items in time order) ->
    (user per interaction, item per interaction, lines without items)."""
    users, items, empty = [], [], 0
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"input file '{path}' does not exist")
        data = read_text(path, encoding)
        buf = np.frombuffer(data, np.uint8)
        ends = np.flatnonzero(buf == 10) + 1
        offsets = np.concatenate([[0], ends, [] if len(ends) and ends[-1] == len(buf) else [len(buf)]])
        lines = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets.astype(np.int64)),
                                                 pa.py_buffer(data))
        try:
            lines.validate(full=True)
        except pa.ArrowInvalid:
            raise UserError(f"{path}: not UTF-8 text; pass --encoding (e.g. latin-1)") from None
        tokens = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(lines))
        flat = pc.list_flatten(tokens)
        parent = pc.list_parent_indices(tokens).to_numpy(zero_copy_only=False)
        first = np.asarray(tokens.offsets)[:-1][parent]  # the line's first token: its user
        is_item = np.arange(len(flat)) > first
        users.append(flat.take(pa.array(first[is_item])))
        items.append(flat.filter(pa.array(is_item)))
        counts = np.diff(np.asarray(tokens.offsets))
        empty += int(((counts == 1) & (np.asarray(pc.list_element(tokens, 0)) != "")).sum())
    return pa.concat_arrays(users), pa.concat_arrays(items), empty


# ---------------------------------------------------------------------------------------
# Side features: options, vocabularies, encoding a feature table.


@dataclass
class FeatureSpec:
    name: str
    kind: str  # sparse | multi_hot | flags
    columns: list[str]
    sep: str | None = None


def feature_specs(side: str, sparse=(), multi_hot=(), flags=()) -> list[FeatureSpec]:
    """--{side}-sparse COL,..., --{side}-multi-hot COL:SEP,..., --{side}-flags NAME=C1,C2,..."""
    specs = [FeatureSpec(c, "sparse", [c]) for c in split_names(sparse)]
    for value in [multi_hot] if isinstance(multi_hot, str) else list(multi_hot or ()):
        try:
            items = parse_multi_hot(value)
        except UserError:
            raise UserError(f"--{side}-multi-hot '{value}': expected COL:SEP items separated by commas, "
                            "e.g. tags:|,genres:;") from None
        specs += [FeatureSpec(c, "multi_hot", [c], sep) for c, sep in (i.split(":", 1) for i in items)]
    if isinstance(flags, dict):
        flags = [f"{k}={','.join(v) if not isinstance(v, str) else v}" for k, v in flags.items()]
    for value in [flags] if isinstance(flags, str) else list(flags or ()):
        m = re.fullmatch(r"\s*([^=,\s]+)\s*=(.+)", str(value))
        cols = split_names(m.group(2)) if m else []
        if not m or not cols or len(set(cols)) != len(cols):
            raise UserError(f"--{side}-flags '{value}': expected NAME=COL1,COL2,... naming distinct 0/1 "
                            "columns, e.g. genres=g0,g1,g2")
        specs.append(FeatureSpec(m.group(1), "flags", cols))
    return specs


def vocabulary(values: pa.Array) -> pa.Array:
    """Distinct non-empty values in sorted order (numerically when every one is a number)."""
    distinct = pc.unique(values).drop_null()
    distinct = distinct.filter(pc.not_equal(distinct, ""))
    try:
        keys = pa.table({"n": pc.cast(distinct, pa.float64()), "s": distinct})
        order = pc.sort_indices(keys, sort_keys=[("n", "ascending"), ("s", "ascending")])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        order = pc.sort_indices(distinct)
    return distinct.take(order)


def _ids(values: pa.Array, vocab: pa.Array) -> np.ndarray:
    """1 + index in `vocab`; 0 for a missing value."""
    idx = pc.index_in(values, value_set=vocab)
    return np.asarray(pc.fill_null(pc.add(idx, 1), 0).to_numpy(zero_copy_only=False), np.int64)


@dataclass
class Encoded:
    """A feature over the rows of its table: int64 ids (numpy) or a list<int64> array."""

    spec: FeatureSpec
    values: np.ndarray | pa.Array
    num_embeddings: int

    @property
    def multi_hot(self) -> bool:
        return self.spec.kind != "sparse"

    def take(self, rows: np.ndarray) -> np.ndarray | pa.Array:
        """Values for table rows `rows` (-1: no row, every feature missing)."""
        if not self.multi_hot:
            return np.append(self.values, 0)[rows]
        n = len(self.values)
        padded = pa.concat_arrays([self.values, pa.array([[]], self.values.type)])
        return padded.take(pa.array(np.where(rows < 0, n, rows)))


def encode_features(rows: Rows, specs: list[FeatureSpec]) -> list[Encoded]:
    out = []
    for s in specs:
        if s.kind == "sparse":
            values = rows.strings(s.columns[0], "", required=False)
            vocab = vocabulary(values)
            out.append(Encoded(s, _ids(values, vocab), len(vocab) + 1))
        elif s.kind == "multi_hot":
            lists = rows.lists(s.columns[0], s.sep)
            vocab = vocabulary(pc.list_flatten(lists))
            ids = _ids(pc.list_flatten(lists), vocab)
            out.append(Encoded(s, pa.ListArray.from_arrays(lists.offsets, pa.array(ids)), len(vocab) + 1))
        else:
            flags = np.zeros((rows.num_rows, len(s.columns)), bool)
            for j, c in enumerate(s.columns):
                x = rows.numbers(c, f"flag of '{s.name}'", allow_missing=True)
                rows.fail(~np.isnan(x) & (x != 0) & (x != 1),
                           lambda i, c=c, x=x, n=s.name: f"flag column '{c}' of '{n}' holds {x[i]:g}, expected 0 or 1")
                flags[:, j] = x == 1
            r, c = np.nonzero(flags)
            offsets = np.zeros(rows.num_rows + 1, np.int32)
            np.cumsum(np.bincount(r, minlength=rows.num_rows), out=offsets[1:])
            out.append(Encoded(s, pa.ListArray.from_arrays(pa.array(offsets), pa.array(c + 1, pa.int64())),
                               len(s.columns) + 1))
    return out
