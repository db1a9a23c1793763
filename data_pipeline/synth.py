"""Criteo-shaped synthetic click logs whose labels come from a hidden teacher.

`shardrec synth --out DIR --rows N --preset criteo-kaggle` writes DIR/{train,valid,test}/
Parquet shards and schema.json (with the teacher's AUC per evaluation split: the ceiling a
trained model can approach). Ids follow a power law per table (a few hot ids, a long tail),
as real categorical logs do; dense features are log(1 + count) of heavy-tailed counts, the
same transform the DLRM reference applies to Criteo's integer features.

Every file is generated from its own seeded RNG, so the output is a pure function of the
arguments (and files could be made in parallel).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_common import check_output_folder
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature, write_schema
from shardrec.data_pipeline.teacher import Teacher

# Cardinalities of C1..C26 in the Criteo Kaggle Display Advertising data set (as listed by
# the DLRM reference for its day-split Kaggle preprocessing).
CRITEO_KAGGLE_SIZES = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
]

# Presets: a cap on the table sizes, the max ids per row of the last 6 features (1 = all
# one-hot), the Zipf exponent of id frequencies, and the shard layout. criteo-kaggle keeps
# the real sizes and a long tail; the others concentrate the mass so that a few hundred
# thousand rows suffice to learn most of what the teacher knows. The tiny ones use small
# row groups so that even a few thousand rows split over several ranks.
PRESETS = {
    "criteo-kaggle": dict(cap=None, multi_hot=1, zipf_alpha=1.2),
    "demo": dict(cap=40_000, multi_hot=1, zipf_alpha=1.6),
    "tiny": dict(cap=2_000, multi_hot=1, zipf_alpha=1.6, rows_per_file=10_000, row_group_rows=2_000),
    "tiny-multihot": dict(cap=2_000, multi_hot=5, zipf_alpha=1.6, rows_per_file=10_000,
                          row_group_rows=2_000),
    # The training-speed benchmark's shape (configs/bench_dlrm.yaml, issue 13): 26 tables of
    # exactly `cap` rows each, one id per feature.
    "bench-dlrm": dict(cap=100_000, multi_hot=1, zipf_alpha=1.2, uniform_tables=True),
}

NUM_DENSE = 13
SPLITS = ("train", "valid", "test")
CALIBRATION_ROWS = 100_000
TEACHER_AUC_MAX_ROWS = 5_000_000  # exact AUC keeps scores in memory; cap it per split


@dataclass
class SynthSpec:
    """Everything the output depends on."""

    rows: int
    table_sizes: list[int] = field(default_factory=lambda: list(CRITEO_KAGGLE_SIZES))
    # Max ids per row for each sparse feature; 1 = one-hot (int64 column).
    max_ids: list[int] = field(default_factory=lambda: [1] * 26)
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    zipf_alpha: float = 1.6
    ctr: float = 0.25
    seed: int = 0
    rows_per_file: int = 200_000
    row_group_rows: int = 50_000


def spec_from_preset(preset: str, rows: int, seed: int = 0, max_table_size: int | None = None,
                     multi_hot: int | None = None, zipf_alpha: float | None = None) -> SynthSpec:
    """The preset's spec; any argument given (not None) replaces the preset's value."""
    if preset not in PRESETS:
        raise UserError(f"unknown synth preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    preset_args = dict(PRESETS[preset])
    preset_cap, preset_mh = preset_args.pop("cap"), preset_args.pop("multi_hot")
    uniform = preset_args.pop("uniform_tables", False)
    cap = max_table_size or preset_cap
    mh = preset_mh if multi_hot is None else multi_hot
    if zipf_alpha is not None:
        preset_args["zipf_alpha"] = zipf_alpha
    sizes = [cap] * len(CRITEO_KAGGLE_SIZES) if uniform else [min(s, cap) if cap else s for s in CRITEO_KAGGLE_SIZES]
    max_ids = [1] * 20 + [max(mh, 1)] * 6
    return SynthSpec(rows=rows, table_sizes=sizes, max_ids=max_ids, seed=seed, **preset_args)


class _IdSampler:
    """Power-law (Zipf) ids over [0, size), with hot ids scattered by a fixed permutation."""

    def __init__(self, size: int, alpha: float, rng: np.random.Generator):
        ranks = np.arange(1, size + 1, dtype=np.float64)
        cdf = np.cumsum(ranks**-alpha)
        self.cdf = cdf / cdf[-1]
        # A permutation of a huge table would cost memory; an affine map mod size is a
        # bijection when gcd(a, size) == 1 and scatters ranks just as well.
        a = int(rng.integers(1, max(size, 2)))
        while np.gcd(a, size) != 1:
            a += 1
        self.a, self.b, self.size = a, int(rng.integers(size)), size

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        rank = np.searchsorted(self.cdf, rng.random(n), side="right").clip(max=self.size - 1)
        return (rank.astype(np.int64) * self.a + self.b) % self.size


def schema_of(spec: SynthSpec) -> DatasetSchema:
    """The schema of the data set `spec` describes (no rows needed)."""
    return DatasetSchema(
        label="label",
        dense=[f"I{i + 1}" for i in range(NUM_DENSE)],
        sparse=[SparseFeature(f"C{i + 1}", size, multi_hot=m > 1)
                for i, (size, m) in enumerate(zip(spec.table_sizes, spec.max_ids))],
    )


def _rows_of(spec: SynthSpec, rng: np.random.Generator, n: int, samplers: list[_IdSampler]):
    """Latent dense z (n, 13), dense features (n, 13) and per-feature (values, lengths)."""
    z = rng.standard_normal((n, NUM_DENSE)).astype(np.float32)
    # Heavy-tailed counts with feature-specific scale, then log1p as for Criteo's I1..I13.
    scale = np.linspace(0.5, 4.0, NUM_DENSE, dtype=np.float32)
    counts = np.floor(np.exp(scale + 1.2 * z))
    dense = np.log1p(counts).astype(np.float32)
    ids = []
    for sampler, m in zip(samplers, spec.max_ids):
        if m <= 1:
            lengths = np.ones(n, dtype=np.int64)
        else:
            lengths = rng.integers(1, m + 1, size=n)
            lengths[rng.random(n) < 0.05] = 0  # some rows have no id at all
        ids.append((sampler.sample(int(lengths.sum()), rng), lengths))
    return z, dense, ids


def _table(schema: DatasetSchema, labels, dense, ids) -> pa.Table:
    cols = {schema.label: pa.array(labels, pa.float32())}
    for j, name in enumerate(schema.dense):
        cols[name] = pa.array(dense[:, j])
    for f, (values, lengths) in zip(schema.sparse, ids):
        if f.multi_hot:
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            cols[f.name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int64()))
        else:
            cols[f.name] = pa.array(values, pa.int64())
    return pa.table(cols, schema=schema.arrow_schema())


def generate(spec: SynthSpec, out: str | os.PathLike, overwrite: bool = False,
             progress=None) -> DatasetSchema:
    """Write the data set to `out` (via a temporary folder renamed at the end)."""
    out = Path(out)
    check_output_folder(out, overwrite)
    if len(spec.table_sizes) != len(spec.max_ids):
        raise UserError("table_sizes and max_ids must have one entry per sparse feature")
    if spec.rows < len(SPLITS):
        raise UserError(f"--rows must be at least {len(SPLITS)}, got {spec.rows}")
    schema = schema_of(spec)
    master = np.random.default_rng(spec.seed)
    samplers = [_IdSampler(size, spec.zipf_alpha, master) for size in spec.table_sizes]
    teacher = Teacher(NUM_DENSE, spec.table_sizes, seed=spec.seed)
    z, _, ids = _rows_of(spec, np.random.default_rng([spec.seed, 99]), CALIBRATION_ROWS, samplers)
    teacher.calibrate(teacher.raw_logits(z, ids), spec.ctr)

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        counts = split_counts(spec.rows, spec.split)
        for split_idx, (split, n_rows) in enumerate(zip(SPLITS, counts)):
            (tmp / split).mkdir(parents=True)
            scores, labels_all = [], []
            for file_idx, start in enumerate(range(0, n_rows, spec.rows_per_file)):
                n = min(spec.rows_per_file, n_rows - start)
                rng = np.random.default_rng([spec.seed, split_idx, file_idx])
                z, dense, ids = _rows_of(spec, rng, n, samplers)
                prob = teacher.probabilities(z, ids)
                labels = (rng.random(n) < prob).astype(np.float32)
                pq.write_table(_table(schema, labels, dense, ids), tmp / split / f"part-{file_idx:05d}.parquet",
                               row_group_size=spec.row_group_rows, write_page_checksum=True)
                if split != "train" and sum(map(len, scores)) < TEACHER_AUC_MAX_ROWS:
                    scores.append(prob)
                    labels_all.append(labels)
                if progress:
                    progress(split, start + n, n_rows)
            schema.splits[split] = int(n_rows)
            labels_cat = np.concatenate(labels_all) if labels_all else np.zeros(0)
            if 0 < labels_cat.sum() < len(labels_cat):  # AUC is undefined with one class
                schema.teacher_auc[split] = exact_auc(np.concatenate(scores), labels_cat)
        schema.source = {"generator": "shardrec synth", **asdict(spec), "split": list(spec.split),
                         "teacher_bias": teacher.bias}
        write_schema(tmp, schema)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return schema


def split_counts(rows: int, fractions: tuple[float, ...]) -> list[int]:
    """Rows per split: each split with a positive fraction gets at least one row, the rounding
    remainder goes to the first (train)."""
    shares = np.array(fractions, dtype=np.float64) / sum(fractions)
    counts = [max(1, int(rows * f)) if f > 0 else 0 for f in shares[1:]]
    first = rows - sum(counts)
    if first < 1:
        raise UserError(f"--rows {rows} is too few to give every split a row")
    return [first, *counts]


def exact_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC with ties counted half (torchmetrics' exact binary AUROC)."""
    import torch
    from torchmetrics.functional.classification import binary_auroc

    return float(binary_auroc(torch.from_numpy(scores.astype(np.float32)), torch.from_numpy(labels).long()))
