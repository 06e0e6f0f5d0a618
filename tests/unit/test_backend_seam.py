"""The seam between the NFSv3 handlers and what they serve (nfsd/fs/backend.py): both
backends implement every method the protocol states, and nothing the handlers use is
reached around it."""
from __future__ import annotations

import ast
import inspect

from nfsd.fs import backend
from nfsd.exports import guard as export_guard
from nfsd.exports import rules as exports
from nfsd.nfs3 import service as nfs3_service
from nfsd.fs.localfs import LocalFS, Node
from nfsd.fs.semantic import SemanticFS, VNode


def test_backends_implement_every_method_of_the_protocol() -> None:
    wanted = {n for n, v in vars(backend.Backend).items() if callable(v) and not n.startswith("_")}
    assert wanted >= {"node", "stat", "open_for_writing", "put_verifier", "verifier"}
    for impl in (LocalFS, SemanticFS):
        missing = {n for n in wanted if not callable(getattr(impl, n, None))}
        assert not missing, (impl.__name__, missing)
    assert Node.virtual is False and VNode.virtual is True


def test_handlers_use_no_store_nor_descriptor_behind_the_backend() -> None:
    """No ``fs.store...`` (EXCLUSIVE's verifier is the backend's), no ``io_fd`` (the guard
    asks ``open_for_writing``), no handle-kind test of their own (``node.virtual``)."""
    for module in (nfs3_service, exports, export_guard):
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("io_fd", "get_verifier"), (module.__name__, node.lineno)
                assert not (node.attr == "store" and isinstance(node.value, ast.Name)
                            and node.value.id == "fs"), (module.__name__, node.lineno)
            if isinstance(node, ast.Name):
                assert node.id != "KIND_REAL", (module.__name__, node.lineno)
            if isinstance(node, ast.Constant):
                assert node.value != "io_fd", (module.__name__, node.lineno)
