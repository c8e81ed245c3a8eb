"""Orders as canonical JSON and back (the order store's ``record`` column, a moderator's copy of a case).

The JSON follows the dataclasses of ``models.py`` field by field: objects for
records, arrays for tuples, strings for enums, integers for ``Sats``.
Canonical bytes as everywhere in pasar: sorted keys, no spaces, UTF-8 kept.
Decoding is driven by the dataclasses' type hints, so a field added to a
model (always with a default) is encoded and decoded with no change here, and
a record written before the field existed decodes to its default.
``order_from_json(order_to_json(o)) == o`` for every order.

Decoding trusts nothing: a record from another node (a moderator receives
one) or a damaged row raises ``BadRequest`` naming the field, never a bare
``KeyError``/``TypeError``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from enum import Enum
from functools import cache
from typing import Any, TypeVar

from ..core.errors import BadRequest
from .models import Order

T = TypeVar("T")
_NONE = type(None)


def canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def to_plain(value: object) -> object:
    """``value`` (a record of models.py, or any part of one) as plain JSON data."""
    kind = type(value)
    if kind is str or kind is int or value is None:
        return value
    names = _field_names(kind) if dataclasses.is_dataclass(kind) else None
    if names is not None:
        return {name: to_plain(getattr(value, name)) for name in names}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, str | int | float):
        return value
    raise TypeError(f"cannot encode {kind.__name__} in an order record")


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def order_to_json(order: Order) -> str:
    return canonical(to_plain(order))


def order_from_json(text: str | bytes) -> Order:
    """The order encoded in ``text``; ``BadRequest`` naming the field when it is not one."""
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"an order record is not JSON ({exc})") from exc
    return from_plain(Order, raw)


def from_plain(cls: type[T], raw: object, path: str = "order") -> T:
    """The record of type ``cls`` (a dataclass of models.py) from plain JSON data."""
    try:
        return typing.cast(T, _fast(cls)(raw))
    except (_Mismatch, KeyError, TypeError, ValueError):
        pass  # decode again, slowly, for the message naming the field
    return typing.cast(T, _decode(cls, raw, path))


# -- the fast decoders: compiled once per type, no paths; any mismatch -> the careful decoder below --
class _Mismatch(Exception):
    pass


Fast = Callable[[object], object]


_FAST: dict[object, Fast] = {}


def _fast(tp: Any) -> Fast:
    found = _FAST.get(tp)
    if found is None:
        found = _FAST[tp] = _compile(tp)
    return found


def _compile(tp: Any) -> Fast:
    supertype = getattr(tp, "__supertype__", None)
    if supertype is not None:
        return _fast(supertype)
    origin = typing.get_origin(tp)
    if origin is types.UnionType or origin is typing.Union:
        real = [o for o in typing.get_args(tp) if o is not _NONE]
        if len(real) != 1:
            raise TypeError(f"only X | None unions are supported, not {tp!r}")
        inner = _fast(real[0])
        return lambda raw: None if raw is None else inner(raw)
    if origin is tuple:
        return _fast_tuple(typing.get_args(tp))
    if origin is dict:
        key, value = (_fast(a) for a in typing.get_args(tp))
        return lambda raw: {key(k): value(v) for k, v in _of(raw, dict).items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _fast_record(tp)
    if isinstance(tp, type) and issubclass(tp, Enum):
        members = {m.value: m for m in tp}
        return lambda raw: members[_of(raw, str)]
    if tp in (bool, int, str, _NONE):
        exact: type = tp
        return lambda raw: _of(raw, exact)
    raise TypeError(f"no decoder for {tp!r}")  # a model field of a new kind: extend this module


def _of(raw: Any, kind: type) -> Any:
    if type(raw) is not kind:
        raise _Mismatch
    return raw


def _fast_tuple(args: tuple[Any, ...]) -> Fast:
    if len(args) == 2 and args[1] is Ellipsis:
        each = _fast(args[0])
        return lambda raw: tuple([each(v) for v in _of(raw, list)])
    parts = [_fast(a) for a in args]

    def fixed(raw: object) -> object:
        items = _of(raw, list)
        if len(items) != len(parts):
            raise _Mismatch
        return tuple([part(v) for part, v in zip(parts, items, strict=True)])

    return fixed


def _fast_record(cls: type) -> Fast:
    hints = _hints(cls)
    fields = [
        (f.name, _fast(hints[f.name]), f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        for f in dataclasses.fields(cls)
    ]
    names = frozenset(name for name, _, _ in fields)

    def record(raw: object) -> object:
        data = _of(raw, dict)
        if not data.keys() <= names:
            raise _Mismatch
        values: dict[str, object] = {}
        for name, decode, required in fields:
            if name in data:
                values[name] = decode(data[name])
            elif required:
                raise _Mismatch
        return cls(**values)

    return record


# -- the careful decoder: names the field that is wrong ---------------------------------------------


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _bad(path: str, wanted: str, raw: object) -> BadRequest:
    return BadRequest(f"{path}: expected {wanted}, got {type(raw).__name__} {str(raw)[:40]!r}")


def _decode(tp: Any, raw: object, path: str) -> object:
    supertype = getattr(tp, "__supertype__", None)  # a NewType such as Sats
    if supertype is not None:
        return _decode(supertype, raw, path)
    origin = typing.get_origin(tp)
    if origin is types.UnionType or origin is typing.Union:
        return _union(typing.get_args(tp), raw, path)
    if origin is tuple:
        return _tuple(typing.get_args(tp), raw, path)
    if origin is dict:
        return _dict(typing.get_args(tp), raw, path)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _record(tp, raw, path)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(raw)
        except ValueError as exc:
            raise _bad(path, f"one of {', '.join(str(m.value) for m in tp)}", raw) from exc
    return _scalar(tp, raw, path)


def _scalar(tp: Any, raw: object, path: str) -> object:
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        raise _bad(path, "true or false", raw)
    if tp is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise _bad(path, "a whole number", raw)
    if tp is str:
        if isinstance(raw, str):
            return raw
        raise _bad(path, "a string", raw)
    if tp is _NONE:
        if raw is None:
            return None
        raise _bad(path, "null", raw)
    raise TypeError(f"{path}: no decoder for {tp!r}")  # a model field of a new kind: extend this module


def _union(options: tuple[Any, ...], raw: object, path: str) -> object:
    if raw is None and _NONE in options:
        return None
    real = [o for o in options if o is not _NONE]
    if len(real) != 1:
        raise TypeError(f"{path}: only X | None unions are supported, not {options!r}")
    return _decode(real[0], raw, path)


def _tuple(args: tuple[Any, ...], raw: object, path: str) -> tuple[object, ...]:
    if not isinstance(raw, list):
        raise _bad(path, "a list", raw)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_decode(args[0], v, f"{path}[{i}]") for i, v in enumerate(raw))
    if len(raw) != len(args):
        raise _bad(path, f"a list of {len(args)}", raw)
    return tuple(_decode(t, v, f"{path}[{i}]") for i, (t, v) in enumerate(zip(args, raw, strict=True)))


def _dict(args: tuple[Any, ...], raw: object, path: str) -> dict[object, object]:
    if not isinstance(raw, dict):
        raise _bad(path, "an object", raw)
    key_type, value_type = args
    return {_decode(key_type, k, f"{path} key"): _decode(value_type, v, f"{path}.{k}") for k, v in raw.items()}


def _record(cls: type, raw: object, path: str) -> object:
    if not isinstance(raw, dict):
        raise _bad(path, "an object", raw)
    hints = _hints(cls)
    values: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            values[f.name] = _decode(hints[f.name], raw[f.name], f"{path}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise BadRequest(f"{path}.{f.name}: missing")
    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise BadRequest(f"{path}.{unknown[0]}: unknown field (written by a newer pasar?)")
    return cls(**values)
