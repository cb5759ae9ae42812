"""Redis's data types as pure commands over decoded values (base.py says the contract).

`COMMANDS` maps each data-type command's upper-case name to its `TypeCommand`. The node runs
a write on the key's write path (node/commands.TypeWrite; the consensus path in a cluster)
and a read on its read path; `execute` runs one against a dict of entries, as the property
and differential tests do.
"""

from __future__ import annotations

from typing import Any

from ringkv.service.datatypes import hashes, keyspace, lists, sets, zsets
from ringkv.service.datatypes.base import Ctx, Entry, TypeCommand, wrong_arity

COMMANDS: dict[str, TypeCommand] = {
    spec.name: spec for module in (hashes, sets, zsets, lists, keyspace) for spec in module.COMMANDS
}


def check_arity(spec: TypeCommand, args: list[bytes]) -> None:
    """CommandError (Redis's text) when `args` (after the name) are too few or too many."""
    n = len(args) + 1
    if (spec.arity >= 0 and n != spec.arity) or (spec.arity < 0 and n < -spec.arity):
        raise wrong_arity(spec.name)


def execute(store: dict[bytes, Entry], name: str, args: list[bytes], ctx: Ctx) -> Any:
    """Run one command against `store` (key -> Entry, no expiry applied) as a node would: check
    its arity, hand it its keys' entries, apply its writes (an empty collection or None
    deletes the key). Answers the reply."""
    spec = COMMANDS[name.upper()]
    check_arity(spec, args)
    keys = spec.keys(args)
    entries = {key: store.get(key) for key in keys}
    writes, reply = spec.run(ctx, args, entries)
    if writes and not spec.write:
        raise AssertionError(f"{spec.name} is a read and wrote {list(writes)}")
    for key, entry in writes.items():
        if entry is None or entry.is_empty():
            store.pop(key, None)
        else:
            store[key] = entry
    return reply
