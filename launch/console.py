"""What reaches the console: shardrec's own lines, not the libraries' chatter.

Every launcher (the CLI, the torchrun entry, Ray Train workers, benchmarks) calls
`quiet_libraries()` first: TorchRec and torch log at INFO and warn through the root logger
("Sharding spec not found", once per data-parallel table), FBGEMM's C++ side logs through
TORCH_CPP_LOG_LEVEL, and Python warnings repeat per rank.
"""

from __future__ import annotations

import logging
import os
import warnings

# shardrec's own loggers (module names are shardrec.<folder>.<file>) keep WARNING.
OWN = ("shardrec",)


def quiet_libraries() -> None:
    """Library loggers to ERROR, Python warnings off, shardrec's loggers at WARNING."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    logging.basicConfig(level=logging.WARNING)
    import torch  # noqa: F401 - torch sets its loggers' levels on import; override after

    for name in ("torchrec", "torch", "torch.fx._symbolic_trace", "fbgemm_gpu"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    for name in OWN:
        logging.getLogger(name).setLevel(logging.WARNING)
