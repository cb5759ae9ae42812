"""Operations over the cluster's whole keyspace: SCAN, KEYS, DBSIZE, FLUSHALL, status.

Each run of consecutive partitions is read from one replica (this node when it holds them),
so a SCAN lists a key once; the cursor is the token to resume at, valid on any node. DBSIZE
counts each partition on its first replica that answers; so does the status document's
`total_keys`, over every namespace. FLUSHALL runs on every member.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ringkv.errors import CommandError, RpcError
from ringkv.node.local_store import LocalStore
from ringkv.node.messages import FlushAll, NodeInfo, NodeInfoReply, ScanRange
from ringkv.node.placement import Placement
from ringkv.node.replica_calls import ReplicaCalls, failure_reason
from ringkv.service.contract import NamespaceSpec
from ringkv.service.limits import MAX_TOKEN

MIB = 1024 * 1024
# How a client computes a key's token (cluster/ring.py's `token`), as the ring map states it.
TOKEN_RULE = "xxh3_64(u32be(len(namespace)) + namespace + hash_part(key)), hash_part: the {tag} or the key"

# A member's `role` in the status document: its membership state (Dynamo has no leader).
ROLES = {"normal": "member", "joining": "joining", "leaving": "leaving", "left": "left", "removed": "removed"}


def member_status(reachable: bool, detector_up: bool, state: str) -> str:
    """A member's `status` in the status document (docs/http.md): "healthy" when it answered
    and the failure detector holds it up and it is a normal member; "down" when it did not
    answer or the detector holds it down; else its membership state ("joining", "leaving")."""
    if state in ("left", "removed"):
        return state
    if not (reachable and detector_up):
        return "down"
    return state if state in ("joining", "leaving") else "healthy"


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

    def ring_map(self, spec: NamespaceSpec) -> dict:
        """Where `spec`'s keys live, for token-aware clients (docs/client.md, "Token-aware
        routing"): the partition count, every node of the ring with the RESP address it
        advertises, its datacenter and whether this node's failure detector holds it up, and
        each partition's replicas in preference order, as indexes into `nodes`. A key's
        partition is the top log2(partitions) bits of its token (`token_rule`)."""
        placement = self.placement
        ring = placement.ring
        gossip = self.gossip_status() if self.gossip_status is not None else {}
        names = ring.node_ids
        index = {node: i for i, node in enumerate(names)}
        nodes = [{"node_id": node, "resp": (gossip.get(node) or {}).get("resp_address") or None,
                  "datacenter": ring.dc_of(node) or None, "up": (gossip.get(node) or {}).get("up", True)}
                 for node in names]
        return {"namespace": spec.name, "partitions": ring.partitions, "token_rule": TOKEN_RULE,
                "nodes": nodes, "replicas": [[index[n] for n in pref] for pref in placement.prefs_for(spec.layout)]}

    async def dbsize(self, namespace: bytes) -> int:
        """Live keys of `namespace` in the cluster: each partition counted on its first
        replica that answers."""
        infos = await self.node_infos()
        spec = self.placement.namespaces.of_stored(namespace)
        total, missing = self._count_once(infos, spec)
        if missing:
            pref = self.placement.prefs_for(spec.layout)[missing[0]]
            detail = "; ".join(f"{n} {infos.get(n)}" for n in pref)
            raise CommandError(f"DBSIZE needs one replica of every partition; none answered for "
                               f"partition {missing[0]}: {detail}", status=503)
        return total

    def _count_once(self, infos: dict[str, NodeInfoReply | str], spec: NamespaceSpec) -> tuple[int, list[int]]:
        """Live keys of one namespace, each key once: each partition counted on the first
        replica of its preference list that answered. Also the partitions none answered for."""
        total = 0
        missing: list[int] = []
        name = spec.name
        for p, pref in enumerate(self.placement.prefs_for(spec.layout)):
            for node in pref:
                info = infos.get(node)
                if isinstance(info, NodeInfoReply):
                    counts = info.namespace_partition_keys.get(name) if spec.stored else info.partition_keys
                    total += counts[p] if counts else 0
                    break
            else:
                missing.append(p)
        return total, missing

    async def scan(self, cursor: int, count: int, match: bytes | None, namespace: bytes) -> tuple[int, list[bytes]]:
        """One page of the cluster's keys in token order; the cursor is the token to resume at.

        A key the replica asked has not received yet is missed (as a read at ONE would miss it).
        """
        if not 0 <= cursor <= MAX_TOKEN:
            raise CommandError("invalid cursor")
        placement = self.placement
        ring = placement.ring
        prefs = placement.prefs_for(placement.namespaces.of_stored(namespace).layout)
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
        """Members, their health, role, partitions and keys, and the cluster's key count
        (`ringkv cluster status`, RINGKV.STATUS, GET /api/v1/admin/cluster/status; the fields
        are described in docs/http.md)."""
        placement = self.placement
        ring = placement.ring
        infos = await self.node_infos()
        shares = ring.shares()
        gossip = self.gossip_status() if self.gossip_status is not None else {}
        nodes = []
        for node in sorted(set(placement.known_nodes) | {self.node_id}):
            info = infos.get(node, "not asked")
            reply = info if isinstance(info, NodeInfoReply) else None
            g = gossip.get(node, {})
            in_ring = node in ring.node_ids
            # A configured member not heard from by gossip yet: its place in the ring says.
            state = g.get("gossip_status") or ("normal" if in_ring else "joining")
            entry = {
                "node_id": node,
                "address": (reply.resp_address if reply is not None else "") or g.get("resp_address") or None,
                # a node never heard from is never held down (cluster/phi.py)
                "status": member_status(reply is not None, g.get("up", True), state),
                "role": ROLES.get(state, state),
                "keys_count": reply.live_keys if reply is not None else None,
                "memory_used_mb": round(reply.rss_bytes / MIB, 1) if reply is not None and reply.rss_bytes else None,
                "reachable": reply is not None,
                "in_ring": in_ring,
                "datacenter": placement.dc_of(node),
                "primary_partitions": len(ring.owned_partitions(node)),
                "replica_partitions": len(ring.replica_partitions(node)),
                "share": round(shares.get(node, 0.0), 4),
            }
            if g:
                entry.update(phi=g["phi"], detector="up" if g["up"] else "down",
                             generation=g["generation"], heartbeat=g["heartbeat"])
            if reply is not None:
                entry.update(actor=reply.actor, resp=reply.resp_address, http=reply.http_address,
                             keys=reply.live_keys, bytes_on_disk=reply.bytes_on_disk,
                             uptime_ms=reply.uptime_ms, rss_bytes=reply.rss_bytes)
                if reply.move_kind:
                    entry["move"] = {"kind": reply.move_kind, "phase": reply.move_phase,
                                     "partitions_total": reply.move_partitions_total,
                                     "partitions_done": reply.move_partitions_done}
            else:
                entry["error"] = info
            nodes.append(entry)
        total_keys = 0
        unknown: set[int] = set()
        for spec in placement.namespaces:
            count, missing = self._count_once(infos, spec)
            total_keys += count
            unknown.update(missing)
        return {"cluster": {"partitions": ring.partitions, "replicas": ring.replicas,
                            "members": len(ring.node_ids)},
                "nodes": nodes,
                "total_keys": total_keys,
                "total_keys_unknown_partitions": len(unknown),
                "replication_factor": placement.namespaces.default.replicas}
