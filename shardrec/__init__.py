"""shardrec: train recommendation models with TorchRec-sharded embeddings, from a laptop to a
Ray cluster.

The code lives in the repository's top-level folders (configs/, data_pipeline/, embeddings/,
trainer/, launch/), which the package maps under this name (pyproject.toml's package-dir):
`shardrec.trainer`, `shardrec.data_pipeline`, ... Nothing else is installed at the top level.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("shardrec")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
