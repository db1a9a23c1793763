"""Retrieval (candidate generation) models: matrix factorisation, NeuMF and two towers.

Every retrieval model maps a retrieval batch's KJT (data_pipeline/interactions.py: the
user's keys, the positive item's keys and the negative item's under `neg_*`) to

    forward(kjt) -> (user (B, d), item (B, d), negative (B, d), reg (B,))

where `reg` is each row's squared norm of the raw id embeddings it used (an L2 penalty
on the batch, as BPR and LightGCN apply it), and scores pairs with `score(user, item) ->
(B,)` and a user batch against the catalogue with `score_all(users (U, d), items (I, d))
-> (U, I)`. The item tables serve both the positive and the negative keys, so the two
share embeddings; as with the ranking models, the tables are plain EmbeddingBagCollections
that embeddings/ shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from shardrec.data_pipeline.interactions import (
    ITEM,
    NEG,
    USER,
    item_keys,
    require_interactions,
    user_keys,
)
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.embeddings.tables import table_name
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


def retrieval_tables(schema: DatasetSchema, dim: int, keys: list[str], init: float,
                     zero_ids: bool = False) -> list[EmbeddingBagConfig]:
    """Tables `t_<key>` of width `dim` for the user or item keys given; an item key's table
    also serves `neg_<key>`. Ids start uniform in [-init, init] (zero with `zero_ids`: an
    id row that training never touches then adds nothing, so a new item is its features).
    Multi-hot side features are mean-pooled."""
    sizes = {f.name: f for f in schema.sparse}
    info = schema.interactions
    out = []
    for key in keys:
        feature = sizes[key]
        is_item = key in item_keys(info)
        bound = 0.0 if zero_ids and key in (USER, ITEM) else init
        out.append(EmbeddingBagConfig(
            name=table_name(key), embedding_dim=dim, num_embeddings=feature.num_embeddings,
            feature_names=[key, NEG + key] if is_item else [key],
            pooling=PoolingType.MEAN if feature.multi_hot else PoolingType.SUM,
            weight_init_min=-bound, weight_init_max=bound))
    return out


class DotModel(nn.Module):
    """Scores by inner product (MF, two towers, LightGCN)."""

    def score(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return (user * item).sum(-1)

    def score_all(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return users @ items.T


def _sq(*xs: torch.Tensor) -> torch.Tensor:
    return sum(x.pow(2).sum(-1) for x in xs)


@dataclass(frozen=True)
class MFFlavor:
    embedding_dim: int
    init: float = 0.1


class MF(DotModel):
    """Matrix factorisation: score(u, i) = <p_u, q_i> (BPR-MF, Rendle et al. 2009, with the
    BPR loss; or sampled softmax)."""

    def __init__(self, schema: DatasetSchema, flavor: MFFlavor, device: torch.device):
        super().__init__()
        self.ebc = EmbeddingBagCollection(
            tables=retrieval_tables(schema, flavor.embedding_dim, [USER, ITEM], flavor.init), device=device)

    def forward(self, kjt: KeyedJaggedTensor):
        e = self.ebc(kjt).to_dict()
        u, i, n = e[USER], e[ITEM], e[NEG + ITEM]
        return u, i, n, _sq(u, i, n)


@dataclass(frozen=True)
class NeuMFFlavor:
    gmf_dim: int
    mlp_dim: int
    mlp_layers: tuple[int, ...]
    init: float = 0.1


class NeuMF(nn.Module):
    """NeuMF (He et al., WWW 2017): a GMF branch (p_u * q_i) and an MLP over [p'_u, q'_i],
    joined by one output unit. One table per side holds both branches' vectors
    (gmf_dim + mlp_dim columns), so a user or item is one lookup."""

    def __init__(self, schema: DatasetSchema, flavor: NeuMFFlavor, device: torch.device):
        super().__init__()
        self.g = flavor.gmf_dim
        dim = flavor.gmf_dim + flavor.mlp_dim
        self.ebc = EmbeddingBagCollection(tables=retrieval_tables(schema, dim, [USER, ITEM], flavor.init),
                                          device=device)
        self.mlp = MLP(2 * flavor.mlp_dim, list(flavor.mlp_layers), device=device)
        self.out = nn.Linear(flavor.gmf_dim + flavor.mlp_layers[-1], 1, device=device)

    def forward(self, kjt: KeyedJaggedTensor):
        e = self.ebc(kjt).to_dict()
        u, i, n = e[USER], e[ITEM], e[NEG + ITEM]
        return u, i, n, _sq(u, i, n)

    def score(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        g = user[:, :self.g] * item[:, :self.g]
        m = self.mlp(torch.cat([user[:, self.g:], item[:, self.g:]], dim=-1))
        return self.out(torch.cat([g, m], dim=-1)).squeeze(-1)

    def score_all(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(U, I): every pair through the network, in blocks of users of ~2^18 pairs each."""
        n_items = items.shape[0]
        block = max(1, (1 << 18) // n_items)
        rows = []
        for start in range(0, users.shape[0], block):
            u = users[start:start + block]
            rows.append(self.score(u.repeat_interleave(n_items, 0), items.repeat(u.shape[0], 1)).view(-1, n_items))
        return torch.cat(rows)


@dataclass(frozen=True)
class TwoTowerFlavor:
    embedding_dim: int
    tower_layers: tuple[int, ...]
    init: float = 0.1


class TwoTower(DotModel):
    """Two towers (Covington et al. 2016; Yi et al. 2019): an MLP over the user's id and side
    feature embeddings, one over the item's, scored by inner product. The id tables start at
    zero, so an item (or user) absent from training is scored from its side features alone:
    the cold-start path."""

    scores_new_users = True  # a user without training interactions is their side features

    def __init__(self, schema: DatasetSchema, flavor: TwoTowerFlavor, device: torch.device):
        super().__init__()
        info = schema.interactions
        self.users, self.items = user_keys(info), item_keys(info)
        d = flavor.embedding_dim
        self.ebc = EmbeddingBagCollection(
            tables=retrieval_tables(schema, d, self.users + self.items, flavor.init, zero_ids=True), device=device)
        layers = list(flavor.tower_layers)
        self.user_tower = MLP(d * len(self.users), layers[:-1], device=device) if len(layers) > 1 else nn.Identity()
        self.item_tower = MLP(d * len(self.items), layers[:-1], device=device) if len(layers) > 1 else nn.Identity()
        width = layers[-2] if len(layers) > 1 else d * len(self.users)
        item_width = layers[-2] if len(layers) > 1 else d * len(self.items)
        # Last layers are linear: a ReLU on the output would make every score >= 0.
        self.user_out = nn.Linear(width, layers[-1], device=device)
        self.item_out = nn.Linear(item_width, layers[-1], device=device)

    def _tower(self, e: dict, keys: list[str], tower: nn.Module, out: nn.Module, prefix: str = "") -> torch.Tensor:
        return out(tower(torch.cat([e[prefix + k] for k in keys], dim=-1)))

    def forward(self, kjt: KeyedJaggedTensor):
        e = self.ebc(kjt).to_dict()
        u = self._tower(e, self.users, self.user_tower, self.user_out)
        i = self._tower(e, self.items, self.item_tower, self.item_out)
        n = self._tower(e, self.items, self.item_tower, self.item_out, NEG)
        return u, i, n, _sq(e[USER], e[ITEM], e[NEG + ITEM])


def _checked(build):
    def wrapped(schema: DatasetSchema, flavor, device: torch.device) -> nn.Module:
        require_interactions(schema, getattr(schema, "folder", "the data set"), build.__name__.lower())
        return build(schema, flavor, device)

    return wrapped


MF_FLAVORS = {"debug": MFFlavor(8), "small": MFFlavor(64)}
NEUMF_FLAVORS = {"debug": NeuMFFlavor(4, 4, (8, 4)), "small": NeuMFFlavor(32, 32, (64, 32, 16))}
TWO_TOWER_FLAVORS = {"debug": TwoTowerFlavor(8, (16, 8)), "small": TwoTowerFlavor(32, (128, 64))}
build_mf, build_ncf, build_two_tower = _checked(MF), _checked(NeuMF), _checked(TwoTower)
__all__ = ["MF", "NeuMF", "TwoTower", "DotModel", "build_mf", "build_ncf", "build_two_tower"]
