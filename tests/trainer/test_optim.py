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


def _table_norm(run_dir: Path) -> float:
    """Sum of the embedding tables' norms in the run's final checkpoint."""
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    checkpoint = max((run_dir / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    dcp_to_torch_save(checkpoint, run_dir / "flat.pt")
    state = torch.load(run_dir / "flat.pt", weights_only=False)
    tables = [v for k, v in state["model"].items() if "embedding_bags" in k and k.endswith("weight")]
    assert tables
    return float(sum(t.float().norm() for t in tables))


@pytest.mark.slow
def test_embedding_weight_decay_shrinks_the_fused_tables(tiny_data, tmp_path):
    from shardrec.configs.loader import load_config

    norms = {}
    for decay in (0.0, 0.5):
        cfg = load_config("tiny", [f"--dataset.path={tiny_data}", f"--run_dir={tmp_path / str(decay)}",
                                   "--train.max_steps=40", "--embeddings.sharding_types=table_wise",
                                   f"--embeddings.weight_decay={decay}", "--embeddings.weight_decay_mode=decoupled"])
        run(cfg)
        norms[decay] = _table_norm(tmp_path / str(decay))
    assert norms[0.5] < 0.9 * norms[0.0], norms


def test_embedding_weight_decay_needs_rowwise_adagrad(tiny_cfg):
    tiny_cfg.embeddings.optimizer, tiny_cfg.embeddings.weight_decay = "sgd", 1e-4
    with pytest.raises(UserError, match="FBGEMM's fused sgd has no weight decay"):
        run(tiny_cfg)


@pytest.mark.parametrize("update", ["fbgemm", "aten"])
def test_fbgemm_cpu_kernels_ignore_weight_decay(update):
    """The premise of embeddings/weight_decay.py: if FBGEMM's CPU rowwise Adagrad (or
    shardrec's ATen version of it, embeddings.cpu_update: aten) starts applying weight decay
    itself, shardrec's own decay must go (it would decay twice)."""
    import torch
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        EmbeddingLocation,
        SplitTableBatchedEmbeddingBagsCodegen,
        WeightDecayMode,
    )
    from shardrec.embeddings.cpu_rowwise_adagrad import switch

    updated = []
    for decay, mode in ((0.0, WeightDecayMode.NONE), (0.5, WeightDecayMode.DECOUPLE)):
        torch.manual_seed(0)
        tbe = SplitTableBatchedEmbeddingBagsCodegen(
            [(10, 4, EmbeddingLocation.HOST, ComputeDevice.CPU)], optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD,
            learning_rate=0.1, weight_decay=decay, weight_decay_mode=mode)
        tbe.init_embedding_weights_uniform(-1.0, 1.0)
        before = tbe.split_embedding_weights()[0].detach().clone()
        assert update == "fbgemm" or switch(tbe)
        tbe(torch.tensor([1, 2]), torch.tensor([0, 1, 2])).sum().backward()
        updated.append(tbe.split_embedding_weights()[0].detach().clone())
    assert torch.equal(updated[0], updated[1]) and not torch.equal(updated[0], before)


def test_fused_dense_optimizer_only_where_torch_has_the_kernel():
    import torch
    from shardrec.trainer.optim import DENSE_OPTIMIZERS, fused_available

    for name, cls in DENSE_OPTIMIZERS.items():
        assert fused_available(cls, "cpu"), name
        p = torch.nn.Parameter(torch.ones(3))
        opt = cls([p], lr=0.1, fused=True)
        p.grad = torch.ones(3)
        opt.step()  # torch accepts the fused kernel on CPU and moves the parameter
        assert (p.detach() < 1).all(), name
    # torch's Adagrad refuses fused=True for CUDA tensors at its first step (torch 2.11 on an H200).
    assert [fused_available(cls, "cuda") for cls in DENSE_OPTIMIZERS.values()] == [True, False, True]
    assert not fused_available(torch.optim.Adam, "meta")
