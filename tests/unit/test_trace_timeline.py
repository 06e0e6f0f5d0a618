"""scripts/vm/trace_timeline.py reads pysfsd's trace lines (one worker's or several's) into
runs of calls, tells a directory's GETATTR from a file's, and finds the first of a file."""
from __future__ import annotations

import pytest

from tests.vm_support import VM_DIR, load_script

D = "01000001000000000024e02238a57fba"   # a directory (named by READDIRPLUS and REMOVE)
F = "010000010000000000250aa1deadbeef"   # a file in it

LOG = f"""\
2026-12-07 13:46:20,900 pysfsd.trace w0 INFO 127.0.0.1:53034 xid=0x1 NFS3.GETATTR object={{data={D}}} -> NFS3_OK 0.1ms
2026-12-07 13:46:21,152 pysfsd.trace w0 INFO 127.0.0.1:53034 xid=0x2 NFS3.READDIRPLUS dir={{data={D}}} cookie=0 cookieverf=0000000000000000 dircount=65536 maxcount=65536 -> NFS3_OK 41.489ms
2026-12-07 13:46:21,152 pysfsd.trace w0 INFO   sent uid=0 gid=0 gids=[] -> ran as uid=0 gid=0 gids=[] (rule '*')
  args: READDIRPLUS3args {{
2026-12-07 13:46:22,045 pysfsd.trace w0 INFO 127.0.0.1:53034 xid=0x3 NFS3.GETATTR object={{data={D}}} -> NFS3_OK 0.2ms
2026-12-07 13:46:22,085 pysfsd.trace INFO 127.0.0.1:53034 xid=0x4 NFS3.REMOVE object={{dir={{data={D}}} name='n1'}} -> NFS3_OK 0.9ms
2026-12-07 13:46:22,090 pysfsd.trace INFO 127.0.0.1:53034 xid=0x5 NFS3.REMOVE object={{dir={{data={D}}} name='n2'}} -> NFS3_OK 0.9ms
2026-12-07 13:46:24,152 pysfsd.trace w1 INFO 127.0.0.1:53034 xid=0x6 NFS3.GETATTR object={{data={F}}} -> NFS3_OK 0.3ms
2026-12-07 13:46:24,160 pysfsd.trace w1 INFO 127.0.0.1:53034 xid=0x7 NFS3.REMOVE object={{dir={{data={D}}} name='n3'}} -> NFS3_OK 0.9ms
"""


@pytest.fixture(scope="module")
def tt():
    return load_script(VM_DIR / "trace_timeline.py")


def test_runs_and_the_first_getattr_of_a_file(tt) -> None:
    lines = LOG.splitlines(keepends=True)
    cs = tt.calls(lines, "13:46:21,1")  # the GETATTR at 20,900 is before the window
    assert [c.proc for c in cs] == ["READDIRPLUS", "GETATTR", "REMOVE", "REMOVE", "GETATTR", "REMOVE"]
    dirs = tt.directories(lines)
    assert dirs == {D}
    runs = tt.runs(cs, dirs)
    assert [(name, n) for name, n, _ in runs] == [
        ("READDIRPLUS(38a57fba)", 1), ("GETATTR(dir)", 1), ("REMOVE(38a57fba)", 2),
        ("GETATTR(file)", 1), ("REMOVE(38a57fba)", 1)]
    assert runs[3][2] == pytest.approx(3.0)  # seconds after the window's first call
    first = tt.first_file_getattr(cs, dirs)
    assert first == 4 and cs[first].handle == F
