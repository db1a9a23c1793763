"""Building blocks shared by the model zoo: field embeddings, the first-order (linear) term,
the FM interaction, MLP towers, and the fix that lets TorchRec's cross networks be built on
the meta device.

Notation: B batch, F sparse fields, D dense features, E embedding dim.

Why `materializable`: DistributedModelParallel materialises a meta-built dense module by
allocating each module's *direct* meta parameters with `torch.empty_like` and then calling
that module's `reset_parameters()`. TorchRec's CrossNet, LowRankCrossNet, VectorCrossNet and
LowRankMixtureCrossNet keep their weights in `nn.ParameterList`s and initialise them only in
`__init__`; a ParameterList has no `reset_parameters`, so after DMP the cross weights are
uninitialised memory (measured: values of 1e12 and denormals). `materializable` swaps those
lists for `InitParameterList`s that re-run the module's own initialisation on request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.embeddings.tables import LINEAR_WIDTH, linear_table_configs, table_configs
from torch import nn
from torchrec.models.dlrm import SparseArch
from torchrec.modules.embedding_configs import PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class InitParameterList(nn.ParameterList):
    """A ParameterList whose `reset_parameters()` applies `init` to every entry (see module doc)."""

    def __init__(self, params: Sequence[nn.Parameter], init: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(params)
        self._init = init

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for p in self:
                self._init(p)


# The initialisation TorchRec's crossnet modules use in their __init__, per ParameterList.
_CROSSNET_INITS = {
    "kernels": nn.init.xavier_normal_, "W_kernels": nn.init.xavier_normal_,
    "V_kernels": nn.init.xavier_normal_, "U_kernels": nn.init.xavier_normal_,
    "C_kernels": nn.init.xavier_normal_, "bias": nn.init.zeros_,
}


def materializable(module: nn.Module) -> nn.Module:
    """Give a TorchRec crossnet module's ParameterLists a `reset_parameters` (same init)."""
    for name, init in _CROSSNET_INITS.items():
        plist = getattr(module, name, None)
        if isinstance(plist, nn.ParameterList) and not isinstance(plist, InitParameterList):
            setattr(module, name, InitParameterList(list(plist), init))
    return module


def gru_weights_current(gru: nn.GRU) -> nn.GRU:
    """`gru`, its cached weight list rebuilt if it is stale: DMP materialises meta parameters
    by replacing them, and nn.GRU keeps its own list of the old ones until told to rebuild it.
    Call before each forward."""
    if gru._flat_weights[0] is not gru.weight_ih_l0:
        gru._init_flat_weights()
    return gru


def sparse_ebc(schema: DatasetSchema, dim: int, device: torch.device,
               pooling: PoolingType = PoolingType.SUM) -> EmbeddingBagCollection:
    """The shared field embeddings: tables `t_<feature>` of width `dim`."""
    return EmbeddingBagCollection(tables=table_configs(schema, dim, pooling), device=device)


def field_embeddings(schema: DatasetSchema, dim: int, device: torch.device,
                     pooling: PoolingType = PoolingType.SUM) -> SparseArch:
    """TorchRec's SparseArch over `sparse_ebc`: KJT -> (B, F, E) in schema order."""
    return SparseArch(sparse_ebc(schema, dim, device, pooling))


