"""What the index does when its LMDB store is full: stop writing, say so once, retry later.

A scan or flush whose commit fails for want of space (``nfsd.state.store.is_full``) is aborted:
the tables keep their last committed state, which queries go on answering from.  Writes are
then tried again after a delay that doubles with each failure (up to ``MAX_DELAY``), so a
store that stays full costs a retry now and then rather than a rescan per second, and the
first success says that the index is catching up.
"""
from __future__ import annotations

import logging
import time

from ..state.store import is_full

log = logging.getLogger("pysfsd.index")

FIRST_DELAY = 1.0
MAX_DELAY = 30.0


class SpaceWatch:
    def __init__(self, store_path: str, export: str) -> None:
        self.store_path = store_path
        self.export = export
        self.full = False
        self._delay = FIRST_DELAY
        self._retry_at = 0.0

    def blocked(self) -> bool:
        """Whether writes should wait: the store was full moments ago."""
        return self.full and time.monotonic() < self._retry_at

    def failed(self, exc: BaseException) -> bool:
        """Note a failed write; True if it failed because the store is full (the caller
        then keeps its work for later instead of raising)."""
        if not is_full(exc, self.store_path):
            return False
        if not self.full:
            self.full = True
            self._delay = FIRST_DELAY
            log.warning("index of %s not updated: its store %s is full (%s); queries answer from "
                        "the last good state until there is space again", self.export, self.store_path, exc)
        else:
            self._delay = min(self._delay * 2, MAX_DELAY)
        self._retry_at = time.monotonic() + self._delay
        return True

    def succeeded(self) -> None:
        if self.full:
            self.full = False
            log.warning("index of %s: its store has space again; catching up", self.export)
