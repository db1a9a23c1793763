"""Scoring the validation split during training gives an AUC curve and leaves training as is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shardrec.configs.loader import load_config
from shardrec.trainer.loop import run


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["sparse_dist", "base"])
def test_validation_every_n_steps_does_not_change_training(tiny_data, tmp_path, pipeline):
    def cfg(name, *extra):
        return load_config("tiny", [f"--dataset.path={tiny_data}", f"--run_dir={tmp_path / name}",
                                    f"--train.pipeline={pipeline}", "--checkpoint.save_final=false", *extra])

    plain = run(cfg("plain"))
    validated = run(cfg("validated", "--eval.every_steps=30"))
    assert validated["auc"] == plain["auc"] and validated["logloss"] == plain["logloss"]
    records = [json.loads(line) for line in (Path(validated["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["split"], r["step"]) for r in records if r["event"] == "eval"]
    assert evals == [("valid", 30), ("valid", 60), ("valid", 90), ("test", 93)]
    curve = [r["auc"] for r in records if r["event"] == "eval" and r["split"] == "valid"]
    assert curve[-1] > curve[0]  # the model improves between the first and last validation