class DenseFieldEmbedding(nn.Module):
    """Each dense feature j as a field with latent vector v_j, scaled by its value.

    This is how FM (Rendle 2010) and DeepFM treat a real-valued feature: it interacts through
    x_j * v_j. forward(dense (B, D)) -> (B, D, E).
    """

    def __init__(self, num_dense: int, dim: int, device: torch.device | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_dense, dim, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The tables' default init (uniform +-1/sqrt(rows)) has no analogue for one vector per
        # feature; a small normal keeps x_j * v_j on the scale of an embedding.
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return dense.unsqueeze(-1) * self.weight


def dense_fields(schema: DatasetSchema, dim: int, device: torch.device | None) -> DenseFieldEmbedding | None:
    """DenseFieldEmbedding for the schema's dense features; None when there are none."""
    return DenseFieldEmbedding(len(schema.dense), dim, device) if schema.dense else None


def all_fields(sparse: torch.Tensor, dense: torch.Tensor, dense_emb: nn.Module | None) -> torch.Tensor:
    """Sparse fields (B, F, E) followed by the dense fields (B, D, E): (B, F + D, E)."""
    if dense_emb is None:
        return sparse
    return torch.cat([sparse, dense_emb(dense)], dim=1)


class FeatureLinear(nn.Module):
    """The first-order term w0 + sum_f w_f(id_f) + <w_dense, x>: logistic regression.

    The per-id weights w_f are scalar embeddings in their own EmbeddingBagCollection (tables
    `lin_<feature>`, sum pooling: a multi-hot bag adds the weight of every id present), so
    embeddings/ shards them like any other table. FBGEMM needs table widths divisible by 4:
    each weight is the mean of 4 columns (see `embeddings.tables.LINEAR_WIDTH`).
    forward(dense (B, D), kjt) -> (B, 1).
    """

    def __init__(self, schema: DatasetSchema, device: torch.device | None = None):
        super().__init__()
        self.ebc = EmbeddingBagCollection(tables=linear_table_configs(schema), device=device)
        num_dense = len(schema.dense)
        self.dense = nn.Linear(num_dense, 1, bias=False, device=device) if num_dense else None
        self.bias = nn.Parameter(torch.zeros(1, device=device))

    def reset_parameters(self) -> None:
        # Only the direct parameter: DMP calls each submodule's own reset_parameters.
        nn.init.zeros_(self.bias)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        out = scalar_sum(self.ebc(kjt).values()) + self.bias
        if self.dense is not None:
            out = out + self.dense(dense)
        return out


def scalar_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of the scalar weights in a KeyedTensor of scalar tables (B, LINEAR_WIDTH k) -> (B, 1).

    Each feature's weight is the mean of its LINEAR_WIDTH columns; summing all columns is
    order-free, so the (sharded) collection may return the features in any order.
    """
    return values.sum(dim=1, keepdim=True) / LINEAR_WIDTH


def fm_interaction(v: torch.Tensor) -> torch.Tensor:
    """FM second-order term sum_{i<j} <v_i, v_j> by the sum-square trick (Rendle 2010, eq. 5).

    v (B, N, E) -> (B, 1): 0.5 * sum_e [(sum_i v_ie)^2 - sum_i v_ie^2]; O(N E), not O(N^2 E).
    TorchRec's FactorizationMachine is not used: it flattens (B, N, E) to (B, N*E) before the
    trick, so it also multiplies different embedding dimensions with each other.
    """
    square_of_sum = v.sum(dim=1).pow(2)
    sum_of_square = v.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)


def mlp_tower(in_features: int, hidden: Sequence[int], device: torch.device | None = None) -> MLP:
    """ReLU hidden layers then a linear output unit: (B, in) -> (B, 1)."""
    return MLP(in_features, [*hidden, 1], device=device, activation_on_last=False)


def mlp(in_features: int, hidden: Sequence[int], device: torch.device | None = None) -> nn.Module:
    """ReLU layers (B, in) -> (B, hidden[-1]); the identity when `hidden` is empty."""
    return MLP(in_features, list(hidden), device=device) if hidden else nn.Identity()


def mlp_out(in_features: int, hidden: Sequence[int]) -> int:
    return hidden[-1] if hidden else in_features


class LearnedDenseVector(nn.Module):
    """Stands in for DLRM's bottom MLP when the data set has no dense features (D = 0).

    An MLP over zero inputs would be a constant whose first layer never gets a gradient; this
    is that constant as one learned vector, so the dot / cross interaction still has its
    "dense" slot. forward(dense (B, 0)) -> (B, E).
    """

    def __init__(self, dim: int, device: torch.device | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.1)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return self.weight.expand(dense.shape[0], -1)
