"""Wide & Deep (Cheng et al. 2016, "Wide & Deep Learning for Recommender Systems", DLRS,
arXiv:1606.07792).

    wide:   w0 + sum_f w_f(id_f) + <w, x>            raw features (EBC lin_<f>, dim 1)  (B, 1)
            + sum_{(a, b)} w_ab(cross(id_a, id_b))   cross products (EBC cross_<a>_x_<b>) (B, 1)
    deep:   MLP(concat(e_1 .. e_F, dense))           ReLU layers, linear output          (B, 1)
    logits = wide + deep                             jointly trained                     (B, 1)

A cross-product feature of (a, b) holds, for each row, one id per pair of ids present in a
and b (one id for one-hot features, |a| x |b| ids for multi-hot bags). The id is exact,
id_a * |V_b| + id_b, when the product space fits `cross_hash_size`, else a hash of that key
modulo `cross_hash_size`. Ids are computed from the batch's KJT inside the model, vectorized
(no loop over rows). The cleaner long-run alternative is to materialise crosses in the data
pipeline as ordinary sparse columns: then TorchRec's sparse-dist pipeline can overlap their
input distribution too (a table fed by a model-computed KJT is run un-pipelined).

Differences from the paper: the wide part is trained by the same fused embedding optimizer
as the other tables (the paper uses FTRL with L1 on it), and the deep part averages a
multi-hot bag's embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.embeddings.tables import cross_feature_name, cross_table_configs
from shardrec.trainer.models.common import FeatureLinear, field_embeddings, mlp_tower, scalar_sum
from torch import nn
from torchrec.modules.embedding_configs import PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass(frozen=True)
class WideDeepFlavor:
    embedding_dim: int
    deep: tuple[int, ...]
    # Crossed feature pairs by name; pairs naming features the data set lacks are an error.
    cross_pairs: tuple[tuple[str, str], ...] = ()
    # Also cross every pair among the first k sparse features of the schema.
    auto_cross_features: int = 0
    # Rows of a cross table when the product space |V_a| |V_b| is larger.
    cross_hash_size: int = 1_000_000


FLAVORS = {
    "debug": WideDeepFlavor(4, (16,), auto_cross_features=3, cross_hash_size=1000),
    "small": WideDeepFlavor(16, (256, 128), auto_cross_features=4, cross_hash_size=1_000_000),
    # The paper's deep part: 32-dim embeddings, ReLU layers 1024-512-256.
    "paper": WideDeepFlavor(32, (1024, 512, 256), auto_cross_features=4, cross_hash_size=10_000_000),
}

# Hash of a cross key (< 2^62): mixes its low and high 31 bits with two odd constants
# (MurmurHash's) modulo the Mersenne prime 2^61 - 1; every product stays below 2^63.
_LO_MULT, _HI_MULT, _PRIME = 0x5BD1E995, 0x1B873593, (1 << 61) - 1


def hash_key(key: torch.Tensor) -> torch.Tensor:
    return (key % (1 << 31) * _LO_MULT + (key >> 31) * _HI_MULT) % _PRIME


def checked_pairs(schema: DatasetSchema, pairs) -> list[tuple[str, str]]:
    """`pairs` as a list, each naming two different sparse features of the data set."""
    names, seen = schema.sparse_names, set()
    for a, b in pairs:
        missing = [n for n in (a, b) if n not in names]
        if missing or a == b:
            raise UserError(f"cross pair ({a}, {b}): "
                            + (f"no sparse feature {missing}; have {names}" if missing else "a feature with itself"))
        if frozenset((a, b)) in seen:
            raise UserError(f"cross pair ({a}, {b}) is given twice")
        seen.add(frozenset((a, b)))
    return [(a, b) for a, b in pairs]


def resolve_pairs(schema: DatasetSchema, flavor: WideDeepFlavor) -> list[tuple[str, str]]:
    pairs = list(combinations(schema.sparse_names[:flavor.auto_cross_features], 2))
    for a, b in checked_pairs(schema, flavor.cross_pairs):
        if (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    return pairs


@torch.fx.wrap
def cross_ids(a_values: torch.Tensor, a_lengths: torch.Tensor, b_values: torch.Tensor,
              b_lengths: torch.Tensor, b_size: int, out_size: int, exact: bool
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross ids of two jagged features over B rows: (values (sum_r |a_r| |b_r|,), lengths (B,)).

    Row r gets the ids of (a_r[i], b_r[j]) for i, j in row-major order. fx.wrap keeps the
    data-dependent shapes out of TorchRec's pipeline tracing.
    """
    a_lengths, b_lengths = a_lengths.long(), b_lengths.long()
    lengths = a_lengths * b_lengths
    rows = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
    # Position j of each output id within its row, and the row's start in a and b.
    starts = torch.cumsum(lengths, 0) - lengths
    j = torch.arange(rows.numel(), device=lengths.device) - starts[rows]
    nb = b_lengths[rows]
    ia = (torch.cumsum(a_lengths, 0) - a_lengths)[rows] + torch.div(j, nb, rounding_mode="floor")
    ib = (torch.cumsum(b_lengths, 0) - b_lengths)[rows] + j % nb
    key = a_values[ia] * b_size + b_values[ib]
    values = key if exact else hash_key(key) % out_size
    return values, lengths


