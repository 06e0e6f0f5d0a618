"""The generated XDR codec checked against xdrlib3, an independent XDR implementation.

Our codec is generated code with merged ``struct`` layouts, so a slip in one emission path
(padding, flag merging, union arms) would be self-consistent and survive round-trip tests.
An interpreter over the same type tree, built only from xdrlib3's primitives, gives a second
opinion on the wire bytes of every NFSv3, MOUNT v3, portmap and RPC message type.
"""
from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
import xdrlib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import mount3, nfs3, nlm4, nsm, portmap, rpc
from xdr import (Bool, Enum, FixedArray, FixedOpaque, List, Opaque, Optional, Preencoded, String, Struct,
                 Union, VarArray, Void, XdrError, XdrType, boolean, decode, encode, int32, int64,
                 uint32, uint64, void)
from xdr.types import _Int

# --- the oracle: a tree-walking interpreter over xdrlib3 primitives --------------------------

_PACK_INT = {"i": "pack_int", "I": "pack_uint", "q": "pack_hyper", "Q": "pack_uhyper"}
_UNPACK_INT = {"i": "unpack_int", "I": "unpack_uint", "q": "unpack_hyper", "Q": "unpack_uhyper"}
_INT_RANGE = {"i": (-(1 << 31), (1 << 31) - 1), "I": (0, (1 << 32) - 1),
              "q": (-(1 << 63), (1 << 63) - 1), "Q": (0, (1 << 64) - 1)}


class OracleError(Exception):
    """The oracle found a value or encoding that is not valid for the type."""


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise OracleError(what)


def oracle_pack(t: XdrType, v: Any, p: xdrlib3.Packer) -> None:
    """Pack ``v`` as ``t`` with xdrlib3, validating it on the way (to catch bad strategies)."""
    if isinstance(t, Preencoded):
        return oracle_pack(t.inner, v, p)
    if isinstance(t, Enum):
        _require(v in t.allowed, f"{v!r} not in {t.name}")
        p.pack_enum(v)
    elif isinstance(t, _Int):
        assert t.fmt is not None
        lo, hi = _INT_RANGE[t.fmt]
        _require(lo <= v <= hi, f"{v!r} out of range for {t.name}")
        getattr(p, _PACK_INT[t.fmt])(v)
    elif isinstance(t, Bool):
        _require(isinstance(v, bool), f"{v!r} is not a bool")
        p.pack_bool(v)
    elif isinstance(t, Void):
        _require(v is None, "void value must be None")
    elif isinstance(t, Opaque):
        _require(t.max_len is None or len(v) <= t.max_len, f"{t.name} too long")
        p.pack_opaque(bytes(v))
    elif isinstance(t, FixedOpaque):
        _require(len(v) == t.size, f"{t.name} must be {t.size} bytes")
        p.pack_fopaque(t.size, bytes(v))
    elif isinstance(t, Optional):
        p.pack_bool(v is not None)
        if v is not None:
            oracle_pack(t.inner, v, p)
    elif isinstance(t, Struct):
        _require(len(v) == len(t.fields), f"{t.name}: wrong field count")
        for (_, ft), fv in zip(t.fields, v):
            oracle_pack(ft, fv, p)
    elif isinstance(t, Union):
        d, arm = v
        arm_t = t.arm_type(d)
        _require(arm_t is not None, f"{t.name}: no arm for {d!r}")
        assert arm_t is not None
        oracle_pack(t.disc, d, p)
        oracle_pack(arm_t, arm, p)
    elif isinstance(t, VarArray):
        _require(t.max_len is None or len(v) <= t.max_len, f"{t.name} too long")
        p.pack_array(v, lambda e: oracle_pack(t.inner, e, p))
    elif isinstance(t, FixedArray):
        p.pack_farray(t.size, v, lambda e: oracle_pack(t.inner, e, p))
    elif isinstance(t, List):
        p.pack_list(v, lambda e: oracle_pack(t.inner, e, p))
    else:
        raise TypeError(f"oracle does not know {t!r}")


