"""The retrieval task around a retrieval model: a batch of (user, item, negative) in, loss out.

    bpr      -log sigmoid(s(u, i) - s(u, n)), one negative per positive (Rendle et al. 2009)
    bce      -log sigmoid(s(u, i)) - log(1 - sigmoid(s(u, n))) (SASRec's loss)
    softmax  cross-entropy of each user's positive among the candidates: the batch's positive
             items (in_batch) or those plus the batch's drawn negatives (mixed negative
             sampling, Yang et al. 2020), scores divided by the temperature and corrected by
             -log Q(item) for how often each candidate is sampled (Yi et al. 2019); a
             candidate that is the row's own positive item elsewhere in the batch is masked.

Plus `l2` x the batch's squared id-embedding norms (the regulariser of BPR and LightGCN).
As ClickTask, this wrapper is what DMP shards and the train pipelines call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from shardrec.data_pipeline.interactions import ITEM, NEG
from torch import nn
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class RetrievalTask(nn.Module):
    """forward(batch) -> (loss (), (loss.detach() (), positive scores (B,), labels (B,)))"""

    def __init__(self, model: nn.Module, loss: str, negatives: str, log_q: torch.Tensor | None,
                 temperature: float = 1.0, l2: float = 0.0):
        super().__init__()
        self.model, self.loss, self.negatives = model, loss, negatives
        self.temperature, self.l2 = temperature, l2
        self.log_q = log_q  # (I,) or None; a plain attribute (data, not state)

    def forward(self, batch: Batch):
        kjt = batch.sparse_features
        user, item, neg, reg = self.model(kjt)
        pos = self.model.score(user, item)
        if self.loss == "bpr":
            loss = F.softplus(self.model.score(user, neg) - pos).mean()
        elif self.loss == "bce":  # SASRec's: the positive towards 1, the negative towards 0
            loss = (F.softplus(-pos) + F.softplus(self.model.score(user, neg))).mean()
        else:
            loss = self._softmax(kjt, user, item, neg)
        if self.l2:
            loss = loss + self.l2 * reg.mean()
        return loss, (loss.detach(), pos.detach(), batch.labels)

    def _softmax(self, kjt: KeyedJaggedTensor, user, item, neg) -> torch.Tensor:
        ids = kjt[ITEM].values()
        if self.negatives == "in_batch":
            cands, cand_ids = item, ids
        else:
            cands, cand_ids = torch.cat([item, neg]), torch.cat([ids, kjt[NEG + ITEM].values()])
        logits = self.model.score_all(user, cands) / self.temperature  # (B, C)
        if self.log_q is not None:
            if self.log_q.device != logits.device:
                self.log_q = self.log_q.to(logits.device)
            logits = logits - self.log_q[cand_ids]
        rows = torch.arange(user.shape[0], device=logits.device)
        same = cand_ids[None, :] == ids[:, None]
        same[rows, rows] = False  # the row's own positive stays
        return F.cross_entropy(logits.masked_fill(same, float("-inf")), rows)

    @torch.no_grad()
    def encode(self, kjt: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(user (B, d), item (B, d)) representations of a catalogue KJT (evaluation, serving)."""
        user, item, _, _ = self.model(kjt)
        return user, item
