"""Typed run configuration (configs.tree), its YAML/CLI loader, and the YAML presets."""

from shardrec.configs.errors import UserError
from shardrec.configs.loader import dump_yaml, load_config
from shardrec.configs.tree import Config

__all__ = ["Config", "UserError", "dump_yaml", "load_config"]
