"""LocalFS: handles and parents stay right when the tree changes behind the server's back."""
import os

import pytest

from nfsd.errors import NfsError
from nfsd.localfs import LocalFS
from nfsd.store import Store
from protocol.nfs3 import nfsstat3


@pytest.fixture
def fs(tmp_path):
    (tmp_path / "exp" / "a" / "b" / "c").mkdir(parents=True)
    (tmp_path / "exp" / "x").mkdir()
    store = Store(str(tmp_path / "state"))
    f = LocalFS(str(tmp_path / "exp"), 1, store)
    yield f
    f.close()
    store.close()


def test_parent_learnt_after_move_behind_our_back(fs, tmp_path):
    c = fs.lookup(fs.lookup(fs.lookup(fs.root, b"a"), b"b"), b"c")
    os.rename(tmp_path / "exp" / "a" / "b", tmp_path / "exp" / "x" / "newb")
    parent = fs.parent_of(c)
    assert parent.ino == (tmp_path / "exp" / "x" / "newb").stat().st_ino
    assert fs.store.get_object(1, parent.ino).name == b"newb"
    assert fs.parent_of(parent).ino == (tmp_path / "exp" / "x").stat().st_ino
    assert fs.parent_of(fs.parent_of(parent)) is fs.root


def test_parent_of_directory_moved_out_of_export_is_stale(fs, tmp_path):
    c = fs.lookup(fs.lookup(fs.lookup(fs.root, b"a"), b"b"), b"c")
    os.rename(tmp_path / "exp" / "a", tmp_path / "outside")
    with pytest.raises(NfsError) as err:
        fs.parent_of(c)
    assert err.value.status == nfsstat3.NFS3ERR_STALE


def test_handle_found_again_after_move_and_restart(fs, tmp_path):
    fh = fs.lookup(fs.lookup(fs.lookup(fs.root, b"a"), b"b"), b"c").fh
    os.rename(tmp_path / "exp" / "a", tmp_path / "exp" / "x" / "moved")
    fresh = LocalFS(str(tmp_path / "exp"), 1, fs.store)  # a restart: nothing in memory
    node = fresh.node(fh)
    assert node.ino == (tmp_path / "exp" / "x" / "moved" / "b" / "c").stat().st_ino
    assert fresh.store.get_object(1, node.ino).name == b"c"
