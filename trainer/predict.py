"""`shardrec predict`: score rows with a trained model, rows out in input order.

Inputs are either rows in the data set's own format (Parquet with the schema's columns, e.g.
a converted split) or raw rows of the table `convert table` read, which go through the
transforms and vocabularies it saved in the data set folder (so they get exactly the ids the
model was trained with). The model is the checkpoint loaded unsharded (trainer/export.py):
its tables must fit in one process's memory.

Under torchrun each rank scores every world_size-th batch and writes it as its own file; rank
0 then joins the files in batch order into the output (written to a temporary name, renamed).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_arrow import arrow_to_batch
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.trainer.export import Loaded, load_unsharded

SCORE = "score"


def _expand(inputs: list[str]) -> list[Path]:
    """Files as given; a folder stands for its Parquet files, in name order."""
    paths = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(path.glob("*.parquet"))
            if not found:
                raise UserError(f"input folder '{path}' holds no .parquet files")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"input '{path}' does not exist")
    return paths


def _is_encoded(path: Path, schema: DatasetSchema) -> bool:
    """A Parquet file with every feature column of the schema, of the schema's types (raw
    Parquet rows of a `convert table` input may share the names, not the types)."""
    if path.suffix != ".parquet":
        return False
    have = pq.read_schema(path)
    return all(have.get_field_index(f.name) >= 0 and have.field(f.name).type == f.type
               for f in schema.arrow_schema() if f.name != schema.label)


def encoded_batches(paths: list[Path], loaded: Loaded, batch_rows: int) -> Iterator[tuple[pa.Table, pa.Table]]:
    """(rows in the data set's format, the same rows as read), in input order; --keep
    columns come from the second (raw values, not their encoding)."""
    schema = loaded.schema
    if all(_is_encoded(p, schema) for p in paths):
        for path in paths:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                table = pa.Table.from_batches([batch])
                yield table, table
        return
    transforms_dir = Path(loaded.cfg.dataset.path)
    if not (transforms_dir / "transforms.json").is_file():
        missing = next(p for p in paths if not _is_encoded(p, schema))
        raise UserError(f"input '{missing}' lacks the data set's feature columns, and data set '{transforms_dir}' "
                        "has no transforms.json to encode raw rows with (only `shardrec convert table` writes one): "
                        "give rows in the data set's format, e.g. a converted split folder")
    from shardrec.data_pipeline.table_transforms import TableTransforms

    transforms = TableTransforms.load(transforms_dir)
    for raw in transforms.read([str(p) for p in paths]):
        table = pa.Table.from_batches([raw]) if isinstance(raw, pa.RecordBatch) else raw
        for start in range(0, table.num_rows, batch_rows):
            piece = table.slice(start, batch_rows)
            yield transforms.apply(piece), piece


def _as_batch(table: pa.Table, schema: DatasetSchema):
    if schema.label not in table.column_names:
        table = table.append_column(schema.label, pa.array([0.0] * table.num_rows, pa.float32()))
    return arrow_to_batch(table.select([f.name for f in schema.arrow_schema()]), schema)


@torch.no_grad()
def predict(run_dir: str, inputs: list[str], out: str, keep: list[str], checkpoint: str | None = None,
            batch_rows: int = 8192, rank: int = 0, world_size: int = 1, barrier=lambda: None) -> int:
    """Score `inputs` into `out` (Parquet: the `keep` columns and `score`); returns rows."""
    loaded = load_unsharded(run_dir, checkpoint)
    paths = _expand(inputs)
    out_path = Path(out)
    parts = out_path.parent / f".{out_path.name}.parts"
    if rank == 0:
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
    barrier()
    rows = 0
    try:
        for index, (table, read) in enumerate(encoded_batches(paths, loaded, batch_rows)):
            if index % world_size != rank:
                continue
            missing = [c for c in keep if c not in read.column_names]
            if missing:
                raise UserError(f"--keep {','.join(missing)}: not a column of the input (it has: "
                                f"{', '.join(read.column_names)})")
            batch = _as_batch(table, loaded.schema)
            features = batch.sparse_features
            scores = loaded.scorer(batch.dense_features, features.values(), features.lengths())
            result = read.select(keep).append_column(SCORE, pa.array(scores.numpy(), pa.float32()))
            pq.write_table(result, parts / f"{index:010d}.parquet")
            rows += table.num_rows
    except BaseException:
        shutil.rmtree(parts, ignore_errors=True)  # nothing half-written is left behind
        raise
    barrier()
    if rank == 0:
        _join(parts, out_path)
    return rows


def _join(parts: Path, out: Path) -> None:
    """The part files in batch order into OUT, through a temporary name."""
    files = sorted(parts.glob("*.parquet"))
    tmp = out.parent / f".{out.name}.tmp"
    writer = None
    try:
        for file in files:
            table = pq.read_table(file)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, write_page_checksum=True)
            writer.write_table(table)
        if writer is None:
            raise UserError("the inputs hold no rows")
        writer.close()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
        if tmp.exists():
            tmp.unlink()
