"""The zoo's interactions against direct, slow reference computations, on random inputs.

Every reference is written from the paper's formula with explicit loops; the model under test
is built on CPU with all parameters randomised (so zero-initialised weights and biases are
exercised too).
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from shardrec.configs.tree import ModelConfig
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature
from shardrec.embeddings.tables import LINEAR_WIDTH
from shardrec.trainer.models import wide_deep
from shardrec.trainer.models.common import fm_interaction
from shardrec.trainer.models.dcn import DCNv2Flavor, cross_network
from shardrec.trainer.models.xdeepfm import CIN
from shardrec.trainer.registry import build_model, click_models
from torchrec.modules.deepfm import FactorizationMachine as TorchRecFM
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

CPU = torch.device("cpu")
# Sizes chosen so that the debug Wide&Deep (hash size 1000) has exact and hashed crosses.
SCHEMA = DatasetSchema("label", ["d0", "d1", "d2"], [
    SparseFeature("a", 50), SparseFeature("b", 20, multi_hot=True), SparseFeature("c", 30)])
NO_DENSE = dataclasses.replace(SCHEMA, dense=[])


def random_batch(schema: DatasetSchema, batch: int = 8, seed: int = 0):
    """(dense (B, D), KJT): one id per one-hot feature, 0-3 ids (empty bags too) per multi-hot."""
    gen = torch.Generator().manual_seed(seed)
    lengths = [torch.randint(0, 4, (batch,), generator=gen) if f.multi_hot else torch.ones(batch, dtype=torch.long)
               for f in schema.sparse]
    values = [torch.randint(0, f.num_embeddings, (int(n.sum()),), generator=gen)
              for f, n in zip(schema.sparse, lengths)]
    kjt = KeyedJaggedTensor(keys=schema.sparse_names, values=torch.cat(values),
                            lengths=torch.cat(lengths).int())
    return torch.randn(batch, len(schema.dense), generator=gen), kjt


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (N(0, 0.3)), so zero-initialised ones are tested too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def lookup(ebc, table: str, bags: JaggedTensor, mean: bool) -> torch.Tensor:
    """Pooled embedding of each row's bag, row by row: (B, E); an empty bag pools to 0."""
    weight = ebc.embedding_bags[table].weight
    rows = []
    for ids in bags.to_dense():
        pooled = weight[ids].sum(0) if len(ids) else torch.zeros(weight.shape[1])
        rows.append(pooled / len(ids) if mean and len(ids) else pooled)
    return torch.stack(rows)


def build(name: str, flavor: str = "debug", schema=SCHEMA, seed: int = 0):
    torch.manual_seed(seed)
    return randomize(build_model(schema, ModelConfig(name, flavor), CPU), seed)


def pairwise_dots(v: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} <v_i, v_j> by the definition: (B, N, E) -> (B, 1)."""
    out = torch.zeros(v.shape[0], 1, dtype=v.dtype)
    for i, j in itertools.combinations(range(v.shape[1]), 2):
        out[:, 0] += (v[:, i] * v[:, j]).sum(-1)
    return out


def linear_reference(model, dense, kjt) -> torch.Tensor:
    """w0 + sum_f sum_{id in bag} w_f(id) + <w, x> from FeatureLinear's tables."""
    out = model.bias + dense @ model.dense.weight.T
    for f in SCHEMA.sparse_names:
        out = out + lookup(model.ebc, f"lin_{f}", kjt[f], mean=False).sum(1, keepdim=True) / LINEAR_WIDTH
    return out


def sparse_fields(ebc, kjt, mean: bool) -> torch.Tensor:
    return torch.stack([lookup(ebc, f"t_{f}", kjt[f], mean) for f in SCHEMA.sparse_names], dim=1)


def test_fm_sum_square_trick_equals_the_pairwise_sum():
    v = torch.randn(5, 7, 4, dtype=torch.float64)
    torch.testing.assert_close(fm_interaction(v), pairwise_dots(v))


