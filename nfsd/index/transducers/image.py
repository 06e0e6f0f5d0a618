"""Images -> ``camera``, ``taken``, ``width``, ``height`` (formats: see ``fields``).

Pillow opens images lazily: ``Image.open`` reads the header (size, and for JPEG, WebP and
TIFF the EXIF block) and decodes no pixel, so a huge or hostile image costs its header only.
It gets the first 256 KiB of the file, then the first 4 MiB if that was too short; pixel data
is never decoded (a PNG's EXIF is read only when its ``eXIf`` chunk precedes the image data,
since Pillow would decode the image to look further).

Pillow is imported at the first image described, not with this module: only the index
writer (the primary worker) extracts, and the supervisor and the followers import this
module without ever using it (3 MiB each; docs/design.rst, "Several worker processes").
"""
from __future__ import annotations

import datetime
import functools
import io
import os
import stat
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Iterable

from .interface import Content, Tier
from .values import day_values, tidy, utc_day_values

if TYPE_CHECKING:
    from PIL import Image

FIRST_READ = 256 << 10
IMAGE_READ = 4 << 20
FORMATS = ("JPEG", "PNG", "GIF", "TIFF", "WEBP", "BMP")
_EXIF_TIME = "%Y:%m:%d %H:%M:%S"


@functools.cache
def _pillow() -> ModuleType:
    """``PIL.Image``, imported (and set up) at the first image."""
    from PIL import Image
    # Nothing here decodes pixels, so the size check only refuses to *describe* huge images:
    # let it through up to a gigapixel (Pillow refuses twice that with DecompressionBombError).
    Image.MAX_IMAGE_PIXELS = 1 << 30
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    # Pillow warns about what it skips in broken headers ("Tag data larger than file"): not news
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")
    return Image


class ImageInfo:
    name = "image"
    version = 1
    tier: Tier = "content"
    fields = (b"camera", b"taken", b"width", b"height")

    def applies(self, name: bytes, st: os.stat_result) -> bool:
        return stat.S_ISREG(st.st_mode) and st.st_size > 0

    def extract(self, name: bytes, st: os.stat_result, content: Content | None) -> Iterable[tuple[bytes, bytes]]:
        if content is None or not content.mime.startswith("image/"):
            return []
        found = _describe(content.head(FIRST_READ))
        if found is None and not content.complete(FIRST_READ):
            found = _describe(content.head(IMAGE_READ))
        return found or []


def _describe(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """The fields of the image whose head is ``data``: none for a format Pillow does not
    know (SVG, HEIC...), None when it knows the format but failed (perhaps on a head too
    short: worth a longer one)."""
    image = _pillow()
    try:
        with image.open(io.BytesIO(data), formats=FORMATS) as im:
            width, height = im.size
            out = [(b"width", b"%d" % width), (b"height", b"%d" % height)]
            out.extend(_exif_fields(im))
            return out
    except image.UnidentifiedImageError:
        return []
    except Exception:  # noqa: BLE001 - a broken or hostile header: not an image we can describe
        return None


def _exif_fields(im: Image.Image) -> list[tuple[bytes, bytes]]:
    from PIL.ExifTags import IFD, Base
    if im.format == "PNG" and "exif" not in im.info:
        return []  # PngImageFile.getexif() would decode the whole image to look for it
    exif = im.getexif()
    out = []
    camera = _camera(exif.get(Base.Make), exif.get(Base.Model))
    if camera is not None:
        out.append((b"camera", camera))
    sub = exif.get_ifd(IFD.Exif)
    taken = (_taken(sub.get(Base.DateTimeOriginal), sub.get(Base.OffsetTimeOriginal))
             or _taken(exif.get(Base.DateTime), sub.get(Base.OffsetTime)))
    out.extend((b"taken", v) for v in taken)
    return out


def _camera(make: object, model: object) -> bytes | None:
    """``Make Model``, without repeating the maker: ("Canon", "Canon EOS 5D") is ``Canon EOS
    5D``, ("NIKON CORPORATION", "NIKON D750") ``NIKON D750``, ("Apple", "iPhone 12")
    ``Apple iPhone 12``."""
    make_s = " ".join(str(make).replace("\0", " ").split()) if isinstance(make, str) else ""
    model_s = " ".join(str(model).replace("\0", " ").split()) if isinstance(model, str) else ""
    if not model_s:
        return tidy(make_s)
    maker = make_s.split(" ", 1)[0].lower()
    if not maker or model_s.lower().startswith(maker):
        return tidy(model_s)
    return tidy(f"{make_s} {model_s}")


def _taken(value: object, offset: object) -> tuple[bytes, ...]:
    """The day values of an EXIF time (``2026:11:21 18:30:00``): in UTC when the file gives
    the offset of the camera's clock, else the day as the camera wrote it."""
    if not isinstance(value, str):
        return ()
    try:
        when = datetime.datetime.strptime(value.strip("\0 ")[:19], _EXIF_TIME)
    except ValueError:
        return ()  # blank ("    :  :     :  :  "), zeroed or malformed
    if isinstance(offset, str):
        try:
            zone = datetime.datetime.strptime(offset.strip("\0 "), "%z").tzinfo
        except ValueError:
            zone = None
        if zone is not None:
            return utc_day_values(when.replace(tzinfo=zone))
    return day_values(when)
