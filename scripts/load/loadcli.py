"""What every load script shares at start: import paths and an argument parser.

Importing this module puts the repository (``protocol``, ``xdr``, ``tests``) and
``scripts/benchmarks/load_generator`` (the load generator's ``driver``, ``workload``, ``servers``...) on
``sys.path``: ``scripts/`` is not a package, and the load scripts reuse those modules rather
than copying them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _path in (REPO / "scripts" / "benchmarks" / "load_generator", REPO):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def doc_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose description is the script docstring's first paragraph and whose
    epilog is the rest (the usage examples)."""
    head, _, rest = doc.partition("\n\n")
    return argparse.ArgumentParser(description=head, epilog=rest,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
