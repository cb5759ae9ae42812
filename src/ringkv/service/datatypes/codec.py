"""How a collection is stored in a record's value (docs/formats/record.md, "Typed values").

A key holding a collection stores, as its sibling's value, `Typed(kind, data)`: `data` is the
msgpack encoding of its elements, canonical (equal collections encode to equal bytes, which
Merkle trees rely on):

| kind      | data                                                        |
|-----------|-------------------------------------------------------------|
| KIND_HASH | array of [field bin, value bin], fields in byte order        |
| KIND_LIST | array of item bin, head first                               |
| KIND_SET  | array of member bin, in byte order                           |
| KIND_ZSET | array of [member bin, score float64], members in byte order |

Decoding checks every shape and bound; a value that does not decode raises CorruptionError
(it came from the engine or a peer), never a wrong collection.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from ringkv.errors import CorruptionError
from ringkv.service.datatypes.base import (
    KIND_HASH,
    KIND_LIST,
    KIND_SET,
    KIND_STRING,
    KIND_ZSET,
    TYPE_NAMES,
)

_enc = msgspec.msgpack.Encoder()
_pairs = msgspec.msgpack.Decoder(list[tuple[bytes, bytes]])
_items = msgspec.msgpack.Decoder(list[bytes])
_scored = msgspec.msgpack.Decoder(list[tuple[bytes, float]])


def encode(kind: int, value: Any) -> bytes:
    """The stored bytes of a collection of `kind` (not KIND_STRING)."""
    if kind == KIND_HASH:
        return _enc.encode(sorted(value.items()))
    if kind == KIND_LIST:
        return _enc.encode(value)
    if kind == KIND_SET:
        return _enc.encode(sorted(value))
    if kind == KIND_ZSET:
        return _enc.encode(sorted(value.items()))
    raise ValueError(f"no collection of kind {kind}")


def decode(kind: int, data: bytes) -> Any:
    """The collection `encode(kind, ...)` stored; CorruptionError for anything else."""
    try:
        if kind == KIND_HASH:
            return dict(_pairs.decode(data))
        if kind == KIND_LIST:
            return _items.decode(data)
        if kind == KIND_SET:
            return set(_items.decode(data))
        if kind == KIND_ZSET:
            scored = _scored.decode(data)
            if any(math.isnan(score) for _, score in scored):
                raise CorruptionError("a sorted set's stored score is NaN")
            return dict(scored)
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"a stored {TYPE_NAMES.get(kind, kind)} does not decode: {exc}") from None
    raise CorruptionError(f"a stored value names unknown type kind {kind}")


def kind_name(kind: int) -> str:
    """TYPE's answer for a kind."""
    return TYPE_NAMES.get(kind, "none") if kind != KIND_STRING else "string"
