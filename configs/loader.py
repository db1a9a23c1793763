"""Load a `Config` from a YAML preset plus dotted overrides, checking every key and type.

    cfg = load_config("configs/tiny.yaml", ["--train.batch_size=256", "--model.flavor=debug"])

An unknown key, a value of the wrong type or out of its range (`configs.tree.Range`), or an
empty config file raises `UserError` naming the dotted key, the value and what is allowed
(with a "did you mean" hint for typos).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from shardrec.configs.errors import UserError
from shardrec.configs.tree import Config, Range

PRESET_DIR = Path(__file__).resolve().parent


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_config_path(path_or_preset: str) -> Path:
    """A YAML path as given, or the name of a preset shipped in configs/ (`tiny`, `demo`)."""
    path = Path(path_or_preset)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{path_or_preset.removesuffix('.yaml')}.yaml"
    if preset.is_file():
        return preset
    raise UserError(
        f"config file '{path_or_preset}' not found (a YAML path, or a preset: {', '.join(preset_names())})"
    )


def load_config(path_or_preset: str | None, overrides: list[str] = ()) -> Config:
    """Read a preset (or the defaults when None), apply `--a.b=value` overrides, type-check."""
    raw: dict[str, Any] = {}
    if path_or_preset is not None:
        path = resolve_config_path(path_or_preset)
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise UserError(f"config file '{path}' is not valid YAML: {e}") from None
        if raw is None:
            # An empty file is far more likely a wrong path or a lost edit than a wish for defaults.
            raise UserError(f"config file '{path}' is empty; it must hold a mapping of sections "
                            f"(dataset:, model:, train:, ...), e.g. a copy of configs/tiny.yaml")
        if not isinstance(raw, dict):
            raise UserError(f"config file '{path}' must hold a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return build(Config, raw, prefix="")


def parse_override(item: str) -> tuple[str, Any]:
    """`--train.batch_size=4096` -> ("train.batch_size", 4096); the value is parsed as YAML."""
    text = item.removeprefix("--")
    if "=" not in text:
        raise UserError(f"override '{item}' must look like --section.key=value")
    key, _, value = text.partition("=")
    if not key:
        raise UserError(f"override '{item}' has no key before '='")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    return key.replace("-", "_"), _Raw(value, parsed)


class _Raw:
    """An override value: kept as typed text so a str field gets exactly what was typed."""

    def __init__(self, text: str, parsed: Any):
        self.text, self.parsed = text, parsed


def set_dotted(tree: dict, key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"config key '{key}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def build(cls: type, raw: dict, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise UserError(f"config key '{prefix.rstrip('.')}' must be a section (a mapping), got {raw!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise UserError(
                f"unknown config key '{prefix}{key}'{hint}; allowed here: {', '.join(names)}"
            )
    kwargs = {}
    for name in names:
        if name in raw:
            kwargs[name] = coerce(hints[name], raw[name], f"{prefix}{name}")
    return cls(**kwargs)


def coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` (and its Range); convert ints to floats and
    text to str."""
    if typing.get_origin(tp) is typing.Annotated:
        base, *extras = typing.get_args(tp)
        value = coerce(base, value, key)
        for rule in extras:
            if isinstance(rule, Range) and not rule.allows(value):
                raise UserError(f"config key '{key}' must be {rule}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, _Raw):
            raise UserError(f"config key '{key}' is a section; set one of its keys (--{key}.<key>=...)")
        return build(tp, value, prefix=f"{key}.")
    origin = typing.get_origin(tp)
    if isinstance(value, _Raw):
        value = value.text if tp is str else value.parsed
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise UserError(f"config key '{key}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin is dict:
        _, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping of name to {value_tp.__name__}, got {value!r}")
        return {str(k): coerce(value_tp, v, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):  # allow --key=a,b from the command line
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise UserError(f"config key '{key}' must be a list of {item_tp.__name__}, got {value!r}")
        return [coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads `1e-3` (no dot) as a string; as a float key's value it means the number.
        try:
            value = float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"config key '{key}' must be a finite number, got {value!r}")
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise UserError(f"config key '{key}' must be {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
