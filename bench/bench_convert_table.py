"""`shardrec convert table` throughput and memory, beside pyarrow.csv.read_csv in the same run.

    python bench/bench_convert_table.py [--rows 1000000] [--memory-rows 1000000,5000000,10000000]
                                        [--workers N] [--repeats 3] [--work /tmp/shardrec-bench-table]

Data: a CSV of N rows made with pyarrow (cached in --work): a 0/1 label, 5 dense columns
(exponential values, 3 decimals, 5% empty), 10 categorical string columns (cardinalities
100,000 / 30,000 / 10,000 uniform, then 3,000 .. 3 power-law; values like c0_119827), one
multi-hot column of 0-3 tokens out of 50 ('g3|g17'). The conversion: vocabulary ids for
every categorical column, log1p on the dense columns, the default 0.8/0.1/0.1 split.

(1) Speed. Baseline: pyarrow.csv.read_csv of the file, default options (type inference),
    single-threaded (use_threads=False), in this process: its first call (which pays Arrow's
    allocator warming up, as every fresh converter worker does), then the best of --repeats
    calls. The converter runs in a subprocess (`python -c "convert_table(...)"`), --repeats
    times (best kept): its CPU time is that of its whole process tree (every process's own
    user + sys time from /proc: interpreter start, imports, the parent, the fork server and
    the workers) and, apart, the CPU its tasks report (schema.json source.worker_cpu_s).
    Then once as `python -m shardrec convert table ...` (the CLI imports torch first).
    Then the same conversions with every categorical column hashed into 2^20 buckets (one
    pass: no vocabulary, no scratch rows).
    Per core = rows / CPU-seconds.
(2) Memory. Peak memory of the conversion for each of --memory-rows: the largest sum of
    the proportional set size (Pss, /proc/PID/smaps_rollup; shared pages split between the
    processes that share them) over the converter's process tree, sampled every 20 ms, and
    the largest peak RSS of one of its processes (VmHWM). Their ratio between the sizes
    should stay within 1.2: memory does not grow with rows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

ROOT = Path(__file__).resolve().parents[1]
CARDINALITY = [100_000, 30_000, 10_000, 3_000, 1_000, 300, 100, 30, 10, 3]
UNIFORM = 3  # the first three categorical columns are uniform, the rest power-law
DENSE, GENRES = 5, 50
GENERATOR_VERSION = 1


def make_csv(path: Path, rows: int, seed: int = 0) -> None:
    """Write the benchmark CSV in blocks of 500k rows (pyarrow.csv.write_csv)."""
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    with pa.OSFile(str(tmp), "wb") as sink:
        writer = None
        for start in range(0, rows, 500_000):
            n = min(500_000, rows - start)
            cols = {"click": pa.array((rng.random(n) < 0.25).astype(np.int8))}
            for j in range(DENSE):
                x = np.round(rng.exponential(10.0 ** (j - 1), n), 3)
                cols[f"d{j}"] = pa.array(x, mask=rng.random(n) < 0.05)
            for j, card in enumerate(CARDINALITY):
                ids = rng.integers(0, card, n) if j < UNIFORM else np.minimum(rng.zipf(1.3, n), card)
                digits = pc.cast(pa.array(ids * 40503 % (1 << 20)), pa.string())
                cols[f"c{j}"] = pc.binary_join_element_wise(f"c{j}", digits, "_")
            k = rng.integers(0, 4, n)
            offsets = np.concatenate([[0], np.cumsum(k)]).astype(np.int32)
            tokens = pc.binary_join_element_wise("g", pc.cast(pa.array(rng.integers(0, GENRES, offsets[-1])),
                                                               pa.string()), "")
            cols["genres"] = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), tokens), "|")
            table = pa.table(cols)
            if writer is None:
                writer = pcsv.CSVWriter(sink, table.schema, write_options=pcsv.WriteOptions(quoting_style="none"))
            writer.write_table(table)
        writer.close()
    tmp.rename(path)


def data_file(work: Path, rows: int) -> Path:
    path = work / f"table_{rows}_v{GENERATOR_VERSION}.csv"
    if not path.is_file():
        t = time.perf_counter()
        make_csv(path, rows)
        print(f"  wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s")
    return path


CONVERT_OPTIONS = dict(label="click", dense=[f"d{j}" for j in range(DENSE)], dense_transform="log1p",
                       sparse=[f"c{j}" for j in range(len(CARDINALITY))], multi_hot=["genres:|"], overwrite=True)


# The same conversion with every categorical column hashed into 2^20 buckets instead of a
# vocabulary: no statistics are needed, so it is one pass (read -> Parquet).
HASH_BUCKETS = 1 << 20


def convert_command(src: Path, out: Path, workers: int, via: str = "api", hashed: bool = False) -> list[str]:
    """The conversion as a subprocess: through the Python API (`convert_table(...)`), or
    through the `shardrec convert table` CLI (which also imports torch, in main())."""
    if via == "cli":
        o = CONVERT_OPTIONS
        return [sys.executable, "-m", "shardrec", "convert", "table", "--input", str(src), "--out", str(out),
                "--label", o["label"], "--dense", ",".join(o["dense"]), "--dense-transform", o["dense_transform"],
                "--sparse", ",".join(o["sparse"]), "--multi-hot", o["multi_hot"][0], "--workers", str(workers),
                "--overwrite"]
    options = {**CONVERT_OPTIONS, "hash_buckets": HASH_BUCKETS} if hashed else CONVERT_OPTIONS
    call = f"convert_table([{str(src)!r}], {str(out)!r}, workers={workers}, **{options!r})"
    return [sys.executable, "-c", f"from shardrec.data_pipeline.convert_table import convert_table; {call}"]


def _stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, own CPU seconds) of every process, from /proc/*/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
            except (OSError, IndexError, ValueError):
                continue
    return out


def _tree(pid: int, stats: dict[int, tuple[int, float]]) -> list[int]:
    """pid and its descendants."""
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _kb(path: str, key: str) -> int:
    """A 'Key:  N kB' line of a /proc file (0 when the process is gone)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_convert(cmd: list[str]) -> dict:
    """Run the converter: wall time; CPU of its process tree (each process's own user + sys
    time, last seen every 20 ms, so a process's final 20 ms may be missed); the peak of the
    tree's summed Pss; the largest peak RSS (VmHWM) of one of its processes."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, cpu, hwm = [0], {}, {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            stats = _stats()
            pids = _tree(proc.pid, stats)
            for p in pids:
                cpu[p] = max(cpu.get(p, 0.0), stats.get(p, (0, 0.0))[1])
                hwm[p] = max(hwm.get(p, 0), _kb(f"/proc/{p}/status", "VmHWM:"))
            peak[0] = max(peak[0], sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"convert table failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall": wall, "cpu": sum(cpu.values()), "processes": len(cpu), "pss_mb": peak[0] / 1024,
            "maxrss_mb": max(hwm.values()) / 1024, "stdout": out.strip()}


def bench_speed(work: Path, rows: int, workers: int, repeats: int) -> None:
    src = data_file(work, rows)
    print(f"(1) speed: {rows:,} rows, {src.stat().st_size / 1e6:.0f} MB")
    read = pcsv.ReadOptions(use_threads=False)
    runs = []
    for _ in range(repeats + 1):
        t, c = time.perf_counter(), time.process_time()
        table = pcsv.read_csv(src, read_options=read)
        runs.append((time.perf_counter() - t, time.process_time() - c))
        assert table.num_rows == rows
        del table
    first = rows / runs[0][1]
    wall, cpu = min(runs[1:])
    base = rows / cpu
    print(f"  baseline read_csv, 1 thread, first call  {rows / runs[0][0]:>11,.0f} rows/s  {first:>11,.0f} rows/s per core")
    print(f"  baseline read_csv, 1 thread, best of {repeats}   {rows / wall:>11,.0f} rows/s  {base:>11,.0f} rows/s per core")
    out = work / "out"
    for hashed, n_workers in itertools.product((False, True), sorted({1, workers})):
        best = None
        for _ in range(repeats):
            r = run_convert(convert_command(src, out, n_workers, hashed=hashed))
            r["worker_cpu"] = json.loads((out / "schema.json").read_text())["source"]["worker_cpu_s"]
            best = r if best is None or r["cpu"] < best["cpu"] else best
        kind = f"hash_buckets={HASH_BUCKETS}, one pass" if hashed else "vocabularies, two passes"
        print(f"  convert_table(..., workers={n_workers}; {kind}) in a subprocess, best of {repeats}: "
              f"{rows / best['wall']:,.0f} rows/s wall, {best['cpu']:.2f} CPU-s in its {best['processes']} "
              f"processes (start-up and imports included), {best['worker_cpu']:.2f} CPU-s in its tasks")
        rates = [("tasks only", rows / best["worker_cpu"]), ("whole process tree", rows / best["cpu"])]
        if n_workers == workers and not hashed:
            cli = run_convert(convert_command(src, out, workers, via="cli"))
            print(f"    {cli['stdout']}")
            rates.append((f"CLI (--workers {workers}), whole tree", rows / cli["cpu"]))
        for name, rate in rates:
            print(f"    per core, {name:<32} {rate:>9,.0f} rows/s = {rate / base:.2f}x the warm baseline, "
                  f"{rate / first:.2f}x its first call   (floor 0.5x)")
    shutil.rmtree(out, ignore_errors=True)


def bench_memory(work: Path, sizes: list[int], workers: int) -> None:
    print(f"(2) peak memory of the conversion, --workers {workers}")
    peaks = {}
    for rows in sizes:
        src = data_file(work, rows)
        out = work / "out"
        r = run_convert(convert_command(src, out, workers))
        schema = json.loads((out / "schema.json").read_text())
        vocab = sum(f["num_embeddings"] for f in schema["sparse"])
        peaks[rows] = r
        print(f"  {rows:>10,} rows ({src.stat().st_size / 1e6:,.0f} MB): peak Pss of the process tree "
              f"{r['pss_mb']:,.0f} MB, largest process (peak RSS) {r['maxrss_mb']:,.0f} MB, {r['wall']:.1f} s wall; "
              f"vocabulary ids in all {vocab:,}")
        shutil.rmtree(out, ignore_errors=True)
    lo = peaks[min(sizes)]
    for rows in sorted(sizes)[1:]:
        hi = peaks[rows]
        print(f"  ratio {rows:,} / {min(sizes):,} rows: peak Pss {hi['pss_mb'] / lo['pss_mb']:.2f}, "
              f"largest process {hi['maxrss_mb'] / lo['maxrss_mb']:.2f}   (ceiling 1.2)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the speed benchmark")
    p.add_argument("--memory-rows", default="1000000,5000000,10000000",
                   help="sizes of the memory benchmark ('' to skip)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/shardrec-bench-table"))
    p.add_argument("--only", choices=["speed", "memory"], default=None)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"pyarrow {pa.__version__}, numpy {np.__version__}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.only in (None, "speed"):
        bench_speed(args.work, args.rows, args.workers, args.repeats)
    if args.only in (None, "memory") and args.memory_rows:
        bench_memory(args.work, [int(v) for v in args.memory_rows.split(",")], args.workers)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
