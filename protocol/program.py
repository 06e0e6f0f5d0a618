"""What an ONC RPC program is: numbered procedures with argument and result XDR types."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xdr import Enum, Struct, Union, XdrType


@dataclass(frozen=True)
class Procedure:
    number: int
    name: str
    args: XdrType
    res: XdrType
    #: Replays of a non-idempotent call must come from the duplicate-request cache.
    idempotent: bool = True

    def failure(self, status: int) -> tuple[int, Any] | None:
        """The result for a call that failed with ``status`` before its handler could gather
        anything (a bad or stale handle): for a result switched on a status enum (NFS3's
        ``(nfsstat3, resfail)``, MOUNT's ``mountres3``), that status with its arm's every
        optional value absent.  None for a result that carries no status of its own (NLM,
        NSM, the portmapper build theirs in the handler): the caller answers SYSTEM_ERR."""
        res = self.res
        if not isinstance(res, Union) or not isinstance(res.disc, Enum):
            return None
        return status, _absent(res.arm_type(status))


@dataclass(frozen=True)
class Program:
    number: int
    version: int
    name: str
    procedures: dict[int, Procedure] = field(default_factory=dict)

    @staticmethod
    def of(number: int, version: int, name: str, procs: list[Procedure]) -> "Program":
        return Program(number, version, name, {p.number: p for p in procs})


def _absent(t: XdrType | None) -> Any:
    """A value of ``t`` with every optional part absent (structs of such values)."""
    if isinstance(t, Struct):
        return t.cls(*(_absent(ft) for _, ft in t.fields))
    return None  # an Optional (or anything else a failure arm holds: none today)
