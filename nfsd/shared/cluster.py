"""The few calls ``nfsd/app.py`` makes to be a cluster head (each a no-op without one)."""
from __future__ import annotations

from typing import Any

from .changelog import Follower, Target


def join(url: str | None, store: Any) -> Any:
    """``SharedState`` for ``--shared-state URL`` (its handle table publishes through it),
    or None.  The change log's current end is taken now, before the start-up scan, so the
    follower re-applies (harmlessly) whatever changed during the scan."""
    if not url:
        return None
    from .state import SharedState
    shared = SharedState(url)
    shared.start_seq = shared.log_position()
    store.shared = shared
    shared.publisher.start()
    return shared


def publishing(index: Any, shared: Any, export_id: int) -> Any:
    """The index the semantic layer notes changes to: published too in a cluster."""
    if shared is None:
        return index
    from .publishing import PublishingIndex
    return PublishingIndex(index, shared, export_id)


def follow(shared: Any, store: Any, exports: dict[int, Any], entries: Any) -> None:
    """Start applying the other heads' changes to this head's indexes and handle table."""
    targets = {eid: Target(eid, getattr(fs.index, "inner", fs.index), fs.local, entries)
               for eid, fs in exports.items()}
    shared.follow(Follower(shared.connect, shared.head, store, targets, shared.start_seq))
