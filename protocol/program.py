"""What an ONC RPC program is: numbered procedures with argument and result XDR types."""
from __future__ import annotations

from dataclasses import dataclass, field

from xdr import XdrType


@dataclass(frozen=True)
class Procedure:
    number: int
    name: str
    args: XdrType
    res: XdrType
    #: Replays of a non-idempotent call must come from the duplicate-request cache.
    idempotent: bool = True


@dataclass(frozen=True)
class Program:
    number: int
    version: int
    name: str
    procedures: dict[int, Procedure] = field(default_factory=dict)

    @staticmethod
    def of(number: int, version: int, name: str, procs: list[Procedure]) -> "Program":
        return Program(number, version, name, {p.number: p for p in procs})
