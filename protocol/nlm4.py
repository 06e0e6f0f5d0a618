"""Network Lock Manager version 4 (program 100021): the lock protocol that goes with NFSv3.

Declared from the Open Group XNFS specification (chapter "Network Lock Manager Protocol",
its NLM version 4 ``.x`` text, as in RFC 1813 appendix II).  Version 4 differs from 1-3 in
64-bit offsets and lengths (``uint64``), a variable-length file handle (``netobj``) and the
extra status codes (STALE_FH, FBIG, FAILED...).  ``l_len == 0`` means "to the end of file".

Procedures 6-15 are the asynchronous variants: a ``*_MSG`` call carries no reply; the
answer travels later as a ``*_RES`` call from the server back to the client's NLM.
"""
from __future__ import annotations

from xdr import Enum, Opaque, String, Struct, Union, boolean, int32, uint64, void

from .program import Procedure, Program

NLM_PROGRAM, NLM_V4 = 100021, 4
LM_MAXSTRLEN = 1024
LM_MAXNAMELEN = LM_MAXSTRLEN + 1
MAXNETOBJ_SZ = 1024

netobj = Opaque(MAXNETOBJ_SZ, "netobj")
nlm4_stats = Enum("nlm4_stats", dict(
    NLM4_GRANTED=0, NLM4_DENIED=1, NLM4_DENIED_NOLOCKS=2, NLM4_BLOCKED=3,
    NLM4_DENIED_GRACE_PERIOD=4, NLM4_DEADLCK=5, NLM4_ROFS=6, NLM4_STALE_FH=7, NLM4_FBIG=8,
    NLM4_FAILED=9,
))
nlm4_holder = Struct("nlm4_holder", [
    ("exclusive", boolean), ("svid", int32), ("oh", netobj), ("l_offset", uint64), ("l_len", uint64),
])
nlm4_testrply = Union("nlm4_testrply", nlm4_stats, {nlm4_stats.NLM4_DENIED: nlm4_holder}, default=void)
nlm4_res = Struct("nlm4_res", [("cookie", netobj), ("stat", nlm4_stats)])  # stat: struct nlm4_stat
nlm4_testres = Struct("nlm4_testres", [("cookie", netobj), ("test_stat", nlm4_testrply)])
nlm4_lock = Struct("nlm4_lock", [
    ("caller_name", String(LM_MAXSTRLEN)), ("fh", netobj), ("oh", netobj), ("svid", int32),
    ("l_offset", uint64), ("l_len", uint64),
])
nlm4_lockargs = Struct("nlm4_lockargs", [
    ("cookie", netobj), ("block", boolean), ("exclusive", boolean), ("alock", nlm4_lock),
    ("reclaim", boolean), ("state", int32),
])
nlm4_cancargs = Struct("nlm4_cancargs", [
    ("cookie", netobj), ("block", boolean), ("exclusive", boolean), ("alock", nlm4_lock),
])
nlm4_testargs = Struct("nlm4_testargs", [("cookie", netobj), ("exclusive", boolean), ("alock", nlm4_lock)])
nlm4_unlockargs = Struct("nlm4_unlockargs", [("cookie", netobj), ("alock", nlm4_lock)])

# DOS share modes (SHARE/UNSHARE): what the opener denies others, and what it wants itself.
fsh4_mode = Enum("fsh4_mode", dict(fsm_DN=0, fsm_DR=1, fsm_DW=2, fsm_DRW=3))
fsh4_access = Enum("fsh4_access", dict(fsa_NONE=0, fsa_R=1, fsa_W=2, fsa_RW=3))
nlm4_share = Struct("nlm4_share", [
    ("caller_name", String(LM_MAXSTRLEN)), ("fh", netobj), ("oh", netobj), ("mode", fsh4_mode),
    ("access", fsh4_access),
])
nlm4_shareargs = Struct("nlm4_shareargs", [("cookie", netobj), ("share", nlm4_share), ("reclaim", boolean)])
nlm4_shareres = Struct("nlm4_shareres", [("cookie", netobj), ("stat", nlm4_stats), ("sequence", int32)])
nlm4_notify = Struct("nlm4_notify", [("name", String(LM_MAXNAMELEN)), ("state", int32)])

NLM4 = Program.of(NLM_PROGRAM, NLM_V4, "NLM4", [
    Procedure(0, "NULL", void, void),
    Procedure(1, "TEST", nlm4_testargs, nlm4_testres),
    Procedure(2, "LOCK", nlm4_lockargs, nlm4_res, idempotent=False),
    Procedure(3, "CANCEL", nlm4_cancargs, nlm4_res, idempotent=False),
    Procedure(4, "UNLOCK", nlm4_unlockargs, nlm4_res, idempotent=False),
    Procedure(5, "GRANTED", nlm4_testargs, nlm4_res, idempotent=False),
    Procedure(6, "TEST_MSG", nlm4_testargs, void),
    Procedure(7, "LOCK_MSG", nlm4_lockargs, void, idempotent=False),
    Procedure(8, "CANCEL_MSG", nlm4_cancargs, void, idempotent=False),
    Procedure(9, "UNLOCK_MSG", nlm4_unlockargs, void, idempotent=False),
    Procedure(10, "GRANTED_MSG", nlm4_testargs, void, idempotent=False),
    Procedure(11, "TEST_RES", nlm4_testres, void),
    Procedure(12, "LOCK_RES", nlm4_res, void),
    Procedure(13, "CANCEL_RES", nlm4_res, void),
    Procedure(14, "UNLOCK_RES", nlm4_res, void),
    Procedure(15, "GRANTED_RES", nlm4_res, void),
    Procedure(20, "SHARE", nlm4_shareargs, nlm4_shareres, idempotent=False),
    Procedure(21, "UNSHARE", nlm4_shareargs, nlm4_shareres, idempotent=False),
    Procedure(22, "NM_LOCK", nlm4_lockargs, nlm4_res, idempotent=False),
    Procedure(23, "FREE_ALL", nlm4_notify, void, idempotent=False),
])

#: Which ``*_RES`` procedure carries the answer to each ``*_MSG`` call.
MSG_REPLY = {"TEST_MSG": 11, "LOCK_MSG": 12, "CANCEL_MSG": 13, "UNLOCK_MSG": 14, "GRANTED_MSG": 15}
