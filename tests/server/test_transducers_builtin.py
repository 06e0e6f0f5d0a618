"""The content transducers for mail, images, audio, PDF and Python, through the real index.

Every sample is made here, by the libraries that read such files (Pillow, mutagen, pypdf,
``email``/``mailbox``), so no binary is committed; malformed and hostile inputs must give no
fields of their kind while the file keeps its stat fields.
"""
from __future__ import annotations

import calendar
import io
import mailbox
import os
import random
import struct
import time
import wave
import zlib
from email.message import EmailMessage
from pathlib import Path
from typing import Iterable

import lmdb
import pytest
from mutagen.easyid3 import EasyID3
from mutagen.flac import FLAC, StreamInfo
from mutagen.id3 import TALB, TDRC, TIT2, TPE1
from mutagen.ogg import OggPage
from mutagen.oggopus import OggOpus
from mutagen.wave import WAVE
from PIL import ExifTags, Image
from pypdf import PdfWriter

from nfsd.index import Index
from nfsd.index.transducers.builtin import default_transducers
from nfsd.index.transducers.pysource import exports, imports

WHEN = calendar.timegm((2026, 11, 21, 12, 0, 0))
STAT_FIELDS = {b"name", b"ext", b"owner", b"group", b"size", b"mtime"}
MAIL_FIELDS = {b"from", b"to", b"subject", b"date"}
IMAGE_FIELDS = {b"camera", b"taken", b"width", b"height"}
AUDIO_FIELDS = {b"artist", b"album", b"title", b"year"}
PDF_FIELDS = {b"author", b"title", b"pages"}


# -- samples ----------------------------------------------------------------------------
def jpeg(make: str, model: str, *, original: str | None = None, offset: str | None = None,
         plain: str | None = None, size: tuple[int, int] = (64, 48)) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = make
    exif[ExifTags.Base.Model] = model
    if plain:
        exif[ExifTags.Base.DateTime] = plain
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    if original:
        sub[ExifTags.Base.DateTimeOriginal] = original
    if offset:
        sub[ExifTags.Base.OffsetTimeOriginal] = offset
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "JPEG", exif=exif)
    return out.getvalue()


