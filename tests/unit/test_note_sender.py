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

    def drain_later() -> None:
        time.sleep(0.3)
        for _ in range(sent + 2):
            got.append(writer.recv(65536))
    reader = threading.Thread(target=drain_later)
    reader.start()
    start = time.monotonic()
    sender.send(b"I", 1, 42)      # waits for room, then goes
    sender.send(b"I", 1, 43)
    assert time.monotonic() - start >= 0.2
    reader.join(5)
    assert sender.sent == 2
    assert len(got) == sent + 2 and got[-1] != got[-2] and got[-1].startswith(b"I")
