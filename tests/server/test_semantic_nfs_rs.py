"""The lab scenario and a Gifford query through nfs-rs, a client nobody here wrote: the
query directories are reached by ordinary paths, in the export root and in a subdirectory."""
from __future__ import annotations

import pytest

nfs_rs = pytest.importorskip("nfs_rs")


@pytest.fixture
def nfs(server):
    (server.export / "src").mkdir()
    for name, text in (("a.c", "int a;\n"), ("b.c", "int b;\n"), ("util.h", "int u;\n")):
        (server.export / "src" / name).write_text(text)
    (server.export / "top.c").write_text("int top;\n")
    (server.export / "notes.txt").write_text("notes\n")
    server.restart()
    client = nfs_rs.Client.connect(server.url(), connect_timeout=10, operation_timeout=60)
    try:
        yield client
    finally:
        client.close()


def names(nfs, path: str) -> set[str]:
    return set(nfs.listdir(path)) - {".", ".."}


@pytest.mark.parametrize("d", ["src", "."])
def test_lab_scenario(server, nfs, d):
    view = f"{d}/:extension=.c"
    real = server.export / d
    expected = {p.name for p in real.iterdir() if p.name.endswith(".c")}
    assert names(nfs, view) == expected
    victim = sorted(expected)[0]
    # write then read a file through the view: the real file changes
    with nfs.open(f"{view}/{victim}", "wb") as f:
        f.write(b"/* via the view */\n")
    assert (real / victim).read_bytes() == b"/* via the view */\n"
    with nfs.open(f"{view}/{victim}", "rb") as f:
        assert f.read() == b"/* via the view */\n"
    # create through it: appears in the real directory
    with nfs.open(f"{view}/made.c", "wb") as f:
        f.write(b"int made;\n")
    assert (real / "made.c").read_bytes() == b"int made;\n"
    # rename through it: renamed in the real directory
    nfs.rename(f"{view}/made.c", f"{view}/moved.c")
    assert (real / "moved.c").exists() and not (real / "made.c").exists()
    # remove through it: gone from the real directory
    nfs.remove(f"{view}/moved.c")
    assert not (real / "moved.c").exists()
    # files with other endings never show
    assert all(n.endswith(".c") for n in names(nfs, view))
    assert ":extension=.c" not in names(nfs, d)


def test_value_directory_links_resolve_through_nfs_rs(server, nfs):
    links = names(nfs, "ext:/c")
    assert links == {"a.c", "b.c", "top.c"}
    assert nfs.readlink("ext:/c/a.c") == "../../src/a.c"
    with nfs.open("src/ext:/c/../../a.c", "rb") as f:  # ".." of a value dir climbs to its scope
        assert f.read() == b"int a;\n"