def oracle_unpack(t: XdrType, u: xdrlib3.Unpacker) -> Any:
    """Unpack one ``t`` with xdrlib3, as strictly as RFC 4506 asks."""
    if isinstance(t, Preencoded):
        return oracle_unpack(t.inner, u)
    if isinstance(t, Enum):
        v = u.unpack_enum()
        _require(v in t.allowed, f"{v} not in {t.name}")
        return v
    if isinstance(t, _Int):
        assert t.fmt is not None
        return getattr(u, _UNPACK_INT[t.fmt])()
    if isinstance(t, Bool):
        v = u.unpack_uint()  # xdrlib3's unpack_bool accepts any non-zero value
        _require(v in (0, 1), f"bool value {v}")
        return v == 1
    if isinstance(t, Void):
        return None
    if isinstance(t, Opaque):
        data = u.unpack_opaque()
        _require(t.max_len is None or len(data) <= t.max_len, f"{t.name} too long")
        return data
    if isinstance(t, FixedOpaque):
        return u.unpack_fopaque(t.size)
    if isinstance(t, Optional):
        flag = u.unpack_uint()
        _require(flag in (0, 1), f"optional flag {flag}")
        return oracle_unpack(t.inner, u) if flag else None
    if isinstance(t, Struct):
        return t.cls(*(oracle_unpack(ft, u) for _, ft in t.fields))
    if isinstance(t, Union):
        d = oracle_unpack(t.disc, u)
        arm_t = t.arm_type(d)
        _require(arm_t is not None, f"{t.name}: no arm for {d}")
        assert arm_t is not None
        return (d, oracle_unpack(arm_t, u))
    if isinstance(t, VarArray):
        items = u.unpack_array(lambda: oracle_unpack(t.inner, u))
        _require(t.max_len is None or len(items) <= t.max_len, f"{t.name} too long")
        return items
    if isinstance(t, FixedArray):
        return u.unpack_farray(t.size, lambda: oracle_unpack(t.inner, u))
    if isinstance(t, List):
        return u.unpack_list(lambda: oracle_unpack(t.inner, u))
    raise TypeError(f"oracle does not know {t!r}")


def oracle_encode(t: XdrType, v: Any) -> bytes:
    p = xdrlib3.Packer()
    oracle_pack(t, v, p)
    return p.get_buffer()


def oracle_decode(t: XdrType, data: bytes) -> Any:
    u = xdrlib3.Unpacker(data)
    v = oracle_unpack(t, u)
    u.done()
    return v


# --- valid values of any type, as hypothesis strategies ---------------------------------------

MAX_BYTES = 9   # every padding case, and names/handles as short as real ones can be
MAX_ITEMS = 3   # lists and arrays: enough to see linking and counting, keeps examples fast
_strategies: dict[int, st.SearchStrategy[Any]] = {}


def values(t: XdrType) -> st.SearchStrategy[Any]:
    """Valid values of ``t``, small but reaching every arm, bound and integer extreme."""
    s = _strategies.get(id(t))
    if s is None:
        s = _strategies[id(t)] = _values(t)
    return s


def _values(t: XdrType) -> st.SearchStrategy[Any]:
    if isinstance(t, Preencoded):
        return values(t.inner)
    if isinstance(t, Enum):
        return st.sampled_from(sorted(t.allowed))
    if isinstance(t, _Int):
        assert t.fmt is not None
        return st.integers(*_INT_RANGE[t.fmt])
    if isinstance(t, Bool):
        return st.booleans()
    if isinstance(t, Void):
        return st.none()
    if isinstance(t, Opaque):
        return st.binary(max_size=min(MAX_BYTES, t.max_len if t.max_len is not None else MAX_BYTES))
    if isinstance(t, FixedOpaque):
        return st.binary(min_size=t.size, max_size=t.size)
    if isinstance(t, Optional):
        return st.none() | values(t.inner)
    if isinstance(t, Struct):
        return st.builds(t.cls, *(values(ft) for _, ft in t.fields))
    if isinstance(t, Union):
        return st.one_of(*_union_arms(t))
    if isinstance(t, VarArray):
        return st.lists(values(t.inner), max_size=min(MAX_ITEMS, t.max_len if t.max_len is not None else MAX_ITEMS))
    if isinstance(t, FixedArray):
        return st.lists(values(t.inner), min_size=t.size, max_size=t.size)
    if isinstance(t, List):
        return st.lists(values(t.inner), max_size=MAX_ITEMS)
    raise TypeError(f"no strategy for {t!r}")


