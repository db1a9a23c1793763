"""Early stopping: training past the best validation score is cut short, the best weights are
kept in checkpoints/best, and the reported test score is theirs."""

from __future__ import annotations

import json

import pytest
from shardrec.configs.loader import load_config
from shardrec.configs.tree import EarlyStoppingConfig
from shardrec.trainer.early_stopping import EarlyStopping
from shardrec.trainer.loop import evaluate_checkpoint, run


@pytest.mark.parametrize("metric, values, improved, stops", [
    ("auc", [0.70, 0.72, 0.719, 0.73, 0.72, 0.71], [1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]),
    ("logloss", [0.50, 0.49, 0.495, 0.50], [1, 1, 0, 0], [0, 0, 0, 1]),
])
def test_improvement_and_patience(metric, values, improved, stops):
    stopping = EarlyStopping(EarlyStoppingConfig(metric=metric, patience=2))
    seen = [stopping.update({metric: v}, step) for step, v in enumerate(values)]
    assert [int(i) for i, _ in seen] == improved and [int(s) for _, s in seen] == stops


def test_min_delta_and_explicit_mode():
    stopping = EarlyStopping(EarlyStoppingConfig(metric="auc", mode="max", min_delta=0.01, patience=1))
    assert stopping.update({"auc": 0.70}, 1) == (True, False)
    assert stopping.update({"auc": 0.705}, 2) == (False, True)  # not 0.01 better
    assert stopping.best_step == 1


@pytest.mark.slow
def test_training_stops_after_the_best_epoch_and_scores_the_best_weights(tiny_data, tmp_path):
    # A learning rate this high overfits the 24k training rows after the first epoch.
    cfg = load_config("tiny", [f"--dataset.path={tiny_data}", f"--run_dir={tmp_path / 'run'}",
                               "--train.epochs=12", "--embeddings.lr=0.5", "--optimizer.lr=0.05",
                               "--train.early_stopping.metric=auc", "--train.early_stopping.patience=2"])
    summary = run(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = {r["step"]: r["auc"] for r in records if r.get("event") == "eval" and r["split"] == "valid"}
    steps_per_epoch = 24_000 // 256
    # Validated once per epoch, stopped `patience` epochs after the best, long before 12 epochs.
    assert sorted(valid) == [steps_per_epoch * (i + 1) for i in range(len(valid))]
    assert summary["stopped_early"] and summary["steps"] < 12 * steps_per_epoch
    best = max(valid, key=valid.get)
    assert summary["best_step"] == best and summary["best_value"] == pytest.approx(valid[best])
    assert summary["best_epoch"] == best // steps_per_epoch
    assert summary["steps"] == best + 2 * steps_per_epoch
    assert all(valid[s] < valid[best] for s in valid if s > best)  # training on made it worse
    # The test score is the best weights', not the last ones' (which score lower).
    best_test = evaluate_checkpoint(cfg, "best")
    last_test = evaluate_checkpoint(cfg)
    assert best_test["step"] == best and summary["auc"] == pytest.approx(best_test["auc"], abs=1e-9)
    assert last_test["step"] == summary["steps"] and last_test["auc"] < best_test["auc"]
    assert [p.name for p in (tmp_path / "run" / "checkpoints" / "best").iterdir()] == [f"step_{best}"]
