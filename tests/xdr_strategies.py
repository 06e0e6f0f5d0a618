"""Hypothesis strategies generated from ``xdr`` type objects: valid values of any declared
type, so every procedure's arguments and results can be round-tripped and mutated without a
hand-written generator per type (which would drift from the declarations)."""
from __future__ import annotations

from typing import Any, Mapping

from hypothesis import strategies as st

from xdr import (Bool, Enum, FixedArray, FixedOpaque, List, Opaque, Optional, Preencoded, Struct, Union,
                 VarArray, Void, XdrType)
from xdr.types import _Int

#: Variable-length data and lists are kept short: the decoders' bounds are exercised by
#: forged lengths, not by megabytes of generated data.
MAX_BYTES = 96
MAX_ITEMS = 4

_INT_RANGES = {"i": (-(1 << 31), (1 << 31) - 1), "I": (0, (1 << 32) - 1),
               "q": (-(1 << 63), (1 << 63) - 1), "Q": (0, (1 << 64) - 1)}

Overrides = Mapping[int, st.SearchStrategy[Any]]
_NONE: Overrides = {}
_cache: dict[tuple[int, int], st.SearchStrategy[Any]] = {}


def values_of(t: XdrType, overrides: Overrides = _NONE) -> st.SearchStrategy[Any]:
    """A strategy for valid values of ``t``, in the codec's value model.  ``overrides`` maps
    ``id(type)`` to the strategy to use wherever that type occurs (real file handles, say);
    keep one mapping object per use, it is part of the cache key."""
    key = (id(t), id(overrides))
    if key not in _cache:
        _cache[key] = overrides[id(t)] if id(t) in overrides else _build(t, overrides)
    return _cache[key]


def _build(t: XdrType, ov: Overrides) -> st.SearchStrategy[Any]:
    if isinstance(t, Preencoded):
        return values_of(t.inner, ov)
    if isinstance(t, Void):
        return st.none()
    if isinstance(t, Bool):
        return st.booleans()
    if isinstance(t, Enum):
        return st.sampled_from(sorted(t.allowed))
    if isinstance(t, _Int):
        assert t.fmt is not None
        low, high = _INT_RANGES[t.fmt]
        return st.integers(low, high)
    if isinstance(t, FixedOpaque):
        return st.binary(min_size=t.size, max_size=t.size)
    if isinstance(t, Opaque):
        return st.binary(max_size=min(t.max_len if t.max_len is not None else MAX_BYTES, MAX_BYTES))
    if isinstance(t, Optional):
        return st.none() | values_of(t.inner, ov)
    if isinstance(t, Struct):
        return st.tuples(*(values_of(ft, ov) for _, ft in t.fields)).map(lambda v: t.cls(*v))
    if isinstance(t, Union):
        return _union(t, ov)
    if isinstance(t, VarArray):
        cap = min(t.max_len if t.max_len is not None else MAX_ITEMS, MAX_ITEMS)
        return st.lists(values_of(t.inner, ov), max_size=cap)
    if isinstance(t, FixedArray):
        return st.lists(values_of(t.inner, ov), min_size=t.size, max_size=t.size)
    if isinstance(t, List):
        return st.lists(values_of(t.inner, ov), max_size=MAX_ITEMS)
    raise TypeError(f"no strategy for {t!r} ({type(t).__name__})")


def _union(t: Union, ov: Overrides) -> st.SearchStrategy[Any]:
    arms = [st.tuples(st.just(int(case)), values_of(arm, ov)) for case, arm in t.arms.items()]
    if t.default is not None:
        if isinstance(t.disc, Enum):
            others = sorted(t.disc.allowed - {int(c) for c in t.arms})
            cases = st.sampled_from(others) if others else st.nothing()
        elif isinstance(t.disc, Bool):
            cases = st.sampled_from([d for d in (False, True) if d not in t.arms])
        else:
            low, high = _INT_RANGES[t.disc.fmt]  # type: ignore[index]
            cases = st.integers(low, high).filter(lambda d: d not in t.arms)
        arms.append(st.tuples(cases, values_of(t.default, ov)))
    return st.one_of(arms)

