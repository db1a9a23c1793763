"""DIEN's pieces: the AUGRU recurrence against torch's GRU, and the auxiliary loss."""

from __future__ import annotations

import torch
from shardrec.trainer.models.dien import AUGRU, auxiliary_loss
from torch import nn


def _augru_like(gru: nn.GRU) -> AUGRU:
    """An AUGRU with `gru`'s weights. torch's update gate z keeps the old state (h' = (1 - z) n
    + z h) and AUGRU's u takes the new one, so u = 1 - z = sigmoid(-(...)): its rows negated."""
    h = gru.hidden_size
    cell = AUGRU(gru.input_size, h, torch.device("cpu"))
    sign = torch.ones(3 * h, 1)
    sign[h:2 * h] = -1
    with torch.no_grad():
        cell.x2h.weight.copy_(gru.weight_ih_l0 * sign)
        cell.x2h.bias.copy_(gru.bias_ih_l0 * sign[:, 0])
        cell.h2h.weight.copy_(gru.weight_hh_l0 * sign)
        cell.h2h.bias.copy_(gru.bias_hh_l0 * sign[:, 0])
    return cell


def test_augru_with_full_attention_is_a_gru_and_stops_at_each_rows_end():
    torch.manual_seed(0)
    gru = nn.GRU(6, 5, batch_first=True)
    cell = _augru_like(gru)
    x = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 4, 1])
    mask = torch.arange(7)[None] < lengths[:, None]
    out = cell(x, torch.ones(3, 7), mask)
    for b, n in enumerate(lengths.tolist()):
        _, h = gru(x[b:b + 1, :n])
        torch.testing.assert_close(out[b], h[0, 0], rtol=1e-5, atol=1e-6)


def test_augru_ignores_what_attention_gives_no_weight():
    torch.manual_seed(0)
    cell = AUGRU(6, 5, torch.device("cpu"))
    x = torch.randn(2, 5, 6)
    attention = torch.tensor([[0.5, 0.0, 0.5, 0.0, 0.0]]).repeat(2, 1)
    mask = torch.ones(2, 5, dtype=torch.bool)
    changed = x.clone()
    changed[:, [1, 3, 4]] = torch.randn(2, 3, 6)  # the steps without attention
    torch.testing.assert_close(cell(x, attention, mask), cell(changed, attention, mask))
    assert cell(x, torch.zeros(2, 5), mask).abs().max() == 0  # nothing attended: the state never moves


def test_auxiliary_loss_rewards_states_that_predict_the_next_item():
    torch.manual_seed(0)
    hist = torch.nn.functional.normalize(torch.randn(4, 6, 8), dim=-1) * 3
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[3, 2:] = False
    good = torch.cat([hist[:, 1:], torch.zeros(4, 1, 8)], 1)  # h_t = e_{t+1}
    assert auxiliary_loss(good, hist, mask) < 0.5 * auxiliary_loss(-good, hist, mask)
    # Padded positions do not count: changing them changes nothing.
    noisy = good.clone()
    noisy[3, 2:] = torch.randn(4, 8)
    torch.testing.assert_close(auxiliary_loss(noisy, hist, mask), auxiliary_loss(good, hist, mask))
