"""The burst of calls being served inline: one small object the dispatcher keeps and the
parts that defer work to a burst's end read (the handle table's group commit, the deferred
directory fsyncs).

Before, each such part had begin and end hooks the dispatcher called around every burst:
three calls at its start and three at its end (and one more for the handle table's commit
before the replies), each setting or testing its own copy of "the burst's thread", whether
the burst had changed anything or not.  A lone client's every call is a burst of its own,
served cold (the client thinks 1-3.5 ms between calls), where each call is dear
(design.rst, "cold calls", "lonecreate pass").  Now the dispatcher sets ``thread`` and
``count`` here at the start, and at the end calls only what a part registered because it
deferred something (``due``, ``before_due``): a burst that changed nothing
runs no hook at its end."""
from __future__ import annotations

import asyncio
from typing import Any, Callable


class Burst:
    """``thread``: the thread serving a burst inline now (the event loop's ident), 0
    between bursts; a part defers work only when called from it.  ``count``: bursts begun
    so far, for what is computed once per burst (the handle table's free-space check).
    ``due``: ends to call at this burst's end, each may return a future its replies must
    wait for; a part appends its end when it first defers work in the burst.
    ``before_due``: ``Dispatcher.before_replies`` have work before the replies leave
    (the handle table has writes waiting: ``Store.commit_later``)."""

    __slots__ = ("thread", "count", "due", "before_due")

    def __init__(self) -> None:
        self.thread = 0
        self.count = 0
        self.due: list[Callable[[], "asyncio.Future[Any] | None"]] = []
        self.before_due = False
