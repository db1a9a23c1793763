"""A run resumed from a mid-epoch checkpoint ends exactly where the uninterrupted run ends:
model, both optimizers, learning-rate schedule, RNG and reader position all continue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shardrec.configs.errors import UserError
from shardrec.configs.loader import load_config
from shardrec.trainer.loop import run


def _cfg(tiny_data: str, run_dir: Path, *extra: str):
    return load_config("tiny", [f"--dataset.path={tiny_data}", f"--run_dir={run_dir}", "--train.epochs=2",
                                "--dataset.shuffle_buffer=1000", "--optimizer.warmup_steps=30",
                                "--optimizer.decay_start_step=100", "--optimizer.decay_steps=86",
                                "--train.log_every=1", *extra])


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["event"] == "train"}


@pytest.mark.slow
def test_resume_mid_second_epoch_matches_the_uninterrupted_run(tiny_data, tmp_path):
    full = run(_cfg(tiny_data, tmp_path / "full", "--checkpoint.every_steps=120", "--checkpoint.keep=3"))
    assert full["steps"] == 2 * (24_000 // 256)
    checkpoint = tmp_path / "full" / "checkpoints" / "step_120"  # 27 batches into epoch 1
    resumed = run(_cfg(tiny_data, tmp_path / "resumed", f"--checkpoint.resume={checkpoint}"))
    assert resumed["steps"] == full["steps"]
    assert resumed["auc"] == full["auc"]
    assert resumed["logloss"] == full["logloss"]
    before, after = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert min(after) == 121
    assert after == {s: loss for s, loss in before.items() if s > 120}


def test_resume_latest_without_checkpoints_is_a_clear_error(tiny_data, tmp_path):
    with pytest.raises(UserError, match="checkpoint.resume is 'latest'.*holds no complete checkpoint"):
        run(_cfg(tiny_data, tmp_path / "empty", "--checkpoint.resume=latest"))


def test_resuming_a_finished_run_keeps_its_position_and_more_epochs_continue(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    args = [f"--dataset.path={tiny_data}", f"--run_dir={run_dir}", "--train.log_every=10"]
    done = run(load_config("tiny", args))
    info = json.loads((run_dir / "checkpoints" / f"step_{done['steps']}" / "shardrec.json").read_text())
    again = run(load_config("tiny", [*args, "--checkpoint.resume=auto"]))  # nothing left to run
    assert again["steps"] == done["steps"]
    assert json.loads((run_dir / "checkpoints" / f"step_{done['steps']}" / "shardrec.json").read_text())["reader"] \
        == info["reader"] == {"epoch": 0, "batches": done["steps"], "batch_size": 256, "world_size": 1, "layout": None}
    more = run(load_config("tiny", [*args, "--checkpoint.resume=auto", "--train.epochs=2"]))
    assert more["steps"] == 2 * done["steps"]
