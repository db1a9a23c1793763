"""Next-item models over a behaviour history: SASRec (Kang and McAuley, ICDM 2018) and
GRU4Rec (Hidasi et al., ICLR 2016), on `convert interactions --history N` data sets.

Each row is an event: its user's earlier items `hist_item_id` (oldest first) and the item
that came next, `item_id`; the reader adds a drawn negative `neg_item_id`. One unpooled
table (TorchRec's EmbeddingCollection, sharded by embeddings/ with the fused optimizer)
serves all three keys. Notation: B rows, L the longest history in the batch, d the width.

    SASRec:  H = blocks of causal self-attention over E[hist] + P       (B, L, d)
             user = H at each row's last real position                  (B, d)
    GRU4Rec: user = W h_n, h_n the GRU's state after the last item      (B, d)
    score(user, item) = <user, E[item]>

    forward(kjt) -> (user (B, d), item (B, d), negative (B, d), reg (B,))

as the retrieval models, so RetrievalTask trains them (SASRec's own loss is `bce`). A row
with an empty history (a user's first event) is scored from position 0 alone (the learned
"nothing yet" state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.interactions import ITEM, NEG, require_interactions
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.embeddings.tables import table_name
from shardrec.trainer.models.retrieval import DotModel
from shardrec.trainer.models.sequence_ctr import PositionEmbedding
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

HISTORY = "hist_item_id"


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout's result, from a uniform draw instead of torch's CPU bernoulli_, which is
    2.5x slower on (B, L, d) activations (13 against 5 ms for 256 x 50 x 64 on one core) and
    took a third of a SASRec step on CPU."""
    if not training or p == 0:
        return x
    return x * (torch.rand_like(x) >= p) * (1.0 / (1.0 - p))


@dataclass(frozen=True)
class SequentialFlavor:
    embedding_dim: int
    blocks: int = 2  # SASRec: attention blocks; GRU4Rec: GRU layers
    heads: int = 1
    dropout: float = 0.2


def require_history(schema: DatasetSchema, model: str) -> int:
    require_interactions(schema, getattr(schema, "folder", "the data set"), model)
    feature = next((f for f in schema.sparse if f.name == HISTORY), None)
    if feature is None:
        raise UserError(f"model '{model}' predicts the next item from each row's history, and the data set has "
                        "none: convert it with `shardrec convert interactions ... --history 50`")
    return feature.max_length


def item_collection(schema: DatasetSchema, dim: int, device: torch.device) -> EmbeddingCollection:
    """One unpooled table for the target, the negative and the history items."""
    size = next(f.num_embeddings for f in schema.sparse if f.name == ITEM)
    return EmbeddingCollection(device=device, tables=[EmbeddingConfig(
        name=table_name(ITEM), embedding_dim=dim, num_embeddings=size, feature_names=[ITEM, NEG + ITEM, HISTORY])])


class _Sequential(DotModel):
    def __init__(self, schema: DatasetSchema, flavor: SequentialFlavor, device: torch.device, name: str):
        super().__init__()
        self.max_length = require_history(schema, name)
        self.items = item_collection(schema, flavor.embedding_dim, device)
        self.p = flavor.dropout

    def lookups(self, kjt: KeyedJaggedTensor):
        """(item (B, d), negative (B, d), history (B, L, d) zero-padded, lengths (B,))."""
        e = self.items(kjt)
        hist = e[HISTORY]
        lengths = hist.lengths()
        longest = max(int(lengths.max()), 1) if lengths.numel() else 1
        return e[ITEM].values(), e[NEG + ITEM].values(), hist.to_padded_dense(desired_length=longest), lengths

    def forward(self, kjt: KeyedJaggedTensor):
        item, neg, hist, lengths = self.lookups(kjt)
        user = self.encode_history(hist, lengths)
        return user, item, neg, item.pow(2).sum(-1) + neg.pow(2).sum(-1)


class CausalBlock(nn.Module):
    """Pre-norm causal self-attention + point-wise feed-forward (SASRec's block): (B, L, d) -> (B, L, d)."""

    def __init__(self, d: int, heads: int, p: float, device: torch.device):
        super().__init__()
        self.heads, self.p = heads, p
        self.norm1 = nn.LayerNorm(d, device=device)
        self.qkv = nn.Linear(d, 3 * d, device=device)
        self.proj = nn.Linear(d, d, device=device)
        self.norm2 = nn.LayerNorm(d, device=device)
        self.ff1 = nn.Linear(d, d, device=device)
        self.ff2 = nn.Linear(d, d, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0)
        x = x + dropout(self.proj(a.transpose(1, 2).reshape(b, length, d)), self.p, self.training)
        h = self.ff2(dropout(F.relu(self.ff1(self.norm2(x))), self.p, self.training))
        return x + dropout(h, self.p, self.training)


class SASRec(_Sequential):
    def __init__(self, schema: DatasetSchema, flavor: SequentialFlavor, device: torch.device):
        super().__init__(schema, flavor, device, "sasrec")
        d = flavor.embedding_dim
        if d % flavor.heads:
            raise UserError(f"sasrec: embedding_dim {d} is not divisible by {flavor.heads} heads")
        self.scale = d ** 0.5
        self.position = PositionEmbedding(max(self.max_length, 1), d, device=device)
        self.blocks = nn.ModuleList(CausalBlock(d, flavor.heads, flavor.dropout, device) for _ in range(flavor.blocks))
        self.norm = nn.LayerNorm(d, device=device)

    def encode_history(self, hist: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Histories are right-padded and attention is causal, so no real position sees a pad.
        b, length, _ = hist.shape
        pos = torch.arange(length, device=hist.device).clamp(max=self.position.num_embeddings - 1)
        x = dropout(hist * self.scale + self.position(pos)[None], self.p, self.training)
        for block in self.blocks:
            x = block(x)
        last = (lengths.long() - 1).clamp(min=0)
        return self.norm(x[torch.arange(b, device=x.device), last])


class GRU4Rec(_Sequential):
    def __init__(self, schema: DatasetSchema, flavor: SequentialFlavor, device: torch.device):
        super().__init__(schema, flavor, device, "gru4rec")
        d = flavor.embedding_dim
        self.gru = nn.GRU(d, d, num_layers=flavor.blocks, batch_first=True, device=device)
        self.out = nn.Linear(d, d, device=device)

    def encode_history(self, hist: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.gru._flat_weights[0] is not self.gru.weight_ih_l0:
            # DMP materialises meta parameters by replacing them; nn.GRU keeps its own list of
            # the old ones until told to rebuild it.
            self.gru._init_flat_weights()
        out, _ = self.gru(dropout(hist, self.p, self.training))
        last = (lengths.long() - 1).clamp(min=0)
        state = out[torch.arange(hist.shape[0], device=hist.device), last]
        return self.out(state * (lengths > 0)[:, None])


FLAVORS = {"debug": SequentialFlavor(8, blocks=1), "small": SequentialFlavor(64, blocks=2, dropout=0.5)}


def build_sasrec(schema: DatasetSchema, flavor: SequentialFlavor, device: torch.device) -> SASRec:
    return SASRec(schema, flavor, device)


def build_gru4rec(schema: DatasetSchema, flavor: SequentialFlavor, device: torch.device) -> GRU4Rec:
    return GRU4Rec(schema, flavor, device)
