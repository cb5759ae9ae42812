"""The keys a collection's elements are stored under (docs/formats/elements.md).

A collection keeps each element (a hash field, a set member, a sorted-set member, a list item)
in a record of its own, in the collection's namespace, under an **element key**:

    0x00 0xFF 'e' | len(key) u16 big-endian | key | element

`key` is the collection's key and `element` the field or member bytes (a list's position, for
lists). Keys beginning with 0x00 0xFF are reserved for such internal records: a client's key
that begins with them is refused (`reserved_key_error`), so an element key never meets a
user's key.

An element key is placed by its collection's key (cluster/ring.hash_part sees through the
prefix), so every element lives in its collection's partition, on its replicas, and a
collection's elements are one contiguous run of storage keys ordered by element bytes, right
after `elements_prefix(key)`. The length field makes that prefix unambiguous: the elements of
`ab` never fall in the run of `a`.
"""

from __future__ import annotations

from ringkv.errors import CommandError
from ringkv.service.limits import MAX_KEY_BYTES

RESERVED_PREFIX = b"\x00\xff"
ELEMENT_MARK = RESERVED_PREFIX + b"e"
# The bytes an element key adds to its collection key and element: the mark and the length.
ELEMENT_OVERHEAD_BYTES = len(ELEMENT_MARK) + 2
MAX_COLLECTION_KEY_BYTES = 0xFFFF  # what the u16 length can say; MAX_KEY_BYTES is lower anyway


def is_reserved(key: bytes) -> bool:
    """Whether `key` is in the internal key space (a client may not use it)."""
    return key[:2] == RESERVED_PREFIX


def is_element_key(key: bytes) -> bool:
    return key[:3] == ELEMENT_MARK


def reserved_key_error(key: bytes) -> CommandError:
    return CommandError(
        f"key {key[:16]!r} begins with the bytes 0x00 0xff, which ringkv reserves for its internal "
        "records (the elements of hashes, sets, sorted sets and lists): use another key", status=400)


def elements_prefix(key: bytes) -> bytes:
    """What every element key of the collection `key` begins with, and nothing else does."""
    return ELEMENT_MARK + len(key).to_bytes(2, "big") + key


def element_key(key: bytes, element: bytes) -> bytes:
    """The key `element` of the collection `key` is stored under (in the collection's
    namespace)."""
    return ELEMENT_MARK + len(key).to_bytes(2, "big") + key + element


def split_element_key(ekey: bytes) -> tuple[bytes, bytes]:
    """(collection key, element) of an element key; ValueError for anything else."""
    if ekey[:3] != ELEMENT_MARK or len(ekey) < 5:
        raise ValueError(f"{ekey[:16]!r} is not an element key")
    n = int.from_bytes(ekey[3:5], "big")
    if len(ekey) < 5 + n:
        raise ValueError(f"element key of {len(ekey)} bytes names a collection key of {n}")
    return ekey[5:5 + n], ekey[5 + n:]


def owner_of(ekey: bytes) -> bytes:
    """The collection key an element key belongs to (its placement comes from it); the key
    itself when it is not a well-formed element key."""
    if ekey[:3] != ELEMENT_MARK or len(ekey) < 5:
        return ekey
    n = int.from_bytes(ekey[3:5], "big")
    return ekey[5:5 + n] if len(ekey) >= 5 + n else ekey


def check_element(namespace: bytes, key: bytes, element: bytes) -> None:
    """CommandError naming the limit when `element` of the collection `key` would make a storage
    key longer than storage allows (the element key counts against MAX_KEY_BYTES, with the
    namespace, as a key does)."""
    size = len(namespace) + ELEMENT_OVERHEAD_BYTES + len(key) + len(element)
    if size > MAX_KEY_BYTES:
        raise CommandError(
            f"an element of {len(element)} bytes of a key of {len(key)} bytes is too long: a collection's element "
            f"is stored under its key, so key + element + {ELEMENT_OVERHEAD_BYTES} bytes must be at most "
            f"{MAX_KEY_BYTES - len(namespace)} bytes in this namespace", status=413)
