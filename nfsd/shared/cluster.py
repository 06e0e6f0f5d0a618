"""The few calls ``nfsd/app.py`` makes to be a cluster head (each a no-op without one)."""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

from .changelog import _SEQ, LAST_SEQ_KEY, Follower, Row, Target

log = logging.getLogger("pysfsd.shared")

RUNNING_KEY = b"shared:running"  # in the head's LMDB while it serves: found at start = it crashed
SHARED_EXPORT_KEY = b"shared:export:"  # + path: the cluster's export id, as of this head's last join


def join(url: str | None, store: Any, roots: Sequence[str] = ()) -> Any:
    """``SharedState`` for ``--shared-state URL`` (its handle table publishes through it),
    or None.  The change log's current end is taken now, before the start-up scan, so the
    follower re-applies (harmlessly) whatever changed during the scan.

    PostgreSQL down: a head that was a member before (its LMDB holds the cluster's id of
    every export in ``roots``) starts from its LMDB (reads and queries answer, changes queue,
    and the follower catches up from its saved position once PostgreSQL is back); a head that
    never was cannot know its export ids and refuses to start (ConfigError)."""
    if not url:
        return None
    from .state import SharedState
    shared = SharedState(url)
    if shared.unreachable is None:
        try:
            shared.start_seq = shared.log_position()
        except OSError as exc:   # gone again since the connection test
            shared.unreachable = str(exc)
    if shared.unreachable is not None:
        missing = [r for r in roots if _known_export_id(store, r) is None]
        if missing or not roots:
            from ..config.errors import ConfigError
            raise ConfigError(f"--shared-state: cannot reach PostgreSQL ({shared.unreachable}), and this head "
                              f"has not been a member of the cluster before (its state knows no cluster id "
                              f"for {missing[0] if missing else 'its exports'}): start it once PostgreSQL is up")
        log.warning("shared state: PostgreSQL is unreachable (%s); serving from this head's own state, "
                    "changes are queued until it is back", shared.unreachable)
        with store.env.begin(db=store.meta) as txn:
            raw = txn.get(LAST_SEQ_KEY)
        shared.start_seq = _SEQ.unpack(raw)[0] if raw is not None else 0
    with store.writing(), store.env.begin(write=True, db=store.meta) as txn:
        shared.crashed = txn.get(RUNNING_KEY) is not None
        txn.put(RUNNING_KEY, b"1")
    store.sync()
    store.shared = shared
    shared.publisher.start()
    return shared


def _known_export_id(store: Any, path: str) -> int | None:
    """The cluster's id of an export as this head's LMDB recorded it when it last joined."""
    with store.env.begin(db=store.meta) as txn:
        raw = txn.get(SHARED_EXPORT_KEY + os.fsencode(path))
    return None if raw is None else int(raw)


def export_id(shared: Any, store: Any, path: str) -> int:
    """The cluster's id of an export, recorded in the head's own LMDB as well (where
    ``Store.export_id`` finds it), so ``pysfsd check`` and ``pysfsd index`` on this head
    open the same index tables as the server, and the head can start while PostgreSQL is
    down (``join``)."""
    try:
        eid = shared.export_id(path)
    except OSError:
        known = _known_export_id(store, path)
        if shared.unreachable is None or known is None:
            raise
        return known   # still down since the start: the id this head recorded (``join`` checked)
    key = b"export:" + os.fsencode(path)
    with store.writing(), store.env.begin(write=True, db=store.meta) as txn:
        txn.put(SHARED_EXPORT_KEY + os.fsencode(path), str(eid).encode())
        if txn.get(key) != str(eid).encode():
            txn.put(key, str(eid).encode())
            next_id = int(txn.get(b"next_export_id") or b"1")
            if next_id <= eid:
                txn.put(b"next_export_id", str(eid + 1).encode())
    return eid


def leave(shared: Any, store: Any) -> None:
    """Publish what is queued, stop following, and note the clean end; if some change could
    not be published (PostgreSQL away), the next start makes every head rescan instead."""
    if not shared.close():
        return
    with store.writing(), store.env.begin(write=True, db=store.meta) as txn:
        txn.delete(RUNNING_KEY)


def publishing(index: Any, shared: Any, export_id: int) -> Any:
    """The index the semantic layer notes changes to: published too in a cluster."""
    if shared is None:
        return index
    shared.add_index(export_id, index)
    from .content import SharedContent
    from .publishing import PublishingIndex
    content = shared.contents[export_id] = SharedContent(shared.publisher.add, export_id)
    index.wrap_extractor(content.wrap)
    from .tags import SharedTagStore
    index.user_values = SharedTagStore(index.user_values, shared.publisher.add, export_id)
    return PublishingIndex(index, shared, export_id, content)


def watched(index: Any) -> Any:
    """The index the inotify watcher notes to: published without waiting in a cluster."""
    found = getattr(index, "found", None)
    return found() if found is not None else index


def follow(shared: Any, store: Any, exports: dict[int, Any], entries: Any, scan_seconds: float) -> None:
    """Start applying the other heads' changes to this head's indexes and handle table, and
    be a candidate for the scanner head (``scan_seconds`` 0: never)."""
    if shared.crashed:
        # killed last time, maybe between a change and its log row: every head rescans (its
        # own start-up scan has already caught up with whatever that change was)
        for eid in exports:
            shared.publisher.add(Row(eid, "r"))
    targets = {eid: Target(eid, getattr(fs.index, "inner", fs.index), fs.local, entries, shared.contents.get(eid),
                           fs.forget_results) for eid, fs in exports.items()}
    shared.follow(Follower(shared.connect, shared.head, store, targets, shared.start_seq))
    if scan_seconds > 0:
        from .scanner import Scanner
        shared.scanner = Scanner(shared.connect, {eid: (fs.root_path, targets[eid].index, fs.index.found())
                                                  for eid, fs in exports.items()}, scan_seconds)
        shared.scanner.start()
        shared.follower.is_scanner = lambda: shared.scanner.holding