def test_torchrecs_factorization_machine_is_not_fm():
    # Why the zoo has its own: TorchRec's flattens (B, N, E) first, so it also multiplies
    # different embedding dimensions (and dimensions of the same field) with each other.
    v = torch.randn(5, 7, 4, dtype=torch.float64)
    assert not torch.allclose(TorchRecFM()([v]), pairwise_dots(v))


@pytest.mark.parametrize("split_half", [True, False])
def test_cin_equals_explicit_outer_products(split_half):
    torch.manual_seed(0)
    m, dim, layers = 3, 5, (4, 6, 3)
    cin = CIN(m, layers, split_half)
    x0 = torch.randn(2, m, dim)
    prev, pooled = x0, []
    for k, (h_k, conv) in enumerate(zip(layers, cin.convs)):
        w = conv.weight  # (H_k, H_{k-1} m): channel i m + j is X^{k-1}_i * X^0_j
        xk = torch.zeros(2, h_k, dim)
        for h in range(h_k):
            for i in range(prev.shape[1]):
                for j in range(m):
                    xk[:, h] += w[h, i * m + j] * prev[:, i] * x0[:, j]
        if split_half and k < len(layers) - 1:
            prev, direct = xk[:, : h_k // 2], xk[:, h_k // 2:]
        else:
            prev, direct = xk, xk
        pooled.append(direct.sum(-1))
    expected = torch.cat(pooled, 1)
    assert cin.out_features == expected.shape[1] == (2 + 3 + 3 if split_half else 4 + 6 + 3)
    torch.testing.assert_close(cin(x0), expected)


def cross_input(n=6, batch=3, seed=1):
    return torch.randn(batch, n, generator=torch.Generator().manual_seed(seed))


def test_dcn_v1_cross_layers_follow_the_formula():
    model = build("dcn")
    net, x0 = model.cross, cross_input(model.cross.kernels[0].shape[0])
    x = x0
    for w, b in zip(net.kernels, net.bias):  # w (N, 1), b (N, 1)
        x = torch.stack([x0[r] * (x[r] @ w[:, 0]) + b[:, 0] + x[r] for r in range(len(x0))])
    torch.testing.assert_close(net(x0), x)


@pytest.mark.parametrize("kind", ["full", "low_rank", "mixture"])
def test_dcnv2_cross_layers_follow_the_formula(kind):
    torch.manual_seed(0)
    n = 6
    flavor = DCNv2Flavor(4, 2, (8,), cross=kind, low_rank=3 if kind != "full" else 0, experts=3)
    net = randomize(cross_network(n, flavor))
    x0 = cross_input(n)
    x = x0.clone()
    for layer in range(2):
        rows = []
        for r in range(len(x0)):
            if kind == "full":  # x0 * (W x + b) + x
                new = x0[r] * (net.kernels[layer] @ x[r] + net.bias[layer][:, 0]) + x[r]
            elif kind == "low_rank":  # x0 * (U (V x) + b) + x
                u, v = net.W_kernels[layer], net.V_kernels[layer]
                new = x0[r] * (u @ (v @ x[r]) + net.bias[layer]) + x[r]
            else:  # sum_i softmax(gate)_i * x0 * (U_i g(C_i g(V_i x)) + b) + x
                gates = torch.softmax(torch.stack([g.weight[0] @ x[r] for g in net.gates]), 0)
                experts = [x0[r] * (net.U_kernels[layer][i] @ torch.relu(
                    net.C_kernels[layer][i] @ torch.relu(net.V_kernels[layer][i] @ x[r])))
                    + x0[r] * net.bias[layer][:, 0] for i in range(3)]
                new = sum(g * e for g, e in zip(gates, experts)) + x[r]
            rows.append(new)
        x = torch.stack(rows)
    torch.testing.assert_close(net(x0), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flavor", ["small", "small_parallel"])
def test_dcnv2_stacked_and_parallel_structures(flavor):
    model = build("dcnv2", flavor)
    dense, kjt = random_batch(SCHEMA)
    x0 = torch.cat([sparse_fields(model.embeddings.embedding_bag_collection, kjt, mean=True).flatten(1),
                    dense], 1)
    if flavor == "small":
        expected = model.head(model.deep(model.cross(x0)))
    else:
        expected = model.head(torch.cat([model.cross(x0), model.deep(x0)], 1))
    torch.testing.assert_close(model(dense, kjt), expected)


def test_dcn_v1_combines_cross_and_deep_outputs():
    model = build("dcn")
    dense, kjt = random_batch(SCHEMA)
    x0 = torch.cat([sparse_fields(model.embeddings.embedding_bag_collection, kjt, mean=True).flatten(1),
                    dense], 1)
    expected = model.combine(torch.cat([model.cross(x0), model.deep(x0)], 1))
    torch.testing.assert_close(model(dense, kjt), expected)


def test_dlrm_dcn_is_a_low_rank_cross_over_bottom_output_and_embeddings():
    model = build("dlrm_dcn")
    dense, kjt = random_batch(SCHEMA)
    emb = sparse_fields(model.sparse_arch.embedding_bag_collection, kjt, mean=False)
    x = x0 = torch.cat([model.dense_arch(dense), emb.flatten(1)], 1)  # (B, (F + 1) E)
    net = model.inter_arch.crossnet
    for u, v, b in zip(net.W_kernels, net.V_kernels, net.bias):
        x = x0 * (x @ v.T @ u.T + b) + x
    torch.testing.assert_close(model(dense, kjt), model.over_arch(x), rtol=1e-5, atol=1e-5)


def test_deepfm_is_first_order_plus_fm_plus_dnn():
    model = build("deepfm")
    dense, kjt = random_batch(SCHEMA)
    fields = torch.cat([sparse_fields(model.embeddings.embedding_bag_collection, kjt, mean=False),
                        dense[:, :, None] * model.dense_fields.weight], 1)  # (B, F + D, E)
    expected = (linear_reference(model.linear, dense, kjt) + pairwise_dots(fields)
                + model.deep.dense_module(fields.flatten(1)))
    torch.testing.assert_close(model(dense, kjt), expected, rtol=1e-5, atol=1e-5)


def test_fm_and_lr_baselines():
    fm, lr = build("fm"), build("lr")
    dense, kjt = random_batch(SCHEMA)
    fields = torch.cat([sparse_fields(fm.embeddings.embedding_bag_collection, kjt, mean=False),
                        dense[:, :, None] * fm.dense_fields.weight], 1)
    torch.testing.assert_close(fm(dense, kjt), linear_reference(fm.linear, dense, kjt) + pairwise_dots(fields),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lr(dense, kjt), linear_reference(lr.linear, dense, kjt))


def test_xdeepfm_is_linear_plus_cin_plus_dnn():
    model = build("xdeepfm")
    dense, kjt = random_batch(SCHEMA)
    x0 = sparse_fields(model.embeddings.embedding_bag_collection, kjt, mean=False)
    expected = (linear_reference(model.linear, dense, kjt) + model.cin_head(model.cin(x0))
                + model.dnn(torch.cat([x0.flatten(1), dense], 1)))
    torch.testing.assert_close(model(dense, kjt), expected, rtol=1e-5, atol=1e-5)


def python_cross_ids(a_rows, b_rows, b_size, out_size, exact):
    """Row by row, pair by pair: the cross ids the wide part must see."""
    rows = []
    for a_ids, b_ids in zip(a_rows, b_rows):
        ids = []
        for ia in a_ids:
            for ib in b_ids:
                key = ia * b_size + ib
                if not exact:
                    key = ((key % 2**31) * 0x5BD1E995 + (key >> 31) * 0x1B873593) % (2**61 - 1) % out_size
                ids.append(key)
        rows.append(ids)
    return rows


@pytest.mark.parametrize("exact", [True, False])
def test_wide_cross_ids_match_a_python_loop(exact):
    gen = torch.Generator().manual_seed(3)
    a_len = torch.randint(0, 4, (50,), generator=gen)  # multi-hot with empty bags
    b_len = torch.randint(0, 3, (50,), generator=gen)
    a_val = torch.randint(0, 40_000_000, (int(a_len.sum()),), generator=gen)
    b_val = torch.randint(0, 39_060, (int(b_len.sum()),), generator=gen)
    b_size, out_size = 39_060, (40_000_000 * 39_060 if exact else 1_000_003)
    values, lengths = wide_deep.cross_ids(a_val, a_len.int(), b_val, b_len.int(), b_size, out_size, exact)
    expected = python_cross_ids(torch.split(a_val, a_len.tolist()), torch.split(b_val, b_len.tolist()),
                                b_size, out_size, exact)
    assert lengths.tolist() == [len(r) for r in expected]
    assert values.tolist() == [i for r in expected for i in r]


def cross_reference(crosses: wide_deep.Crosses, ebc, kjt) -> torch.Tensor:
    """sum_{(a, b)} sum_{id in cross(a, b)} w_ab(id), row by row: (B, 1)."""
    sizes = {f.name: f.num_embeddings for f in SCHEMA.sparse}
    out = torch.zeros(len(kjt.lengths()) // len(kjt.keys()), 1)
    for (a, b), size, exact in zip(crosses.pairs, crosses.sizes, crosses.exact):
        ids = python_cross_ids([r.tolist() for r in kjt[a].to_dense()], [r.tolist() for r in kjt[b].to_dense()],
                               sizes[b], size, exact)
        table = ebc.embedding_bags[f"cross_{a}_x_{b}"].weight
        out = out + torch.stack([table[r].sum() if r else torch.tensor(0.0) for r in ids])[:, None] / LINEAR_WIDTH
    return out


def test_wide_and_deep_is_wide_linear_plus_crosses_plus_deep():
    model = build("wide_deep")
    dense, kjt = random_batch(SCHEMA)
    crosses = model.crosses
    assert crosses.pairs == (("a", "b"), ("a", "c"), ("b", "c"))  # debug: the first 3 features
    assert crosses.exact == (True, False, True)  # 50 x 20 and 20 x 30 fit the hash size 1000
    wide = linear_reference(model.wide, dense, kjt) + cross_reference(crosses, model.cross, kjt)
    deep_in = torch.cat([sparse_fields(model.embeddings.embedding_bag_collection, kjt, mean=True).flatten(1),
                         dense], 1)
    torch.testing.assert_close(model(dense, kjt), wide + model.deep(deep_in), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,first_order", [("dcn", True), ("dlrm", False), ("deepfm", False)])
def test_cross_pairs_add_wide_and_deeps_cross_terms_to_any_click_model(name, first_order):
    torch.manual_seed(0)
    cfg = ModelConfig(name, "debug", cross_pairs=["a:b", "c:a"], first_order=first_order)
    model = randomize(build_model(SCHEMA, cfg, CPU))
    dense, kjt = random_batch(SCHEMA)
    assert model.crosses.pairs == (("a", "b"), ("c", "a")) and model.crosses.exact == (True, True)
    expected = model.model(dense, kjt) + cross_reference(model.crosses, model.cross, kjt)
    if first_order:
        expected = expected + linear_reference(model.linear, dense, kjt)
    else:
        assert model.linear is None
    torch.testing.assert_close(model(dense, kjt), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", click_models())
def test_every_parameter_receives_a_gradient(name):
    for schema in (SCHEMA, NO_DENSE):
        model = build(name, schema=schema)
        dense, kjt = random_batch(schema)
        logits = model(dense, kjt)
        assert logits.shape == (len(dense), 1)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, f"{name} (dense={schema.dense}): no gradient for {missing}"
