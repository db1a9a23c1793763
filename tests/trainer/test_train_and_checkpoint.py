"""End to end on tiny synthetic data: training learns, the run folder is complete, and a
checkpoint loads back to the identical evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shardrec.configs.errors import UserError
from shardrec.trainer.checkpoint import list_checkpoints
from shardrec.trainer.loop import evaluate_checkpoint, run


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    from shardrec.configs.loader import load_config

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = load_config("tiny", [f"--dataset.path={tiny_data}", f"--run_dir={run_dir}",
                               "--checkpoint.every_steps=40", "--checkpoint.keep=2"])
    return cfg, run(cfg)


def test_training_learns_most_of_the_teacher_signal(trained):
    _, summary = trained
    # An untrained model scores 0.5; the debug DLRM on 24k rows gets ~75% of the teacher's lift.
    assert summary["teacher_auc"] > 0.7
    assert summary["auc"] - 0.5 >= 0.6 * (summary["teacher_auc"] - 0.5), summary
    assert summary["logloss"] < 0.56  # predicting the base rate alone gives ~0.57


def test_run_folder_holds_config_metrics_summary_and_checkpoints(trained):
    cfg, summary = trained
    run_dir = Path(cfg.run_dir)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary
    for key in ("model", "world_size", "steps", "samples", "wall_s", "samples_per_s", "auc", "logloss",
                "teacher_auc"):
        assert key in on_disk
    assert on_disk["world_size"] == 1
    assert on_disk["steps"] == 24_000 // 256
    assert on_disk["samples"] == on_disk["steps"] * 256
    assert {p["compute_kernel"] for p in on_disk["plan"].values()} == {"fused"}

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 93]
    assert train[-1]["loss"] < train[0]["loss"]
    assert records[-1]["event"] == "eval" and records[-1]["auc"] == summary["auc"]

    assert "model:\n  name: dlrm" in (run_dir / "config.yaml").read_text()
    # every_steps=40 saved 40 and 80, the end saved 93; keep=2 leaves the last two.
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step_80", "step_93"]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]


def test_checkpoint_reloads_to_the_identical_metric(trained):
    cfg, summary = trained
    result = evaluate_checkpoint(cfg)
    assert result["step"] == summary["steps"]
    assert result["auc"] == summary["auc"]
    assert result["logloss"] == summary["logloss"]


def test_an_older_checkpoint_scores_differently(trained):
    cfg, summary = trained
    older = Path(cfg.run_dir) / "checkpoints" / "step_80"
    result = evaluate_checkpoint(cfg, str(older))
    assert result["step"] == 80
    assert result["auc"] != summary["auc"]


def test_not_a_checkpoint_is_a_clear_error(trained, tmp_path):
    cfg, _ = trained
    with pytest.raises(UserError, match="not a checkpoint folder"):
        evaluate_checkpoint(cfg, str(tmp_path))
