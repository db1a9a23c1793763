"""LightGCN (He et al., SIGIR 2020): id embeddings smoothed over the user-item graph.

    E_0 = [P; Q]  ((U + I) x d, the user and item tables)
    E_k = A_hat E_{k-1},  A_hat = D^-1/2 A D^-1/2 over the bipartite training graph
    final = mean(E_0 .. E_L);  score(u, i) = <final_u, final_{U+i}>

Each forward looks up *every* user and item row through the EmbeddingBagCollection (so the
tables stay sharded like any other, and FBGEMM's fused optimizer updates every row that
propagation reached), then propagates with one sparse-dense product per layer. What it
needs: the graph (training interactions, read from the data set folder; 2 x nnz int64 plus
nnz float32 on every rank) and the full (U + I) x d matrix of embeddings and its gradient on
every rank each step, so the graph must fit one rank: about (U + I) x d x 4 bytes x (L + 3)
for activations, e.g. 10M nodes x 64 dims x 4 layers is ~18 GB. At world size > 1 every
rank fetches all rows from their owners each step (an all-to-all of the whole table),
which is what limits it to graphs of millions, not billions, of nodes; sampled-subgraph
training (PinSage-style) is what goes beyond that and is not implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from shardrec.configs.errors import UserError
from shardrec.data_pipeline.interactions import ITEM, NEG, USER, require_interactions, split_pairs
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.trainer.models.retrieval import DotModel, retrieval_tables
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass(frozen=True)
class LightGCNFlavor:
    embedding_dim: int
    layers: int
    init: float = 0.1


def normalized_adjacency(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph (users 0..U-1, items U..U+I-1) as a coalesced
    sparse (N, N) float32 COO tensor; duplicate pairs count once."""
    n = num_users + num_items
    key = np.unique(users.astype(np.int64) * num_items + items)
    u, i = key // num_items, key % num_items + num_users
    rows, cols = np.concatenate([u, i]), np.concatenate([i, u])
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    inv = np.where(deg > 0, deg, 1.0) ** -0.5
    vals = (inv[rows] * inv[cols]).astype(np.float32)
    return torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(vals), (n, n),
                                   check_invariants=False).coalesce()


class LightGCN(DotModel):
    def __init__(self, schema: DatasetSchema, flavor: LightGCNFlavor, device: torch.device,
                 graph: tuple[np.ndarray, np.ndarray]):
        super().__init__()
        info = schema.interactions
        self.num_users, self.num_items, self.layers = int(info["num_users"]), int(info["num_items"]), flavor.layers
        self.ebc = EmbeddingBagCollection(
            tables=retrieval_tables(schema, flavor.embedding_dim, [USER, ITEM], flavor.init), device=device)
        # Plain attributes, not buffers: the graph is data, rebuilt from the data set, never
        # checkpointed; moved to the model's device on first use.
        self._adj = normalized_adjacency(*graph, self.num_users, self.num_items)
        self._all = None

    def _all_nodes(self, device: torch.device) -> KeyedJaggedTensor:
        """One KJT asking for every user and item row: stride max(U, I), unused slots empty."""
        if self._all is None or self._all.device() != device:
            u, i = self.num_users, self.num_items
            s = max(u, i)
            lengths = torch.cat([(torch.arange(s) < u), (torch.arange(s) < i), torch.zeros(s, dtype=torch.bool)])
            values = torch.cat([torch.arange(u), torch.arange(i)])
            self._all = KeyedJaggedTensor.from_lengths_sync(
                keys=[USER, ITEM, NEG + ITEM], values=values.to(device), lengths=lengths.int().to(device))
        return self._all

    def propagate(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(final (N, d), E_0 (N, d)) over all N = U + I nodes."""
        e = self.ebc(self._all_nodes(device)).to_dict()
        ego = torch.cat([e[USER][:self.num_users], e[ITEM][:self.num_items]])
        if self._adj.device != ego.device:
            self._adj = self._adj.to(ego.device)
        layer, total = ego, ego
        for _ in range(self.layers):
            layer = torch.sparse.mm(self._adj, layer)
            total = total + layer
        return total / (self.layers + 1), ego

    def forward(self, kjt: KeyedJaggedTensor):
        final, ego = self.propagate(kjt.values().device)
        u = kjt[USER].values()
        i, n = kjt[ITEM].values() + self.num_users, kjt[NEG + ITEM].values() + self.num_users
        return final[u], final[i], final[n], ego[u].pow(2).sum(-1) + ego[i].pow(2).sum(-1) + ego[n].pow(2).sum(-1)


LIGHTGCN_FLAVORS = {"debug": LightGCNFlavor(8, 2), "small": LightGCNFlavor(64, 3), "small_2layers": LightGCNFlavor(64, 2),
                    "small_1layer": LightGCNFlavor(64, 1)}


def build_lightgcn(schema: DatasetSchema, flavor: LightGCNFlavor, device: torch.device) -> LightGCN:
    folder = getattr(schema, "folder", None)
    require_interactions(schema, folder or "the data set", "lightgcn")
    if folder is None:
        raise UserError("lightgcn builds its graph from the data set folder; load the schema with load_schema()")
    return LightGCN(schema, flavor, device, split_pairs(folder, "train"))
