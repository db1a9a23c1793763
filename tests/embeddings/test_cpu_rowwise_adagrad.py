"""The ATen row-wise AdaGrad update of CPU tables (embeddings/cpu_rowwise_adagrad.py) against
FBGEMM's own CPU kernel: the same pooled output, then after several steps the same weights
and optimizer state, for the layouts a sharded model hands it."""

from __future__ import annotations

import pytest
import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    EmbeddingLocation,
    SplitTableBatchedEmbeddingBagsCodegen,
)
from shardrec.embeddings import cpu_rowwise_adagrad
from shardrec.embeddings.cpu_rowwise_adagrad import AtenRowwiseAdagradTables, eligible
from torch import nn


class Holder(nn.Module):
    """The attributes `fused_tables` follows in a TorchRec sharded module."""

    def __init__(self, tbe):
        super().__init__()
        emb = nn.Module()
        emb._emb_module = tbe
        lookup = nn.Module()
        lookup._emb_modules = [emb]
        self._lookups = [lookup]


def table_batch(specs, feature_table_map=None, pooling=PoolingMode.SUM, weights=SparseType.FP32,
                optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, lr=0.05):
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        [(rows, dim, EmbeddingLocation.HOST, ComputeDevice.CPU) for rows, dim in specs],
        feature_table_map=feature_table_map, optimizer=optimizer, weights_precision=weights,
        pooling_mode=pooling, learning_rate=lr, eps=1e-6)
    torch.manual_seed(0)
    if tbe.weights_host.is_floating_point():  # int8 rows hold their own scale and bias
        with torch.no_grad():
            tbe.weights_host.uniform_(-0.1, 0.1)
    return tbe


def pair(specs, **kw):
    """(FBGEMM's, the ATen update's) table batches with the same weights."""
    ref, ours = table_batch(specs, **kw), table_batch(specs, **kw)
    assert cpu_rowwise_adagrad.use_aten_update(Holder(ours)) == 1
    assert isinstance(ours, AtenRowwiseAdagradTables)
    return ref, ours


