"""Offline sharding plans on a simulated topology (TorchRec's planner, tables on meta)."""

from __future__ import annotations

import pytest
import torch
from shardrec.configs.errors import UserError
from shardrec.configs.loader import load_config
from shardrec.embeddings.plan_report import GIB, format_report, plan_offline, table_gib
from shardrec.trainer.models.dlrm_dcn import mlperf_schema
from shardrec.trainer.registry import build_model
from shardrec.trainer.task import ClickTask


@pytest.fixture(scope="module")
def mlperf():
    cfg = load_config(None, ["--model.name=dlrm_dcn", "--model.flavor=mlperf", "--train.batch_size=8192"])
    schema = mlperf_schema()
    return cfg, schema, ClickTask(build_model(schema, cfg.model, torch.device("meta")))


def test_mlperf_dlrm_dcnv2_fits_8_gpus_of_80_gb(mlperf):
    cfg, schema, model = mlperf
    report = plan_offline(model, cfg.embeddings, 8, "cuda", 80, cfg.train.batch_size)
    assert {t.name for t in report.tables} == {f"t_{f.name}" for f in schema.sparse}
    assert all(t.compute_kernel == "fused" for t in report.tables)
    assert len(report.gb_per_rank) == 8
    assert max(report.gb_per_rank) <= 80
    # The estimate holds at least every table's weights and row-wise Adagrad state.
    weights = sum(table_gib(f.num_embeddings, 128, "rowwise_adagrad") for f in schema.sparse)
    assert sum(report.gb_per_rank) >= weights
    text = format_report(report)
    assert "t_C1 " in text and "rank 7:" in text


def test_a_table_larger_than_all_memory_is_named(mlperf):
    cfg, _, model = mlperf
    need = 40_000_000 * (128 + 1) * 4 / GIB  # the 40M-row tables with row-wise Adagrad state
    with pytest.raises(UserError) as err:
        plan_offline(model, cfg.embeddings, 2, "cuda", 8, cfg.train.batch_size)
    msg = str(err.value)
    assert "table 't_C1'" in msg and "40,000,000 x 128" in msg
    assert f"short by {need - 16:.1f} GiB" in msg


def test_too_little_memory_overall_says_how_much_is_needed(mlperf):
    _, _, model = mlperf
    # With every kernel allowed the planner would move the big tables to host memory
    # (fused_uvm_caching); held to HBM-only kernels, 8 x 10 GiB cannot hold ~97 GiB.
    cfg = load_config(None, ["--model.name=dlrm_dcn", "--model.flavor=mlperf", "--embeddings.compute_kernels=fused"])
    with pytest.raises(UserError, match=r"no sharding plan fits 8 x 10 GiB: the tables need 9\d\.\d GiB"):
        plan_offline(model, cfg.embeddings, 8, "cuda", 10, 8192)
    relaxed = load_config(None, ["--model.name=dlrm_dcn", "--model.flavor=mlperf"])
    report = plan_offline(model, relaxed.embeddings, 8, "cuda", 10, 8192)
    assert "fused_uvm_caching" in {t.compute_kernel for t in report.tables}


def test_constraints_reach_the_plan(mlperf):
    cfg, _, model = mlperf
    cfg = load_config(None, ["--model.name=dlrm_dcn", "--model.flavor=mlperf",
                             "--embeddings.sharding_types=row_wise",
                             "--embeddings.tables.t_C6.sharding_types=data_parallel"])
    report = plan_offline(model, cfg.embeddings, 8, "cuda", 80, 8192)
    types = {t.name: t.sharding_type for t in report.tables}
    assert types.pop("t_C6") == "data_parallel"
    assert set(types.values()) == {"row_wise"}
    assert all(t.ranks == list(range(8)) for t in report.tables if t.sharding_type == "row_wise")


def _din(overrides: list[str]):
    from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature

    schema = DatasetSchema(label="label", dense=["d"], sparse=[
        SparseFeature("user_id", 1000), SparseFeature("item_id", 500),
        SparseFeature("hist_item_id", 500, multi_hot=True, sequence_of="item_id", max_length=20)])
    cfg = load_config(None, ["--model.name=din", "--model.flavor=debug", *overrides])
    return cfg, ClickTask(build_model(schema, cfg.model, torch.device("meta")))


@pytest.mark.parametrize("override", ["--embeddings.tables.t_item_id.compute_kernels=[dense]",
                                      "--embeddings.sharding_types=[data_parallel]"])
def test_an_unpooled_table_is_refused_what_fbgemm_cannot_do_for_it_on_cpu(override):
    # FBGEMM's CPU dense lookup sums each bag even when asked for one row per id, so a history
    # table there trained on the wrong shapes (split_with_sizes deep inside TorchRec).
    cfg, model = _din([override])
    with pytest.raises(UserError, match=r"'embeddings\.(tables\.t_item_id\.compute_kernels|sharding_types)'.*"
                                        r"table 't_item_id' is unpooled.*needs the fused kernel"):
        plan_offline(model, cfg.embeddings, 2, "cpu", 8, 64)
    # On GPU the same request is the user's to make.
    kinds = {t.name: (t.sharding_type, t.compute_kernel) for t in
             plan_offline(model, cfg.embeddings, 2, "cuda", 8, 64).tables}
    assert "data_parallel" in kinds["t_item_id"] or "dense" in kinds["t_item_id"]


def test_an_unpooled_table_on_cpu_takes_what_is_left_of_a_wider_choice():
    cfg, model = _din(["--embeddings.compute_kernels=[dense,fused]",
                       "--embeddings.sharding_types=[data_parallel,table_wise]"])
    kinds = {t.name: (t.sharding_type, t.compute_kernel) for t in
             plan_offline(model, cfg.embeddings, 2, "cpu", 8, 64).tables}
    assert kinds["t_item_id"] == ("table_wise", "fused")
    assert kinds["t_user_id"][0] in ("data_parallel", "table_wise")
