"""Running the transducers on one file: by tier, with their output checked.

A transducer's output reaches the index only as posting keys that passed validation, and only
when the transducer finished: one that raises (or yields anything malformed) is reported as a
failure and contributes nothing, while the others' fields stand.
"""
from __future__ import annotations

import os
import stat
import time
import zlib
from typing import NamedTuple, Sequence

from ..query.language import NO_EXT_KEY, size_key
from .fields import _NS_PER_DAY, ext_of, valid_field, valid_value
from .fsread import OpenFile, open_regular
from .tables import EMPTY, NO_XVER
from .transducers.interface import Content, Sniffer, Transducer, declared_fields

MAX_PAIRS = 20_000  # per transducer and file: a runaway transducer cannot bloat the index
MAX_EMPTY_RULES = 1024  # remembered content tiers of empty files (one per extension and rule)
MAX_STAT_RULES = 4096   # remembered stat tiers minus the name (see ``stat_keys``)
STAT_RULES_TTL = 60.0   # ...kept this long: owner and group names follow renamed accounts


# modules of the built-in content transducers: each reads only its name's extension and the
# content (so every empty file with one extension gets one content tier)
_PURE_MODULES = frozenset(f"nfsd.index.transducers.{m}" for m in ("builtin", "csource", "pysource", "mail", "image",
                                                        "audio", "pdf"))


class Outcome(NamedTuple):
    keys: frozenset[bytes]
    failures: list[tuple[str, str]]  # (transducer name, why)


NOTHING = Outcome(EMPTY, [])
ALL: frozenset[bytes] = frozenset()  # marks a transducer that may yield any field


