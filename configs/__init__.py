"""Typed run configuration (configs.tree), its YAML/CLI loader, and the YAML presets."""

from configs.errors import UserError
from configs.loader import dump_yaml, load_config
from configs.tree import Config

__all__ = ["Config", "UserError", "dump_yaml", "load_config"]
