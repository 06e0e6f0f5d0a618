"""One difference ``pysfsd check`` found between the LMDB state and the files, and its line.

A difference names its ``area`` (the table: ``handles``, ``createverf``, ``exports``,
``queries``, ``index``), its ``kind`` (what is wrong, one word), and its ``subject`` (what it
is about: ``export 1 ino 1234``).  These three identify it: a check run beside a live server
reports only differences found twice, a moment apart.  ``fix`` is what the repair needs
(table-specific), not part of the identity.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass(frozen=True)
class Difference:
    area: str
    kind: str
    subject: str
    detail: str = field(default="", compare=False)
    fix: Any = field(default=None, compare=False, repr=False)

    def line(self) -> str:
        return f"{self.area}: {self.kind}: {self.subject}: {self.detail}" if self.detail \
            else f"{self.area}: {self.kind}: {self.subject}"


def name_text(name: bytes) -> str:
    """A file name as printed: undecodable bytes escaped, nothing that could break a line."""
    return repr(name.decode(errors="backslashreplace"))


def summary(diffs: Iterable[Difference]) -> str:
    per_area = Counter(d.area for d in diffs)
    total = sum(per_area.values())
    if not total:
        return "consistent"
    parts = ", ".join(f"{area} {count}" for area, count in sorted(per_area.items()))
    return f"{total} difference{'s' if total != 1 else ''} ({parts})"