@dataclass(frozen=True)
class Crosses:
    """The cross-product features of a wide part: which pairs, and how each cross id is made.

    `features(kjt)` computes them from a batch (exact ids when |V_a| |V_b| fits the hash size),
    `collection()` makes their tables and `term()` is their sum in a model's logit.
    """

    pairs: tuple[tuple[str, str], ...]
    b_sizes: tuple[int, ...]
    sizes: tuple[int, ...]
    exact: tuple[bool, ...]
    names: tuple[str, ...]  # the cross features' KJT keys, `<a>_x_<b>`

    @classmethod
    def of(cls, schema: DatasetSchema, pairs: list[tuple[str, str]], hash_size: int) -> Crosses:
        vocab = {f.name: f.num_embeddings for f in schema.sparse}
        products = [vocab[a] * vocab[b] for a, b in pairs]
        return cls(tuple(pairs), tuple(vocab[b] for _, b in pairs), tuple(min(p, hash_size) for p in products),
                   tuple(p <= hash_size for p in products), tuple(cross_feature_name(a, b) for a, b in pairs))

    def collection(self, device: torch.device | None = None) -> EmbeddingBagCollection:
        """The scalar-weight tables `cross_<a>_x_<b>`, `sizes[k]` rows each."""
        return EmbeddingBagCollection(tables=cross_table_configs(list(self.pairs), list(self.sizes)), device=device)

    def term(self, collection: EmbeddingBagCollection, kjt: KeyedJaggedTensor) -> torch.Tensor:
        """sum_{(a, b)} w_ab(cross(id_a, id_b)) of a batch from `collection`'s weights: (B, 1)."""
        return scalar_sum(collection(self.features(kjt)).values())

    def features(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """The crosses of a batch, as a KJT (keys `<a>_x_<b>`)."""
        values, lengths = [], []
        for (a, b), b_size, size, exact in zip(self.pairs, self.b_sizes, self.sizes, self.exact):
            ja, jb = kjt[a], kjt[b]
            v, n = cross_ids(ja.values(), ja.lengths(), jb.values(), jb.lengths(), b_size, size, exact)
            values.append(v)
            lengths.append(n)
        return _make_kjt(list(self.names), values, lengths)


class WideAndDeep(nn.Module):
    """forward(dense (B, D) float32, kjt) -> logits (B, 1)."""

    def __init__(self, schema: DatasetSchema, flavor: WideDeepFlavor, device: torch.device | None = None):
        super().__init__()
        self.crosses = Crosses.of(schema, resolve_pairs(schema, flavor), flavor.cross_hash_size)
        self.wide = FeatureLinear(schema, device)
        self.cross = self.crosses.collection(device) if self.crosses.pairs else None
        dim = flavor.embedding_dim
        self.embeddings = field_embeddings(schema, dim, device, PoolingType.MEAN)
        self.deep = mlp_tower(len(schema.sparse) * dim + len(schema.dense), flavor.deep, device)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor) -> torch.Tensor:
        wide = self.wide(dense, kjt)
        if self.cross is not None:
            wide = wide + self.crosses.term(self.cross, kjt)
        deep_in = torch.cat([self.embeddings(kjt).flatten(1), dense], dim=1)
        return wide + self.deep(deep_in)


@torch.fx.wrap
def _make_kjt(keys: list[str], values: list[torch.Tensor], lengths: list[torch.Tensor]) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths).int())


def build_wide_deep(schema: DatasetSchema, flavor: WideDeepFlavor, device: torch.device) -> WideAndDeep:
    return WideAndDeep(schema, flavor, device)
