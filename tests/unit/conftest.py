"""Fixtures several unit-test files share."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import lmdb
import pytest


@pytest.fixture
def env(tmp_path: Path) -> Iterable[lmdb.Environment]:
    """A scratch LMDB environment for index and handle-table tables (no fsync: tests)."""
    e = lmdb.open(str(tmp_path / "state"), max_dbs=128, map_size=1 << 30, sync=False)
    yield e
    e.close()
