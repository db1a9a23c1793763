"""The process group's backend: on GPUs, CPU tensors must have a backend too."""

from __future__ import annotations

import torch.distributed as dist
from shardrec.trainer.distributed import process_group_backend


def test_gpu_group_routes_cpu_tensors_to_gloo_and_cuda_tensors_to_nccl():
    # Evaluation and the divergence check all-reduce small CPU tensors, for which an
    # NCCL-only group has no backend. torch parses the string into one backend per device.
    assert dist.BackendConfig(process_group_backend(True)).get_device_backend_map() == {"cpu": "gloo",
                                                                                        "cuda": "nccl"}
    assert dist.BackendConfig(process_group_backend(False)).get_device_backend_map()["cpu"] == "gloo"
