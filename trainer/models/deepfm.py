"""DeepFM (Guo et al. 2017, "DeepFM: A Factorization-Machine based Neural Network for CTR
Prediction", IJCAI, arXiv:1703.04247).

An FM component and a deep component share one embedding layer; their outputs are summed:

    fields: sparse f ──EBC t_<f>──► e_f (B, E);  dense j ──► x_j * v_j (B, E)
    V = stack(fields)                                                   (B, N = F + D, E)
    y_FM   = w0 + sum_f w_f(id_f) + <w, x>         first order (EBC lin_<f>, dim 1) (B, 1)
           + sum_{i<j} <V_i, V_j>                  second order, sum-square trick    (B, 1)
    y_DNN  = MLP(flatten(V))                       ReLU layers, linear output        (B, 1)
    logits = y_FM + y_DNN                                                           (B, 1)

A continuous field is its value times a latent vector, as the paper (and FM) treat
real-valued features; a multi-hot field sums its ids' embeddings (the indicator vector has
several ones). TorchRec's `DeepFM` module (flatten + concat + dense module) is the deep
component; its `FactorizationMachine` is not used (see `common.fm_interaction`).
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
from torchrec.modules import deepfm as trec_deepfm
from torchrec.modules.embedding_configs import PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass(frozen=True)
class DeepFMFlavor:
    embedding_dim: int
    dnn: tuple[int, ...]  # hidden layer widths; a linear unit follows


FLAVORS = {
    "debug": DeepFMFlavor(4, (16,)),
    "small": DeepFMFlavor(16, (256, 128)),
    # The paper's Criteo setting, three hidden layers of 400 (its best shape), with its
    # embedding width 10 rounded to 12: FBGEMM's kernels need widths divisible by 4.
    "paper": DeepFMFlavor(12, (400, 400, 400)),
}


class DeepFM(nn.Module):
    """forward(dense (B, D) float32, kjt KJT over the schema's sparse features) -> (B, 1)."""

    def __init__(self, schema: DatasetSchema, flavor: DeepFMFlavor, device: torch.device | None = None):
        super().__init__()
        dim = flavor.embedding_dim
        self.linear = FeatureLinear(schema, device)
        self.embeddings = field_embeddings(schema, dim, device, PoolingType.SUM)
        self.dense_fields = dense_fields(schema, dim, device)
        num_fields = len(schema.sparse) + len(schema.dense)
        self.deep = trec_deepfm.DeepFM(mlp_tower(num_fields * dim, flavor.dnn, device))

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        fields = all_fields(self.embeddings(kjt), dense, self.dense_fields)  # (B, N, E)
        return self.linear(dense, kjt) + fm_interaction(fields) + self.deep([fields])


def build_deepfm(schema: DatasetSchema, flavor: DeepFMFlavor, device: torch.device) -> DeepFM:
    return DeepFM(schema, flavor, device)
