"""xDeepFM (Lian et al. 2018, "xDeepFM: Combining Explicit and Implicit Feature Interactions
for Recommender Systems", KDD, arXiv:1803.05170).

    fields X0 = stack(e_1 .. e_F)                                          (B, m = F, E)
    CIN layer k: X^k_h = sum_{i, j} W^{k,h}_{ij} (X^{k-1}_i * X^0_j)       (B, H_k, E)
                 p^k_h = sum_e X^k_{h,e}  (sum pooling)                    (B, H_k)
    split-half:  for k < T, half of X^k feeds layer k+1, the other half goes to the output
    logits = w0 + sum_f w_f(id_f) + <w, x>      linear (EBC lin_<f>)           (B, 1)
           + w_cin^T [p^1 .. p^T]                                              (B, 1)
           + MLP([flatten(X0), x])              ReLU layers, linear output     (B, 1)

The CIN weight W^k, a 1x1 convolution over the H_{k-1} m outer-product channels in the
authors' code, is the same contraction as a bias-free linear layer over those channels
(one GEMM); no activation, as in the paper's formula. Multi-hot fields sum their ids'
embeddings (the paper's multivalent fields). The CIN runs over the categorical fields and
dense features enter the linear and DNN parts, as in common implementations (DeepCTR): the
CIN's cost grows with m^2, and 13 more fields would double it on Criteo.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.trainer.models.common import FeatureLinear, field_embeddings, mlp_tower
from torch import nn
from torchrec.modules.embedding_configs import PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass(frozen=True)
class XDeepFMFlavor:
    embedding_dim: int
    cin: tuple[int, ...]  # feature maps H_k per CIN layer (even except the last, if split_half)
    dnn: tuple[int, ...]
    split_half: bool = True


FLAVORS = {
    "debug": XDeepFMFlavor(4, (4, 4), (16,)),
    "small": XDeepFMFlavor(16, (64, 64), (256, 128)),
    # For data sets of ~100k rows (MovieLens 100K), where "small" overfits.
    "compact": XDeepFMFlavor(16, (32, 32), (128, 64)),
    # The paper's Criteo setting, CIN 200-200-200 and DNN 400-400, with its embedding width
    # 10 rounded to 12: FBGEMM's kernels need widths divisible by 4.
    "paper": XDeepFMFlavor(12, (200, 200, 200), (400, 400)),
}


class CIN(nn.Module):
    """Compressed Interaction Network: X0 (B, m, E) -> pooled maps (B, out_features)."""

    def __init__(self, num_fields: int, layers: tuple[int, ...], split_half: bool = True,
                 device: torch.device | None = None):
        super().__init__()
        self.split_half = split_half
        self.convs = nn.ModuleList()
        self.layers = tuple(layers)
        prev, out = num_fields, 0
        for k, h in enumerate(layers):
            last = k == len(layers) - 1
            if split_half and not last and h % 2:
                raise ValueError(f"CIN with split_half needs even layer sizes but the last; got {layers}")
            self.convs.append(nn.Linear(prev * num_fields, h, bias=False, device=device))
            prev = h // 2 if split_half and not last else h
            out += h - h // 2 if split_half and not last else h
        self.out_features = out

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        batch, _, dim = x0.shape
        xk, pooled = x0, []
        for k, conv in enumerate(self.convs):
            # All H_{k-1} x m Hadamard products: channel i m + j is X^{k-1}_i * X^0_j.
            z = torch.einsum("bhe,bme->behm", xk, x0).reshape(batch, dim, -1)  # (B, E, H_{k-1} m)
            xk = conv(z).transpose(1, 2)  # (B, H_k, E)
            if self.split_half and k < len(self.convs) - 1:
                half = self.layers[k] // 2
                xk, direct = xk[:, :half], xk[:, half:]
            else:
                direct = xk
            pooled.append(direct.sum(dim=2))
        return torch.cat(pooled, dim=1)


class XDeepFM(nn.Module):
    """forward(dense (B, D) float32, kjt) -> logits (B, 1)."""

    def __init__(self, schema: DatasetSchema, flavor: XDeepFMFlavor, device: torch.device | None = None):
        super().__init__()
        dim = flavor.embedding_dim
        num_fields = len(schema.sparse)
        self.linear = FeatureLinear(schema, device)
        self.embeddings = field_embeddings(schema, dim, device, PoolingType.SUM)
        self.cin = CIN(num_fields, flavor.cin, flavor.split_half, device)
        self.cin_head = nn.Linear(self.cin.out_features, 1, bias=False, device=device)
        self.dnn = mlp_tower(num_fields * dim + len(schema.dense), flavor.dnn, device)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        x0 = self.embeddings(kjt)  # (B, m, E)
        deep_in = torch.cat([x0.flatten(1), dense], dim=1)
        return self.linear(dense, kjt) + self.cin_head(self.cin(x0)) + self.dnn(deep_in)


def build_xdeepfm(schema: DatasetSchema, flavor: XDeepFMFlavor, device: torch.device) -> XDeepFM:
    return XDeepFM(schema, flavor, device)
