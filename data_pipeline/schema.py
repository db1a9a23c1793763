"""The on-disk data set format: a folder of Parquet shards per split plus `schema.json`.

    DIR/schema.json
    DIR/train/part-00000.parquet ...
    DIR/valid/...  DIR/test/...

Columns: the label (float32, 0/1), dense features (float32, one column each), sparse
features as int64 (one-hot) or list<int64> (multi-hot). Every sparse id is already in
[0, num_embeddings). Whatever writes a data set (generator, converter) writes schema.json
last, so a folder with a schema is complete.

A sequence feature (a behaviour history, `sequence_of` set) is a list<int64> column whose
ids are events in time order, oldest first, at most `max_length` of them, from the id space
of the sparse feature `sequence_of` names (so it has that feature's num_embeddings), e.g.
`hist_item_id` (sequence_of "item_id"): the items the row's user interacted with before.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from shardrec.configs.errors import UserError

SCHEMA_FILE = "schema.json"
FORMAT = "shardrec-parquet"
VERSION = 1


@dataclass
class SparseFeature:
    """A categorical feature and the size of its embedding table."""

    name: str
    num_embeddings: int
    # True: a list<int64> column with 0..n ids per row (pooled); False: one int64 id per row.
    multi_hot: bool = False
    # Sequence features only: the sparse feature whose id space (and embedding table) this
    # history shares, and the cap on its list length. A sequence is multi-hot, its ids in
    # event order, oldest first. None / 0: not a sequence.
    sequence_of: str | None = None
    max_length: int = 0

    def to_json(self) -> dict:
        """The schema.json entry; sequence_of and max_length only when set, so that entries of
        other features read exactly as before these fields existed."""
        obj = asdict(self)
        for key, default in (("sequence_of", None), ("max_length", 0)):
            if obj[key] == default:
                del obj[key]
        return obj


@dataclass
class DatasetSchema:
    label: str
    dense: list[str]
    sparse: list[SparseFeature]
    # Row count per split, e.g. {"train": 800000, "valid": 100000, "test": 100000}.
    splits: dict[str, int] = field(default_factory=dict)
    # AUC of the hidden teacher on each split (synthetic data only): the ceiling a model can reach.
    teacher_auc: dict[str, float] = field(default_factory=dict)
    # Free-form provenance (generator arguments, converter options, skipped rows).
    source: dict[str, Any] = field(default_factory=dict)
    # Implicit-feedback data sets only (`shardrec convert interactions`): which sparse
    # features are the user and item indices and their side features, the catalogue size,
    # and the files that describe users and items (see data_pipeline/interactions.py).
    # Empty for click (ranking) data sets.
    interactions: dict[str, Any] = field(default_factory=dict)

    @property
    def sparse_names(self) -> list[str]:
        return [f.name for f in self.sparse]

    @property
    def sequences(self) -> list[SparseFeature]:
        """The sequence (behaviour-history) features, in schema order."""
        return [f for f in self.sparse if f.sequence_of is not None]

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema every shard of this data set has."""
        fields = [pa.field(self.label, pa.float32())]
        fields += [pa.field(name, pa.float32()) for name in self.dense]
        fields += [
            pa.field(f.name, pa.list_(pa.int64()) if f.multi_hot else pa.int64()) for f in self.sparse
        ]
        return pa.schema(fields)

    def to_json(self) -> dict:
        obj = {"format": FORMAT, "version": VERSION, **asdict(self)}
        obj["sparse"] = [f.to_json() for f in self.sparse]
        if not obj["interactions"]:
            del obj["interactions"]  # click data sets keep the format they always had
        return obj

    @classmethod
    def from_json(cls, obj: dict, where: str = "schema.json") -> DatasetSchema:
        if obj.get("format") != FORMAT:
            raise UserError(f"{where}: 'format' must be '{FORMAT}', got {obj.get('format')!r}")
        try:
            sparse = [SparseFeature(**f) for f in obj["sparse"]]
            schema = cls(
                label=obj["label"],
                dense=list(obj["dense"]),
                sparse=sparse,
                splits=dict(obj.get("splits", {})),
                teacher_auc=dict(obj.get("teacher_auc", {})),
                source=dict(obj.get("source", {})),
                interactions=dict(obj.get("interactions") or {}),
            )
        except (KeyError, TypeError) as e:
            raise UserError(f"{where}: missing or malformed entry {e}") from None
        for f in schema.sparse:
            if f.num_embeddings <= 0:
                raise UserError(f"{where}: sparse feature '{f.name}' has num_embeddings {f.num_embeddings}, expected > 0")
        _check_sequences(schema, where)
        return schema


