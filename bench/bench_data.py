"""Data pipeline throughput, each beside a raw pyarrow baseline measured in the same run.

    python bench/bench_data.py [--rows 500000] [--reader-rows 1000000] [--work /tmp/shardrec-bench]

(a) Criteo converter (TSV -> Parquet, hash ids) on a TSV made by repeating the real
    8,000-row sample (../shared/data) with the high-cardinality hashes perturbed per copy
    (synthetic lines if the sample is absent). Baseline: pyarrow.csv.read_csv of the same
    file, single-threaded, every column as a string (parsing alone, nothing converted).
(b) ShardReader -> TorchRec Batch on synthetic one-hot (preset demo: 13 dense, 26 one-hot)
    and multi-hot (preset tiny-multihot: 6 features with up to 5 ids) data. Baseline:
    ParquetFile.iter_batches over the same files and columns, same batch size.

Per core = rows / CPU-seconds: the CPU time of every thread of this process (Arrow's
decode threads and the prefetch thread included) plus, for the converter, that of its
worker processes. This counts the cores actually busy, not the cores present. Each figure
is the best of --repeats runs after a warm-up, because the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Only light imports at the top: the converter's worker processes import this script again
# (multiprocessing does that with the main module), and torch would cost each one seconds.
from shardrec.data_pipeline.convert_criteo import COLUMNS, convert_criteo  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo_sample" / "criteo_8000.tsv"
HIGH_CARDINALITY = (2, 3, 11, 15, 20, 23)  # C3 C4 C12 C16 C21 C24: perturbed per copy


def make_tsv(path: Path, rows: int) -> str:
    """`rows` Criteo lines: copies of the real sample, each copy with its own hashes in the
    high-cardinality columns, so the data is not 63 identical blocks."""
    if SAMPLE.is_file():
        base = [line.split("\t") for line in SAMPLE.read_text().splitlines()]
        source = f"{SAMPLE.name} repeated, C3 C4 C12 C16 C21 C24 xor-ed per copy"
    else:
        rng = np.random.default_rng(0)
        base = [[str(int(rng.random() < 0.25)), *[str(int(v)) for v in rng.integers(-1, 500, 13)],
                 *[f"{int(v):08x}" for v in rng.integers(0, 1 << 32, 26)]] for _ in range(8000)]
        source = "synthetic lines (sample not found)"
    with open(path, "w") as f:
        for copy in range(-(-rows // len(base))):
            mask = (copy * 0x9E3779B1) & 0xFFFFFFFF
            out = []
            for fields in base[: rows - copy * len(base)]:
                fields = list(fields)
                for j in HIGH_CARDINALITY:
                    if copy and fields[14 + j]:
                        fields[14 + j] = f"{int(fields[14 + j], 16) ^ mask:08x}"
                out.append("\t".join(fields))
            f.write("\n".join(out) + "\n")
    return source


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Best (wall, cpu) of `repeats` runs after one warm-up; cpu = this process, all threads."""
    fn()
    best = None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        run = (time.perf_counter() - t, time.process_time() - c, out)
        best = run if best is None or run[0] < best[0] else best
    return best


def line(name: str, rows: int, wall: float, cpu: float, note: str = "") -> float:
    per_core = rows / cpu
    print(f"  {name:<34} {rows / wall:>12,.0f} rows/s  {cpu / wall:4.2f} cores busy  "
          f"{per_core:>12,.0f} rows/s per core {note}")
    return per_core


def bench_converter(work: Path, rows: int, repeats: int) -> None:
    tsv = work / "criteo.tsv"
    source = make_tsv(tsv, rows)
    print(f"(a) Criteo converter: {rows:,} lines, {tsv.stat().st_size / 1e6:.0f} MB ({source})")
    read = pcsv.ReadOptions(column_names=COLUMNS, use_threads=False)
    parse = pcsv.ParseOptions(delimiter="\t", quote_char=False)
    strings = pcsv.ConvertOptions(column_types={c: pa.string() for c in COLUMNS})
    wall, cpu, _ = timed(lambda: pcsv.read_csv(tsv, read_options=read, parse_options=parse,
                                               convert_options=strings), repeats)
    base = line("baseline pyarrow.csv.read_csv", rows, wall, cpu, "(1 thread, strings only)")
    for workers in sorted({1, os.cpu_count() or 1}):
        def run(workers=workers):
            c = time.process_time()
            schema = convert_criteo([tsv], work / "criteo", table_size="mlperf", workers=workers, overwrite=True)
            # with workers > 1 the tasks run in other processes, which report their own CPU time
            return time.process_time() - c + (schema.source["worker_cpu_s"] if workers > 1 else 0)

        wall, _, cpu = timed(run, repeats)
        line(f"convert criteo --workers {workers}", rows, wall, cpu, f"= {rows / cpu / base:.2f}x the baseline")
        print(f"  {'':<34} {rows / wall / workers:>12,.0f} rows/s per worker (wall-clock / workers)")


