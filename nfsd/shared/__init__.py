"""Several heads, one truth: the state pysfsd heads share through PostgreSQL (issue 16).

``--shared-state URL`` makes a head a cluster member (docs/cluster.rst); without it none of
this is imported and the server is the single-host one (LMDB and inotify only).

* ``schema``: the tables, created and migrated by whichever head comes first;
* ``state``: ``SharedState``, the narrow interface the rest of the server calls (export ids,
  query placeholders, EXCLUSIVE-create verifiers, publishing changes);
* ``changelog``: the durable change log, written in batches by a publisher thread and
  applied to each head's own LMDB index by a follower thread.
"""
from .state import SharedState, SharedUnavailable

__all__ = ["SharedState", "SharedUnavailable"]
