"""Baselines every deep model must beat: logistic regression, FM and embedding + MLP.

- `lr`: logistic regression, logits = w0 + sum_f w_f(id_f) + <w, x>            (B, 1)
  (one-hot / bag-of-ids features with 1-dim embeddings `lin_<f>`, linear on dense).
- `fm`: the factorization machine (Rendle 2010, "Factorization Machines", ICDM):
  logits = LR + sum_{i<j} <v_i, v_j> over the fields (B, N = F + D, E), each dense
  feature a field x_j * v_j; computed by the sum-square trick in O(N E).
- `dnn`: embeddings (B, F, E) flattened, concatenated with dense (B, D), through ReLU
  layers and a linear unit -> (B, 1) (the "embedding + MLP" model of YouTube-style
  rankers; multi-hot bags averaged so a bag's scale does not depend on its length).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.trainer.models.common import (
    FeatureLinear,
    all_fields,
    dense_fields,
    field_embeddings,
    fm_interaction,
    mlp_tower,
)
from torch import nn
from torchrec.modules.embedding_configs import PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass(frozen=True)
class LRFlavor:
    pass  # nothing to size: one weight per id and per dense feature


@dataclass(frozen=True)
class FMFlavor:
    embedding_dim: int


@dataclass(frozen=True)
class DNNFlavor:
    embedding_dim: int
    hidden: tuple[int, ...]


LR_FLAVORS = {"debug": LRFlavor(), "small": LRFlavor()}
FM_FLAVORS = {"debug": FMFlavor(4), "small": FMFlavor(16), "paper": FMFlavor(12)}
DNN_FLAVORS = {"debug": DNNFlavor(4, (16,)), "small": DNNFlavor(16, (256, 128)),
               "large": DNNFlavor(16, (1024, 512, 256))}


class LogisticRegression(nn.Module):
    """forward(dense (B, D), kjt) -> (B, 1)."""

    def __init__(self, schema: DatasetSchema, device: torch.device | None = None):
        super().__init__()
        self.linear = FeatureLinear(schema, device)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.linear(dense, kjt)


class FactorizationMachine(nn.Module):
    """forward(dense (B, D), kjt) -> (B, 1)."""

    def __init__(self, schema: DatasetSchema, flavor: FMFlavor, device: torch.device | None = None):
        super().__init__()
        self.linear = FeatureLinear(schema, device)
        self.embeddings = field_embeddings(schema, flavor.embedding_dim, device, PoolingType.SUM)
        self.dense_fields = dense_fields(schema, flavor.embedding_dim, device)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        fields = all_fields(self.embeddings(kjt), dense, self.dense_fields)  # (B, N, E)
        return self.linear(dense, kjt) + fm_interaction(fields)


class EmbeddingMLP(nn.Module):
    """forward(dense (B, D), kjt) -> (B, 1)."""

    def __init__(self, schema: DatasetSchema, flavor: DNNFlavor, device: torch.device | None = None):
        super().__init__()
        dim = flavor.embedding_dim
        self.embeddings = field_embeddings(schema, dim, device, PoolingType.MEAN)
        self.tower = mlp_tower(len(schema.sparse) * dim + len(schema.dense), flavor.hidden, device)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        emb = self.embeddings(kjt).flatten(1)  # (B, F E)
        return self.tower(torch.cat([emb, dense], dim=1))


def build_lr(schema: DatasetSchema, flavor: LRFlavor, device: torch.device) -> LogisticRegression:
    return LogisticRegression(schema, device)


def build_fm(schema: DatasetSchema, flavor: FMFlavor, device: torch.device) -> FactorizationMachine:
    return FactorizationMachine(schema, flavor, device)


def build_dnn(schema: DatasetSchema, flavor: DNNFlavor, device: torch.device) -> EmbeddingMLP:
    return EmbeddingMLP(schema, flavor, device)
