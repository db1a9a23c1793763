"""The binary click task around a ranking model: Batch in, (loss, outputs) out.

TorchRec's train pipelines call `module(batch)` and expect `(loss, outputs)`, so this thin
wrapper is what gets sharded; the model inside stays a plain (dense, KJT) -> logits module.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.datasets.utils import Batch


class ClickTask(nn.Module):
    """Binary cross-entropy on logits, plus the model's own auxiliary loss where it has one:
    a model may return (logits, auxiliary loss ()) in training (DIEN does).

    forward(batch) -> (loss (), (loss.detach() (), logits (B,), labels (B,)))
    """

    def __init__(self, model: nn.Module, precision: str = "fp32", device_type: str = "cpu"):
        super().__init__()
        self.model = model
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
        # Fixed here, not read from the batch: TorchRec's pipeline traces this forward with fx.
        self.device_type = device_type

    def forward(self, batch: Batch) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        with torch.autocast(self.device_type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            out = self.model(batch.dense_features, batch.sparse_features)
        aux = None
        if isinstance(out, tuple):
            out, aux = out
        # The loss (and so every gradient's start) is computed in fp32.
        logits = out.squeeze(-1).float()
        loss = self.loss_fn(logits, batch.labels)
        if aux is not None:
            loss = loss + aux.float()
        return loss, (loss.detach(), logits.detach(), batch.labels)


def emulated_bf16_note(precision: str, device_type: str) -> str | None:
    """A note for `train.precision: bf16` on a CPU that has no bf16 dot-product instructions
    (avx512_bf16 or AMX): oneDNN then emulates bf16 matrix products, which is slower than
    fp32 (on this project's 2-core Intel VM a 2048 x 512 x 512 product: 29 against 122
    GFLOP/s, and DLRM's step 2.6x slower; docs/benchmarks.md). None when it does not apply."""
    if precision != "bf16" or device_type != "cpu":
        return None
    if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        return None
    return ("note: train.precision is bf16, but this CPU has no bf16 instructions (avx512_bf16 or AMX): "
            "its bf16 matrix products are emulated and run slower than fp32; --train.precision=fp32 is faster here")
