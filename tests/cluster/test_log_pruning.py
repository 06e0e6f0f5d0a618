"""The change log is pruned below what every live head has applied, and a head that was
away longer (its position below the floor) rescans instead of replaying (nfsd/shared)."""
from __future__ import annotations

from pathlib import Path

import pytest

from nfsd.shared.changelog import Follower, Row
from nfsd.state.store import Store

pytest.importorskip("psycopg", reason="the cluster extra: pip install -e '.[cluster]'")


class Rescans:
    """An index stand-in that only counts what the follower asks of it."""

    def __init__(self) -> None:
        self.scans = 0
        self.flushes = 0

    def scan(self, progress: object = None) -> None:
        self.scans += 1

    def flush(self) -> bool:
        self.flushes += 1
        return False


def test_prune_and_rescan_past_the_floor(tmp_path: Path, shared_url: str) -> None:
    from nfsd.shared import SharedState
    from nfsd.shared.changelog import Target
    shared = SharedState(shared_url)
    writer = SharedState(shared_url, head="writer")
    stores = [Store(str(tmp_path / f"s{i}")) for i in range(2)]
    try:
        writer.publisher.start()
        for i in range(10):
            writer.publisher.add(Row(7, "i", 1000 + i))
            assert writer.publisher.wait_published()
        end = shared.log_position()

        conn = shared.connect()
        first = Follower(shared.connect, "first", stores[0], {}, 0)
        while first._read_some(conn):
            pass
        assert first.last_seq == end
        first.prune_age = 0.0
        assert first.report(conn) == 10                      # the only live head has them all
        assert conn.execute("SELECT count(*) FROM change_log").fetchone()[0] == 0

        index = Rescans()
        late = Follower(shared.connect, "late", stores[1], {7: Target(7, index, None)}, 0)
        late._check_floor(conn)                              # away while the log was pruned
        assert late.rescans == 1 and index.scans == 1
        assert late.last_seq == end
        conn.close()
    finally:
        writer.close()
        shared.close()
        for s in stores:
            s.close()
