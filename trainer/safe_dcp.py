"""Reading torch.distributed.checkpoint (DCP) folders without running code from them.

DCP's FileSystemReader unpickles `.metadata` with plain `pickle.load`, and its default load
planner reads every non-tensor entry with `torch.load(weights_only=False)`: a checkpoint
folder someone handed you could run any code the moment it is loaded. Here:

- `SafeFileSystemReader` unpickles `.metadata` with an allowlist of exactly the types DCP's
  metadata is made of (its dataclasses, torch.Size, dtypes, layouts, paths); anything else
  is refused with a `UserError` before it is constructed.
- `SafeLoadPlanner` reads non-tensor entries with `torch.load(weights_only=True)` (numbers,
  strings, lists, dicts, tensors: what shardrec writes there), and is strict by default.
- Tensor payloads are already read by DCP with `weights_only=True`.

No maintained library offers a restricted reader for DCP metadata (torch's own
`weights_only` unpickler covers torch.save files, not DCP's `.metadata`), hence this file.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from shardrec.configs.errors import UserError
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element  # what DefaultLoadPlanner uses
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

# (module, name) pairs a DCP .metadata may refer to (found by listing the globals of the
# .metadata files shardrec writes, torch 2.13): classes that only hold data.
_ALLOWED = {
    ("torch.distributed.checkpoint.metadata", n) for n in (
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
        "TensorProperties", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # maps a layout's name to torch.strided etc.
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file, where: str):
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise UserError(
            f"checkpoint metadata '{self.where}' refers to '{module}.{name}', which no DCP checkpoint "
            "holds: refusing to load it (a crafted or foreign file; shardrec never runs code from a "
            "checkpoint)")


def read_metadata_file(path: str) -> Metadata:
    """Unpickle a DCP `.metadata` file with the allowlist above."""
    with open(path, "rb") as f:
        try:
            metadata = _MetadataUnpickler(f, path).load()
        except UserError:
            raise
        except Exception as e:  # truncated or garbage bytes
            raise UserError(f"checkpoint metadata '{path}' is unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(metadata, Metadata):
        raise UserError(f"checkpoint metadata '{path}' holds a {type(metadata).__name__}, not DCP Metadata")
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """DCP's FileSystemReader with `.metadata` read by the restricted unpickler."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = read_metadata_file(str(self._get_metadata_path(kwargs.get("rank"))))
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def safe_load(state: dict, path: str, **kwargs: Any) -> None:
    """`dcp.load` of `state` from `path` through the safe reader and planner. DCP wraps what
    a reader or planner raises in a CheckpointException; a UserError inside comes out as is."""
    try:
        dcp.load(state, storage_reader=SafeFileSystemReader(path), planner=SafeLoadPlanner(), **kwargs)
    except CheckpointException as e:
        for failure in e.failures.values():
            exc = failure[0] if isinstance(failure, tuple) else getattr(failure, "exception", failure)
            if isinstance(exc, UserError):
                raise UserError(str(exc)) from None
        raise


class SafeLoadPlanner(DefaultLoadPlanner):
    """DefaultLoadPlanner (strict unless told otherwise) whose non-tensor entries load with
    `torch.load(weights_only=True)`."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            why = next((line.strip() for line in str(e).splitlines() if "WeightsUnpickler error" in line), str(e))
            raise UserError(f"checkpoint entry '{read_item.dest_index.fqn}' holds an object shardrec "
                            f"does not load (only numbers, strings, lists, dicts and tensors): {why}") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj
