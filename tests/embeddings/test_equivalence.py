"""2 gloo processes with sharded tables train the same model as 1 process: every sharding
type, and a mix of them in one model, matches the single-process losses and AUC."""

from __future__ import annotations

import json

import pytest
import torch.multiprocessing as mp
from equivalence_worker import worker

TYPES = ["table_wise", "row_wise", "column_wise", "table_row_wise", "table_column_wise", "data_parallel"]
BF16_COMM = ["table_wise", "row_wise"]


def _run(world_size: int, tmp_path, tiny_data, cases: dict, tag: str) -> dict:
    out = tmp_path / f"{tag}.json"
    mp.spawn(worker, args=(world_size, str(tmp_path / f"{tag}.store"), tiny_data,
                           str(tmp_path / "init_ckpt"), cases, str(out)), nprocs=world_size, join=True)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def results(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("equivalence")
    reference = _run(1, tmp, tiny_data, {"reference": {"all": "table_wise"}}, "single")["reference"]
    tables = [f"t_C{i}" for i in range(1, 27)]
    cases = {t: {"all": t} for t in TYPES}
    cases["mixed"] = {"tables": {name: TYPES[i % len(TYPES)] for i, name in enumerate(tables)}}
    # bf16 embedding communication: all-to-all (table_wise) and reduce-scatter (row_wise).
    cases.update({f"{t} bf16": {"all": t, "comm": "bf16"} for t in BF16_COMM})
    # bf16 dense layers too: the pooled embeddings then reach the model in bf16, or (the
    # "fp32" case) are cast back to fp32 first, as before BF16KeptCommCodec.
    both = {"all": "table_wise", "comm": "bf16", "precision": "bf16"}
    cases.update({"bf16 dense and comm": both, "bf16 dense and comm, fp32 pooled": {**both, "pooled_fp32": True}})
    # The same pooled embeddings through TorchRec's gloo all-to-all instead of shared memory.
    cases.update({f"{name} via process group": {**cases[name], "exchange": "process_group"}
                  for name in ("table_wise", "column_wise", "table_wise bf16")})
    return reference, _run(2, tmp, tiny_data, cases, "sharded")


@pytest.mark.slow
@pytest.mark.parametrize("case", [*TYPES, "mixed"])
def test_two_ranks_match_one_process(results, case):
    reference, sharded = results
    got = sharded[case]
    # The planner really used the requested layout.
    if case == "mixed":
        assert set(got["plan"].values()) == set(TYPES)
    else:
        assert set(got["plan"].values()) == {case}
    assert got["losses"] == pytest.approx(reference["losses"], rel=1e-4)
    assert got["auc"] == pytest.approx(reference["auc"], abs=1e-4)
    assert got["rows"] == reference["rows"] == 3_000
    # Training moved the model: a loss curve that did not change would match trivially.
    assert reference["losses"][-1] < reference["losses"][0] - 0.05
    assert reference["auc"] > 0.52


@pytest.mark.slow
@pytest.mark.parametrize("kind", BF16_COMM)
def test_bf16_embedding_comm_trains_like_fp32(results, kind):
    """embeddings.comm_precision=bf16 rounds what ranks exchange to 8 mantissa bits: the
    losses follow the fp32 ones closely, yet not exactly (the codec really ran)."""
    reference, sharded = results
    got, fp32 = sharded[f"{kind} bf16"], sharded[kind]
    assert got["losses"] != fp32["losses"]
    assert got["losses"] == pytest.approx(reference["losses"], rel=5e-3)
    assert got["auc"] == pytest.approx(reference["auc"], abs=5e-3)


@pytest.mark.slow
def test_pooled_embeddings_kept_in_bf16_train_exactly_as_cast_back(results):
    """With bf16 dense layers and bf16 communication the all-to-all hands the pooled
    embeddings on in bf16 instead of casting them to fp32 for the model to cast back: no
    value changes on the way (bf16 -> fp32 -> bf16 is exact, and so is their gradient's way
    back), so the losses are the same to the bit, and they still follow the fp32 ones."""
    reference, sharded = results
    kept, cast_back = sharded["bf16 dense and comm"], sharded["bf16 dense and comm, fp32 pooled"]
    assert kept["losses"] == cast_back["losses"]
    assert kept["auc"] == cast_back["auc"]
    assert kept["losses"] != sharded["table_wise bf16"]["losses"]  # the dense layers really ran in bf16
    assert kept["losses"] == pytest.approx(reference["losses"], rel=2e-2)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["table_wise", "column_wise"])
def test_shared_memory_exchange_trains_exactly_as_the_process_group(results, case):
    """train.cpu_exchange: shared memory (auto, on one host) and TorchRec's gloo
    all-to-alls move the same features and fp32 embeddings, divide the same gradients by the
    world size and average the same dense gradients: the same losses and AUC to the bit."""
    _, sharded = results
    shm, gloo = sharded[case], sharded[f"{case} via process group"]
    assert {"SharedMemoryPooledDist", "SharedMemoryFeaturesDist"} <= set(shm["dists"])
    assert not {"SharedMemoryPooledDist", "SharedMemoryFeaturesDist"} & set(gloo["dists"])
    assert shm["losses"] == gloo["losses"]
    assert shm["auc"] == gloo["auc"]


@pytest.mark.slow
def test_shared_memory_exchange_in_bf16_follows_the_process_group(results):
    """In bf16 the shared-memory exchange rounds only what crosses to another rank (TorchRec's
    codec also rounds each rank's own part): close to the gloo run, not the same bits."""
    _, sharded = results
    shm, gloo = sharded["table_wise bf16"], sharded["table_wise bf16 via process group"]
    assert "SharedMemoryPooledDist" in shm["dists"]
    assert shm["losses"] != gloo["losses"]
    assert shm["losses"] == pytest.approx(gloo["losses"], rel=2e-3)
    assert shm["auc"] == pytest.approx(gloo["auc"], abs=2e-3)
