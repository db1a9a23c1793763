"""shardrec: train recommendation models with TorchRec-sharded embeddings, from a laptop to a
Ray cluster.

The code lives in the repository's top-level folders (configs/, data_pipeline/, embeddings/,
trainer/, launch/), which the package maps under this name (pyproject.toml's package-dir):
`shardrec.trainer`, `shardrec.data_pipeline`, ... Nothing else is installed at the top level.
"""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("shardrec")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# Imported from a source tree rather than from site-packages, the same mapping by hand: the
# subpackages are this folder's siblings. This is the case that matters under `ray job submit
# --working-dir .`: Ray puts its copy of the uploaded tree first on every job process's
# PYTHONPATH, so `import shardrec` finds the uploaded `shardrec/` ahead of the installed one;
# without this its subpackages would not resolve (an installed wheel) or resolve into another
# copy of the code (an editable install elsewhere), mixing two versions in one job.
_root = Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "trainer" / "__init__.py").is_file():
    __path__.append(str(_root))
