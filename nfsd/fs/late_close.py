"""A removed file's descriptors closed after the reply leaves, not before it.

Closing the last descriptor of an unlinked inode is where the kernel frees it (ext4: its
blocks, the inode, a journal handle; 20-40 µs of a lone REMOVE on a journaled ext4).  The
server holds such descriptors for the files it made or met (``Node``), so a REMOVE, or a
RENAME over a file, paid that before its reply.  On the event loop the node is kept until
the loop's next turn (``call_soon`` runs after the burst's replies are written), so the
client has its answer first; the CPU is the same.  Elsewhere (a thread, no loop) the
caller lets go of it at once, as before.
"""
from __future__ import annotations

import asyncio


class LateClose:
    """What one backend holds for the loop's next turn (the event loop's thread only)."""

    __slots__ = ("_held", "_loop")

    def __init__(self) -> None:
        self._held: list[object] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # where the release is due

    def hold(self, node: object) -> None:
        """Keep ``node`` (and so its descriptors) until the event loop's next turn; in a
        thread without a running loop, nothing is kept (the caller's reference goes)."""
        loop = asyncio._get_running_loop()  # (None in a thread: no exception to raise and catch)
        if loop is None:
            return
        # One callback per burst, whatever it removed; a loop that stopped before its turn
        # (a test's asyncio.run, a shutdown) leaves its nodes to the next loop's release.
        if not self._held or self._loop is not loop:
            self._loop = loop
            loop.call_soon(self.release)
        self._held.append(node)

    def release(self) -> None:
        """Let go of every node held (their descriptors close as each last reference goes)."""
        held, self._held = self._held, []
        held.clear()
