"""Generate docs/configs.md from the config dataclasses and the comments above their fields.

    python -m shardrec.configs.reference --out docs/configs.md     # or: make docs
    python -m shardrec.configs.reference --check docs/configs.md   # exit 1 when the file is stale

configs/tree.py stays the one source: each field's description is the block of `#`
comment lines right above it (read with `ast` from the module's source), its type and
default come from the dataclass itself. A field without a comment is reported, so the
reference cannot silently lose an entry (tests/test_docs_and_docker.py checks both).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from shardrec.configs import tree
from shardrec.configs.tree import Config

HEADER = """# Configuration reference

<!-- Generated from configs/tree.py by `python -m shardrec.configs.reference --out docs/configs.md`
     (`make docs`); do not edit by hand: tests/test_docs_and_docker.py fails when it is stale. -->

A run is one config tree, read from a YAML preset (`--config tiny`, `--config configs/demo.yaml`)
and overridden with dotted flags (`--train.batch_size=4096`, lists as `--key=a,b`). Every key
below is `section.key`; an unknown key or a wrong type stops with one line naming it.
"""


def field_comments(module=tree) -> dict[str, dict[str, str]]:
    """{class name: {field name: comment text}} from the `#` lines right above each field."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = out.setdefault(node.name, {})
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                comment, i = [], stmt.lineno - 2  # the line above, 0-based
                while i >= 0 and lines[i].strip().startswith("#"):
                    comment.insert(0, lines[i].strip().lstrip("#").strip())
                    i -= 1
                fields[stmt.target.id] = " ".join(c for c in comment if c)
    return out


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(tp)
        return " ".join([_type_text(base), *(f"({rule})" for rule in extras)])
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in typing.get_args(tp))
    if origin in (list, dict):
        args = ", ".join(_type_text(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _cell(text: str) -> str:
    """Text safe in a table cell: pipes escaped, and `<x>` outside code spans kept visible
    (markdown would read it as an HTML tag)."""
    parts = text.replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _section(cls: type, prefix: str, title: str, comments: dict, missing: list[str], nested: list) -> str:
    hints = typing.get_type_hints(cls, include_extras=True)
    rows = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            continue  # a section of its own
        doc = comments.get(cls.__name__, {}).get(f.name, "")
        if not doc:
            missing.append(f"{cls.__name__}.{f.name}")
        if typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            nested.append((typing.get_args(tp)[1], f"{prefix}{f.name}.<name>."))
        default = json.dumps(_default(f)).replace("|", "\\|")
        rows.append(f"| `{prefix}{f.name}` | {_cell(_type_text(tp))} | `{default}` | {_cell(doc)} |")
    if not rows:
        return ""
    doc = inspect.getdoc(cls) or ""
    head = f"## {title}\n\n" + (f"{doc}\n\n" if doc else "")
    return head + "| key | type | default | description |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def render(root: type = Config) -> tuple[str, list[str]]:
    """(markdown reference, fields without a comment)."""
    comments, missing = field_comments(sys.modules[root.__module__]), []
    parts = [HEADER]
    top_nested: list = []
    top = _section(root, "", "Top level", comments, missing, top_nested)
    if top:
        parts.append(top)
    hints = typing.get_type_hints(root)
    for f in dataclasses.fields(root):
        if not dataclasses.is_dataclass(hints[f.name]):
            continue
        nested: list = []
        parts.append(_section(hints[f.name], f"{f.name}.", f"`{f.name}`", comments, missing, nested))
        for cls, prefix in nested:
            parts.append(_section(cls, prefix, f"`{prefix.rstrip('.')}`", comments, missing, []))
    return "\n".join(p for p in parts if p), missing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shardrec.configs.reference", description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the reference here (default: print it)")
    p.add_argument("--check", metavar="FILE", help="exit 1 when FILE differs from the generated reference")
    args = p.parse_args(argv)
    text, missing = render()
    for name in missing:
        print(f"configs.reference: field {name} has no comment above it in configs/tree.py", file=sys.stderr)
    if args.check:
        path = Path(args.check)
        if not path.is_file() or path.read_text() != text:
            print(f"{path} is stale: run `make docs` (python -m shardrec.configs.reference --out {path})", file=sys.stderr)
            return 1
        return 1 if missing else 0
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
