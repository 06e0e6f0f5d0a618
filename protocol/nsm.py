"""Network Status Monitor version 1 (program 100024), the XNFS "statd" protocol.

Lock recovery rides on it: each host keeps a state number, odd while up and bumped at
every restart, and on boot sends SM_NOTIFY (its name and new state) to every host that held
or granted it locks.  A lock server needs to *receive* SM_NOTIFY (a client rebooted: drop
its locks) and to *send* it to the clients' statd after its own restart (reclaim now).
"""
from __future__ import annotations

from xdr import Enum, FixedOpaque, String, Struct, int32, void

from .program import Procedure, Program

SM_PROGRAM, SM_VERS = 100024, 1
SM_MAXSTRLEN = 1024

sm_name = Struct("sm_name", [("mon_name", String(SM_MAXSTRLEN))])
res = Enum("res", dict(stat_succ=0, stat_fail=1))
sm_stat_res = Struct("sm_stat_res", [("res_stat", res), ("state", int32)])
sm_stat = Struct("sm_stat", [("state", int32)])
my_id = Struct("my_id", [("my_name", String(SM_MAXSTRLEN)), ("my_prog", int32), ("my_vers", int32),
                         ("my_proc", int32)])
mon_id = Struct("mon_id", [("mon_name", String(SM_MAXSTRLEN)), ("my_id", my_id)])
mon = Struct("mon", [("mon_id", mon_id), ("priv", FixedOpaque(16, "priv"))])
stat_chge = Struct("stat_chge", [("mon_name", String(SM_MAXSTRLEN)), ("state", int32)])

SM = Program.of(SM_PROGRAM, SM_VERS, "NSM", [
    Procedure(0, "NULL", void, void),
    Procedure(1, "STAT", sm_name, sm_stat_res),
    Procedure(2, "MON", mon, sm_stat_res, idempotent=False),
    Procedure(3, "UNMON", mon_id, sm_stat, idempotent=False),
    Procedure(4, "UNMON_ALL", my_id, sm_stat, idempotent=False),
    Procedure(5, "SIMU_CRASH", void, void, idempotent=False),
    Procedure(6, "NOTIFY", stat_chge, void, idempotent=False),
])