def _union_arms(t: Union) -> list[st.SearchStrategy[Any]]:
    arms = [st.tuples(st.just(case), values(arm)) for case, arm in t.arms.items()]
    if t.default is not None:
        if isinstance(t.disc, Enum):
            others = sorted(t.disc.allowed - set(t.arms))
            if others:
                arms.append(st.tuples(st.sampled_from(others), values(t.default)))
        else:
            arms.append(st.tuples(values(t.disc).filter(lambda d: d not in t.arms), values(t.default)))
    return arms


# --- the types under test -----------------------------------------------------------------------

# Shapes the protocols do not use but the codec supports: signed and fixed arrays, odd-sized
# fixed opaque, unions on a plain int or a bool, lists of structs holding optionals.
_point = Struct("point", [("x", int32), ("y", int64)])
kitchen_sink = Struct("kitchen_sink", [
    ("fixed_ints", FixedArray(int32, 3)),
    ("fixed_points", FixedArray(_point, 2)),
    ("fixed_names", FixedArray(String(5), 2)),
    ("odd", FixedOpaque(5)),
    ("maybe_names", Optional(VarArray(String(), 3))),
    ("by_number", Union("by_number", uint32, {1: int64, 2: String(4)}, default=boolean)),
    ("by_flag", Union("by_flag", boolean, {True: _point, False: void})),
    ("points", VarArray(_point)),
    ("pairs", List(Struct("pair", [("k", String(3)), ("v", Optional(_point))]))),
    ("u", uint64),
    ("tail", FixedOpaque(3)),
])


def _types_under_test() -> dict[str, XdrType]:
    """Every argument and result type of every procedure, named by the first user."""
    found: dict[str, XdrType] = {}
    seen: set[int] = set()

    def add(name: str, t: XdrType) -> None:
        if id(t) not in seen:
            seen.add(id(t))
            found[name] = t

    for prog in (nfs3.NFS3, mount3.MOUNT3, portmap.PORTMAP2, nlm4.NLM4, nsm.SM):
        for proc in prog.procedures.values():
            add(f"{prog.name}.{proc.name}.args", proc.args)
            add(f"{prog.name}.{proc.name}.res", proc.res)
    add("rpc_msg", rpc.rpc_msg)
    add("authsys_parms", rpc.authsys_parms)
    add("kitchen_sink", kitchen_sink)
    return found


TYPES = _types_under_test()
all_types = pytest.mark.parametrize("t", list(TYPES.values()), ids=list(TYPES))
props = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- properties ---------------------------------------------------------------------------------

def test_every_procedure_is_covered() -> None:
    """Guards the parametrization: a new procedure must not slip past the oracle."""
    assert len(nfs3.NFS3.procedures) == 22
    for prog in (nfs3.NFS3, mount3.MOUNT3, portmap.PORTMAP2, nlm4.NLM4, nsm.SM):
        for proc in prog.procedures.values():
            assert any(proc.args is t for t in TYPES.values())
            assert any(proc.res is t for t in TYPES.values())


@all_types
@props
@given(data=st.data())
def test_encode_matches_oracle(t: XdrType, data: st.DataObject) -> None:
    v = data.draw(values(t))
    assert encode(t, v) == oracle_encode(t, v)


@all_types
@props
@given(data=st.data())
def test_decode_of_oracle_bytes(t: XdrType, data: st.DataObject) -> None:
    v = data.draw(values(t))
    assert decode(t, oracle_encode(t, v)) == v


@all_types
@props
@given(data=st.data())
def test_oracle_decodes_our_bytes(t: XdrType, data: st.DataObject) -> None:
    v = data.draw(values(t))
    assert oracle_decode(t, encode(t, v)) == v


