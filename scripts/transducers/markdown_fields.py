#!/usr/bin/env python3
"""A pysfsd user transducer: Markdown -> title, heading, link_host (see README: User transducers).

    pysfsd --export DIR --transducer '*.md=python3 /path/to/markdown_fields.py'
"""
import re
import sys


def emit(field: str, value: str) -> None:
    value = " ".join(value.split())[:200]        # one line, well under 255 bytes
    if value:                                    # "/" and "%" only encoded, as in directory names
        print(f"{field}={value.replace('%', '%25').replace('/', '%2F')}")


text = sys.stdin.buffer.read().decode("utf-8", "replace")
headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)
if headings:
    emit("title", headings[0])
for heading in dict.fromkeys(headings[:100]):
    emit("heading", heading.lower())
for host in dict.fromkeys(re.findall(r"\]\(https?://([^/)\s:]+)", text)[:100]):
    emit("link_host", host.lower())
