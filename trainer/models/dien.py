"""DIEN, Deep Interest Evolution Network (Zhou et al., AAAI 2019), on the history data sets
of sequence_ctr.py (a `sequence_of` feature whose table the target shares).

Notation as in sequence_ctr.py: B rows, L the longest history in the batch, W the width of
the target and history vectors (E x the number of targets).

    interest extractor  h_t = GRU(e_1 .. e_t)                                 (B, L, W)
    auxiliary loss      h_t should score the next clicked item e_{t+1} above an item of
                        another row's history (the batch rolled by one row): BCE of
                        <h_t, e_{t+1}> towards 1 and <h_t, e~_{t+1}> towards 0,
                        over the real positions t < n - 1                     ()
    attention           a_t = softmax_t(h_t W e_target) over real positions   (B, L)
    interest evolving   AUGRU: a GRU whose update gate is scaled by a_t;
                        u = its state after the last real item                (B, W)
    logit = first-order term + FM(pooled fields, target) + MLP([pooled fields, target, u, dense])
                        (B, 1); FM as in sequence_ctr.py, without an interest field: DIEN's
                        attention and auxiliary loss already tie the target to the history
                        (it learns the synthetic history data of the tests in 3 epochs)

In training, forward returns (logits, aux_weight x auxiliary loss) and ClickTask adds the
second to the click loss; in evaluation, logits alone. A row without history gets u = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from shardrec.data_pipeline.schema import DatasetSchema
from shardrec.trainer.models.common import gru_weights_current
from shardrec.trainer.models.sequence_ctr import SequenceCTR, SequenceCTRFlavor, split_features
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass(frozen=True)
class DIENFlavor(SequenceCTRFlavor):
    aux_weight: float = 1.0  # the paper's alpha


class AUGRU(nn.Module):
    """GRU with an attentional update gate (DIEN's eq. 6-7): u'_t = a_t u_t, so a step the
    target does not attend to barely moves the state. Written here because neither torch nor
    TorchRec has one (nn.GRU's gates are not exposed); the input projections of all steps are
    computed in one matmul, the recurrence is a loop over the L positions.

    forward(x (B, L, W), attention (B, L), mask (B, L) bool) -> state after each row's last
    real position (B, H)."""

    def __init__(self, width: int, hidden: int, device: torch.device):
        super().__init__()
        self.hidden = hidden
        self.x2h = nn.Linear(width, 3 * hidden, device=device)
        self.h2h = nn.Linear(hidden, 3 * hidden, device=device)

    def forward(self, x: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        gx = self.x2h(x)  # (B, L, 3H)
        h = x.new_zeros(x.shape[0], self.hidden)
        for t in range(x.shape[1]):
            rx, ux, nx = gx[:, t].chunk(3, -1)
            rh, uh, nh = self.h2h(h).chunk(3, -1)
            reset, update = torch.sigmoid(rx + rh), torch.sigmoid(ux + uh)
            update = attention[:, t, None] * update
            new = (1 - update) * h + update * torch.tanh(nx + reset * nh)
            h = torch.where(mask[:, t, None], new, h)  # padding leaves the state as it was
        return h


class DIEN(SequenceCTR):
    def __init__(self, schema: DatasetSchema, flavor: DIENFlavor, device: torch.device):
        _, targets = split_features(schema)
        w = flavor.embedding_dim * len(targets)
        super().__init__(schema, flavor, device, pooled_width=w)
        self.aux_weight = flavor.aux_weight
        self.extractor = nn.GRU(w, w, batch_first=True, device=device)
        self.bilinear = nn.Linear(w, w, bias=False, device=device)
        self.evolution = AUGRU(w, w, device)

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor):
        target, hist, mask = self.target_and_history(kjt)
        # (B, L, W); padded positions come after the real ones.
        states, _ = gru_weights_current(self.extractor)(hist)
        scores = (states @ self.bilinear(target)[:, :, None]).squeeze(-1)  # (B, L)
        attention = torch.softmax(scores.masked_fill(~mask, float("-inf")), 1).nan_to_num(0.0)
        logits = self.head(dense, kjt, target, self.evolution(states, attention, mask))
        if not self.training or not self.aux_weight:
            return logits
        return logits, self.aux_weight * auxiliary_loss(states, hist, mask)


def auxiliary_loss(states: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """DIEN's auxiliary loss (eq. 2 with an inner product): states (B, L, W) should score the
    next history item (B, L, W) above a negative, the same position of the previous row's
    history (items another user clicked: the paper samples from the catalogue, which the
    unpooled lookup here cannot without a second table read). () mean over real pairs."""
    h, nxt, real = states[:, :-1], hist[:, 1:], mask[:, 1:]
    neg, neg_real = hist.roll(1, 0)[:, 1:], real & mask.roll(1, 0)[:, 1:]
    pos = F.softplus(-(h * nxt).sum(-1))
    negs = F.softplus((h * neg).sum(-1))
    return (pos * real).sum() / real.sum().clamp(min=1) + (negs * neg_real).sum() / neg_real.sum().clamp(min=1)


FLAVORS = {"debug": DIENFlavor(4, (16,), (8,), heads=1), "small": DIENFlavor(16, (256, 128))}


def build_dien(schema: DatasetSchema, flavor: DIENFlavor, device: torch.device) -> DIEN:
    return DIEN(schema, flavor, device)
