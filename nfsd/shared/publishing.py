"""The index as the rest of a cluster head sees it: every change noted to it is also
published to the change log (``SharedState.note_*``), so the other heads apply it too.

It wraps the head's own ``Index`` and forwards everything else unchanged; the follower
applying other heads' rows talks to the wrapped index directly (no echo)."""
from __future__ import annotations

from typing import Any


class PublishingIndex:
    """``wait``: a namespace change noted returns once its row is committed (a call's reply
    must not announce what the other heads could never learn of); the watcher and the
    scanner note without waiting (``found``)."""

    def __init__(self, index: Any, shared: Any, export_id: int, content: Any, wait: bool = True) -> None:
        self.inner = index
        self._shared = shared
        self._export_id = export_id
        self._content = content   # content.SharedContent: this head publishes what it extracts
        self._wait = wait

    def note_entry(self, dir_ino: int, name: bytes) -> None:
        self._content.mine_entry(dir_ino, name)
        self.inner.note_entry(dir_ino, name)
        self._shared.note_entry(self._export_id, dir_ino, name, self._wait)

    def note_create_event(self, dir_ino: int, name: bytes) -> None:
        """The watcher saw DIR/name created (``Index.note_create_event``): published as a
        ``note_entry`` is."""
        self._content.mine_entry(dir_ino, name)
        self.inner.note_create_event(dir_ino, name)
        self._shared.note_entry(self._export_id, dir_ino, name, self._wait)

    def note_delete_event(self, dir_ino: int, name: bytes) -> None:
        """The watcher saw DIR/name deleted (``Index.note_delete_event``): published as a
        ``note_entry`` is."""
        self._content.mine_entry(dir_ino, name)
        self.inner.note_delete_event(dir_ino, name)
        self._shared.note_entry(self._export_id, dir_ino, name, self._wait)

    def found(self) -> "PublishingIndex":
        """This index for noting changes found rather than made (inotify, the scanner)."""
        return PublishingIndex(self.inner, self._shared, self._export_id, self._content, wait=False)

    def note_ino(self, ino: int, force: bool = False) -> None:
        self._content.mine_ino(ino)
        self.inner.note_ino(ino, force)
        self._shared.note_ino(self._export_id, ino)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)
