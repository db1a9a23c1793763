"""The shared-memory exchange of pooled embeddings (embeddings/host_exchange.py) between
spawned gloo ranks: the same numbers as TorchRec's all-to-all, forward and backward, for
even, uneven and oversized batches; a lost or stopped peer raises within a second instead of
hanging; a rank that cannot take part makes every rank fall back; no file is left behind.
(Training with it, against the process group and one process: test_equivalence.py.)"""

from __future__ import annotations

import json
import multiprocessing

import host_exchange_worker as workers
import pytest
import torch.multiprocessing as mp


def _results(tmp_path, world: int) -> list[dict]:
    return [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(world)]


@pytest.mark.parametrize("world", [2, 3])
def test_same_embeddings_and_gradients_as_torchrecs_all_to_all(tmp_path, world):
    mp.spawn(workers.compare, args=(world, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=world)
    for rank, got in enumerate(_results(tmp_path, world)):
        assert got["files_left"] == []
        for case in got["cases"]:
            b = case["batches"]
            assert case["shape"] == [b[rank], sum(workers.DIMS[:world])]
            assert case["out_equal"] and case["grad_equal"], case
            assert case["grad_norm"] > 0 or sum(b) == 0
            # Through shared memory (forward + backward) unless too large for the slots.
            assert case["calls"] == (0 if max(b) == 1000 else 2), case


@pytest.mark.parametrize("how, said", [("exit", "rank 1's process exited"), ("close", "rank 1 stopped")])
def test_a_lost_peer_raises_at_once(tmp_path, how, said):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=workers.lost_peer, args=(r, 2, str(tmp_path / "store"), str(tmp_path / "out"), how))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert not p.is_alive()
    got = json.loads((tmp_path / "out.0").read_text())
    assert got["seen"] == [2]  # the first call went through: rank 1 wrote 2s
    assert got["error"] and said in got["error"] and "rank 0 waited for rank 1" in got["error"]
    assert got["waited_s"] < 2.0
    assert procs[1].exitcode == (3 if how == "exit" else 0)


def test_a_rank_that_cannot_take_part_makes_all_fall_back(tmp_path):
    mp.spawn(workers.refused, args=(2, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=2)
    got = _results(tmp_path, 2)
    assert [g["exchange"] for g in got] == [False, False]
    assert got[0]["why"] == got[1]["why"]
    assert got[0]["why"].startswith("rank 1: aarch64 is not x86-64")
    for g in got:  # train.cpu_exchange: auto goes on through gloo, shared_memory refuses, saying why
        assert g["auto"] == g["why"]
        assert g["required"] == ("config key 'train.cpu_exchange': shared_memory is not possible here: "
                                 + g["why"])


@pytest.mark.parametrize("world", [2, 3])
def test_dense_gradients_average_like_ddps_all_reduce(tmp_path, world):
    mp.spawn(workers.dense_gradients, args=(world, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=world)
    for got in _results(tmp_path, world):
        assert got["same_on_all_ranks"]  # replicas stay identical
        assert got["calls"] >= 2  # buckets that fit went through shared memory (the 16 KiB layer does not)
        # 2 ranks: the same bits as gloo ((a + b) / 2 either way); 3: the same up to rounding.
        assert got["max_diff"] <= (0 if world == 2 else 1e-6 * got["scale"]), got


@pytest.mark.parametrize("world", [2, 3])
def test_same_features_as_torchrecs_kjt_all_to_all(tmp_path, world):
    mp.spawn(workers.features, args=(world, str(tmp_path / "store"), str(tmp_path / "out")), nprocs=world)
    for got in _results(tmp_path, world):
        for case in got["cases"]:
            assert all(case[k] for k in ("keys", "stride", "lengths", "values", "weights")), case
            assert case["strides"][0] == case["strides"][1] == case["batches"], case
            # Two shared-memory calls (sizes, then data), or only the sizes for a batch too
            # large for the 64 KiB slots (then TorchRec's all-to-all).
            assert case["calls"] == (1 if max(case["batches"]) == 3000 else 2), case
