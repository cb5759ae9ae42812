"""The contract between the protocol adapters (api/) and the node (node/).

The adapters translate wire bytes into calls on a `KeyValueService` (data) and an
`AdminService` (membership, repair, status, INFO); the node implements both. Nothing here does
IO or knows asyncio: these are the value types the calls take and return, every limit a
client can run into (defined once, here), the consistency levels, Redis's rules for numbers in
values, and the typed protocols themselves. api/ imports this package and `ringkv.errors`,
never node/; node/ never imports api/. One module outside both (`ringkv.server`) builds a
node process from them by constructors.
"""

from ringkv.service.contract import AdminService, KeyValueService, NamespaceSpec, ServiceLimits
from ringkv.service.levels import ConsistencyLevel, Levels, parse_level, resolve
from ringkv.service.limits import (
    MAX_KEY_BYTES,
    MAX_NAMESPACE_BYTES,
    MAX_SCAN_COUNT,
    MAX_TOKEN,
    STORAGE_PREFIX_BYTES,
)
from ringkv.service.numbers import format_float, parse_float, parse_int
from ringkv.service.values import PENDING, SiblingSet, Value

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_NAMESPACE_BYTES",
    "MAX_SCAN_COUNT",
    "MAX_TOKEN",
    "PENDING",
    "STORAGE_PREFIX_BYTES",
    "AdminService",
    "ConsistencyLevel",
    "KeyValueService",
    "Levels",
    "NamespaceSpec",
    "ServiceLimits",
    "SiblingSet",
    "Value",
    "format_float",
    "parse_float",
    "parse_int",
    "parse_level",
    "resolve",
]
