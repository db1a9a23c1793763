"""Library log records go to the run folder's `library.log`, not to the console.

TorchRec, torch and FBGEMM log through Python's logging (often the root logger: "Sharding spec
not found" once per data-parallel table on every rank) and Python warnings repeat per rank.
On the console that buries shardrec's own lines; dropped altogether, the one warning that
explains a problem is lost. So: console handlers pass only shardrec's own loggers and errors;
every WARNING or worse from the libraries, and Python's warnings, goes to RUN/library.log once
the run folder is known (until then a bounded buffer holds them). The standard library has
no bounded buffer that drops old records (logging.handlers.MemoryHandler flushes or grows), so
a small one is written here.
"""

from __future__ import annotations

import collections
import logging
import warnings
from pathlib import Path

OWN = "shardrec"  # shardrec's loggers are shardrec.<folder>.<file>
LIBRARY_LOG = "library.log"
_FORMAT = "%(asctime)s rank {rank} %(name)s %(levelname)s: %(message)s"


class _OwnOrErrors(logging.Filter):
    """Console filter: shardrec's own records and errors from anyone."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith(OWN) or record.levelno >= logging.ERROR


class _Libraries(logging.Filter):
    """File filter: everything that is not shardrec's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(OWN)


class _Buffer(logging.Handler):
    """Keeps the newest `capacity` records until a file takes them."""

    def __init__(self, capacity: int = 2000):
        super().__init__(logging.WARNING)
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=capacity)
        self.addFilter(_Libraries())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_buffer: _Buffer | None = None
_file: logging.FileHandler | None = None


def route_library_logs() -> None:
    """Console: shardrec's lines and errors only; library warnings: buffered for the file."""
    global _buffer
    warnings.simplefilter("default")  # each warning once per place, and through logging:
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING)  # a console handler for shardrec's lines
    root.setLevel(logging.WARNING)
    for handler in root.handlers:
        if handler is not _buffer and handler is not _file and not any(
                isinstance(f, _OwnOrErrors) for f in handler.filters):
            handler.addFilter(_OwnOrErrors())
    if _buffer is None:
        _buffer = _Buffer()
        root.addHandler(_buffer)


def log_to_run_folder(folder: str | Path, rank: int) -> Path:
    """From now on library records (and those buffered so far) go to FOLDER/library.log.

    Every rank appends to the same file, each line saying its rank."""
    global _file
    path = Path(folder) / LIBRARY_LOG
    root = logging.getLogger()
    if _file is not None:
        root.removeHandler(_file)
        _file.close()
    _file = logging.FileHandler(path, mode="a", delay=True)
    _file.setLevel(logging.WARNING)
    _file.setFormatter(logging.Formatter(_FORMAT.format(rank=rank)))
    _file.addFilter(_Libraries())
    root.addHandler(_file)
    if _buffer is not None:
        for record in _buffer.records:
            _file.handle(record)
        root.removeHandler(_buffer)
        _buffer.records.clear()
    return path


def stop_logging_to_run_folder() -> None:
    """The run is over: later records go to the buffer again (the next run's folder)."""
    global _file, _buffer
    if _file is None:
        return
    root = logging.getLogger()
    root.removeHandler(_file)
    _file.close()
    _file = None
    if _buffer is not None and _buffer not in root.handlers:
        root.addHandler(_buffer)
