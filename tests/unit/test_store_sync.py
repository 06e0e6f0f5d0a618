"""The periodic sync of the handle table's store: only when something was written."""
from __future__ import annotations

from pathlib import Path

from nfsd.state.store import Store


def test_unsynced_after_a_write_until_the_next_sync(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "state"))
    try:
        store.sync()
        assert not store.unsynced()  # the server's periodic sync makes no thread hop now
        store.put_objects(1, [(100, 2, 7, b"a")])
        assert store.unsynced()
        store.sync()
        assert not store.unsynced()
        # a commit this Store did not make (another worker's, in the shared environment)
        with store.env.begin(write=True) as txn:
            txn.put(b"test:other", b"1")
        assert store.unsynced()
        store.sync()
        assert not store.unsynced()
    finally:
        store.close()