def png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("L", size).save(out, "PNG")
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a size its data does not have (a decompression bomb)."""
    data = bytearray(png((1, 1)))  # signature (8), IHDR length (4), "IHDR" (4), data (13), CRC (4)
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))
    return bytes(data)


def flac(path: Path, **tags: str | list[str]) -> Path:
    """A FLAC stream with no audio frames: "fLaC" and a last-block STREAMINFO (mutagen
    renders the block), then tags written by mutagen."""
    info = StreamInfo(None)
    info.min_blocksize = info.max_blocksize = 4096
    info.min_framesize = info.max_framesize = 0
    info.sample_rate, info.channels, info.bits_per_sample, info.total_samples = 44100, 2, 16, 0
    info.md5_signature = 0
    body = info.write()
    path.write_bytes(b"fLaC" + bytes([0x80]) + len(body).to_bytes(3, "big") + body)
    audio = FLAC(path)
    audio.add_tags()
    for key, value in tags.items():
        audio[key] = value
    audio.save()
    return path


def mp3(path: Path, **tags: str) -> Path:
    """Silent MPEG-1 layer III frames (128 kbit/s, 44.1 kHz: a 4-byte header and 413 zero
    bytes each) under an ID3v2 tag written by mutagen."""
    path.write_bytes((b"\xff\xfb\x90\x00" + bytes(413)) * 20)
    tag = EasyID3()
    for key, value in tags.items():
        tag[key] = value
    tag.save(path)
    return path


def opus(path: Path, **tags: str) -> Path:
    """An Ogg Opus stream: OpusHead, OpusTags and one packet, paged by mutagen."""
    packets = [b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, 48000, 0, 0),
               b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0), b"\xf8\xff\xfe"]
    pages = []
    for n, packet in enumerate(packets):
        page = OggPage()
        page.serial, page.sequence, page.packets = 7, n, [packet]
        page.position = 960 if n == 2 else 0
        page.first, page.last = n == 0, n == 2
        pages.append(page.write())
    path.write_bytes(b"".join(pages))
    audio = OggOpus(path)
    for key, value in tags.items():
        audio[key] = value
    audio.save()
    return path


def wav_with_id3(path: Path) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(1600))
    audio = WAVE(path)
    audio.add_tags()
    assert audio.tags is not None
    audio.tags.add(TPE1(encoding=3, text=["Wave Artist"]))
    audio.tags.add(TALB(encoding=3, text=["Wave Album"]))
    audio.tags.add(TIT2(encoding=3, text=["Wave Title"]))
    audio.tags.add(TDRC(encoding=3, text=["1987-06-05"]))
    audio.save()
    return path


def pdf(author: str, title: str, pages: int, password: str | None = None) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=200, height=200)
    writer.add_metadata({"/Author": author, "/Title": title})
    if password is not None:
        writer.encrypt(password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def message(sender: str, to: str, subject: str, date: str, cc: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Date"] = sender, to, subject, date
    if cc:
        msg["Cc"] = cc
    msg.set_content("the body is never read for headers\nFrom: nobody@body.example\n")
    return msg


PY_WITH_ALL = b'''"""A module that says what it exports."""
import os.path, sys as system
from collections import OrderedDict
from . import views, models as m
from ..pkg.sub import thing
from .relative import *
__all__ = ["Public", "helper"]
__all__ += ["extra"]

class Public: pass
def helper(): import json
def _private(): pass
'''

PY_WITHOUT_ALL = b'''#!/usr/bin/env python3
import typing
CONSTANT = 1
first, (second, *rest) = 1, (2, 3)
annotated: int = 3
_hidden = 4
obj.attr = 5
async def fetch(): pass
if typing.TYPE_CHECKING:
    from os import PathLike
else:
    class Fallback: pass
try:
    import fastjson as json_impl
except ImportError:
    def json_impl(): pass
def outer():
    def inner(): pass
    local = 1
class Klass:
    method_var = 1
'''


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (WHEN, WHEN))
    return path


def sparse(path: Path, head: bytes, size: int) -> Path:
    """A file of ``size`` bytes that starts with ``head`` and is a hole after it."""
    write(path, head)
    os.truncate(path, size)
    os.utime(path, (WHEN, WHEN))
    return path


# -- the tree and the index -------------------------------------------------------------
@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("samples") / "export"
    mail = root / "mail"
    write(mail / "hello.eml", bytes(message(
        "Jöhn Smith <Smith@Example.ORG>", "Ann <ann@example.org>, bob@EXAMPLE.net",
        "  Héllo\tthere,   wörld  ", "Sat, 21 Nov 2026 23:30:00 -0500", cc="Cy <cy@example.com>")))
    mail.mkdir(exist_ok=True)
    box = mailbox.mbox(str(mail / "archive.mbox"))
    box.add(message("alice@example.org", "smith@example.org", "First", "Mon, 02 Mar 2026 10:00:00 +0000"))
    box.add(message("Bob <bob@example.net>", "team: smith@example.org, eve@example.org;",
                    "Re: " + "long " * 80, "Tue, 01 Jan 2025 01:00:00 +0200"))
    box.close()
    os.utime(mail / "archive.mbox", (WHEN, WHEN))
    write(mail / "no-extension", b"From: carol@example.org\nTo: dan@example.org\nSubject: sniffed\n\nhi\n")
    write(mail / "junk.eml", bytes(range(256)) * 8)

    images = root / "images"
    write(images / "canon.jpg", jpeg("Canon", "Canon EOS 5D Mark IV", original="2019:12:31 23:30:00",
                                     offset="-02:00", plain="2024:05:05 05:05:05"))
    write(images / "nikon.jpg", jpeg("NIKON CORPORATION\0", "NIKON D750  ", plain="2021:06:15 10:00:00"))
    write(images / "phone.jpg", jpeg("Apple", "iPhone 12", original="    :  :     :  :  ", size=(30, 40)))
    write(images / "plain.png", png((300, 200)))
    write(images / "truncated.jpg", jpeg("Canon", "Cut", original="2019:12:31 23:30:00")[:60])
    write(images / "bomb.png", png_claiming(100_000, 100_000))
    write(images / "panorama.png", png_claiming(30_000, 30_000))

    audio = root / "audio"
    audio.mkdir(parents=True)
    mp3(audio / "song.mp3", artist="Mp3 Artist", album="Mp3 Album", title="Mp3 Title", date="2005-03-01")
    flac(audio / "song.flac", artist=["First Artist", "Second Artist"], album="Flac Album", title="Flac Title",
         date="1999")
    opus(audio / "song.opus", artist="Opus Artist", title="Opus Title", date="2010")
    wav_with_id3(audio / "song.wav")
    write(audio / "noise.mp3", random.Random("noise.mp3").randbytes(4096))  # fixed bytes: no chance frame sync
    for p in audio.iterdir():
        os.utime(p, (WHEN, WHEN))

    docs = root / "docs"
    write(docs / "paper.pdf", pdf("Ann  Author", "A\nTitle", 3))
    write(docs / "locked.pdf", pdf("Secret Author", "Secret", 2, password="pw"))
    write(docs / "garbage.pdf", b"%PDF-1.4\n" + b"garbage " * 500)

    code = root / "code"
    write(code / "with_all.py", PY_WITH_ALL)
    write(code / "without_all.py", PY_WITHOUT_ALL)
    write(code / "script", b"#!/usr/bin/env python3\nimport argparse\ndef main(): pass\n")
    write(code / "broken.py", b"def broken(:\n    pass\nimport never\n")
    write(code / "deep.py", b"x = " + b"-" * 200_000 + b"1\n")
    write(code / "nul.py", b"import os\n\0\n")

    many = []
    for i in range(12_000):
        msg = mailbox.mboxMessage()
        msg["From"], msg["Subject"] = f"u{i}@example.org", f"s{i}"
        msg.set_payload("x\n")
        many.append(msg.as_bytes(unixfrom=True))
    write(root / "bulk" / "many.mbox", b"\n".join(many))

    big = root / "big"
    big.mkdir()
    for name, head in [("huge.jpg", jpeg("Canon", "Huge", size=(8, 8))), ("huge.pdf", pdf("A", "T", 1)),
                       ("huge.mbox", b"From a@b Sat Jan  3 01:05:34 1996\nFrom: a@b.org\nSubject: s\n\n"),
                       ("huge.mp3", b""), ("huge.py", b"import os\n")]:
        sparse(big / name, head, 1 << 30)
    return root


@pytest.fixture(scope="module")
def index(export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterable[Index]:
    env = lmdb.open(str(tmp_path_factory.mktemp("state")), max_dbs=128, map_size=1 << 30, sync=False)
    idx = Index(env, str(export), 1, transducers=default_transducers())
    started = time.monotonic()
    stats = idx.scan(progress=False)
    idx.scan_seconds = time.monotonic() - started  # type: ignore[attr-defined]
    assert stats.failed == 0, idx.failures()
    yield idx
    idx.close()
    env.close()


def fields_of(idx: Index, relpath: bytes) -> dict[bytes, set[bytes]]:
    """Every (field, value) the index holds for one file, through the public API (asking
    only about the values found in its directory)."""
    ino, scope = idx.ino_of(relpath), idx.ino_of(relpath.rpartition(b"/")[0])
    assert ino is not None and scope is not None, relpath
    out: dict[bytes, set[bytes]] = {}
    for field in idx.fields():
        for value in idx.values(field, scope):
            if any(r.ino == ino for r in idx.query(scope, [(field, value)])):
                out.setdefault(field, set()).add(value)
    return out


def q(idx: Index, *terms: tuple[bytes, bytes]) -> list[bytes]:
    return [r.path for r in idx.query(idx.root_ino, list(terms))]


def only(fields: dict[bytes, set[bytes]], kind: set[bytes]) -> dict[bytes, set[bytes]]:
    return {f: v for f, v in fields.items() if f in kind}


# -- mail -------------------------------------------------------------------------------
def test_single_message(index: Index) -> None:
    f = fields_of(index, b"mail/hello.eml")
    assert only(f, MAIL_FIELDS) == {
        b"from": {b"smith@example.org"},
        b"to": {b"ann@example.org", b"bob@example.net", b"cy@example.com"},  # Cc counts
        b"subject": {"Héllo there, wörld".encode()},  # decoded, whitespace collapsed
        b"date": {b"2026", b"2026-11", b"2026-11-22"},  # 23:30 at -0500 is the next day in UTC
    }
    assert STAT_FIELDS <= set(f)


def test_mbox_messages(index: Index) -> None:
    f = only(fields_of(index, b"mail/archive.mbox"), MAIL_FIELDS)
    assert f[b"from"] == {b"alice@example.org", b"bob@example.net"}
    assert f[b"to"] == {b"smith@example.org", b"eve@example.org"}  # group members included
    subjects = f[b"subject"]
    assert b"First" in subjects and len(subjects) == 2
    long = next(s for s in subjects if s.startswith(b"Re: "))
    assert len(long) <= 255 and long == (b"Re: " + b"long " * 80)[:255].rstrip()
    assert f[b"date"] == {b"2026", b"2026-03", b"2026-03-02", b"2024", b"2024-12", b"2024-12-31"}
    # the body's "From:" line is no header
    assert q(index, (b"from", b"nobody@body.example")) == []


def test_mail_found_by_libmagic_and_queries(index: Index) -> None:
    assert q(index, (b"subject", b"sniffed")) == [b"mail/no-extension"]
    assert q(index, (b"to", b"smith@example.org")) == [b"mail/archive.mbox"]
    assert q(index, (b"from", b"smith@example.org"), (b"date", b"2026-11")) == [b"mail/hello.eml"]


def test_binary_junk_eml_has_no_mail_fields(index: Index) -> None:
    f = fields_of(index, b"mail/junk.eml")
    assert not only(f, MAIL_FIELDS) and STAT_FIELDS <= set(f)


# -- images -----------------------------------------------------------------------------
def test_jpeg_exif(index: Index) -> None:
    assert only(fields_of(index, b"images/canon.jpg"), IMAGE_FIELDS) == {
        b"camera": {b"Canon EOS 5D Mark IV"}, b"width": {b"64"}, b"height": {b"48"},
        # DateTimeOriginal wins over DateTime; 23:30 at -02:00 is 01:30 UTC the next day
        b"taken": {b"2020", b"2020-01", b"2020-01-01"}}
    assert only(fields_of(index, b"images/nikon.jpg"), IMAGE_FIELDS) == {
        b"camera": {b"NIKON D750"}, b"width": {b"64"}, b"height": {b"48"},
        b"taken": {b"2021", b"2021-06", b"2021-06-15"}}  # DateTime, no offset: as the camera said
    assert only(fields_of(index, b"images/phone.jpg"), IMAGE_FIELDS) == {
        b"camera": {b"Apple iPhone 12"}, b"width": {b"30"}, b"height": {b"40"}}  # blank date: none


def test_png_size_without_exif(index: Index) -> None:
    assert only(fields_of(index, b"images/plain.png"), IMAGE_FIELDS) == {b"width": {b"300"}, b"height": {b"200"}}
    # a header claiming a huge size is described without decoding anything, up to a limit
    assert only(fields_of(index, b"images/panorama.png"), IMAGE_FIELDS) == {
        b"width": {b"30000"}, b"height": {b"30000"}}
    assert q(index, (b"width", b"300"), (b"height", b"200")) == [b"images/plain.png"]


def test_broken_images_have_no_image_fields(index: Index) -> None:
    for path in (b"images/truncated.jpg", b"images/bomb.png"):
        f = fields_of(index, path)
        assert not only(f, IMAGE_FIELDS), path
        assert STAT_FIELDS <= set(f) and f[b"type"] and f[b"type"] <= {b"image/jpeg", b"image/png"}


# -- audio ------------------------------------------------------------------------------
@pytest.mark.parametrize("path, expected", [
    (b"audio/song.mp3", {b"artist": {b"Mp3 Artist"}, b"album": {b"Mp3 Album"}, b"title": {b"Mp3 Title"},
                         b"year": {b"2005"}}),
    (b"audio/song.flac", {b"artist": {b"First Artist", b"Second Artist"}, b"album": {b"Flac Album"},
                          b"title": {b"Flac Title"}, b"year": {b"1999"}}),
    (b"audio/song.opus", {b"artist": {b"Opus Artist"}, b"title": {b"Opus Title"}, b"year": {b"2010"}}),
    (b"audio/song.wav", {b"artist": {b"Wave Artist"}, b"album": {b"Wave Album"}, b"title": {b"Wave Title"},
                         b"year": {b"1987"}}),
])
def test_audio_tags(index: Index, path: bytes, expected: dict[bytes, set[bytes]]) -> None:
    assert only(fields_of(index, path), AUDIO_FIELDS) == expected


def test_audio_queries_and_noise(index: Index) -> None:
    assert q(index, (b"artist", b"Second Artist")) == [b"audio/song.flac"]
    assert index.values(b"year", index.root_ino) == [b"1987", b"1999", b"2005", b"2010"]
    f = fields_of(index, b"audio/noise.mp3")
    assert not only(f, AUDIO_FIELDS) and STAT_FIELDS <= set(f)


# -- PDF --------------------------------------------------------------------------------
def test_pdf_metadata(index: Index) -> None:
    assert only(fields_of(index, b"docs/paper.pdf"), PDF_FIELDS) == {
        b"author": {b"Ann Author"}, b"title": {b"A Title"}, b"pages": {b"3"}}
    assert q(index, (b"pages", b"3")) == [b"docs/paper.pdf"]


def test_encrypted_and_broken_pdfs_have_no_pdf_fields(index: Index) -> None:
    for path in (b"docs/locked.pdf", b"docs/garbage.pdf"):
        f = fields_of(index, path)
        assert not only(f, PDF_FIELDS), path
        assert STAT_FIELDS <= set(f)


# -- Python -----------------------------------------------------------------------------
def test_python_with_all(index: Index) -> None:
    f = fields_of(index, b"code/with_all.py")
    assert f[b"exports"] == {b"Public", b"helper", b"extra"}
    assert f[b"imports"] == {b"os.path", b"sys", b"collections", b".views", b".models", b"..pkg.sub",
                             b".relative", b"json"}


def test_python_without_all(index: Index) -> None:
    f = fields_of(index, b"code/without_all.py")
    assert f[b"exports"] == {b"CONSTANT", b"first", b"second", b"rest", b"annotated", b"fetch", b"Fallback",
                             b"json_impl", b"outer", b"Klass"}
    assert f[b"imports"] == {b"typing", b"os", b"fastjson"}
    assert fields_of(index, b"code/script")[b"exports"] == {b"main"}  # sniffed as Python
    assert q(index, (b"imports", b"argparse")) == [b"code/script"]


def test_python_that_does_not_parse_has_no_symbols(index: Index) -> None:
    for path in (b"code/broken.py", b"code/deep.py", b"code/nul.py"):
        f = fields_of(index, path)
        assert b"exports" not in f and b"imports" not in f, path
        assert STAT_FIELDS <= set(f)


def test_python_rules_directly() -> None:
    import ast
    assert exports(ast.parse("__all__ = compute()\ndef f(): pass\n")) == ["f"]  # not a literal
    assert exports(ast.parse("__all__ = ['f']\n__all__ += more\ndef f(): pass\ndef g(): pass\n")) == ["f", "g"]
    assert exports(ast.parse("__all__ = ()\ndef f(): pass\n")) == []
    assert imports(ast.parse("from . import *\nfrom .. import a\n")) == ["..a"]
    # imports at any depth, whatever the statements around them: the same as ast.walk finds
    nested = ast.parse("def f():\n class C:\n  def g(self):\n   try:\n    import a\n   except E:\n"
                       "    import b\n   else:\n    import c\n   finally:\n    import d\n"
                       "while x:\n import e\nelse:\n import f\nfor i in y:\n import g\n"
                       "match v:\n case 1:\n  import h\nasync def h():\n async with z:\n  import i\n"
                       "try:\n pass\nexcept* E:\n import j\n")
    walked = [n.names[0].name for n in ast.walk(nested) if isinstance(n, ast.Import)]
    assert sorted(imports(nested)) == sorted(walked) == list("abcdefghij")


# -- bounds -----------------------------------------------------------------------------
def test_huge_files_cost_a_bounded_read(index: Index) -> None:
    """1 GiB files (holes) of every kind: read only in part, and the whole tree indexed in
    seconds."""
    assert index.scan_seconds < 30  # type: ignore[attr-defined]
    assert only(fields_of(index, b"big/huge.jpg"), IMAGE_FIELDS) == {
        b"camera": {b"Canon Huge"}, b"width": {b"8"}, b"height": {b"8"}}
    assert not only(fields_of(index, b"big/huge.pdf"), PDF_FIELDS)  # over 64 MiB: not read
    assert only(fields_of(index, b"big/huge.mbox"), MAIL_FIELDS) == {b"from": {b"a@b.org"}, b"subject": {b"s"}}
    assert not only(fields_of(index, b"big/huge.mp3"), AUDIO_FIELDS)
    assert fields_of(index, b"big/huge.py")[b"imports"] == {b"os"}


def test_mbox_values_are_capped(index: Index) -> None:
    """12,000 messages of two values each: the first 10,000 values, in message order, and
    no failure (a transducer yielding over 20,000 pairs would fail)."""
    bulk = index.ino_of(b"bulk")
    assert bulk is not None
    senders = index.values(b"from", bulk)
    subjects = index.values(b"subject", bulk)
    assert len(senders) + len(subjects) == 10_000
    assert set(senders) == {b"u%d@example.org" % i for i in range(5_000)}
    assert set(subjects) == {b"s%d" % i for i in range(5_000)}


# -- through NFS ------------------------------------------------------------------------
def test_camera_directory_over_nfs(tmp_path: Path) -> None:
    from tests.conftest import serving
    from tests.nfs3_helpers import OK, list_dir, lookup
    from tests.rpc_client import RpcClient

    write(tmp_path / "export" / "photos" / "a.jpg", jpeg("Canon", "Canon EOS R5"))
    write(tmp_path / "export" / "photos" / "b.jpg", jpeg("Apple", "iPhone 12"))
    with serving(tmp_path) as server, RpcClient(server.port) as rpc:
        root = rpc.mount(server.export_b)

        def look(d: bytes, name: bytes) -> bytes:
            status, res = lookup(rpc, d, name)
            assert status == OK, (name, status)
            return res.object.data

        def names(d: bytes) -> set[bytes]:
            return {e.name for e in list_dir(rpc, d)} - {b".", b".."}

        cameras = look(root, b"camera:")
        assert names(cameras) == {b"Canon EOS R5", b"Apple iPhone 12"}
        assert names(look(cameras, b"Canon EOS R5")) == {b"a.jpg"}
        assert names(look(look(root, b"width:"), b"64")) == {b"a.jpg", b"b.jpg"}
