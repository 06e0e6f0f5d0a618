"""``pysfsd tag FILE TAG...``, ``pysfsd untag FILE TAG...``, ``pysfsd tags FILE``: tags
without a mount.

They change the file's user attribute (nfsd/fs/tags.py) as the user running them, so the
kernel applies the usual rule (write permission on the file), and a running server sees the
change through inotify (IN_ATTRIB) and shows it in query directories within a second.  On a
file system without user attributes the tags live in the server's state store: tag those
files through the mount instead.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

from ..fs.tags import TagError, change_values, check_value, read_values


def build_parser(command: str) -> argparse.ArgumentParser:
    about = {"tag": "add tags to a file", "untag": "remove tags from a file",
             "tags": "print a file's tags, one a line"}
    p = argparse.ArgumentParser(prog=f"pysfsd {command}", description=about[command])
    p.add_argument("file", help="a regular file")
    if command != "tags":
        p.add_argument("tag", nargs="+", help="a tag: 1 to 255 bytes, no NUL or newline")
    return p


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    args = build_parser(command).parse_args(rest)
    path = args.file
    try:
        if command == "tags":
            st = os.stat(path)
            for value in read_values(path, b"tag", st, None):
                sys.stdout.write(os.fsdecode(value) + "\n")
            return 0
        values = [os.fsencode(t) for t in args.tag]
        for value in values:
            check_value(value)
        if command == "tag":
            change_values(path, b"tag", add=values)
        else:
            change_values(path, b"tag", drop=values)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if isinstance(exc, TagError) and exc.errno == errno.EINVAL:
            why = str(exc.args[1]) if len(exc.args) > 1 else why
        elif exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            why = "this file system keeps no user attributes: tag the file through the mount"
        print(f"pysfsd {command}: {path}: {why}", file=sys.stderr)
        return 1
    return 0
