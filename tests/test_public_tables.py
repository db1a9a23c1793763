"""Your data in, predictions out, on samples of two public tables (tests/data/README.md):
`convert table` on the raw CSV, a ranking preset trains on it, and `predict` scores raw rows
the converter never saw through the saved vocabularies, exactly as it scores the converted ones."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from doc_commands import ROOT
from shardrec.launch.cli import main as cli

DATA = ROOT / "tests" / "data"
pytestmark = pytest.mark.slow


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels.sum()
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * (len(labels) - pos)))


def test_adult_from_raw_csv_to_predictions_on_held_out_raw_rows(tmp_path):
    table = pcsv.read_csv(DATA / "adult_sample.csv")
    pcsv.write_csv(table.slice(0, 2600), tmp_path / "adult.csv")
    pcsv.write_csv(table.slice(2600), tmp_path / "held_out.csv")
    assert cli(["convert", "table", "--input", str(tmp_path / "adult.csv"), "--out", str(tmp_path / "ds"),
                "--label", "income", "--label-positive", ">50K",
                "--sparse", "workclass,education,marital-status,occupation,relationship,race,gender,native-country",
                "--dense", "age,fnlwgt,educational-num,capital-gain,capital-loss,hours-per-week",
                "--dense-transform", "log1p"]) == 0
    run = tmp_path / "run"
    assert cli(["train", "--config", "deepfm_movielens", f"--dataset.path={tmp_path / 'ds'}", "--run-dir", str(run),
                "--train.batch_size=128", "--train.epochs=8", "--train.early_stopping.metric=auc",
                "--train.progress=false"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["auc"] >= 0.8, summary  # income is well predicted by these columns
    out = tmp_path / "held_out.parquet"
    assert cli(["predict", "--run-dir", str(run), "--checkpoint", "best", "--input", str(tmp_path / "held_out.csv"),
                "--out", str(out), "--keep", "age,income"]) == 0
    preds = pq.read_table(out)
    held = pcsv.read_csv(tmp_path / "held_out.csv")
    assert preds.column("age").to_pylist() == [str(v) for v in held.column("age").to_pylist()]  # input order
    labels = np.array([v == ">50K" for v in preds.column("income").to_pylist()], np.float64)
    assert auc(labels, preds.column("score").to_numpy()) >= 0.8


def test_clothing_reviews_raw_rows_score_like_the_converted_ones(tmp_path):
    table = pcsv.read_csv(DATA / "womens_clothing_reviews_sample.csv")
    parts = {"train": table.slice(0, 1600), "valid": table.slice(1600, 200), "test": table.slice(1800)}
    for name, part in parts.items():
        pcsv.write_csv(part, tmp_path / f"{name}.csv")
    assert cli(["convert", "table", "--input", *(str(tmp_path / f"{n}.csv") for n in parts), "--out",
                str(tmp_path / "ds"), "--label", "Recommended IND", "--train-files", "train.csv",
                "--valid-files", "valid.csv", "--test-files", "test.csv",
                "--sparse", "Clothing ID,Division Name,Department Name,Class Name",
                "--dense", "Age,Positive Feedback Count", "--dense-transform", "log1p", "--keep", "Title"]) == 0
    run = tmp_path / "run"
    assert cli(["train", "--config", "fm_movielens", f"--dataset.path={tmp_path / 'ds'}", "--run-dir", str(run),
                "--train.batch_size=128", "--train.epochs=3", "--train.progress=false"]) == 0
    raw, encoded = tmp_path / "raw.parquet", tmp_path / "encoded.parquet"
    assert cli(["predict", "--run-dir", str(run), "--input", str(tmp_path / "test.csv"), "--out", str(raw),
                "--keep", "Title"]) == 0
    assert cli(["predict", "--run-dir", str(run), "--input", str(tmp_path / "ds" / "test"), "--out", str(encoded),
                "--keep", "Title"]) == 0
    a, b = pq.read_table(raw), pq.read_table(encoded)
    assert a.num_rows == b.num_rows == 200
    titles = [title or None for title in parts["test"].column("Title").to_pylist()]  # an empty field is missing
    assert a.column("Title").to_pylist() == b.column("Title").to_pylist() == titles
    assert np.abs(a.column("score").to_numpy() - b.column("score").to_numpy()).max() <= 1e-6
