"""What reaches the console: shardrec's own lines, not the libraries' chatter.

Every launcher (the CLI, the torchrun entry, Ray Train workers, benchmarks) calls
`quiet_libraries()` before importing TorchRec: TorchRec and torch log at INFO and warn through
the root logger ("Sharding spec not found", once per data-parallel table), FBGEMM logs a line
per kernel library it loads (and its C++ side through TORCH_CPP_LOG_LEVEL), and Python
warnings repeat per rank. Their warnings go to the run folder's library.log instead
(trainer/library_logs.py).
"""

from __future__ import annotations

import logging
import os

from shardrec.trainer.library_logs import OWN, route_library_logs


def quiet_libraries(uses_torch: bool = True) -> None:
    """Library records off the console (warnings to library.log), shardrec's at WARNING.
    `uses_torch=False` (converters, report) skips importing torch: 1.7 s of CPU and ~200 MB
    that they do not need."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    route_library_logs()
    logging.getLogger(OWN).setLevel(logging.WARNING)
    if not uses_torch:
        return
    import torch  # noqa: F401 - torch sets its loggers' levels on import; override after

    for name in ("torchrec", "torch", "torch.fx._symbolic_trace", "fbgemm_gpu"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # torch gives some of its loggers ("torch", "torch.distributed") a stderr handler of their
    # own and stops them propagating; hand their records to the root's handlers instead.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.split(".")[0] == "torch" and isinstance(logger, logging.Logger) and not logger.propagate:
            for handler in [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]:
                logger.removeHandler(handler)
            logger.propagate = True
