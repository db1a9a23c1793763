"""The zoo as the trainer sees it: registry and flavors, meta builds that DMP can materialise,
table naming, the MLPerf DLRM-DCNv2 size, the presets, and a short sharded run of each model."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch
from shardrec.configs.errors import UserError
from shardrec.configs.loader import PRESET_DIR, load_config
from shardrec.configs.tree import ModelConfig
from shardrec.data_pipeline.convert_movielens import GENRES, convert_movielens
from shardrec.data_pipeline.synth import generate, spec_from_preset
from shardrec.trainer.models import baselines, dcn, deepfm, dlrm, dlrm_dcn, wide_deep, xdeepfm
from shardrec.trainer.models.common import materializable
from shardrec.trainer.models.dlrm_dcn import MLPERF_TABLE_SIZES, mlperf_schema
from shardrec.trainer.registry import MODELS, build_model, click_models
from torch import nn
from torchrec.modules.crossnet import CrossNet, LowRankMixtureCrossNet
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.mlp import Perceptron
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

META = torch.device("meta")


def ebcs(model: nn.Module) -> list[EmbeddingBagCollection]:
    return [m for m in model.modules() if isinstance(m, EmbeddingBagCollection)]


def materialize_like_dmp(model: nn.Module) -> nn.Module:
    """What DistributedModelParallel does to the dense part of a meta-built model: allocate each
    module's direct meta parameters (garbage: NaN here) and call that module's
    reset_parameters(). Embedding collections are left out: sharding initialises those."""
    sharded = {id(p) for ebc in ebcs(model) for p in ebc.parameters()}

    def init(module: nn.Module) -> None:
        allocated = False
        for name, p in module._parameters.items():
            if p is not None and p.is_meta and id(p) not in sharded:
                module._parameters[name] = nn.Parameter(torch.full(p.shape, math.nan), p.requires_grad)
                allocated = True
        if allocated and hasattr(module, "reset_parameters"):
            module.reset_parameters()

    model.apply(init)
    return model


def fake_movielens(root: Path) -> Path:
    """A three-user MovieLens 100K folder in GroupLens's format."""
    root.mkdir()
    (root / "u.occupation").write_text("technician\nwriter\n")
    (root / "u.user").write_text("1|24|M|technician|85711\n2|53|F|writer|94043\n3|23|M|writer|32067\n")
    flags = ["0"] * len(GENRES)
    item = lambda i, year, g: "|".join([str(i), f"Movie {i}", f"01-Jan-{year}", "", "http://x",  # noqa: E731
                                         *[("1" if k in g else f) for k, f in enumerate(flags)]])
    (root / "u.item").write_text("\n".join([item(1, 1995, {3, 4}), item(2, 1994, {1})]) + "\n")
    (root / "u.data").write_text("1\t1\t5\t874965758\n2\t2\t3\t876893171\n3\t1\t4\t878542960\n"
                                 "1\t2\t2\t876893119\n")
    return root


@pytest.fixture(scope="module")
def movielens_schema(tmp_path_factory):
    """The schema `shardrec convert movielens` writes (from a three-user folder)."""
    root = tmp_path_factory.mktemp("movielens")
    return convert_movielens(fake_movielens(root / "raw"), root / "out", split=(0.5, 0.25, 0.25))


def test_torchrec_crossnets_need_the_reset_parameters_fix():
    # TorchRec's crossnets initialise in __init__ only: after DMP they would hold garbage.
    with torch.device(META):
        plain, fixed = CrossNet(8, 2), materializable(LowRankMixtureCrossNet(8, 2, num_experts=2, low_rank=2))
    assert torch.isnan(materialize_like_dmp(plain).kernels[0]).all()
    materialize_like_dmp(fixed)
    assert all(torch.isfinite(p).all() for p in fixed.parameters())
    assert fixed.U_kernels[0].abs().sum() > 0 and (fixed.bias[0] == 0).all()


