"""Click models over a behaviour history: DIN (Zhou et al., KDD 2018) and BST (Chen et al.,
DLP-KDD 2019).

A history feature (schema: `sequence_of: item_id`, a list of the user's earlier items, oldest
first) shares its table with the feature it is a history of. Those tables live in one
EmbeddingCollection (unpooled: one vector per id, so the model sees the order); every other
sparse feature is pooled by an EmbeddingBagCollection as in the rest of the zoo. Both are
sharded by embeddings/ like any table. Notation: B batch, L longest history in the batch,
E embedding dim, F the pooled fields.

    DIN:  a_l = MLP([h_l, t, h_l - t, h_l * t])  (no softmax, as the paper)   (B, L)
          u   = sum_l a_l h_l over real positions                             (B, E)
          m   = u / n (n real positions)                                      (B, E)
    BST:  one transformer block over [h_1 .. h_n, t] + position embeddings    (B, L+1, E)
          u   = the target position's output, plus m, the mean of the history's (B, 2E)
    logit = first-order term + FM(pooled fields, t, m) + MLP([pooled fields, t, u, dense])  (B, 1)

FM is DeepFM's second-order term over the E-wide field vectors: without it these
models trailed deepfm on MovieLens by 0.003-0.009 test AUC. Its interest field m is a mean,
so that its scale does not grow with the history; with the target in FM but no interest
field, DIN and BST were still at chance after 6 epochs of the synthetic history data of
the tests (the target x user products fit the label noise first).

Padding is done on the tensors inside the model (TorchRec's JaggedTensor.to_padded_dense),
never in the reader.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.schema import DatasetSchema, SparseFeature
from shardrec.embeddings.tables import table_configs, table_name
from shardrec.trainer.models.common import FeatureLinear, fm_interaction, mlp_tower
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass(frozen=True)
class SequenceCTRFlavor:
    embedding_dim: int
    dnn: tuple[int, ...]
    attention: tuple[int, ...] = (36,)  # DIN's activation unit
    heads: int = 2  # BST
    dropout: float = 0.1  # BST's attention and feed-forward dropout


def split_features(schema: DatasetSchema) -> tuple[list[SparseFeature], dict[str, list[str]]]:
    """(pooled features, {target: [its history features]}); refuses a schema without history."""
    targets: dict[str, list[str]] = {}
    for f in schema.sparse:
        of = getattr(f, "sequence_of", None)
        if of:
            targets.setdefault(of, []).append(f.name)
    if not targets:
        raise UserError("this model reads a behaviour history, and the data set has none: convert it with "
                        "`--history N` (e.g. `shardrec convert movielens --history 50`)")
    pooled = [f for f in schema.sparse if f.name not in targets and not getattr(f, "sequence_of", None)]
    return pooled, targets


class PositionEmbedding(nn.Embedding):
    """Learned positions, initialised at the scale of the item tables (TorchRec's uniform
    +-1/sqrt(rows)); nn.Embedding's N(0, 1) would drown the items' signal in the sum."""

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.01)


class SequenceCTR(nn.Module):
    """Shared body of DIN and BST: forward(dense (B, D), kjt) -> logits (B, 1)."""

    def __init__(self, schema: DatasetSchema, flavor: SequenceCTRFlavor, device: torch.device, pooled_width: int):
        super().__init__()
        d = flavor.embedding_dim
        pooled, self.targets = split_features(schema)
        sizes = {f.name: f.num_embeddings for f in schema.sparse}
        self.linear = FeatureLinear(schema, device)
        sub = DatasetSchema(label=schema.label, dense=[], sparse=pooled)
        self.pooled = EmbeddingBagCollection(tables=table_configs(sub, d, PoolingType.SUM), device=device) \
            if pooled else None
        self.sequences = EmbeddingCollection(device=device, tables=[
            EmbeddingConfig(name=table_name(t), embedding_dim=d, num_embeddings=sizes[t], feature_names=[t, *hist])
            for t, hist in self.targets.items()])
        self.dim = d
        self.width = d * len(self.targets)  # target and history vectors: their tables side by side
        self.deep = mlp_tower(len(pooled) * d + self.width + pooled_width + len(schema.dense), flavor.dnn, device)

    def target_and_history(self, kjt: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(target (B, W), history (B, L, W) zero-padded, mask (B, L) True = a real item);
        W = E x the number of targets (e.g. item and category histories side by side)."""
        e = self.sequences(kjt)
        targets, histories, lengths = [], [], None
        for t, hist in self.targets.items():
            targets.append(e[t].values())  # one id per row
            h = e[hist[0]]
            if lengths is None:
                lengths = h.lengths()
                longest = max(int(lengths.max()), 1) if lengths.numel() else 1
            histories.append(h.to_padded_dense(desired_length=longest))
        mask = torch.arange(longest, device=lengths.device)[None, :] < lengths[:, None]
        return torch.cat(targets, -1), torch.cat(histories, -1), mask

    def pooled_fields(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        if self.pooled is None:
            return kjt.values().new_zeros((kjt.stride(), 0), dtype=torch.float32)
        return self.pooled(kjt).values()

    def head(self, dense, kjt, target, user, fm_user=None) -> torch.Tensor:
        """first order + [FM over the pooled fields, the target and fm_user] + deep tower;
        target (B, W), user (B, kW), fm_user (B, jW) or None -> (B, 1)."""
        pooled = self.pooled_fields(kjt)
        fields = torch.cat([pooled, target] + ([fm_user] if fm_user is not None else []), dim=-1)
        return (self.linear(dense, kjt) + fm_interaction(fields.view(fields.shape[0], -1, self.dim))  # (B, N, E)
                + self.deep(torch.cat([pooled, target, user, dense], dim=-1)))


class OneBiasLinear(nn.Linear):
    """nn.Linear whose bias starts at 1: DIN's activation unit then starts as sum pooling of
    the history. From a zero-centred start the weights a_l are near 0, so u carries no
    gradient to the history rows, and those rows (+-1/sqrt(rows) at init) give the unit too
    little to learn from: with 2 of 3 seeds DIN stayed at chance on data that BST and DIEN
    learn (tests/trainer/test_sequence_ctr.py)."""

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.ones_(self.bias)


class DIN(SequenceCTR):
    def __init__(self, schema: DatasetSchema, flavor: SequenceCTRFlavor, device: torch.device):
        pooled, targets = split_features(schema)
        w = flavor.embedding_dim * len(targets)
        super().__init__(schema, flavor, device, pooled_width=w)
        layers = []
        width = 4 * w
        for h in flavor.attention:
            layers += [nn.Linear(width, h, device=device), nn.PReLU(device=device)]
            width = h
        self.attention = nn.Sequential(*layers, OneBiasLinear(width, 1, device=device))

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        target, hist, mask = self.target_and_history(kjt)
        t = target[:, None, :].expand_as(hist)
        weight = self.attention(torch.cat([hist, t, hist - t, hist * t], -1)).squeeze(-1)  # (B, L)
        user = (weight * mask)[:, :, None].mul(hist).sum(1)  # (B, W)
        # FM sees the interest as a mean over the history (the sum grows with its length):
        # its <t, m> term is the target-history match. With the target in FM but not m, DIN
        # was still at chance after 6 epochs of the synthetic history data (0.74 after 12).
        return self.head(dense, kjt, target, user, fm_user=user / mask.sum(1, keepdim=True).clamp(min=1))


class BST(SequenceCTR):
    def __init__(self, schema: DatasetSchema, flavor: SequenceCTRFlavor, device: torch.device):
        pooled, targets = split_features(schema)
        w = flavor.embedding_dim * len(targets)
        super().__init__(schema, flavor, device, pooled_width=2 * w)
        max_len = max((getattr(f, "max_length", 0) for f in schema.sparse), default=0) or 200
        self.position = PositionEmbedding(max_len + 1, w, device=device)
        self.heads, self.p = flavor.heads, flavor.dropout
        if w % flavor.heads:
            raise UserError(f"bst: width {w} is not divisible by {flavor.heads} heads")
        self.qkv = nn.Linear(w, 3 * w, device=device)
        self.proj = nn.Linear(w, w, device=device)
        self.norm1 = nn.LayerNorm(w, device=device)
        self.norm2 = nn.LayerNorm(w, device=device)
        self.ff = nn.Sequential(nn.Linear(w, 4 * w, device=device), nn.LeakyReLU(), nn.Linear(4 * w, w, device=device))

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        target, hist, mask = self.target_and_history(kjt)
        b, length, w = hist.shape
        # The target goes right after each row's last real item: [h_1 .. h_n, t, pad ..].
        n = mask.sum(1)
        seq = torch.cat([hist, hist.new_zeros(b, 1, w)], 1)
        seq[torch.arange(b, device=seq.device), n] = target
        keep = torch.cat([mask, mask.new_zeros(b, 1)], 1)
        keep[torch.arange(b, device=seq.device), n] = True
        pos = torch.arange(length + 1, device=seq.device).clamp(max=self.position.num_embeddings - 1)
        x = seq + self.position(pos)[None]
        q, k, v = self.qkv(x).view(b, length + 1, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :],
                                           dropout_p=self.p if self.training else 0.0)
        x = self.norm1(x + F.dropout(self.proj(a.transpose(1, 2).reshape(b, length + 1, w)), self.p, self.training))
        x = self.norm2(x + F.dropout(self.ff(x), self.p, self.training))
        out_target = x[torch.arange(b, device=x.device), n]
        out_hist = (x[:, :length] * mask[:, :, None]).sum(1) / n.clamp(min=1)[:, None]
        # FM's interest field is the history's mean output (as DIN's mean interest): with the
        # target alone in FM, BST stayed at chance on the synthetic history data.
        return self.head(dense, kjt, target, torch.cat([out_target, out_hist], -1), fm_user=out_hist)


FLAVORS = {"debug": SequenceCTRFlavor(4, (16,), (8,), heads=1), "small": SequenceCTRFlavor(16, (256, 128))}


def build_din(schema: DatasetSchema, flavor: SequenceCTRFlavor, device: torch.device) -> DIN:
    return DIN(schema, flavor, device)


def build_bst(schema: DatasetSchema, flavor: SequenceCTRFlavor, device: torch.device) -> BST:
    return BST(schema, flavor, device)


