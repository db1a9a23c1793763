"""A tiny training run leaves TensorBoard events that TensorBoard's own reader loads, with the
same numbers as metrics.jsonl, and a summary.json with the new metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shardrec.configs.loader import load_config
from shardrec.trainer.loop import run
from shardrec.trainer.run_dir import RunDir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TRAIN_TAGS = {"train/loss", "train/samples_per_s", "train/lr_embeddings", "train/lr_dense"}
EVAL_TAGS = {"eval_test/auc", "eval_test/logloss", "eval_test/ne", "eval_test/calibration", "eval_test/accuracy", "eval_test/mse",
             "eval_test/label_rate"}


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tb") / "run"
    cfg = load_config("tiny", [f"--dataset.path={tiny_data}", f"--run_dir={run_dir}",
                               "--train.max_steps=12", "--train.log_every=4",
                               "--checkpoint.save_final=false"])
    return run_dir, run(cfg)


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_event_files_hold_train_and_eval_scalars(tiny_run):
    run_dir, summary = tiny_run
    assert list(run_dir.glob("events.out.tfevents.*"))
    got = scalars(run_dir)
    assert TRAIN_TAGS | EVAL_TAGS <= set(got), sorted(got)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["event"] == "train"]
    assert [s for s, _ in got["train/loss"]] == [r["step"] for r in train] == [4, 8, 12]
    # Same numbers as metrics.jsonl (TensorBoard stores float32).
    assert [v for _, v in got["train/loss"]] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    assert got["train/lr_dense"][0][1] == pytest.approx(train[0]["lr_dense"], rel=1e-6)
    assert got["eval_test/auc"] == [(12, pytest.approx(summary["auc"], rel=1e-6))]
    assert got["eval_test/ne"][0][1] == pytest.approx(summary["ne"], rel=1e-6)


def test_summary_has_the_new_metrics(tiny_run):
    run_dir, summary = tiny_run
    on_disk = json.loads((run_dir / "summary.json").read_text())
    for key in ("auc", "logloss", "ne", "calibration", "accuracy", "mse", "label_rate"):
        assert isinstance(on_disk[key], float), key
    assert 0.5 < on_disk["ne"] < 1.1 and 0.2 < on_disk["calibration"] < 5


def test_only_rank_zero_and_only_numbers_are_written(tmp_path):
    other = RunDir(tmp_path / "r1", is_main=False)
    other.log({"event": "train", "step": 1, "loss": 0.5})
    other.close()
    assert not (tmp_path / "r1").exists()
    main = RunDir(tmp_path / "r0", is_main=True)
    main.open(fresh=True)
    main.log({"event": "eval", "step": 3, "split": "test", "auc": 0.7, "ne": float("nan"), "ok": True})
    main.close()
    assert set(scalars(tmp_path / "r0")) == {"eval_test/auc"}
