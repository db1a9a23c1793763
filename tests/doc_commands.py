"""The shell commands shown in the README and the guide, as the tests read them.

A command is one line of a fenced code block (a trailing backslash joins the next line), with
its `# comment` removed. Blank lines, comments and lines that are not commands (the layout
trees) are left out by the callers' own filters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Command:
    doc: str      # "README.md"
    line: int     # where the command starts (1-based)
    text: str     # one line, continuations joined, comment removed

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def commands(doc: str) -> list[Command]:
    """Every non-empty line of every fenced block of ROOT/doc, in order."""
    out: list[Command] = []
    lines = (ROOT / doc).read_text().splitlines()
    in_block, pending, start = False, "", 0
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = _strip_comment(pending + line)
        pending = ""
        if text:
            out.append(Command(doc, start, text))
    return out


def _strip_comment(line: str) -> str:
    # A '#' that starts a word outside quotes begins a comment (no command here quotes one).
    return re.sub(r"\s+", " ", re.sub(r"(^|\s)#.*$", "", line)).strip()
