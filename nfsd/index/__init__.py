"""The semantic index: which files hold which (field, value) pairs, kept in LMDB.

``Index`` is the API (``index.py``); the layout of the tables is in ``tables.py``, the
built-in fields and their value formats in ``fields.py``, the transducer interface in
``transducer.py`` and the built-in transducers in ``builtin.py`` and ``csource.py``.
"""
from .fields import BUILTIN_FIELDS
from .index import Index
from .scanner import ScanStats
from .search import FileRef
from .transducers.interface import Content, Transducer

__all__ = ["BUILTIN_FIELDS", "Content", "FileRef", "Index", "ScanStats", "Transducer"]