def _check_sequences(schema: DatasetSchema, where: str) -> None:
    """sequence_of names another, non-sequence sparse feature with the same num_embeddings;
    max_length >= 1 on a sequence, 0 on anything else."""
    by_name = {f.name: f for f in schema.sparse}
    for f in schema.sparse:
        if isinstance(f.max_length, bool) or not isinstance(f.max_length, int) or f.max_length < 0:
            raise UserError(f"{where}: sparse feature '{f.name}' has max_length {f.max_length!r}, expected an "
                            "integer >= 0 (the cap on a sequence's length; 0 = not a sequence)")
        if f.sequence_of is None:
            if f.max_length:
                raise UserError(f"{where}: sparse feature '{f.name}' has max_length {f.max_length} but no "
                                "sequence_of; max_length is for sequence features (name the feature whose ids "
                                "the sequence holds in sequence_of)")
            continue
        target = by_name.get(f.sequence_of) if isinstance(f.sequence_of, str) else None
        if target is None or target is f:
            raise UserError(f"{where}: sequence feature '{f.name}' has sequence_of {f.sequence_of!r}, which names no "
                            f"other sparse feature of this schema (sparse features: {', '.join(by_name)})")
        if target.sequence_of is not None:
            raise UserError(f"{where}: sequence feature '{f.name}' has sequence_of '{target.name}', itself a "
                            "sequence; name the feature whose ids the history holds (e.g. item_id)")
        if not f.multi_hot:
            raise UserError(f"{where}: sequence feature '{f.name}' has multi_hot false; a sequence is a list "
                            "column (multi_hot true)")
        if f.max_length < 1:
            raise UserError(f"{where}: sequence feature '{f.name}' has max_length {f.max_length}, expected >= 1 "
                            "(the cap on its list length)")
        if f.num_embeddings != target.num_embeddings:
            raise UserError(f"{where}: sequence feature '{f.name}' has num_embeddings {f.num_embeddings}, but its "
                            f"sequence_of '{target.name}' has {target.num_embeddings}; a history indexes its "
                            "target's ids, so the two must be equal")


def load_schema(dataset_dir: str | os.PathLike) -> DatasetSchema:
    """Read DIR/schema.json; a missing folder or file is a `UserError` saying how to make one."""
    root = Path(dataset_dir)
    if not root.is_dir():
        preset = root.name if root.name in ("demo", "tiny", "tiny-multihot", "criteo-kaggle") else "demo"
        rows = {"tiny": 30_000, "tiny-multihot": 30_000}.get(preset, 1_000_000)
        raise UserError(
            f"dataset folder '{root}' does not exist (make one with `shardrec synth --out {root} --rows {rows} "
            f"--preset {preset}` or `shardrec convert ...`, or set --dataset.path)"
        )
    path = root / SCHEMA_FILE
    if not path.is_file():
        raise UserError(f"dataset folder '{root}' has no {SCHEMA_FILE}: it is not a shardrec data set (or it is incomplete)")
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    schema = DatasetSchema.from_json(obj, where=str(path))
    schema.folder = str(root)  # not part of the format: where this schema was read from
    return schema


def write_schema(dataset_dir: str | os.PathLike, schema: DatasetSchema) -> None:
    path = Path(dataset_dir) / SCHEMA_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(schema.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


def split_files(dataset_dir: str | os.PathLike, split: str) -> list[Path]:
    """The Parquet shards of one split, sorted by name."""
    folder = Path(dataset_dir) / split
    if not Path(dataset_dir).is_dir():
        raise UserError(f"dataset folder '{dataset_dir}' does not exist")
    if not folder.is_dir():
        present = sorted(p.name for p in Path(dataset_dir).iterdir() if p.is_dir())
        raise UserError(f"dataset '{dataset_dir}' has no split '{split}' (splits present: {', '.join(present) or 'none'})")
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise UserError(f"split folder '{folder}' holds no .parquet files")
    return files


def check_file_schema(path: Path, actual: pa.Schema, schema: DatasetSchema) -> None:
    """Fail with the file and column when a shard does not match schema.json."""
    for expected in schema.arrow_schema():
        idx = actual.get_field_index(expected.name)
        if idx < 0:
            raise UserError(f"{path}: column '{expected.name}' of schema.json is missing from the file")
        got = actual.field(idx).type
        if got != expected.type and not (pa.types.is_list(got) and pa.types.is_list(expected.type)
                                         and got.value_type == expected.type.value_type):
            raise UserError(
                f"{path}: column '{expected.name}' has type {got}, schema.json expects {expected.type}"
            )