def bench_reader(work: Path, name: str, preset: str, rows: int, batch_size: int, repeats: int) -> None:
    from shardrec.data_pipeline.reader import ShardReader
    from shardrec.data_pipeline.schema import load_schema
    from shardrec.data_pipeline.synth import generate, spec_from_preset

    root = work / name
    if not (root / "schema.json").is_file():
        spec = spec_from_preset(preset, rows, seed=0)
        spec.rows_per_file, spec.row_group_rows = 250_000, 50_000
        generate(spec, root, overwrite=True)
    schema = load_schema(root)
    files = sorted((root / "train").glob("*.parquet"))
    n = schema.splits["train"]
    multi = sum(f.multi_hot for f in schema.sparse)
    print(f"(b) reader -> Batch, {name}: {n:,} rows, {len(schema.dense)} dense, {len(schema.sparse)} sparse "
          f"({multi} multi-hot), batch {batch_size}, row groups of 50,000")
    columns = schema.arrow_schema().names

    def raw():
        return sum(b.num_rows for f in files for b in pq.ParquetFile(f).iter_batches(batch_size, columns=columns))

    def reader(prefetch: int):
        return sum(len(b.labels) for b in ShardReader(root, "train", schema, batch_size, drop_last=False,
                                                      prefetch_batches=prefetch))

    wall, cpu, _ = timed(raw, repeats)
    base = line("baseline ParquetFile.iter_batches", n, wall, cpu)
    for prefetch in (0, 4):
        wall, cpu, got = timed(lambda prefetch=prefetch: reader(prefetch), repeats)
        assert got == n
        line(f"ShardReader prefetch_batches={prefetch}", n, wall, cpu, f"= {n / cpu / base:.2f}x the baseline")
    bench_checks(root, schema, n, batch_size, repeats)


def bench_checks(root: Path, schema, n: int, batch_size: int, repeats: int) -> None:
    """What the integrity checks cost: the reader with and without them (value checks and
    page checksums), in alternating rounds so that drift hits both alike; the medians are
    compared (the best of a few runs swings by 10% on a shared 2-core machine)."""
    import statistics

    from shardrec.data_pipeline.reader import ShardReader

    def read(validate: bool) -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        got = sum(len(b.labels) for b in ShardReader(root, "train", schema, batch_size, drop_last=False,
                                                     prefetch_batches=0, validate=validate))
        assert got == n
        return time.perf_counter() - t, time.process_time() - c

    read(True), read(False)  # warm-up
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(max(repeats, 1) * 4):
        for validate in (False, True):
            runs[validate].append(read(validate))
    med = {v: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)) for v, rs in runs.items()}
    unchecked = line("ShardReader, checks off (median)", n, *med[False])
    line("ShardReader, checks on (median)", n, *med[True], f"= {checked_ratio(unchecked, n / med[True][1])}")


def checked_ratio(unchecked: float, checked: float) -> str:
    return f"{checked / unchecked:.3f}x unchecked ({(1 - checked / unchecked) * 100:+.1f}% cost)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=500_000, help="TSV lines for the converter")
    p.add_argument("--reader-rows", type=int, default=1_000_000,
                   help="training rows of the one-hot reader data set (multi-hot: half)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default="/tmp/shardrec-bench", help="scratch folder (kept for re-runs)")
    p.add_argument("--only", choices=["converter", "reader"], default=None)
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores present, load average {os.getloadavg()[0]:.2f} at start; best of {args.repeats}")
    if args.only != "reader":
        bench_converter(work, args.rows, args.repeats)
        shutil.rmtree(work / "criteo", ignore_errors=True)
    if args.only != "converter":
        # the train split (80%) is what is read
        bench_reader(work, "onehot-crc", "demo", args.reader_rows * 5 // 4, args.batch_size, args.repeats)
        bench_reader(work, "multihot-crc", "tiny-multihot", args.reader_rows * 5 // 8, args.batch_size, args.repeats)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
