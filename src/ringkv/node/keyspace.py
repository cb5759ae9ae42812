"""Operations over the cluster's whole keyspace: SCAN, KEYS, DBSIZE, FLUSHALL, status.

Each run of consecutive partitions is read from one replica (this node when it holds them),
so a SCAN lists a key once; the cursor is the token to resume at, valid on any node. DBSIZE
counts each partition on its first replica that answers. FLUSHALL runs on every member.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ringkv.errors import CommandError, RpcError
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import FlushAll, NodeInfo, NodeInfoReply, ScanRange
from ringkv.node.placement import Placement
from ringkv.node.replica_calls import ReplicaCalls, failure_reason
from ringkv.service.limits import MAX_TOKEN


class Keyspace:
    def __init__(self, placement: Placement, calls: ReplicaCalls, store: LocalStore,
                 node_info: Callable[[], NodeInfoReply], gossip_status: Callable[[], dict] | None = None):
        self.node_id = placement.node_id
        self.placement = placement
        self.calls = calls
        self.store = store
        self.node_info = node_info
        self.gossip_status = gossip_status  # node -> {phi, up, generation, heartbeat}

    async def flushall(self) -> int:
        """FLUSHALL on every member. A member that cannot be reached keeps its keys, and they
        return by read repair: the error names it."""
        if not self.store.flush_enabled:
            raise CommandError("FLUSHALL and FLUSHDB are disabled on this node (flush_enabled = false)")
        removed = await self.store.flush()
        others = [n for n in self.placement.known_nodes if n != self.node_id]
        timeout = self.calls.timeout_ms * 4
        replies = await asyncio.gather(*(self.calls.call(n, FlushAll(), timeout) for n in others),
                                       return_exceptions=True)
        failed = {n: failure_reason(r) for n, r in zip(others, replies, strict=True) if isinstance(r, BaseException)}
        if failed:
            detail = "; ".join(f"{n} {why}" for n, why in sorted(failed.items()))
            raise CommandError(f"FLUSHALL did not reach every member: {detail}", status=503)
        return removed + sum(r.removed for r in replies)

    async def node_infos(self) -> dict[str, NodeInfoReply | str]:
        """Every member's figures, or why it did not answer."""
        others = [n for n in self.placement.known_nodes if n != self.node_id]
        replies = await asyncio.gather(*(self.calls.call(n, NodeInfo()) for n in others), return_exceptions=True)
        out: dict[str, NodeInfoReply | str] = {self.node_id: self.node_info()}
        for node, reply in zip(others, replies, strict=True):
            out[node] = failure_reason(reply) if isinstance(reply, BaseException) else reply
        return out

    async def dbsize(self, namespace: bytes) -> int:
        """Live keys of `namespace` in the cluster: each partition counted on its first
        replica that answers."""
        infos = await self.node_infos()
        total = 0
        name = namespace.decode("utf-8", "replace")
        placement = self.placement
        prefs = placement.prefs_for(placement.namespaces.of_stored(namespace).replicas)
        for p, pref in enumerate(prefs):
            for node in pref:
                info = infos.get(node)
                if isinstance(info, NodeInfoReply):
                    counts = info.namespace_partition_keys.get(name) if namespace else info.partition_keys
                    total += counts[p] if counts else 0
                    break
            else:
                detail = "; ".join(f"{n} {infos.get(n)}" for n in pref)
                raise CommandError(f"DBSIZE needs one replica of every partition; none answered for "
                                   f"partition {p}: {detail}", status=503)
        return total

    async def scan(self, cursor: int, count: int, match: bytes | None, namespace: bytes) -> tuple[int, list[bytes]]:
        """One page of the cluster's keys in token order; the cursor is the token to resume at.

        A key the replica asked has not received yet is missed (as a read at ONE would miss it).
        """
        if not 0 <= cursor <= MAX_TOKEN:
            raise CommandError("invalid cursor")
        placement = self.placement
        ring = placement.ring
        prefs = placement.prefs_for(placement.namespaces.of_stored(namespace).replicas)
        me = self.node_id
        keys: list[bytes] = []
        examined = 0
        tok = cursor
        while True:
            p = ring.partition_of(tok)
            candidates = (me,) if me in prefs[p] else prefs[p]
            failures: dict[str, str] = {}
            for target in candidates:
                last = p
                while last + 1 < ring.partitions and target in prefs[last + 1]:
                    last += 1
                end_tok = ring.partition_range(last)[1]
                budget = count - examined
                if target == me:
                    page, ex, nxt = self.store.scan_range(tok, end_tok, budget, match, namespace)
                    break
                try:
                    reply = await self.calls.call(target, ScanRange(namespace, tok, end_tok, budget, match),
                                                  self.calls.timeout_ms * 2)
                except RpcError as exc:
                    failures[target] = failure_reason(exc)
                    continue
                page, ex, nxt = reply.keys, reply.examined, reply.next_token
                break
            else:
                detail = "; ".join(f"{n} {why}" for n, why in failures.items())
                raise CommandError(f"SCAN needs one replica of partition {p}; none answered: {detail}",
                                   status=503)
            keys.extend(page)
            examined += ex
            if nxt is not None:
                return nxt, keys
            if end_tok == MAX_TOKEN:
                return 0, keys
            tok = end_tok + 1
            if examined >= count:
                return tok, keys

    async def keys(self, pattern: bytes, namespace: bytes) -> list[bytes]:
        limit = self.store.keys_max_count
        out: list[bytes] = []
        cursor = 0
        while True:
            cursor, page = await self.scan(cursor, 1000, pattern, namespace)
            out.extend(page)
            if len(out) > limit:
                raise CommandError(
                    f"KEYS refused: more than keys_max_count={limit} keys match; use SCAN with "
                    "MATCH to page through them")
            if cursor == 0:
                return out

    async def status(self) -> dict:
        """Members, their partitions and keys (`ringkv cluster status`, INFO cluster)."""
        placement = self.placement
        ring = placement.ring
        infos = await self.node_infos()
        shares = ring.shares()
        gossip = self.gossip_status() if self.gossip_status is not None else {}
        nodes = []
        for node in sorted(set(placement.known_nodes) | {self.node_id}):
            info = infos.get(node, "not asked")
            entry = {
                "node_id": node,
                "status": "up" if isinstance(info, NodeInfoReply) else "unreachable",
                "in_ring": node in ring.node_ids,
                "primary_partitions": len(ring.owned_partitions(node)),
                "replica_partitions": len(ring.replica_partitions(node)),
                "share": round(shares.get(node, 0.0), 4),
            }
            g = gossip.get(node)
            if g is not None:
                entry.update(phi=g["phi"], detector="up" if g["up"] else "down",
                             generation=g["generation"], heartbeat=g["heartbeat"])
            if isinstance(info, NodeInfoReply):
                entry.update(actor=info.actor, resp=info.resp_address, http=info.http_address,
                             keys=info.live_keys, bytes_on_disk=info.bytes_on_disk,
                             uptime_ms=info.uptime_ms)
            else:
                entry["error"] = info
            nodes.append(entry)
        return {"cluster": {"partitions": ring.partitions, "replicas": ring.replicas,
                            "members": len(ring.node_ids)},
                "nodes": nodes}
