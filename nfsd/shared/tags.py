"""Tags the state store keeps, shared in a cluster: declared tags (``mkdir tag:/x``, kept in
each head's LMDB even where files carry their values in user attributes) and the values of
files on a file system without user attributes.  Values in user attributes need nothing:
they live on the shared file system itself.

``SharedTagStore`` stands in for the index's ``FallbackStore`` (``Index.user_values``): each
change this head makes is written locally as before and published as a change-log row (``d``
a declared tag: name = field NUL value, gen = 1 declared or 0 forgotten; ``t`` a file's
values: ino, gen, name = field, vals = the values); the other heads apply them to their own
store (``apply``), and re-derive the file's stat tier for ``t``.  Rows naming the same tag
or file collapse in the queue, the newer winning, so the last change is what every head ends
with.
"""
from __future__ import annotations

from typing import Any, Callable

from ..fs.tags import parse, serialize
from .changelog import Row


class SharedTagStore:
    """The index's ``FallbackStore`` with every change published (reads are its own)."""

    def __init__(self, inner: Any, publish: Callable[[Row], Any], export_id: int) -> None:
        self.inner = inner
        self._publish = publish
        self._export_id = export_id

    def declare(self, field: bytes, value: bytes, present: bool = True) -> bool:
        changed = self.inner.declare(field, value, present)
        if changed:
            self._publish(Row(self._export_id, "d", 0, 0, int(present), field + b"\0" + value))
        return changed

    def put(self, ino: int, gen: int, field: bytes, values: list[bytes]) -> None:
        self.inner.put(ino, gen, field, values)
        self._publish(Row(self._export_id, "t", ino, 0, gen & 0xFFFFFFFF, field, serialize(values)))

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)


def apply(index: Any, op: str, ino: int, gen: int, name: bytes, vals: bytes) -> None:
    """Another head's ``d`` or ``t`` row, to this head's own store (not published again)."""
    store = getattr(index.user_values, "inner", index.user_values)
    if op == "d":
        field, _, value = name.partition(b"\0")
        store.declare(field, value, bool(gen))
    else:
        store.put(ino, gen, name, parse(vals))
        index.note_ino(ino, force=True)
