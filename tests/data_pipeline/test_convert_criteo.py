"""Criteo TSV -> shardrec data set, on the real 8,000-row sample (read in place) and on
small hand-made files for the malformed, gzip, vocabulary and split-by-file cases."""

from __future__ import annotations

import gzip
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shardrec.data_pipeline.convert_criteo as cc
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.convert_criteo import MLPERF_SIZES, convert_criteo
from shardrec.data_pipeline.reader import ShardReader
from shardrec.data_pipeline.schema import load_schema

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT.parent / "shared" / "data" / "criteo_sample" / "criteo_8000.tsv"
needs_sample = pytest.mark.skipif(not SAMPLE.is_file(),
                                  reason=f"Criteo sample not found at {SAMPLE} (../shared/data is CI-only)")
ALL_TRAIN = (1.0, 0.0, 0.0)  # every row in train, in file order: row k-1 is line k


def _split_table(root: Path, split: str) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((root / split).glob("*.parquet")))


def _line(i: int) -> str:
    """A well-formed synthetic line: label, 13 integers, 26 hashes (some empty)."""
    dense = [str(i % 7 - 2) if (i + k) % 5 else "" for k in range(13)]
    cats = [f"{(i * 2654435761 + k * 97) % (1 << 32):08x}" if (i + k) % 6 else "" for k in range(26)]
    return "\t".join([str(i % 2), *dense, *cats])


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@needs_sample
def test_cli_converts_the_sample(tmp_path):
    out = tmp_path / "criteo"
    proc = subprocess.run([sys.executable, "-m", "shardrec", "convert", "criteo", "--input", str(SAMPLE),
                           "--out", str(out), "--table-size", "1000", "--seed", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    schema = load_schema(out)
    assert sum(schema.splits.values()) == 8000 and set(schema.splits) == {"train", "valid", "test"}
    assert 0.75 < schema.splits["train"] / 8000 < 0.85
    assert [f.num_embeddings for f in schema.sparse] == [1000] * 26
    assert schema.source["skipped_lines"] == 0 and schema.source["lines"] == 8000
    rows = sum(len(b.labels) for b in ShardReader(out, "train", schema, 256, drop_last=False))
    assert rows == schema.splits["train"]
    label_rate = _split_table(out, "train").column("label").to_numpy().mean()
    assert 0.15 < label_rate < 0.3  # the sample's click rate is about 22%


@needs_sample
def test_rows_worked_out_by_hand(tmp_path):
    schema = convert_criteo([SAMPLE], tmp_path / "c", table_size=1000, split=ALL_TRAIN)
    assert schema.splits == {"train": 8000}
    t = _split_table(tmp_path / "c", "train").slice(0, 3).to_pylist()
    # line 1: 0 | 3 -1 '' 0 2 0 3 0 0 1 1 '' 0 | 8cf07265 ... C19 C20 empty ... C25 C26 empty
    r = t[0]
    assert r["label"] == 0.0
    assert r["I1"] == pytest.approx(math.log(4))  # log(1 + 3)
    assert r["I2"] == 0.0  # -1 -> 0 -> log(1) = 0
    assert r["I3"] == 0.0  # empty -> 0
    assert r["I5"] == pytest.approx(math.log(3))
    # 0x8cf07265 = 2364568165; 2364568165 mod 999 = 100; id = 1 + 100
    assert r["C1"] == 101
    assert r["C5"] == 219  # 0x25c83c98 = 633879704, mod 999 = 218
    assert r["C9"] == 670  # 0xa73ee510 = 2805916944, mod 999 = 669
    assert (r["C19"], r["C20"], r["C22"], r["C25"], r["C26"]) == (0, 0, 0, 0, 0)  # empty -> reserved 0
    assert r["C23"] == 556  # 0x32c7478e = 851920782, mod 999 = 555
    # line 3: 0 | '' 35 '' 1 33737 ... | 05db9164 ... C6 empty
    r = t[2]
    assert r["I1"] == 0.0 and r["I2"] == pytest.approx(math.log(36), rel=1e-6)
    assert r["I5"] == pytest.approx(math.log(33738), rel=1e-6)
    assert r["C1"] == 59  # 0x05db9164 = 98275684, mod 999 = 58
    assert r["C6"] == 0
    assert t[1]["label"] == 1.0


def test_mlperf_preset_and_table_size_list():
    assert cc.table_sizes("mlperf") == MLPERF_SIZES and max(MLPERF_SIZES) == 40_000_000
    assert cc.table_sizes("mlperf", cap=True) == [40_000_000] * 26
    assert cc.table_sizes(",".join(map(str, range(2, 28)))) == list(range(2, 28))
    for bad in ("1", "5,6", "x"):
        with pytest.raises(UserError, match="--table-size"):
            cc.table_sizes(bad)


@needs_sample
def test_min_count_vocabulary(tmp_path):
    schema = convert_criteo([SAMPLE], tmp_path / "v", min_count=3, split=ALL_TRAIN)
    t = _split_table(tmp_path / "v", "train")
    fields = [line.split("\t") for line in SAMPLE.read_text().splitlines()]
    for j in (0, 2, 5, 25):  # C1, C3 (many rare values), C6, C26
        name, raw = f"C{j + 1}", [f[14 + j] for f in fields]
        counts = Counter(v for v in raw if v)
        kept = sorted(int(v, 16) for v, c in counts.items() if c >= 3)
        want = [0 if not v else 1 if counts[v] < 3 else 2 + kept.index(int(v, 16)) for v in raw]
        assert t.column(name).to_pylist() == want, name
        assert schema.sparse[j].num_embeddings == 2 + len(kept)
    assert (t.column("C3").to_numpy() == 1).sum() > 1000  # rare values do share the OOV id
    assert np.load(tmp_path / "v" / "vocab" / "C3.npy").shape == (schema.sparse[2].num_embeddings - 2,)


def test_vocabulary_counts_only_the_training_split(tmp_path):
    day0 = _write(tmp_path / "day_0", [_line(i) for i in range(40)])
    day1 = _write(tmp_path / "day_1", [_line(i) for i in range(40, 80)])
    schema = convert_criteo([day0, day1], tmp_path / "v", min_count=1, test_files=["day_1"])
    test = _split_table(tmp_path / "v", "test")
    train = _split_table(tmp_path / "v", "train")
    c1 = test.column("C1").to_numpy()
    # day_1's hashes never occur in day_0: all out of vocabulary (or empty)
    assert set(c1.tolist()) <= {0, 1} and (c1 == 1).any()
    assert (train.column("C1").to_numpy() >= 2).sum() == sum(1 for i in range(40) if i % 6)
    assert schema.source["split"]["by_file"] == {"train": ["day_0"], "valid": [], "test": ["day_1"]}


def test_gzip_input_matches_plain(tmp_path):
    lines = [_line(i) for i in range(300)]
    plain = _write(tmp_path / "day_0", lines)
    with gzip.open(tmp_path / "day_0.gz", "wt") as f:
        f.write("".join(line + "\n" for line in lines))
    a = convert_criteo([plain], tmp_path / "a", table_size=500, seed=1)
    b = convert_criteo([tmp_path / "day_0.gz"], tmp_path / "b", table_size=500, seed=1)
    assert a.splits == b.splits and sum(a.splits.values()) == 300
    for split in a.splits:
        assert _split_table(tmp_path / "a", split).equals(_split_table(tmp_path / "b", split))


def test_split_by_file(tmp_path):
    files = [_write(tmp_path / f"day_{d}", [_line(100 * d + i) for i in range(50 + d)]) for d in range(4)]
    gz = tmp_path / "day_3.gz"
    gz.write_bytes(gzip.compress(files[3].read_bytes()))
    schema = convert_criteo([*files[:3], gz], tmp_path / "out", table_size=100,
                            valid_files=["day_2"], test_files=["day_3"])
    assert schema.splits == {"train": 50 + 51, "valid": 52, "test": 53}
    assert _split_table(tmp_path / "out", "valid").column("label").to_pylist() == [
        float((200 + i) % 2) for i in range(52)]
    with pytest.raises(UserError, match="--test-files 'day_9' names none of the inputs"):
        convert_criteo(files, tmp_path / "x", test_files=["day_9"])


def test_output_is_the_same_for_any_number_of_workers(tmp_path):
    """Small chunks so the file spans several tasks run in worker processes."""
    src = _write(tmp_path / "day_0", [_line(i) for i in range(3000)])
    one = convert_criteo([src], tmp_path / "one", table_size=1000, workers=1, chunk_bytes=64 << 10)
    two = convert_criteo([src], tmp_path / "two", table_size=1000, workers=2, chunk_bytes=64 << 10)
    assert len(list((tmp_path / "two" / "train").glob("*.parquet"))) == 2
    assert one.splits == two.splits
    for split in one.splits:
        assert _split_table(tmp_path / "one", split).equals(_split_table(tmp_path / "two", split))


# ---------------------------------------------------------------------------------------
# Malformed input, interruption, existing output

MALFORMED = {
    "wrong_field_count": (lambda f: f[:-1], "expected 40 tab-separated fields, found 39"),
    "bad_categorical": (lambda f: f[:20] + ["12zz56ab"] + f[21:], "C7 '12zz56ab' is not an 8-digit hex hash"),
    "bad_dense": (lambda f: f[:3] + ["2.5"] + f[4:], "I3 '2.5' is not an integer"),
    "bad_label": (lambda f: ["yes"] + f[1:], "label 'yes' is not 0 or 1"),
}


def _with_bad_lines(path: Path, kind: str, bad: list[int], n: int = 200) -> Path:
    lines = [_line(i) for i in range(n)]
    for k in bad:
        lines[k - 1] = "\t".join(MALFORMED[kind][0](lines[k - 1].split("\t")))
    return _write(path, lines)


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_line_names_file_and_line(tmp_path, kind):
    src = _with_bad_lines(tmp_path / "day_0", kind, [57, 120])
    with pytest.raises(UserError) as e:
        convert_criteo([src], tmp_path / "out")
    assert f"{src}:57: {MALFORMED[kind][1]}" in str(e.value)
    assert "--on-error skip" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day_0"]  # no output, no temp folder


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_on_error_skip_counts(tmp_path, kind):
    src = _with_bad_lines(tmp_path / "day_0", kind, [3, 57, 120])
    schema = convert_criteo([src], tmp_path / "out", on_error="skip", split=ALL_TRAIN)
    assert schema.splits == {"train": 197}
    assert schema.source["skipped"] == {kind: 3} and schema.source["skipped_lines"] == 3
    labels = _split_table(tmp_path / "out", "train").column("label").to_pylist()
    assert labels == [float(i % 2) for i in range(200) if i + 1 not in (3, 57, 120)]


def test_line_number_counts_lines_of_earlier_tasks_and_empty_lines(tmp_path):
    lines = [_line(i) for i in range(3000)]
    lines[1499] = ""  # an empty line is malformed too, and still counts as a line
    src = _write(tmp_path / "day_0", lines)
    with pytest.raises(UserError, match=rf"{src}:1500: label '' is not 0 or 1"):
        convert_criteo([src], tmp_path / "out", workers=1, chunk_bytes=4 << 10)  # several tasks inline
    lines[1499] = _line(0)
    lines[2900] = lines[2900] + "\textra"
    src = _write(tmp_path / "day_0", lines)
    with pytest.raises(UserError, match=rf"{src}:2901: expected 40 tab-separated fields, found 41"):
        convert_criteo([src], tmp_path / "out", workers=1, chunk_bytes=4 << 10)


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    src = _write(tmp_path / "day_0", [_line(i) for i in range(2000)])
    calls = []

    def failing_write(self, split, table):
        calls.append(split)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write(self, split, table)

    real_write = cc.SplitWriter.write
    monkeypatch.setattr(cc.SplitWriter, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        convert_criteo([src], tmp_path / "out", workers=1, chunk_bytes=16 << 10)
    assert len(calls) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day_0"]


def test_existing_output_needs_overwrite(tmp_path):
    src = _write(tmp_path / "day_0", [_line(i) for i in range(20)])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("x")
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        convert_criteo([src], tmp_path / "out")
    assert (tmp_path / "out" / "keep").is_file()
    # --overwrite replaces only an empty folder or a data set, never a folder of something else.
    with pytest.raises(UserError, match="neither empty nor a shardrec data set.*refusing to delete"):
        convert_criteo([src], tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "keep").is_file()
    (tmp_path / "out" / "keep").unlink()
    convert_criteo([src], tmp_path / "out", overwrite=True)  # an empty folder
    (tmp_path / "out" / "train" / "extra").write_text("x")
    convert_criteo([src], tmp_path / "out", overwrite=True)  # a data set
    assert not (tmp_path / "out" / "train" / "extra").exists() and (tmp_path / "out" / "schema.json").is_file()


def test_cli_user_errors(tmp_path, capsys):
    from shardrec.launch.cli import main

    src = _write(tmp_path / "day_0", [_line(i) for i in range(20)])

    def cli(*args):
        return main(["convert", "criteo", "--input", str(src), "--out", str(tmp_path / "o"), *args])

    assert cli("--split", "0.8,0.2,0", "--test-files", "day_0") == 2
    assert "exclude each other" in capsys.readouterr().err
    assert cli("--on-error", "skip", "--table-size", "7,8") == 2
    assert "--table-size '7,8'" in capsys.readouterr().err
    assert cli("--table-size", "50", "--split", "1,0,0", "--on-error", "skip") == 0
    assert "wrote" in capsys.readouterr().out and load_schema(tmp_path / "o").splits == {"train": 20}
