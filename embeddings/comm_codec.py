"""Embeddings exchanged between ranks in bfloat16: half the bytes of every all-to-all and
reduce-scatter of pooled and sequence embeddings, forward and backward.

TorchRec's own codecs (`QCommsConfig`, FBGEMM's quantize kernels) fall back to fp16 on gloo
and cost more on CPU than the bytes they save (178 against 135-167 ms per step measured on
the DLRM benchmark shape, docs/benchmarks.md), so this codec is written here: a cast to
bfloat16 before the collective and back to float32 after it. bf16 keeps fp32's exponent
range, so small gradients do not underflow as they can in fp16; each value keeps 8 bits of
mantissa (relative error <= 2^-9), the same rounding `train.precision: bf16` already applies
to the dense layers' activations.
"""

from __future__ import annotations

import torch
from torchrec.distributed.types import CommOp, QuantizedCommCodecs

COMM_OPS = (CommOp.POOLED_EMBEDDINGS_ALL_TO_ALL, CommOp.POOLED_EMBEDDINGS_REDUCE_SCATTER,
            CommOp.SEQUENCE_EMBEDDINGS_ALL_TO_ALL)


class BF16CommCodec:
    """TorchRec's QuantizedCommCodec protocol: encode (N,) or (B, D) float32 -> the same shape
    in bfloat16; decode -> float32. The element count is unchanged, so no context and no padding."""

    quantized_dtype = torch.bfloat16

    def encode(self, input_tensor: torch.Tensor, ctx: None = None) -> torch.Tensor:
        return input_tensor.to(torch.bfloat16)

    def decode(self, input_grad: torch.Tensor, ctx: None = None) -> torch.Tensor:
        return input_grad.to(torch.float32)

    def calc_quantized_size(self, input_len: int, ctx: None = None) -> int:
        return input_len

    def create_context(self) -> None:
        return None

    def padded_size(self, input_tensor: torch.Tensor, dim_per_rank: list[int], my_rank: int,
                    qcomm_ctx: None) -> tuple[int, int]:
        return (input_tensor.shape[0] if input_tensor.dim() == 1 else input_tensor.shape[1]), 0


def comm_codecs(precision: str) -> dict[str, QuantizedCommCodecs] | None:
    """The sharders' qcomm_codecs_registry for `embeddings.comm_precision`; None = fp32 (TorchRec's default)."""
    if precision == "fp32":
        return None
    codec = BF16CommCodec()
    return {op.name: QuantizedCommCodecs(forward=codec, backward=codec) for op in COMM_OPS}