@pytest.mark.parametrize("name", click_models())
def test_every_flavor_builds_on_meta_with_tables_dmp_can_shard(name, movielens_schema):
    for flavor in MODELS[name].flavors:
        schema = mlperf_schema()
        model = build_model(schema, ModelConfig(name, flavor), META)
        assert all(p.is_meta for p in model.parameters())
        tables = [c for ebc in ebcs(model) for c in ebc.embedding_bag_configs()]
        names = [t.name for t in tables]
        assert len(names) == len(set(names)), f"{name}/{flavor}: duplicate table names"
        assert {n.split("_", 1)[0] for n in names} <= {"t", "lin", "cross"}
        # FBGEMM's fused kernels refuse widths that are not a multiple of 4.
        assert all(t.embedding_dim % 4 == 0 for t in tables), f"{name}/{flavor}"


@pytest.mark.parametrize("name", click_models())
def test_every_dense_parameter_is_initialised_by_a_reset_parameters_dmp_calls(name):
    for schema in (mlperf_schema(), dataclasses.replace(mlperf_schema(), dense=[])):
        model = materialize_like_dmp(build_model(schema, ModelConfig(name, "debug"), META))
        sharded = {id(p) for ebc in ebcs(model) for p in ebc.parameters()}
        bad = [n for n, p in model.named_parameters()
               if id(p) not in sharded and (p.is_meta or not torch.isfinite(p).all())]
        assert not bad, f"{name} (dense={len(schema.dense)}): left uninitialised: {bad}"


def test_every_model_documents_its_paper_and_shapes():
    modules = {"dlrm": dlrm, "dlrm_dcn": dlrm_dcn, "deepfm": deepfm, "dcn": dcn, "dcnv2": dcn,
               "wide_deep": wide_deep, "xdeepfm": xdeepfm, "lr": baselines, "fm": baselines,
               "dnn": baselines}
    assert set(modules) == set(click_models())
    for name, module in modules.items():
        assert "(B, 1)" in module.__doc__ and re.search(r"(19|20)\d\d", module.__doc__), name


def test_wide_deep_cross_pairs_must_name_the_data_sets_features(movielens_schema):
    flavor = dataclasses.replace(wide_deep.FLAVORS["debug"], cross_pairs=(("user_id", "C1"),))
    with pytest.raises(UserError, match=r"no sparse feature \['C1'\]"):
        wide_deep.build_wide_deep(movielens_schema, flavor, META)


def test_mlperf_dlrm_dcn_parameter_count_matches_the_reference_by_hand():
    model = build_model(mlperf_schema(), ModelConfig("dlrm_dcn", "mlperf"), META)
    dim, dense_in, num_tables, rank = 128, 13, 26, 512
    embeddings = sum(MLPERF_TABLE_SIZES) * dim
    bottom = (dense_in * 512 + 512) + (512 * 256 + 256) + (256 * 128 + 128)
    cross_in = (num_tables + 1) * dim  # 26 pooled embeddings and the bottom MLP's output: 3456
    cross = 3 * (cross_in * rank + rank * cross_in + cross_in)  # W (N x r), V (r x N), bias (N)
    top = ((cross_in * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 512 + 512) + (512 * 256 + 256)
           + (256 * 1 + 1))
    assert sum(MLPERF_TABLE_SIZES) == 204_184_588
    assert sum(p.numel() for p in model.parameters()) == embeddings + bottom + cross + top
    assert embeddings + bottom + cross + top == 26_151_671_809  # about 104.6 GB in fp32


def test_every_model_has_presets_that_load_and_build(movielens_schema):
    schemas = {"movielens": movielens_schema, "criteo": mlperf_schema()}
    presets = [p for p in sorted(PRESET_DIR.glob("*_movielens.yaml")) + sorted(PRESET_DIR.glob("*_criteo.yaml"))
               if p.stem.rsplit("_", 1)[0] in click_models()]
    assert {p.stem for p in presets} == {f"{m}_{d}" for m in click_models() for d in schemas}
    for path in presets:
        name, dataset = path.stem.rsplit("_", 1)
        cfg = load_config(str(path))
        assert (cfg.model.name, cfg.dataset.path) == (name, f"data/{dataset}"), path
        model = build_model(schemas[dataset], cfg.model, META)
        assert sum(p.numel() for p in model.parameters()) > 0


