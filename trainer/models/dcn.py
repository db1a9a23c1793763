"""Deep & Cross Networks: DCN (v1) and DCNv2, over TorchRec's crossnet modules.

DCN (Wang et al. 2017, "Deep & Cross Network for Ad Click Predictions", ADKDD,
arXiv:1708.05123):

    x0 = concat(e_1 .. e_F, dense)                               (B, N = F E + D)
    cross:   x_{l+1} = x0 * (x_l . w_l) + b_l + x_l, w_l in R^N   (B, N)   VectorCrossNet
    deep:    h = ReLU MLP(x0)                                     (B, H)
    combine: logits = w^T [x_L, h] + b                            (B, 1)

DCNv2 (Wang et al. 2021, "DCN V2: Improved Deep & Cross Network and Practical Lessons for
Web-scale Learning to Rank Systems", WWW, arXiv:2008.13535) makes the cross weight a matrix:

    full-rank:  x_{l+1} = x0 * (W_l x_l + b_l) + x_l                     CrossNet
    low-rank:   x_{l+1} = x0 * (U_l (V_l x_l) + b_l) + x_l               LowRankCrossNet
    mixture:    x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l,                 LowRankMixtureCrossNet
                E_i(x_l) = x0 * (U_li g(C_li g(V_li x_l)) + b_l), G = softmax gate
    stacked:    logits = w^T MLP(cross(x0))                              (B, 1)
    parallel:   logits = w^T [cross(x0), MLP(x0)]                        (B, 1)

Both papers average the embeddings of a multi-valent feature (mean pooling). The paper's
per-table width 6 |V|^(1/4) is replaced by one width E for all tables (so they stack).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.trainer.models.common import field_embeddings, materializable, mlp, mlp_out
from torch import nn
from torchrec.modules.crossnet import (
    CrossNet,
    LowRankCrossNet,
    LowRankMixtureCrossNet,
    VectorCrossNet,
)
from torchrec.modules.embedding_configs import PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass(frozen=True)
class DCNFlavor:
    embedding_dim: int
    cross_layers: int
    deep: tuple[int, ...]  # ReLU layer widths of the deep network


@dataclass(frozen=True)
class DCNv2Flavor:
    embedding_dim: int
    cross_layers: int
    deep: tuple[int, ...]
    structure: Literal["stacked", "parallel"] = "stacked"
    cross: Literal["full", "low_rank", "mixture"] = "full"
    low_rank: int = 0  # rank r of U (N x r), V (r x N) for low_rank / mixture
    experts: int = 1  # mixture only


DCN_FLAVORS = {
    "debug": DCNFlavor(4, 2, (16,)),
    "small": DCNFlavor(16, 3, (256, 128)),
    # The paper's best Criteo shape: 6 cross layers beside 2 deep layers of 1024.
    "paper": DCNFlavor(16, 6, (1024, 1024)),
}

DCNV2_FLAVORS = {
    "debug": DCNv2Flavor(4, 2, (16,)),
    "small": DCNv2Flavor(16, 3, (256, 128)),
    "small_parallel": DCNv2Flavor(16, 3, (256, 128), structure="parallel"),
    "small_low_rank": DCNv2Flavor(16, 3, (256, 128), cross="low_rank", low_rank=64),
    "small_mixture": DCNv2Flavor(16, 3, (256, 128), cross="mixture", low_rank=32, experts=4),
    "large": DCNv2Flavor(16, 3, (768, 768)),
}


def _x0(embeddings: nn.Module, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
    return torch.cat([embeddings(kjt).flatten(1), dense], dim=1)  # (B, F E + D)


class DCN(nn.Module):
    """forward(dense (B, D) float32, kjt) -> logits (B, 1)."""

    def __init__(self, schema: DatasetSchema, flavor: DCNFlavor, device: torch.device | None = None):
        super().__init__()
        n = len(schema.sparse) * flavor.embedding_dim + len(schema.dense)
        self.embeddings = field_embeddings(schema, flavor.embedding_dim, device, PoolingType.MEAN)
        self.cross = materializable(VectorCrossNet(n, flavor.cross_layers))
        self.deep = mlp(n, flavor.deep, device)
        self.combine = nn.Linear(n + mlp_out(n, flavor.deep), 1, device=device)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        x0 = _x0(self.embeddings, dense, kjt)
        return self.combine(torch.cat([self.cross(x0), self.deep(x0)], dim=1))


def cross_network(n: int, flavor: DCNv2Flavor) -> nn.Module:
    """The DCNv2 cross network of `flavor` on (B, n) inputs."""
    if flavor.cross == "full":
        net = CrossNet(n, flavor.cross_layers)
    elif flavor.cross == "low_rank":
        net = LowRankCrossNet(n, flavor.cross_layers, low_rank=flavor.low_rank)
    elif flavor.cross == "mixture":
        net = LowRankMixtureCrossNet(n, flavor.cross_layers, num_experts=flavor.experts,
                                     low_rank=flavor.low_rank)
    else:
        raise ValueError(f"unknown DCNv2 cross type {flavor.cross!r}")
    return materializable(net)


class DCNv2(nn.Module):
    """forward(dense (B, D) float32, kjt) -> logits (B, 1)."""

    def __init__(self, schema: DatasetSchema, flavor: DCNv2Flavor, device: torch.device | None = None):
        super().__init__()
        if flavor.structure not in ("stacked", "parallel"):
            raise ValueError(f"unknown DCNv2 structure {flavor.structure!r}")
        n = len(schema.sparse) * flavor.embedding_dim + len(schema.dense)
        self.parallel = flavor.structure == "parallel"
        self.embeddings = field_embeddings(schema, flavor.embedding_dim, device, PoolingType.MEAN)
        self.cross = cross_network(n, flavor)
        self.deep = mlp(n, flavor.deep, device)
        head_in = n + mlp_out(n, flavor.deep) if self.parallel else mlp_out(n, flavor.deep)
        self.head = nn.Linear(head_in, 1, device=device)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        x0 = _x0(self.embeddings, dense, kjt)
        if self.parallel:
            return self.head(torch.cat([self.cross(x0), self.deep(x0)], dim=1))
        return self.head(self.deep(self.cross(x0)))


def build_dcn(schema: DatasetSchema, flavor: DCNFlavor, device: torch.device) -> DCN:
    # TorchRec's crossnets allocate with torch.empty and take no device argument.
    with torch.device(device):
        return DCN(schema, flavor, device)


def build_dcnv2(schema: DatasetSchema, flavor: DCNv2Flavor, device: torch.device) -> DCNv2:
    with torch.device(device):
        return DCNv2(schema, flavor, device)
