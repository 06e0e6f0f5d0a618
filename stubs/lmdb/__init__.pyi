# lmdb's own hints type every value read as ``bytes | memoryview``; pysfsd never opens an
# environment with buffers=True, so values are bytes, and those hints would only add casts
# or copies on hot paths.  mypy reads this stub instead (pyproject.toml: mypy_path): every
# name of lmdb is Any.
from typing import Any

def __getattr__(name: str) -> Any: ...