@all_types
@props
@given(data=st.data())
def test_round_trip(t: XdrType, data: st.DataObject) -> None:
    v = data.draw(values(t))
    wire = encode(t, v)
    assert decode(t, wire) == v
    assert t.unpack(memoryview(wire), 0) == (v, len(wire))


@all_types
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_truncation_is_an_xdr_error(t: XdrType, data: st.DataObject) -> None:
    """XDR is self-delimiting: no proper prefix decodes, and none escapes as another error."""
    encoded = encode(t, data.draw(values(t)))
    for n in range(len(encoded)):
        with pytest.raises(XdrError):
            t.unpack(encoded[:n], 0)
        with pytest.raises(XdrError):
            decode(t, encoded[:n])


# --- targeted malformed inputs ------------------------------------------------------------------

def u32(*xs: int) -> bytes:
    p = xdrlib3.Packer()
    for x in xs:
        p.pack_uint(x)
    return p.get_buffer()


def _fattr3_words(ftype: int) -> bytes:
    return u32(ftype, 0o644, 1, 0, 0) + bytes(16) + u32(0, 0) + bytes(16) + bytes(24)


def test_fattr3_words_helper_is_valid() -> None:
    assert decode(nfs3.fattr3, _fattr3_words(1)).type == nfs3.ftype3.NF3REG


@pytest.mark.parametrize("t, data", [
    (nfs3.ftype3, u32(0)),
    (nfs3.ftype3, u32(0xFFFFFFFF)),                       # -1 as a signed enum
    (nfs3.fattr3, _fattr3_words(8)),                      # merged into one struct layout
    (nfs3.post_op_attr, u32(1) + _fattr3_words(99)),      # merged with the optional flag
    (nfs3.GETATTR3res, u32(99999)),                       # default arm: not an nfsstat3
    (rpc.rpc_msg, u32(1, 2)),                             # union without default
    (nfs3.WRITE3args, u32(4, 0, 0, 0, 0, 5, 0)),          # stable_how 5
], ids=["ftype3-0", "ftype3-neg", "fattr3", "post_op_attr", "union-default", "msg_type", "stable_how"])
def test_bad_enum_value(t: XdrType, data: bytes) -> None:
    with pytest.raises(XdrError):
        decode(t, data)


@pytest.mark.parametrize("t, data", [
    (boolean, u32(2)),
    (nfs3.READ3res, u32(0, 0, 0, 2, 0)),                  # eof = 2
    (nfs3.PATHCONF3res, u32(0, 0, 1, 1, 1, 1, 1, 0xFFFFFFFF)),
])
def test_bool_out_of_range(t: XdrType, data: bytes) -> None:
    with pytest.raises(XdrError):
        decode(t, data)


@pytest.mark.parametrize("t, data", [
    (nfs3.post_op_attr, u32(2) + _fattr3_words(1)),      # flag merged into the fattr3 layout
    (nfs3.post_op_fh3, u32(2, 0)),                        # flag before a variable-size inner
    (nfs3.set_mode3, u32(2, 0)),
    (nfs3.dirlist3, u32(2)),                              # list continuation flag
    (mount3.exports, u32(1, 0, 3)),                       # inner list's flag
])
def test_optional_flag_out_of_range(t: XdrType, data: bytes) -> None:
    with pytest.raises(XdrError):
        decode(t, data)


@pytest.mark.parametrize("t, data", [
    (Opaque(), u32(1000) + b"abcd"),
    (Opaque(), u32(0xFFFFFFFF) + b"abcd"),
    (nfs3.filename3, u32(5) + b"abcde"),                  # data present, padding missing
    (FixedOpaque(5), b"abcde"),                           # same for fixed-size opaque
    (nfs3.nfs_fh3, u32(65) + bytes(68)),                  # beyond NFS3_FHSIZE, data present
    (rpc.opaque_auth, u32(1, 401) + bytes(404)),          # beyond MAX_AUTH_BYTES
])
def test_opaque_length_beyond_data_or_bound(t: XdrType, data: bytes) -> None:
    with pytest.raises(XdrError):
        decode(t, data)
    with pytest.raises(XdrError):
        t.unpack(data, 0)