@pytest.fixture(scope="module")
def multihot_data(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("zoo") / "tiny-multihot"
    generate(spec_from_preset("tiny-multihot", 6_000, seed=5), out)
    return str(out)


@pytest.mark.parametrize("name", click_models())
def test_every_model_trains_sharded_through_run(name, multihot_data, tmp_path):
    # The real path: meta build, planner + DMP, TorchRec's sparse-dist pipeline (which traces
    # the model with torch.fx), fused optimizers, evaluation.
    from shardrec.data_pipeline.schema import load_schema
    from shardrec.trainer.distributed import init_distributed, shutdown
    from shardrec.trainer.loop import build_sharded_task, run

    cfg = load_config("tiny", [f"--dataset.path={multihot_data}", f"--run_dir={tmp_path / 'run'}",
                               f"--model.name={name}", "--model.flavor=debug", "--train.max_steps=6",
                               "--eval.max_batches=1", "--checkpoint.save_final=false"])
    summary = run(cfg)
    assert summary["steps"] == 6 and 0.0 < summary["auc"] < 1.0 and math.isfinite(summary["logloss"])
    env = init_distributed()
    try:
        dmp, _ = build_sharded_task(load_schema(multihot_data), cfg, env)
        for n, p in in_backward_optimizer_filter(dmp.named_parameters()):
            assert torch.isfinite(p).all() and p.abs().max() < 10, f"{name}: {n} after DMP"
    finally:
        shutdown(env)


def test_batch_norm_first_order_and_crosses_train_sharded_through_run(multihot_data, tmp_path):
    # Built on meta, so DMP must materialise the normalisation layers too, statistics included,
    # and shard the first-order term's and the crosses' tables beside the model's own (C9 x C21:
    # a one-hot by a multi-hot feature, exact ids; C1 x C3: hashed).
    from shardrec.data_pipeline.schema import load_schema
    from shardrec.trainer.distributed import init_distributed, shutdown
    from shardrec.trainer.loop import build_sharded_task, run
    from shardrec.trainer.registry import HiddenBatchNorm

    cfg = load_config("tiny", [f"--dataset.path={multihot_data}", f"--run_dir={tmp_path / 'run'}",
                               "--model.name=dlrm", "--model.flavor=debug", "--model.batch_norm=true",
                               "--model.first_order=true", "--model.cross_pairs=C9:C21,C1:C3", "--train.max_steps=6", "--eval.max_batches=1", "--checkpoint.save_final=false"])
    env = init_distributed()
    try:
        dmp, _ = build_sharded_task(load_schema(multihot_data), cfg, env)
        norms = [m for m in dmp.modules() if isinstance(m, HiddenBatchNorm)]
        assert len(norms) == 3  # bottom MLP's two layers, top MLP's hidden one
        for m in norms:
            assert (m.running_mean == 0).all() and (m.running_var == 1).all() and (m.weight == 1).all()
        sharded = {name for name, _ in dmp.named_parameters()} | set(dmp.state_dict())
        assert any(".linear.ebc.embedding_bags.lin_" in name for name in sharded), sorted(sharded)[:20]
        for table in ("cross_C9_x_C21", "cross_C1_x_C3"):
            assert any(f".cross.embedding_bags.{table}." in name for name in sharded), sorted(sharded)[:20]
    finally:
        shutdown(env)
    summary = run(cfg)
    assert summary["steps"] == 6 and 0.0 < summary["auc"] < 1.0 and math.isfinite(summary["logloss"])


def test_add_flavor_reaches_the_registry():
    """bench/bench_train.py registers its own DLRM flavor this way."""
    import torch
    from shardrec.configs.errors import UserError
    from shardrec.configs.tree import ModelConfig
    from shardrec.data_pipeline.synth import schema_of, spec_from_preset
    from shardrec.trainer.models.dlrm import DLRMFlavor
    from shardrec.trainer.registry import MODELS, add_flavor, build_model

    add_flavor("dlrm", "test_only", DLRMFlavor(4, (8, 4), (8, 1)))
    try:
        model = build_model(schema_of(spec_from_preset("tiny", 1)), ModelConfig("dlrm", "test_only"), torch.device("meta"))
        assert sum(p.numel() for p in model.parameters()) > 0
    finally:
        del MODELS["dlrm"].flavors["test_only"]
    with pytest.raises(UserError, match="unknown model 'nope'"):
        add_flavor("nope", "x", None)


def test_wide_deep_crosses_come_from_the_config(movielens_schema):
    cfg = ModelConfig("wide_deep", "small", cross_pairs=["user_id:genres", "item_id:gender"])
    tables = [c.name for ebc in ebcs(build_model(movielens_schema, cfg, META)) for c in ebc.embedding_bag_configs()]
    assert sorted(t for t in tables if t.startswith("cross")) == ["cross_item_id_x_gender", "cross_user_id_x_genres"]
    with pytest.raises(UserError, match="'user_id' is not a pair 'a:b'"):
        build_model(movielens_schema, ModelConfig("wide_deep", "small", cross_pairs=["user_id"]), META)
    with pytest.raises(UserError, match="'model.cross_pairs': model 'sasrec' is not one of the click models"):
        build_model(movielens_schema, ModelConfig("sasrec", "debug", cross_pairs=["user_id:genres"]), META)
    with pytest.raises(UserError, match=r"cross pair \(user_id, C1\): no sparse feature \['C1'\]"):
        build_model(movielens_schema, ModelConfig("dcn", "debug", cross_pairs=["user_id:C1"]), META)
    with pytest.raises(UserError, match=r"cross pair \(gender, user_id\) is given twice"):
        build_model(movielens_schema, ModelConfig("dcn", "debug", cross_pairs=["user_id:gender", "gender:user_id"]), META)


@pytest.mark.parametrize("name", ["dlrm", "deepfm", "dnn"])
def test_dropout_adds_no_parameters_and_is_off_in_eval(movielens_schema, name):
    torch.manual_seed(0)
    plain = build_model(movielens_schema, ModelConfig(name, "debug"), torch.device("cpu"))
    torch.manual_seed(0)
    dropped = build_model(movielens_schema, ModelConfig(name, "debug", dropout=0.5), torch.device("cpu"))
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    assert sum(isinstance(m, nn.Dropout) for m in dropped.modules()) >= 1
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    dropped.load_state_dict(plain.state_dict())
    dense = torch.rand(64, len(movielens_schema.dense))
    kjt = _movielens_kjt(movielens_schema, 64)
    plain.eval(), dropped.eval()
    torch.testing.assert_close(dropped(dense, kjt), plain(dense, kjt))
    dropped.train()
    assert not torch.allclose(dropped(dense, kjt), dropped(dense, kjt))  # a fresh mask each call


def test_batch_norm_normalises_hidden_layers_and_uses_running_statistics_in_eval(movielens_schema):
    from shardrec.trainer.registry import HiddenBatchNorm

    torch.manual_seed(0)
    model = build_model(movielens_schema, ModelConfig("dnn", "debug", batch_norm=True, dropout=0.1), torch.device("cpu"))
    norms = [m for m in model.modules() if isinstance(m, HiddenBatchNorm)]
    assert len(norms) == 1  # the debug flavor's one hidden layer
    # Linear -> BatchNorm -> ReLU -> Dropout in every hidden layer.
    acts = [m._activation_fn for m in model.modules() if isinstance(m, Perceptron) and isinstance(m._activation_fn, nn.Sequential)]
    assert [type(x).__name__ for x in acts[0]] == ["HiddenBatchNorm", "ReLU", "Dropout"]
    seen = []
    norms[0].register_forward_hook(lambda mod, inp, out: seen.append(out.detach()))
    dense, kjt = torch.rand(256, len(movielens_schema.dense)), _movielens_kjt(movielens_schema, 256)
    model.train()
    model(dense, kjt)
    torch.testing.assert_close(seen[-1].mean(0), torch.zeros(seen[-1].shape[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(seen[-1].std(0, unbiased=False), torch.ones(seen[-1].shape[1]), atol=1e-2, rtol=0)
    assert norms[0].num_batches_tracked == 1
    model(dense[:1], kjt_rows(kjt, 1))  # a one-row training batch passes
    assert norms[0].num_batches_tracked == 1
    model.eval()
    whole = model(dense, kjt)
    torch.testing.assert_close(model(dense[:1], kjt_rows(kjt, 1)), whole[:1])


def kjt_rows(kjt: KeyedJaggedTensor, n: int) -> KeyedJaggedTensor:
    """The first n rows of a KJT with one id per feature and row."""
    keys, b = kjt.keys(), kjt.stride()
    values = kjt.values().view(len(keys), b)[:, :n].reshape(-1)
    return KeyedJaggedTensor(keys=keys, values=values, lengths=torch.ones(n * len(keys), dtype=torch.int32))


def _movielens_kjt(schema, batch: int) -> KeyedJaggedTensor:
    """One id per feature and row (B rows), each below its table's size."""
    g = torch.Generator().manual_seed(1)
    values = torch.cat([torch.randint(0, f.num_embeddings, (batch,), generator=g) for f in schema.sparse])
    return KeyedJaggedTensor(keys=[f.name for f in schema.sparse], values=values,
                             lengths=torch.ones(batch * len(schema.sparse), dtype=torch.int32))


def test_fast_dlrm_matches_torchrec_dlrm_in_outputs_and_gradients(movielens_schema):
    """shardrec's DLRM forward (no dict round trip, hand-written pairwise dots) computes
    TorchRec's DLRM exactly: same logits, same gradient for every parameter."""
    from torchrec.models.dlrm import DLRM

    torch.manual_seed(0)
    fast = dlrm.build_dlrm(movielens_schema, dlrm.FLAVORS["small"], torch.device("cpu"))
    assert type(fast) is dlrm.FastDLRM
    flavor = dlrm.FLAVORS["small"]
    ebc = EmbeddingBagCollection(fast.sparse_arch.embedding_bag_collection.embedding_bag_configs())
    ref = DLRM(ebc, len(movielens_schema.dense), list(flavor.bottom_mlp), list(flavor.top_mlp))
    ref.load_state_dict(fast.state_dict())
    dense, kjt = torch.rand(128, len(movielens_schema.dense)), _movielens_kjt(movielens_schema, 128)
    labels = torch.randint(0, 2, (128, 1)).float()
    outs = []
    for model in (fast, ref):
        out = model(dense, kjt)
        nn.functional.binary_cross_entropy_with_logits(out, labels).backward()
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)
    grads = dict(ref.named_parameters())
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-5, atol=1e-6, msg=name)


def pairwise_dots(x: torch.Tensor, flat_pairs: torch.Tensor) -> torch.Tensor:
    """dlrm.field_dots of the fields x (B, N, E): head x[:, 0], rest the others side by side."""
    return dlrm.field_dots(x[:, 0], x[:, 1:].reshape(x.shape[0], -1), flat_pairs)


def test_pairwise_dots_backward_is_the_gradient_of_its_forward():
    x = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    rows, cols = torch.triu_indices(5, 5, offset=1)
    flat = rows * 5 + cols
    expected = torch.bmm(x, x.transpose(1, 2))[:, rows, cols]
    torch.testing.assert_close(pairwise_dots(x, flat), expected)
    assert torch.autograd.gradcheck(lambda t: pairwise_dots(t, flat), (x,))
    # Both inputs' gradients, as the model passes them (head and rest apart).
    head, rest = x[:, 0].detach().clone().requires_grad_(), x[:, 1:].reshape(3, -1).detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda h, r: dlrm.field_dots(h, r, flat), (head, rest))


def test_pairwise_dots_of_fields_in_shard_order_are_the_canonical_ones():
    """A sharded collection lists its keys shard by shard: the dots, picked where the fields
    are, come out in the canonical (feature) order all the same."""
    from torchrec.sparse.jagged_tensor import KeyedTensor

    names, b, e = ["a", "b", "c", "d"], 5, 3
    cols = {k: torch.randn(b, e, dtype=torch.float64) for k in names}
    dense = torch.randn(b, e, dtype=torch.float64)
    n = len(names) + 1
    rows, cols_ = torch.triu_indices(n, n, offset=1)
    canonical = rows * n + cols_
    expected = pairwise_dots(torch.stack([dense, *(cols[k] for k in names)], dim=1), canonical)
    shuffled = ["c", "a", "d", "b"]
    kt = KeyedTensor(keys=shuffled, length_per_key=[e] * 4, values=torch.cat([cols[k] for k in shuffled], dim=1))
    cache = {}
    pairs = dlrm.pairs_in_key_order(kt, names, canonical, cache)
    fields = torch.cat([dense, kt.values()], dim=1).view(b, n, e)
    torch.testing.assert_close(pairwise_dots(fields, pairs), expected)
    assert tuple(shuffled) in cache
    in_order = KeyedTensor(keys=names, length_per_key=[e] * 4, values=torch.cat([cols[k] for k in names], dim=1))
    assert dlrm.pairs_in_key_order(in_order, names, canonical, cache) is canonical


@pytest.mark.parametrize("name", [m for m in click_models() if m != "lr"])
def test_embedding_dim_replaces_the_flavors_row_width(movielens_schema, name):
    model = build_model(movielens_schema, ModelConfig(name, "debug", embedding_dim=12), torch.device("cpu"))
    widths = {c.name: c.embedding_dim for ebc in ebcs(model) for c in ebc.embedding_bag_configs()}
    field_tables = {t: w for t, w in widths.items() if t.startswith("t_")}
    assert field_tables and set(field_tables.values()) == {12}, widths
    out = model(torch.rand(16, len(movielens_schema.dense)), _movielens_kjt(movielens_schema, 16))
    assert out.shape == (16, 1)


def test_embedding_dim_needs_a_model_with_rows():
    with pytest.raises(UserError, match="model 'lr' has no embedding width"):
        build_model(None, ModelConfig("lr", "small", embedding_dim=8), META)


def test_first_order_adds_a_sharded_linear_term(movielens_schema):
    torch.manual_seed(0)
    model = build_model(movielens_schema, ModelConfig("dcn", "debug", first_order=True), torch.device("cpu"))
    tables = sorted(c.name for ebc in ebcs(model) for c in ebc.embedding_bag_configs())
    assert [t for t in tables if t.startswith("lin_")] == sorted(f"lin_{f.name}" for f in movielens_schema.sparse)
    dense, kjt = torch.rand(32, len(movielens_schema.dense)), _movielens_kjt(movielens_schema, 32)
    model.eval()
    torch.testing.assert_close(model(dense, kjt), model.model(dense, kjt) + model.linear(dense, kjt))
    # The term moves the logit: its bias shifts every row by the same amount.
    before = model(dense, kjt)
    with torch.no_grad():
        model.linear.bias.add_(1.5)
    torch.testing.assert_close(model(dense, kjt), before + 1.5)
    with pytest.raises(UserError, match="'model.first_order': model 'deepfm' has a first-order term of its own"):
        build_model(movielens_schema, ModelConfig("deepfm", "debug", first_order=True), META)
    with pytest.raises(UserError, match="'model.first_order': model 'sasrec' is not one of the click models"):
        build_model(movielens_schema, ModelConfig("sasrec", "debug", first_order=True), META)


def test_history_models_take_cross_pairs_and_keep_their_auxiliary_loss():
    from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    schema = DatasetSchema(label="label", dense=[], sparse=[
        SparseFeature("item_id", 20), SparseFeature("user_id", 5),
        SparseFeature("hist_item_id", 20, multi_hot=True, sequence_of="item_id", max_length=4)])
    torch.manual_seed(0)
    model = build_model(schema, ModelConfig("dien", "debug", cross_pairs=["user_id:item_id"]), torch.device("cpu"))
    kjt = KeyedJaggedTensor.from_lengths_sync(
        ["item_id", "user_id", "hist_item_id"], torch.tensor([1, 2, 3, 4, 1, 0, 5, 6, 7]),
        torch.tensor([1, 1, 1, 1, 3, 2]))
    dense = torch.zeros(2, 0)
    logits, aux = model.train()(dense, kjt)
    torch.manual_seed(0)
    inner_logits, inner_aux = model.model(dense, kjt)
    cross = model.crosses.term(model.cross, kjt)
    torch.testing.assert_close(logits, inner_logits + cross)
    torch.testing.assert_close(aux, inner_aux)
    assert logits.shape == (2, 1) and aux.ndim == 0
    with pytest.raises(UserError, match="'model.first_order': model 'dien' has a first-order term of its own"):
        build_model(schema, ModelConfig("dien", "debug", first_order=True), META)
