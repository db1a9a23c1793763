"""Next-item models over a behaviour history: SASRec (Kang and McAuley, ICDM 2018) and
GRU4Rec (Hidasi et al., ICLR 2016), on `convert interactions --history N` data sets.

Each row is an event: its user's earlier items `hist_item_id` (oldest first) and the item
that came next, `item_id`; the reader adds a drawn negative `neg_item_id`. One unpooled
table (TorchRec's EmbeddingCollection, sharded by embeddings/ with the fused optimizer)
serves all three keys. Notation: B rows, L the longest history in the batch, d the width.

    SASRec:  H = blocks of causal self-attention over E[hist] + P       (B, L, d)
    GRU4Rec: H = W h_j, h_j the GRU's state after item j               (B, L, d)
    user = H at each row's last real position                           (B, d)
    score(user, item) = <user, E[item]>

    forward(kjt) -> (user (N, d), item (N, d), negative (N, d), reg (N,))

as the retrieval models, so RetrievalTask trains them (SASRec's own loss is `bce`). N = B
when each row has one negative (the row's event is the target); with
`retrieval.train_positions=all` the reader gives each row one negative per position and
every position j is trained to predict the item after it (hist[j + 1], the row's item
after the last): SASRec's training, on the `train_sequences` split (`convert interactions
--train-sequences`: one row per user). No position's state depends on a later item; with
`recency_positions` its position index does depend on how many items follow it, as in the
paper's left-padded sequences. A row with an empty history (a user's first event) is
scored from position 0 alone (the learned "nothing yet" state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.interactions import ITEM, NEG, require_interactions
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.embeddings.tables import table_name
from shardrec.trainer.models.common import gru_weights_current
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
    # SASRec: position embeddings count from the row's newest item (0 = the latest), as the
    # paper's left-padded sequences do, instead of from its oldest.
    recency_positions: bool = False
    # SASRec's block: "pre_norm" (the standard pre-LN transformer block: the residual stream
    # is never normalised until the end) or "reference", as the paper's code has it: the
    # queries are normalised and carry the residual, keys and values come from the stream
    # unnormalised, and the feed-forward's input is normalised and carries its residual.
    block: str = "pre_norm"


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
        """(item (B, d), negatives (N, d), history (B, L, d) zero-padded, lengths (B,),
        negatives per row (B,): each row's supervised positions, N in all)."""
        e = self.items(kjt)
        hist, neg = e[HISTORY], e[NEG + ITEM]
        lengths = hist.lengths()
        longest = max(int(lengths.max()), 1) if lengths.numel() else 1
        return (e[ITEM].values(), neg.values(), hist.to_padded_dense(desired_length=longest), lengths,
                neg.lengths())

    def forward(self, kjt: KeyedJaggedTensor):
        """Row b's last `counts[b]` positions, each with the item that follows it (the next
        history item; the row's own item after the last) and its own negative: with one
        negative a row, the row's event alone (evaluation, serving, train_positions=last);
        with max(length, 1), every position (SASRec's training). -> (user (N, d), item (N, d),
        negative (N, d), reg (N,))."""
        item, neg, hist, lengths, counts = self.lookups(kjt)
        states = self.encode_positions(hist, lengths)  # (B, L, d)
        b, length, d = hist.shape
        ends = lengths.long().clamp(min=1)  # a row without history is read at its position 0
        j = torch.arange(length, device=hist.device)[None]
        chosen = (j >= (ends - counts.long())[:, None]) & (j < ends[:, None])  # (B, L), row-major = neg's order
        following = torch.cat([hist[:, 1:], hist.new_zeros(b, 1, d)], 1)
        following = torch.where((j == (ends - 1)[:, None])[..., None], item[:, None, :], following)
        target = following[chosen]
        return states[chosen], target, neg, target.pow(2).sum(-1) + neg.pow(2).sum(-1)


class CausalBlock(nn.Module):
    """Causal self-attention + point-wise feed-forward (SASRec's block): (B, L, d) -> (B, L, d).

        pre_norm:  x = x + Attn(q, k, v = LN1(x));  out = x + FFN(LN2(x))
        reference: q = LN1(x); x = q + Attn(q, k = v = x);  h = LN2(x); out = h + FFN(h)
    """

    def __init__(self, d: int, heads: int, p: float, device: torch.device, reference: bool = False):
        super().__init__()
        self.heads, self.p, self.reference = heads, p, reference
        self.norm1 = nn.LayerNorm(d, device=device)
        self.qkv = nn.Linear(d, 3 * d, device=device)
        self.proj = nn.Linear(d, d, device=device)
        self.norm2 = nn.LayerNorm(d, device=device)
        self.ff1 = nn.Linear(d, d, device=device)
        self.ff2 = nn.Linear(d, d, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        normed = self.norm1(x)
        if self.reference:  # one weight as in pre_norm, the queries' rows applied to LN1(x)
            q = F.linear(normed, self.qkv.weight[:d], self.qkv.bias[:d])
            kv = F.linear(x, self.qkv.weight[d:], self.qkv.bias[d:])
            qkv = torch.cat([q, kv], -1)
        else:
            qkv = self.qkv(normed)
        q, k, v = qkv.view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0)
        x = (normed if self.reference else x) + dropout(self.proj(a.transpose(1, 2).reshape(b, length, d)), self.p,
                                                        self.training)
        h = self.norm2(x)
        out = self.ff2(dropout(F.relu(self.ff1(h)), self.p, self.training))
        return (h if self.reference else x) + dropout(out, self.p, self.training)


class SASRec(_Sequential):
    def __init__(self, schema: DatasetSchema, flavor: SequentialFlavor, device: torch.device):
        super().__init__(schema, flavor, device, "sasrec")
        d = flavor.embedding_dim
        if d % flavor.heads:
            raise UserError(f"sasrec: embedding_dim {d} is not divisible by {flavor.heads} heads")
        self.scale = d ** 0.5
        self.recency = flavor.recency_positions
        self.position = PositionEmbedding(max(self.max_length, 1), d, device=device)
        if flavor.block not in ("pre_norm", "reference"):
            raise UserError(f"sasrec: block must be 'pre_norm' or 'reference', got {flavor.block!r}")
        self.blocks = nn.ModuleList(CausalBlock(d, flavor.heads, flavor.dropout, device, flavor.block == "reference")
                                    for _ in range(flavor.blocks))
        self.norm = nn.LayerNorm(d, device=device)

    def encode_positions(self, hist: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L, d) history -> (B, L, d): position j's state has seen items 0..j."""
        # Histories are right-padded and attention is causal, so no real position sees a pad.
        pos = torch.arange(hist.shape[1], device=hist.device)[None]
        if self.recency:  # (B, L): how many items of the row come after this one
            pos = (lengths.long()[:, None] - 1 - pos).clamp(min=0)
        pos = pos.clamp(max=self.position.num_embeddings - 1)
        x = dropout(hist * self.scale + self.position(pos).expand_as(hist), self.p, self.training)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class GRU4Rec(_Sequential):
    def __init__(self, schema: DatasetSchema, flavor: SequentialFlavor, device: torch.device):
        super().__init__(schema, flavor, device, "gru4rec")
        d = flavor.embedding_dim
        self.gru = nn.GRU(d, d, num_layers=flavor.blocks, batch_first=True, device=device)
        self.out = nn.Linear(d, d, device=device)

    def encode_positions(self, hist: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L, d) history -> (B, L, d): the GRU's output after items 0..j; a row without
        history gets the output layer's bias (the learned "nothing yet")."""
        out, _ = gru_weights_current(self.gru)(dropout(hist, self.p, self.training))
        return self.out(out * (lengths > 0)[:, None, None])


FLAVORS = {"debug": SequentialFlavor(8, blocks=1), "small": SequentialFlavor(64, blocks=2, dropout=0.5),
           "small_recency": SequentialFlavor(64, blocks=2, dropout=0.5, recency_positions=True),
           "small_reference": SequentialFlavor(64, blocks=2, dropout=0.5, recency_positions=True, block="reference")}


def build_sasrec(schema: DatasetSchema, flavor: SequentialFlavor, device: torch.device) -> SASRec:
    return SASRec(schema, flavor, device)


def build_gru4rec(schema: DatasetSchema, flavor: SequentialFlavor, device: torch.device) -> GRU4Rec:
    return GRU4Rec(schema, flavor, device)