@pytest.mark.parametrize("t", [VarArray(uint32), VarArray(nfs3.fattr3), mount3.mountres3_ok],
                         ids=["uint32<>", "fattr3<>", "auth_flavors"])
def test_huge_array_count_fails_before_allocating(t: XdrType) -> None:
    data = (u32(0) if t is mount3.mountres3_ok else b"") + u32(0xFFFFFFFF) + bytes(64)
    t.compiled()  # code generation allocates; only decoding is measured
    tracemalloc.start()
    try:
        with pytest.raises(XdrError):
            t.unpack(data, 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_array_count_beyond_bound() -> None:
    with pytest.raises(XdrError):
        decode(VarArray(uint32, 2), u32(3, 1, 2, 3))
    seventeen_gids = u32(0, 0, 0, 0, 17) + bytes(68)  # stamp, "", uid, gid, gids<16>
    with pytest.raises(XdrError):
        decode(rpc.authsys_parms, seventeen_gids)
    with pytest.raises(XdrError):
        encode(rpc.authsys_parms, rpc.authsys_parms(0, b"", 0, 0, list(range(17))))


def test_trailing_bytes() -> None:
    data = encode(nfs3.GETATTR3args, nfs3.GETATTR3args(nfs3.nfs_fh3(b"fh")))
    with pytest.raises(XdrError):
        decode(nfs3.GETATTR3args, data + bytes(4))
    with pytest.raises(XdrError):
        decode(void, b"\0")
    assert decode(nfs3.GETATTR3args, data + bytes(4), exact=False) == nfs3.GETATTR3args(nfs3.nfs_fh3(b"fh"))


@pytest.mark.parametrize("t, v", [
    (uint32, -1), (uint32, 1 << 32), (int32, 1 << 31), (uint64, 1 << 64), (int64, -(1 << 63) - 1),
    (nfs3.nfs_fh3, nfs3.nfs_fh3(bytes(65))),
    (nfs3.cookieverf3, bytes(7)),
    (VarArray(uint32, 2), [1, 2, 3]),
    (FixedArray(String(), 2), [b"a"]),
    (rpc.rejected_reply, (7, None)),
])
def test_encode_rejects_invalid_values(t: XdrType, v: Any) -> None:
    with pytest.raises(XdrError):
        encode(t, v)


@pytest.mark.parametrize("t, v", [
    (nfs3.nfs_fh3, nfs3.nfs_fh3(bytes(64))),
    (rpc.opaque_auth, rpc.opaque_auth(1, bytes(range(200)) * 2)),
    (rpc.authsys_parms, rpc.authsys_parms(1, b"h" * 255, 0, 0, list(range(16)))),
    (nfs3.filename3, b"n" * 1000),
], ids=["fh-64", "auth-400", "authsys-max", "unbounded-name"])
def test_values_at_their_bounds(t: XdrType, v: Any) -> None:
    assert encode(t, v) == oracle_encode(t, v)
    assert decode(t, oracle_encode(t, v)) == v


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_preencoded_entries_encode_as_the_values(data: Any) -> None:
    """A listing built from kept entry encodings (List.encode_item, List.encoded: what the
    server's entry cache keeps) is byte for byte the listing built from the values."""
    res = data.draw(values(nfs3.dirlistplus3))
    plain = encode(nfs3.dirlistplus3, res)
    kept = [nfs3.entryplus3_list.encode_item(e) for e in res.entries]
    cut = data.draw(st.integers(0, len(kept)))
    items = kept[:cut] + ([b"".join(kept[cut:])] if kept[cut:] else [])  # a page: one joined run
    pre = nfs3.dirlistplus3.cls(nfs3.entryplus3_list.encoded(items), res.eof)
    assert encode(nfs3.dirlistplus3, pre) == plain
    assert decode(nfs3.dirlistplus3, plain) == res
