"""DLRM (Naumov et al. 2019, "Deep Learning Recommendation Model for Personalization and
Recommendation Systems", arXiv:1906.00091), using TorchRec's reference modules.

    dense (B, D) ──bottom MLP──► (B, E) ─┐
    KJT (F features) ──EBC──► (B, F, E) ─┴─► pairwise dots (B, F(F+1)/2) ++ bottom (B, E)
                                              ──top MLP──► logits (B, 1)

TorchRec's `DLRM` is the model of the paper (dot interaction without self-pairs, the
bottom output concatenated to the dots); shardrec only supplies the sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.embeddings.tables import table_configs
from torchrec.models.dlrm import DLRM
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor


@dataclass(frozen=True)
class DLRMFlavor:
    embedding_dim: int
    bottom_mlp: tuple[int, ...]  # ends with embedding_dim
    top_mlp: tuple[int, ...]  # ends with 1


FLAVORS = {
    "debug": DLRMFlavor(8, (16, 8), (16, 1)),
    "small": DLRMFlavor(16, (128, 64, 16), (256, 128, 1)),
    # The DLRM paper's Criteo Kaggle benchmark configuration.
    "kaggle": DLRMFlavor(16, (512, 256, 64, 16), (512, 256, 1)),
    # MLPerf training v1.0 DLRM (dot interaction) sizes.
    "mlperf": DLRMFlavor(128, (512, 256, 128), (1024, 1024, 512, 256, 1)),
    # The training-speed benchmark's shape (configs/bench_dlrm.yaml, bench/bench_train.py).
    "bench": DLRMFlavor(64, (512, 256, 64), (512, 256, 1)),
}


class PairwiseDots(torch.autograd.Function):
    """The dot product of every pair of distinct fields, the fields being `head` (B, E)
    followed by the F fields of `rest` (B, F * E): (B, N(N-1)/2) with N = F + 1, in
    torch.triu_indices(N, N, offset=1) order (TorchRec's InteractionArch's) of the
    (B, N, E) fields x = [head, rest].

    Written by hand because autograd's version of `bmm(x, x^T)[:, rows, cols]` is slow on
    CPU (bench/profile_step.py, issue 13): the triangle's backward is an accumulating
    index_put and the bmm's backward two more bmms. Here Z = x x^T is symmetric, so
    dL/dx = (G + G^T) x with G the pair gradients scattered into (B, N, N): one bmm, and
    non-accumulating scatters (the pairs are distinct). The triangle is taken with gather
    over a broadcast index, 3-4x faster on CPU than index_select or advanced indexing.
    The two inputs are joined here rather than by a `torch.cat` before the call: the
    gradient of a cat's second part is a strided slice, which TorchRec's pooled all-to-all
    backward copies to make contiguous (about 3 ms of a 2-rank step, issue 13); this
    backward writes `rest`'s gradient contiguous in its own bmm."""

    @staticmethod
    def forward(ctx, head: torch.Tensor, rest: torch.Tensor, flat_pairs: torch.Tensor) -> torch.Tensor:
        b, e = head.shape
        x = torch.cat([head, rest], dim=1).view(b, -1, e)  # (B, N, E)
        n = x.shape[1]
        index = flat_pairs.expand(b, -1)
        ctx.save_for_backward(x, index)
        ctx.mirrored = (flat_pairs % n) * n + flat_pairs // n  # (i, j) -> (j, i)
        ctx.dtypes = head.dtype, rest.dtype
        return torch.gather(torch.bmm(x, x.transpose(1, 2)).view(b, n * n), 1, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, index = ctx.saved_tensors
        b, n, _ = x.shape
        # G + G^T: each pair's gradient goes to (i, j) and to (j, i). Two scatters over
        # broadcast indices, not one over their concatenation: that would build a (B, 2P)
        # index and repeat the gradient first (9.8 against 2.0 ms at B = 2,048, one thread).
        g = grad.new_zeros(b, n * n)
        g.scatter_(1, index, grad)
        g = g.scatter_(1, ctx.mirrored.expand(b, -1), grad).view(b, n, n)
        # Under autocast the forward's bmm ran in bf16 and `grad` is bf16: so does this one,
        # as autocast's own backward would, and each input's gradient goes back in its dtype.
        x = x.to(grad.dtype)
        head_dtype, rest_dtype = ctx.dtypes
        d_head = torch.bmm(g[:, :1], x).view(b, -1).to(head_dtype)
        d_rest = torch.bmm(g[:, 1:], x).view(b, -1).to(rest_dtype)  # contiguous (B, F * E)
        return d_head, d_rest, None


@torch.fx.wrap
def pairs_in_key_order(pooled: KeyedTensor, names: list[str], canonical: torch.Tensor,
                       cache: dict[tuple[str, ...], torch.Tensor]) -> torch.Tensor:
    """The flat (B, N * N) positions of the canonical pairs when the fields are laid out as
    [dense, then the KeyedTensor's keys in its own order]. One rank lists its keys in
    `names` order; a sharded collection lists them shard by shard. Rather than copy the
    columns into `names` order (a (B, F * E) gather, measured at 14% of a 2-rank step), the
    pairs are looked up where they are: (i, j) of the canonical order is (p(i), p(j))."""
    keys = tuple(pooled.keys())
    if keys == tuple(names):
        return canonical
    if keys not in cache:
        n = len(names) + 1
        where = {k: i + 1 for i, k in enumerate(keys)}
        order = torch.tensor([0] + [where[name] for name in names], device=canonical.device)
        rows, cols = canonical // n, canonical % n
        cache[keys] = order[rows] * n + order[cols]
    return cache[keys]


@torch.fx.wrap
def field_dots(head: torch.Tensor, rest: torch.Tensor, flat_pairs: torch.Tensor) -> torch.Tensor:
    """PairwiseDots of [head (B, E), rest (B, F * E)] as one call in fx graphs (TorchRec's
    train pipelines trace the model)."""
    return PairwiseDots.apply(head, rest, flat_pairs)


class FastDLRM(DLRM):
    """TorchRec's DLRM (same modules, parameters and outputs) with a leaner forward:
    the pooled embeddings are used as (B, F, E) straight from the KeyedTensor's values, in
    whatever order its keys are (TorchRec splits them into a dict and concatenates them back
    in feature order, a copy each way; here pairs_in_key_order picks the dots instead), and
    the pairwise dots are PairwiseDots. Under bf16 autocast the pooled embeddings are cast
    once, (B, F * E), so that the fields, their dots and the top MLP's input stay bf16
    (casting the (B, F + 1, E) fields for the bmm and back costs three times as much).

    forward(dense (B, D), KJT) -> logits (B, 1)
    """

    # The forward casts the pooled embeddings to the dense layers' dtype before any use, so
    # under bf16 they may arrive in bf16 (embeddings/comm_codec.py, BF16KeptCommCodec).
    takes_bf16_embeddings = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        n = self.sparse_arch.F + 1
        rows, cols = torch.triu_indices(n, n, offset=1)
        self.register_buffer("flat_pairs", rows * n + cols, persistent=False)
        self._pairs_by_key_order: dict[tuple[str, ...], torch.Tensor] = {}

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        dense = self.dense_arch(dense_features)  # (B, E), bf16 under autocast
        pooled = self.sparse_arch.embedding_bag_collection(sparse_features)  # KeyedTensor (B, F * E)
        pairs = pairs_in_key_order(pooled, self.sparse_arch.sparse_feature_names, self.flat_pairs,
                                   self._pairs_by_key_order)
        # The fields [dense, keys' order...] (B, F + 1, E) and their dots (B, (F + 1) F / 2),
        # canonical order.
        dots = field_dots(dense, pooled.values().to(dense.dtype), pairs)
        return self.over_arch(torch.cat([dense, dots], dim=1))


def build_dlrm(schema: DatasetSchema, flavor: DLRMFlavor, device: torch.device) -> DLRM:
    """DLRM over the schema's tables; pass device=meta and let embeddings/ place it."""
    ebc = EmbeddingBagCollection(tables=table_configs(schema, flavor.embedding_dim), device=device)
    return FastDLRM(
        embedding_bag_collection=ebc,
        dense_in_features=len(schema.dense),
        dense_arch_layer_sizes=list(flavor.bottom_mlp),
        over_arch_layer_sizes=list(flavor.top_mlp),
        dense_device=device,
    )
