"""What an export holds on disk right now, for ``pysfsd check`` to compare the LMDB state with.

One walk of the export, the way the index reads it (``nfsd.index.fsread``: names resolved
from open directories, never through a symbolic link, not into other file systems mounted
inside): every object's kind, ``lstat`` and the places ``(parent inode, name)`` it has
(several for a hard-linked file).  Generations (``FS_IOC_GETVERSION``) cost an open each, so
they are read only for the objects asked about.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from ..index import fsread

MAX_DEPTH = 4096


@dataclass
class DiskObject:
    kind: int                 # stat.S_IFMT of the mode
    st: os.stat_result
    places: list[tuple[int, bytes]] = field(default_factory=list)


class DiskTree:
    def __init__(self, root: str) -> None:
        self.root_path = os.path.realpath(root)
        self._root_fd = os.open(self.root_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(self._root_fd)
        self.root_ino: int = st.st_ino
        self.dev: int = st.st_dev
        self.objects: dict[int, DiskObject] = {st.st_ino: DiskObject(stat.S_IFDIR, st)}
        self._dir_paths: dict[int, bytes] = {st.st_ino: b""}
        self._gens: dict[int, int | None] = {}
        self._walk()

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> "DiskTree":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _walk(self) -> None:
        """Depth first, one directory open at a time (reopened from the root by path, and
        checked to still be the inode that was listed)."""
        todo = [self.root_ino]
        while todo:
            dino = todo.pop()
            path = self._dir_paths[dino]
            fd = fsread.open_path(self._root_fd, path)
            if fd is None:
                continue
            try:
                if os.fstat(fd).st_ino != dino:
                    continue
                entries = list(fsread.list_dir(fd))
            except OSError:
                continue
            finally:
                os.close(fd)
            for name, st in entries:
                if st.st_dev != self.dev:
                    continue
                obj = self.objects.get(st.st_ino)
                if obj is None:
                    obj = self.objects[st.st_ino] = DiskObject(stat.S_IFMT(st.st_mode), st)
                obj.places.append((dino, name))
                if obj.kind == stat.S_IFDIR and st.st_ino not in self._dir_paths \
                        and path.count(b"/") < MAX_DEPTH:
                    self._dir_paths[st.st_ino] = path + b"/" + name if path else name
                    todo.append(st.st_ino)

    def path_of(self, ino: int) -> bytes | None:
        """A path of the object relative to the export root (its first place)."""
        if ino in self._dir_paths:
            return self._dir_paths[ino]
        obj = self.objects.get(ino)
        if obj is None or not obj.places:
            return None
        parent, name = obj.places[0]
        base = self._dir_paths.get(parent)
        return None if base is None else (base + b"/" + name if base else name)

    def generation(self, ino: int) -> int | None:
        """The inode generation (0 where the file system keeps none, and for objects that
        are neither regular files nor directories, as the server records them); None if
        the object is gone."""
        if ino in self._gens:
            return self._gens[ino]
        obj = self.objects.get(ino)
        gen: int | None = None
        if obj is None:
            gen = None
        elif obj.kind == stat.S_IFDIR:
            path = self._dir_paths.get(ino)
            fd = fsread.open_path(self._root_fd, path) if path is not None else None
            if fd is not None:
                try:
                    gen = fsread.read_generation(fd) if os.fstat(fd).st_ino == ino else None
                except OSError:
                    gen = 0
                finally:
                    os.close(fd)
        elif obj.kind == stat.S_IFREG:
            parent, name = obj.places[0]
            path = self._dir_paths.get(parent)
            fd = fsread.open_path(self._root_fd, path) if path is not None else None
            if fd is not None:
                try:
                    gen = fsread.generation_at(fd, name, ino)
                finally:
                    os.close(fd)
        else:
            gen = 0
        self._gens[ino] = gen
        return gen