def batches(specs, feature_table_map, batch, max_len, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    tables = feature_table_map or list(range(len(specs)))
    out = []
    for _ in range(steps):
        lengths = torch.randint(1 if max_len == 1 else 0, max_len + 1, (len(tables) * batch,), generator=g)
        ids = torch.cat([torch.randint(0, specs[tables[k // batch]][0], (int(n),), generator=g)
                         for k, n in enumerate(lengths)])
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        total_d = sum(specs[t][1] for t in tables)
        out.append((ids, offsets, torch.randn(batch, total_d, generator=g)))
    return out


CASES = {
    # issue 13's shape in small: one dim, one id a bag, ids repeating within the batch
    "one_id_per_bag": dict(specs=[(50, 8)] * 4, max_len=1),
    "bags_of_several_ids": dict(specs=[(40, 8)] * 3, max_len=4),
    "mean_pooling": dict(specs=[(40, 8)] * 3, max_len=4, pooling=PoolingMode.MEAN),
    "shared_table": dict(specs=[(30, 8), (60, 8)], feature_table_map=[0, 0, 1], max_len=3),
    "mixed_dims": dict(specs=[(30, 4), (60, 16), (20, 8)], max_len=2),
    "mixed_dims_shared": dict(specs=[(30, 4), (60, 16)], feature_table_map=[0, 1, 1], max_len=1),
    # fp16 storage (FBGEMM's generic loop is the reference there)
    "fp16_one_id_per_bag": dict(specs=[(50, 8)] * 4, max_len=1, weights=SparseType.FP16),
    "fp16_mixed_dims_shared": dict(specs=[(30, 4), (60, 16)], feature_table_map=[0, 1, 1], max_len=3,
                                   weights=SparseType.FP16),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_lookups_weights_and_state_as_fbgemm(case):
    spec = dict(CASES[case])
    specs, max_len = spec.pop("specs"), spec.pop("max_len")
    ref, ours = pair(specs, **spec)
    for step, (ids, offsets, grad) in enumerate(batches(specs, spec.get("feature_table_map"), 16, max_len, steps=5)):
        out_ref, out_ours = ref(ids, offsets), ours(ids, offsets)
        # the lookup is FBGEMM's own: bit for bit while the weights are
        torch.testing.assert_close(out_ours, out_ref, **({"rtol": 0, "atol": 0} if step == 0 else {}))
        out_ref.backward(grad)
        out_ours.backward(grad)
        # FBGEMM sums a row's squared gradient in vector lanes and rounds its update with FMA;
        # the ATen ops round differently in the last bits, nothing more.
        torch.testing.assert_close(ours.momentum1_host, ref.momentum1_host, rtol=1e-5, atol=1e-9)
        if ours.weights_host.dtype == torch.float16:
            # both round each updated value once to fp16; an fp32 difference in the last bit
            # can still land on the neighbouring fp16 value (6e-5 apart at 0.1)
            torch.testing.assert_close(ours.weights_host, ref.weights_host, rtol=1e-3, atol=1e-4)
        else:
            torch.testing.assert_close(ours.weights_host, ref.weights_host, rtol=1e-5, atol=1e-7)
    assert not torch.equal(ours.weights_host, table_batch(specs, **spec).weights_host)  # it did train
    assert int(ours.iter) == int(ref.iter) == 5


def test_follows_the_learning_rate_the_fused_optimizer_sets():
    specs = [(20, 4)] * 2
    ref, ours = pair(specs)
    for tbe in (ref, ours):
        tbe.set_learning_rate(0.3)
    ids, offsets, grad = batches(specs, None, 8, 1, steps=1)[0]
    ref(ids, offsets).backward(grad)
    ours(ids, offsets).backward(grad)
    torch.testing.assert_close(ours.weights_host, ref.weights_host, rtol=1e-5, atol=1e-7)


def test_what_it_does_not_cover_stays_on_fbgemm():
    assert not eligible(table_batch([(20, 4)], weights=SparseType.INT8))
    assert not eligible(table_batch([(20, 4)], optimizer=EmbOptimType.EXACT_SGD))
    assert not eligible(table_batch([(20, 4)], pooling=PoolingMode.NONE))
    sgd = table_batch([(20, 4)], optimizer=EmbOptimType.EXACT_SGD)
    assert cpu_rowwise_adagrad.use_aten_update(Holder(sgd)) == 0 and type(sgd) is SplitTableBatchedEmbeddingBagsCodegen
    # per-sample weights: FBGEMM's forward and backward (which also differentiates the weights)
    ref, ours = pair([(20, 4)] * 2)
    ids, offsets, grad = batches([(20, 4)] * 2, None, 8, 2, steps=1)[0]
    w = torch.rand(ids.numel(), requires_grad=True)
    w_ours = w.detach().clone().requires_grad_()
    ref(ids, offsets, w).backward(grad)
    ours(ids, offsets, w_ours).backward(grad)
    torch.testing.assert_close(ours.weights_host, ref.weights_host)
    torch.testing.assert_close(w_ours.grad, w.grad)


def test_an_id_outside_its_table_is_still_refused():
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import BoundsCheckMode
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        [(10, 4, EmbeddingLocation.HOST, ComputeDevice.CPU)], optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD,
        bounds_check_mode=BoundsCheckMode.FATAL)
    assert cpu_rowwise_adagrad.switch(tbe)
    with pytest.raises(RuntimeError, match="idx < num_rows"):
        tbe(torch.tensor([3, 10]), torch.tensor([0, 1, 2]))


def train_tiny(tiny_data: str, cpu_update: str, steps: int = 15) -> tuple[int, list[float], dict]:
    """(tables switched to the ATen update, losses, table weights) of the tiny preset's model
    trained `steps` batches of 256 by shardrec's sharded task with `embeddings.cpu_update`."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from shardrec.configs.loader import load_config
    from shardrec.data_pipeline.convert_arrow import arrow_to_batch
    from shardrec.data_pipeline.schema import load_schema, split_files
    from shardrec.embeddings.weight_decay import fused_tables
    from shardrec.trainer.distributed import init_distributed, shutdown
    from shardrec.trainer.loop import build_sharded_task
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

    cfg = load_config("tiny", [f"--dataset.path={tiny_data}", f"--embeddings.cpu_update={cpu_update}"])
    schema = load_schema(tiny_data)
    table = pa.concat_tables(pq.read_table(f, columns=schema.arrow_schema().names)
                             for f in split_files(tiny_data, "train"))
    batches = [arrow_to_batch(table.slice(i * 256, 256), schema) for i in range(steps)]
    env = init_distributed()
    try:
        model, optimizer = build_sharded_task(schema, cfg, env)
        switched = sum(isinstance(t, AtenRowwiseAdagradTables) for t in fused_tables(model))
        pipeline = TrainPipelineSparseDist(model, optimizer, env.device)
        it = iter(batches)
        losses = [float(pipeline.progress(it)[0]) for _ in range(steps)]
        pipeline.detach()
        weights = {k: v.local_tensor().clone() for k, v in model.state_dict().items() if "embedding_bags" in k}
    finally:
        shutdown(env)
    return switched, losses, weights


def test_shardrec_training_with_it_follows_fbgemms_kernel(tiny_data):
    switched, losses, weights = train_tiny(tiny_data, "aten")
    assert switched >= 1  # the default: the tiny model's fp32 row-wise AdaGrad tables use it
    none, ref_losses, ref_weights = train_tiny(tiny_data, "fbgemm")
    assert none == 0
    assert ref_losses[-1] < ref_losses[0]  # the reference learned
    torch.testing.assert_close(losses, ref_losses, rtol=1e-4, atol=1e-5)
    assert weights.keys() == ref_weights.keys() and len(weights) == 26
    for key, value in weights.items():
        torch.testing.assert_close(value, ref_weights[key], rtol=1e-4, atol=1e-6, msg=key)

