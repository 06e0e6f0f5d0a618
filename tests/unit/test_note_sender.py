"""A follower's index notes (nfsd/index/writer_channel.py, ``NoteSender``): sent with one
write(2) each, and when the channel is full, waited for (up to its timeout), not dropped."""
from __future__ import annotations

import os
import socket
import threading
import time

from nfsd.index.writer_channel import NoteSender


def test_notes_arrive_and_a_full_channel_is_waited_for() -> None:
    writer, follower = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    follower.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sender = NoteSender(follower)
    sent = 0
    while True:   # fill the channel: write(2) says EAGAIN (the descriptor is non-blocking)
        try:
            os.write(follower.fileno(), b"x" * 512)
            sent += 1
        except BlockingIOError:
            break
    got: list[bytes] = []
    draining = threading.Event()

    def drain_later() -> None:
        time.sleep(0.3)
        draining.set()
        for _ in range(sent + 2):
            got.append(writer.recv(65536))
    reader = threading.Thread(target=drain_later)
    reader.start()
    sender.send(b"I", 1, 42)      # waits for room, then goes
    sender.send(b"I", 1, 43)
    # Went only once the reader made room: asked of the reader, not of the clock (a loaded
    # machine may stall this thread between starting the reader and reading a clock).
    assert draining.is_set()
    reader.join(30)
    assert sender.sent == 2
    assert len(got) == sent + 2 and got[-1] != got[-2] and got[-1].startswith(b"I")


def _received(end: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(end.recv(65536, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return got


def test_a_note_waiting_with_the_writer_is_not_sent_again_until_a_flush_begins() -> None:
    from nfsd.index.writer_channel import NoteCounts
    writer_counts, follower_counts = NoteCounts.create(2), None
    writer_counts.attach(0)
    follower_counts = NoteCounts(writer_counts.fd, 2)
    follower_counts.attach(1)
    writer, follower = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sender = NoteSender(follower, follower_counts, 1)
    sender.send(b"I", 1, 42)
    sender.send(b"I", 1, 42)       # the first still waits: the writer merges them anyway
    sender.begin_burst()
    sender.send(b"I", 1, 42)
    sender.send(b"I", 1, 43)       # a new one leaves, alone
    sender.end_burst()
    assert _received(writer) == [b"I\x00\x01" + (42).to_bytes(8, "big") + b"\x00\x00",
                                 b"I\x00\x01" + (43).to_bytes(8, "big") + b"\x00\x00"]
    assert sender.sent == 2 and follower_counts.snapshot()[1] == 2
    writer_counts.flush_begun()    # may have taken them in and read the file before our change
    sender.send(b"I", 1, 42)
    sender.send(b"I", 1, 42)       # sent while a flush runs: not known to be waiting
    writer_counts.flush_ended()
    sender.send(b"I", 1, 42)
    sender.send(b"I", 1, 42)       # sent after the flush: waits for the next one
    assert len(_received(writer)) == 3 and sender.sent == 5


def test_a_restarted_writer_has_every_note_sent_again() -> None:
    from nfsd.index.writer_channel import NoteCounts
    counts = NoteCounts.create(2)
    counts.attach(0)
    counts.flush_begun()           # the writer dies in the middle of a flush
    follower_counts = NoteCounts(counts.fd, 2)
    follower_counts.attach(1)
    writer, follower = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sender = NoteSender(follower, follower_counts, 1)
    sender.send(b"I", 1, 7)
    sender.send(b"I", 1, 7)        # the flush may still be going on: sent again
    assert len(_received(writer)) == 2
    again = NoteCounts(counts.fd, 2)
    again.attach(0)                # the new writer: no flush running
    sender.send(b"I", 1, 7)
    sender.send(b"I", 1, 7)
    assert len(_received(writer)) == 1
    again2 = NoteCounts(counts.fd, 2)
    again2.attach(0)               # and another: the note is sent again
    sender.send(b"I", 1, 7)
    assert len(_received(writer)) == 1
