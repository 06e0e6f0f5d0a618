"""EntryplusRun's items are exactly the generic encoder's, whatever the name and handle sizes."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import nfs3
from protocol.nfs3_entries import EntryplusRun

ATTRS = nfs3.fattr3.cls(nfs3.ftype3.NF3LNK, 0o777, 1, 1000, 100, 0, 4096, nfs3.specdata3.cls(0, 0),
                        0x1234_5678_9ABC_DEF0, 0, nfs3.nfstime3.cls(1, 2), nfs3.nfstime3.cls(3, 4),
                        nfs3.nfstime3.cls(5, 6))


def generic(fileid: int, name: bytes, cookie: int, size: int, head: bytes, number: int, tail: bytes) -> bytes:
    attrs = ATTRS._replace(size=size, fileid=fileid)
    fh = nfs3.nfs_fh3.cls(head + number.to_bytes(8, "big") + tail)
    return nfs3.entryplus3_list.encode_item(nfs3.entryplus3.cls(fileid, name, cookie, attrs, fh))


@pytest.mark.parametrize("head,tail", [(b"\1\3\0\7", b""), (b"\1\4\0\7", b"k" * 37), (b"\1\2\0\7" + b"q" * 16, b""),
                                       (b"", b"")])
@pytest.mark.parametrize("name", [b"a", b"ab", b"abc", b"abcd", b"f0000100.c", b"x" * 255])
def test_items_match_the_generic_encoder(head: bytes, tail: bytes, name: bytes) -> None:
    run = EntryplusRun(ATTRS, head, tail)
    args = ((1 << 63) | 12345, name, 0xFFFF_0000_1111_2222, 99, (1 << 64) - 5)
    got = run.item(args[0], name, args[2], args[3], args[4])
    assert got == generic(args[0], name, args[2], args[3], head, args[4], tail)


@settings(max_examples=200, deadline=None)
@given(fileid=st.integers(0, (1 << 64) - 1), name=st.binary(min_size=1, max_size=255),
       cookie=st.integers(0, (1 << 64) - 1), size=st.integers(0, (1 << 64) - 1),
       number=st.integers(0, (1 << 64) - 1), tail=st.binary(max_size=44))
def test_any_entry_matches(fileid: int, name: bytes, cookie: int, size: int, number: int, tail: bytes) -> None:
    head = b"\1\4\0\1"
    run = EntryplusRun(ATTRS, head, tail)
    assert run.item(fileid, name, cookie, size, number) == generic(fileid, name, cookie, size, head, number, tail)


def test_a_page_decodes_as_the_list_it_encodes() -> None:
    """Items joined and handed to ``entryplus3_list.encoded`` decode back to the entries."""
    run = EntryplusRun(ATTRS, b"\1\3\0\7", b"key")
    items = [run.item(100 + i, b"n%d" % i, 1000 + i, i, i) for i in range(5)]
    res = nfs3.dirlistplus3.cls(nfs3.entryplus3_list.encoded([b"".join(items)]), True)
    buf = bytearray()
    nfs3.dirlistplus3.pack(buf, res)
    back, _ = nfs3.dirlistplus3.unpack(bytes(buf))
    assert [(e.fileid, e.name, e.cookie, e.name_attributes.size, e.name_handle.data[4:12]) for e in back.entries] \
        == [(100 + i, b"n%d" % i, 1000 + i, i, i.to_bytes(8, "big")) for i in range(5)]
    assert back.eof
