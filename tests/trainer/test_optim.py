"""The MLPerf-style learning-rate schedule, as a formula and as seen in a run's metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shardrec.configs.errors import UserError
from shardrec.configs.tree import OptimizerConfig
from shardrec.trainer.loop import run
from shardrec.trainer.optim import lr_multiplier, make_scheduler


def test_warmup_constant_then_polynomial_decay():
    cfg = OptimizerConfig(warmup_steps=4, decay_start_step=10, decay_steps=5, decay_power=2.0)
    got = [lr_multiplier(s, cfg) for s in range(17)]
    expected = [0.25, 0.5, 0.75, 1.0] + [1.0] * 6 + [(5 - k) ** 2 / 25 for k in range(5)] + [0.0, 0.0]
    assert got == pytest.approx(expected)
    assert [lr_multiplier(s, OptimizerConfig()) for s in (0, 10, 10_000)] == [1.0, 1.0, 1.0]


def test_decay_may_not_start_inside_the_warmup():
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(UserError, match="optimizer.decay_start_step"):
        make_scheduler(opt, OptimizerConfig(warmup_steps=10, decay_start_step=5, decay_steps=5))


def test_both_optimizers_follow_the_schedule_during_training(tiny_cfg):
    tiny_cfg.optimizer.warmup_steps = 20
    tiny_cfg.optimizer.decay_start_step = 50
    tiny_cfg.optimizer.decay_steps = 40
    tiny_cfg.checkpoint.save_final = False
    run(tiny_cfg)
    records = [json.loads(line) for line in (Path(tiny_cfg.run_dir) / "metrics.jsonl").read_text().splitlines()]
    train = {r["step"]: r for r in records if r["event"] == "train"}
    for step, r in train.items():
        factor = lr_multiplier(step, tiny_cfg.optimizer)  # lr for the step after `step`
        assert r["lr_embeddings"] == pytest.approx(tiny_cfg.embeddings.lr * factor)
        assert r["lr_dense"] == pytest.approx(tiny_cfg.optimizer.lr * factor)
    assert train[90]["lr_dense"] == 0.0 and train[30]["lr_dense"] == tiny_cfg.optimizer.lr