class Extractor:
    def __init__(self, transducers: Sequence[Transducer]) -> None:
        names = [t.name for t in transducers]
        if len(set(names)) != len(names):
            raise ValueError(f"transducer names must be unique: {names}")
        for t in transducers:
            if t.tier not in ("stat", "content"):
                raise ValueError(f"transducer {t.name}: tier must be 'stat' or 'content', not {t.tier!r}")
        self.stat_tier = [t for t in transducers if t.tier == "stat"]
        self._declared = {t.name: declared_fields(t) or ALL for t in transducers}
        self.content_tier = [t for t in transducers if t.tier == "content"]
        signature = ";".join(sorted(f"{t.name}:{t.version}:{t.tier}" for t in transducers))
        # never 0: that marks a record whose content tier is still to be extracted
        self.xver = zlib.crc32(signature.encode()) or 1
        self.sniffer = Sniffer()
        self._good_fields: set[bytes] = set()
        self._xvers: dict[bytes, int] = {}  # rule (see ``xver_for``) -> its version
        self._handed_out: set[int] = set()
        # (extension, transducers applying) -> the content tier of an empty regular file, for
        # the built-in transducers, whose output depends on nothing else: a burst of new
        # empty files (untar, touch, a build's stamps) is indexed without opening each
        self._empty: dict[tuple[bytes | None, tuple[str, ...]], Outcome] = {}
        # the same for a new empty file of a given extension when every content-tier
        # transducer is built in (their ``applies`` read only the kind, size and extension)
        self._pure = all(type(t).__module__ in _PURE_MODULES for t in self.content_tier)
        self._empty_new: dict[bytes | None, tuple[Outcome, int]] = {}
        self._rules: dict[tuple[bytes | None, int, int], tuple[list[Transducer], int]] = {}  # ``_applying``
        # the built-in stat tier alone: a file's keys besides its name are a function of
        # (extension, owner, group, size, mtime's day, kind), remembered per such rule, so a
        # burst of new files (a CREATE each) runs the transducer once per rule, not per file
        self._stat_pure = [(type(t).__module__, type(t).__name__) for t in self.stat_tier] == [
            ("nfsd.index.transducers.builtin", "StatFields")]
        self._stat_rules: dict[tuple[bytes | None, int, int, int, int, int], frozenset[bytes]] = {}
        self._stat_rules_since = time.monotonic()

    def xver_for(self, name: bytes, st: os.stat_result) -> int:
        """The version of the content tier a file called ``name`` gets: the transducers and
        their versions, which of them apply to that name, and its extension (the built-ins
        choose by it inside ``extract``).  So a content tier is kept across a rename only
        when the same transducers treat the new name the same way (``slow.c.tmp`` ->
        ``slow.c`` is re-extracted, ``a.c`` -> ``lib/a.c`` is not)."""
        if self.xver == NO_XVER:  # a stat-tier-only extractor: no content tier was extracted
            return NO_XVER
        return self._applying(name, st)[1]

    def _applying(self, name: bytes, st: os.stat_result) -> tuple[list[Transducer], int]:
        """The content-tier transducers that apply to ``name`` and its ``xver_for``; with only
        built-in ones (whose ``applies`` read the kind, size and extension), remembered per
        (extension, kind, size): a rename's reconciliation asks for them four times."""
        key = (ext_of(name), stat.S_IFMT(st.st_mode), st.st_size)
        found = self._rules.get(key) if self._pure else None
        if found is None:
            todo = [t for t in self.content_tier if self._applies(t, name, st)]
            found = (todo, self._xver_of(name, todo))
            if self._pure and len(self._rules) < MAX_STAT_RULES:
                self._rules[key] = found
        return found

    def _xver_of(self, name: bytes, applying: Sequence[Transducer]) -> int:
        """``xver_for`` once the content-tier transducers applying to ``name`` are known."""
        if self.xver == NO_XVER:
            return NO_XVER
        rule = (ext_of(name) or b"") + b"/" + ",".join(t.name for t in applying).encode()
        found = self._xvers.get(rule)
        if found is None:
            found = zlib.crc32(rule, self.xver) or 1
            if len(self._xvers) < 4096:
                self._xvers[rule] = found
                self._handed_out.add(found)
        return found

    def is_current(self, xver: int, name: bytes, st: os.stat_result) -> bool:
        """Whether a content tier recorded at ``xver`` for a file still called ``name``
        (and of the same size and kind) is what these transducers would give it.  A
        version this extractor already handed out is current without asking the
        transducers again: a rename re-derives it (``xver_for``), so it cannot be another
        name's (the unchanged files of a rescan pay one dictionary look-up)."""
        return xver in self._handed_out or xver == self.xver_for(name, st)

    def stat_keys(self, name: bytes, st: os.stat_result) -> Outcome:
        if not self._stat_pure or not valid_value(name):
            return self._stat_keys(name, st)
        rule = (ext_of(name), st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns // _NS_PER_DAY,
                stat.S_IFMT(st.st_mode))
        now = time.monotonic()
        if now - self._stat_rules_since > STAT_RULES_TTL or len(self._stat_rules) >= MAX_STAT_RULES:
            self._stat_rules.clear()
            self._stat_rules_since = now
        name_key = b"name\0" + name
        rest = self._stat_rules.get(rule)
        if rest is None:
            out = self._stat_keys(name, st)
            if out.failures or name_key not in out.keys:
                return out
            self._stat_rules[rule] = out.keys - {name_key}
            return out
        return Outcome(rest | {name_key}, [])

    def _stat_keys(self, name: bytes, st: os.stat_result) -> Outcome:
        out = self._run([t for t in self.stat_tier if self._applies(t, name, st)], name, st, None)
        # the exact size, ordered, for size ranges, and "no ext" for ext:/!VALUE (hidden keys:
        # no field directory shows them)
        hidden = {size_key(st.st_size)}
        if self.stat_tier and not any(k.startswith(b"ext\0") for k in out.keys):
            hidden.add(NO_EXT_KEY)
        return Outcome(out.keys | hidden, out.failures)

    def content_keys(self, dir_fd: int, name: bytes, st: os.stat_result,
                     only: Sequence[Transducer] | None = None) -> tuple[Outcome, int] | None:
        """The content tier of entry ``name`` and its generation; None when the entry is no
        longer the inode ``st`` describes (it changed again: that change will be noted).
        ``only``: what these content-tier transducers give (one pass of a first index)."""
        if only is None and self._pure:
            todo = self._applying(name, st)[0]  # (remembered per extension, kind and size: no ``applies`` asked)
        else:
            todo = [t for t in (self.content_tier if only is None else only) if self._applies(t, name, st)]
        if not todo:
            return NOTHING, 0
        if not stat.S_ISREG(st.st_mode):
            return self._run(todo, name, st, None), 0
        if st.st_size == 0:
            known = self.empty_content(name, st, todo)
            if known is not None:
                return known, 0  # generation unknown: a later ctime-only change re-derives it
        try:
            f = open_regular(dir_fd, name, st.st_ino)
        except OSError as exc:
            return Outcome(EMPTY, [("read", f"{exc.strerror or exc}")]), 0
        if f is None:
            return None
        try:
            try:
                gen = f.generation()
            except OSError:
                gen = 0
            return self._run(todo, name, st, Content(f, self.sniffer)), gen
        finally:
            f.close()

    def empty_content(self, name: bytes, st: os.stat_result,
                      todo: list[Transducer] | None = None) -> Outcome | None:
        """The content tier of an empty regular file ``name`` without reading it, when only
        built-in transducers apply (their output is a function of the extension and of the
        content alone); None when another transducer must see the file."""
        if todo is None:
            todo = self._applying(name, st)[0]
        if not all(type(t).__module__ in _PURE_MODULES for t in todo):
            return None
        key = (ext_of(name), tuple(t.name for t in todo))
        found = self._empty.get(key)
        if found is None:
            found = self._run(todo, name, st, Content(OpenFile(-1, st), self.sniffer))
            if len(self._empty) < MAX_EMPTY_RULES:
                self._empty[key] = found
        return Outcome(found.keys, list(found.failures))

    def empty_known(self, name: bytes, st: os.stat_result) -> bool:
        """Whether ``empty_content`` answers for an empty file ``name`` without reading it
        (only built-in transducers apply), without building its answer: a rename's
        ``_same_content`` asks only that."""
        return all(type(t).__module__ in _PURE_MODULES for t in self._applying(name, st)[0])

    def created_keys(self, name: bytes, st: os.stat_result
                     ) -> tuple[frozenset[bytes], bytes, frozenset[bytes], int] | None:
        """A new empty regular file's stat tier (the memo's keys shared with its kind, and
        its name key apart), content tier and ``xver_for``, from the two memos alone
        (``stat_keys``'s rules, ``empty_new``'s): one extension and one clock read for both,
        no set or ``Outcome`` built per file (the index work of a CREATE, per new file;
        ``Writer.add_created`` encodes the shared part once).  None when a memo cannot
        answer, or an answer has failures: ``stat_keys`` and ``empty_new`` then answer (and
        fill the memos)."""
        if not self._stat_pure or not self._pure or not valid_value(name):
            return None
        ext = ext_of(name)
        empty = self._empty_new.get(ext)
        if empty is None or empty[0].failures:
            return None
        if time.monotonic() - self._stat_rules_since > STAT_RULES_TTL:
            return None  # (``stat_keys`` starts the rules again)
        rest = self._stat_rules.get((ext, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns // _NS_PER_DAY,
                                     stat.S_IFMT(st.st_mode)))
        if rest is None:
            return None
        return rest, b"name\0" + name, empty[0].keys, empty[1]

    def empty_new(self, name: bytes, st: os.stat_result) -> tuple[Outcome, int] | None:
        """``empty_content`` of a new empty file and its ``xver_for``, asking each
        transducer whether it applies once instead of twice (a CREATE's index work)."""
        ext = ext_of(name)
        known = self._empty_new.get(ext) if self._pure else None
        if known is not None:
            return Outcome(known[0].keys, list(known[0].failures)), known[1]
        todo = [t for t in self.content_tier if self._applies(t, name, st)]
        found = self.empty_content(name, st, todo)
        if found is None:
            return None
        xver = self._xver_of(name, todo)
        if self._pure and len(self._empty_new) < MAX_EMPTY_RULES:
            self._empty_new[ext] = (found, xver)
        return found, xver

    def any_applies(self, transducers: Sequence[Transducer], name: bytes, st: os.stat_result) -> bool:
        return any(self._applies(t, name, st) for t in transducers)

    @staticmethod
    def _applies(t: Transducer, name: bytes, st: os.stat_result) -> bool:
        try:
            return bool(t.applies(name, st))
        except Exception:
            return True  # let extract() fail visibly rather than skip silently

    def _run(self, todo: list[Transducer], name: bytes, st: os.stat_result, content: Content | None) -> Outcome:
        keys: list[bytes] = []
        failures: list[tuple[str, str]] = []
        good = self._good_fields
        for t in todo:
            mine: list[bytes] = []
            bad = 0
            declared = self._declared.get(t.name, ALL)
            try:
                for field, value in t.extract(name, st, content):
                    if ((field in good or self._check_field(field)) and type(value) is bytes and valid_value(value)
                            and (declared is ALL or field in declared)):
                        mine.append(field + b"\0" + value)
                        if len(mine) > MAX_PAIRS:
                            raise ValueError(f"more than {MAX_PAIRS} pairs")
                    else:
                        bad += 1
            except Exception as exc:
                failures.append((t.name, f"{type(exc).__name__}: {exc}"))
                continue
            if bad:
                failures.append((t.name, f"{bad} malformed (field, value) pairs dropped"))
            keys.extend(mine)
        return Outcome(frozenset(keys), failures)

    def _check_field(self, field: bytes) -> bool:
        if type(field) is bytes and valid_field(field):
            self._good_fields.add(field)
            return True
        return False
