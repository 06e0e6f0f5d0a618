"""Mail messages and mbox files -> ``from``, ``to``, ``subject``, ``date`` (formats: ``fields``).

Only the header block of each message is parsed, never a body, by the standard library's
``email`` package: ``BytesHeaderParser`` with ``policy.default`` splits and unfolds the
headers, and its header classes decode the subject (RFC 2047 encoded words) and the date.
Addresses are parsed by ``email.utils.getaddresses`` instead of ``policy.default``'s address
parser, which takes about 0.4 ms per address and quadratic time on some hostile headers (a
run of ``"a`` 100 KB long: minutes); ``getaddresses`` is linear on all we tried, ten times
faster, and only the addr-specs are wanted (never the display names it leaves encoded).

Everything is bounded, so a huge or hostile file costs seconds (under ten, measured): an mbox is
split where ``mailbox.mbox`` splits it (every line starting with ``From ``) and read from its
first 16 MiB, up to 10,000 messages; a header block is cut at 64 KiB and each header value
at 16 KiB; at most 1 MiB of header values is parsed per file; and at most 10,000 values are
kept: a huge archive yields its early messages' values.

``email`` is imported at the first message parsed, not with this module: only the index
writer extracts, and the package costs 1.6 MiB in every process that imports it
(docs/design.rst, "Memory at rest").
"""
from __future__ import annotations

import os
import re
import stat
from typing import Iterable, Iterator

from ..fields import ext_of
from .interface import Content, Tier
from .values import tidy, utc_day_values

HEADER_BLOCK_MAX = 64 << 10
MESSAGE_READ = HEADER_BLOCK_MAX
MBOX_READ = 16 << 20
MAX_MESSAGES = 10_000
MAX_VALUES = 10_000
HEADER_VALUE_MAX = 16 << 10
PARSE_BUDGET = 1 << 20
MESSAGE_MIMES = frozenset({"message/rfc822", "message/news"})
_FROM_LINE = re.compile(rb"^From ", re.M)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_RECIPIENTS = frozenset({"to", "cc", "bcc"})
_WANTED = _RECIPIENTS | {"from", "subject", "date"}


class MailHeaders:
    name = "mail"
    version = 1
    tier: Tier = "content"
    fields = (b"from", b"to", b"subject", b"date")

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode) and st.st_size > 0

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        if content is None:
            return []
        ext = ext_of(name)
        if content.head(5) == b"From " or ext == b"mbox" or content.mime == "application/mbox":
            data = content.head(MBOX_READ)
            headers = _mbox_headers(data, content.complete(MBOX_READ))
        elif ext == b"eml" or content.mime in MESSAGE_MIMES:
            headers = iter([content.head(MESSAGE_READ)])
        else:
            return []
        out: dict[tuple[bytes, bytes], None] = {}
        budget = PARSE_BUDGET
        for block in headers:
            pairs, cost = message_fields(block)
            out.update(dict.fromkeys(pairs))
            budget -= cost
            if len(out) >= MAX_VALUES or budget <= 0:
                break
        return list(out)[:MAX_VALUES]


def message_fields(header_block: bytes) -> tuple[list[tuple[bytes, bytes]], int]:
    """The (field, value) pairs of one message's headers (a body after them is ignored),
    and how many bytes of header values were parsed for them."""
    from email import policy
    from email.parser import BytesHeaderParser
    message = BytesHeaderParser(policy=policy.default).parsebytes(header_block[:HEADER_BLOCK_MAX])
    senders: list[str] = []
    recipients: list[str] = []
    subject = date = None
    cost = 0
    for name, value in message.raw_items():  # as written: nothing parsed yet
        key = name.lower()
        if key not in _WANTED:
            continue
        value = value[:HEADER_VALUE_MAX]
        cost += len(value)
        if key == "from":
            senders.append(value)
        elif key in _RECIPIENTS:
            recipients.append(value)
        elif key == "subject" and subject is None:
            subject = value
        elif key == "date" and date is None:
            date = value
    out = [(b"from", a) for a in _addresses(senders)] + [(b"to", a) for a in _addresses(recipients)]
    if subject is not None:
        text = tidy(_parsed("subject", subject))
        if text is not None:
            out.append((b"subject", text))
    if date is not None:
        when = getattr(_parsed("date", date), "datetime", None)
        if when is not None:
            out.extend((b"date", v) for v in utc_day_values(when))
    return out, cost


def _parsed(name: str, raw: str) -> object:
    """A header value parsed by ``policy.default`` (a str subclass with ``.datetime`` for a
    date), or None when it is too broken for the parser (which records most problems as
    defects, but has been seen to raise on hostile input)."""
    from email import policy
    try:
        return policy.default.header_factory(name, raw)
    except Exception:  # noqa: BLE001 - a broken header costs that header only
        return None


def _addresses(values: list[str]) -> list[bytes]:
    """The lower-cased addr-specs in address-list header values, group members included."""
    if not values:
        return []
    from email.utils import getaddresses
    try:
        found = getaddresses(values)
    except Exception:  # noqa: BLE001 - RecursionError on nested comments, whatever else hostile input finds
        return []
    out = []
    for _, addr in found:
        value = tidy(addr.lower()) if "@" in addr else None
        if value is not None:
            out.append(value)
    return out


def _mbox_headers(data: bytes, complete: bool) -> Iterator[bytes]:
    """The header block of each message of an mbox (the first MAX_MESSAGES).  A message the
    read limit cut inside its headers is left out."""
    starts = [m.start() for m in _FROM_LINE.finditer(data)]
    starts.append(len(data))
    for n, (start, end) in enumerate(zip(starts, starts[1:])):
        if n >= MAX_MESSAGES:
            return
        body = data.find(b"\n", start, end) + 1  # past the From_ line
        if body <= 0:
            continue
        ends = _HEADER_END.search(data, body, end)
        if ends is None and not complete and end == len(data):
            return
        yield data[body:ends.start() if ends else end]
