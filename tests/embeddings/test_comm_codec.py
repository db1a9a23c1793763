"""The bf16 communication codecs: what each all-to-all sends and hands on."""

from __future__ import annotations

import torch
from shardrec.embeddings.comm_codec import comm_codecs
from torchrec.distributed.types import CommOp


def test_bf16_halves_what_is_sent_and_hands_fp32_on_unless_the_model_takes_bf16():
    assert comm_codecs("fp32") is None
    x = torch.randn(6, 8)
    pooled = CommOp.POOLED_EMBEDDINGS_ALL_TO_ALL.name
    for stay, forward_out in ((False, torch.float32), (True, torch.bfloat16)):
        codecs = comm_codecs("bf16", pooled_stay_bf16=stay)
        for op, pair in codecs.items():
            sent = pair.forward.encode(x)
            assert sent.dtype == torch.bfloat16 and sent.shape == x.shape
            received = pair.forward.decode(sent)
            assert received.dtype == (forward_out if op == pooled else torch.float32), (op, stay)
            torch.testing.assert_close(received.float(), x, rtol=2**-8, atol=0)
            # gradients always reach the tables in fp32; a bf16 one is sent as it is
            grad = x.to(torch.bfloat16)
            assert pair.backward.encode(grad).data_ptr() == grad.data_ptr()
            assert pair.backward.decode(pair.backward.encode(grad)).dtype == torch.float32
