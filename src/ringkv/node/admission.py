"""Admitting a node by its client address: what a member does for `POST
/api/v1/admin/cluster/nodes {"node_address": "host:port"}`, `RINGKV.ADMIN ADMIT host:port` and
`ringkv admin add-node host:port` (docs/cluster.md, "Adding a node by its address").

The new node runs as a joining node (`ringkv admin join`, or `join = true`), knowing no member
yet or only some. The member asked:

1. parses the address: the new node's client (RESP) port, the one operators and clients know;
   the RPC address the cluster needs is learned from the node itself;
2. asks the node over RESP for its membership document (`RINGKV.ADMIN STATUS`): its node id,
   RPC address, rack, cluster name, partition count, N and local status;
3. checks that it can join this cluster: it is joining, its node id is not in the ring, its
   cluster name, partition count and N are this cluster's, this member is a normal one, no
   other membership change runs (one node joins or leaves at a time), and it passes this
   cluster's member authentication: one RPC call to it, whose handshake needs the cluster
   secret and/or a certificate of the cluster CA naming it (docs/security.md). The secret
   itself never travels: the new node must have been started with it;
4. gives it members as seeds (`RINGKV.ADMIN JOIN node_id@host:rpc_port ...`): the node learns
   the cluster by gossip, receives its partitions (node/membership.py, join) and turns normal;
5. answers what happens next: the node's id and state, the partitions it will hold (in the
   ring the cluster will have once it is normal), the seeds, and the join's progress as the
   node reports it. The status document then shows the node, `joining` with its progress, on
   every member, until it is `healthy`.

Asking again for a node that is already joining this cluster gives it the seeds again and
answers its progress: a retry after a lost answer is harmless.

Every step is bounded: the connection by ADMIT_CONNECT_TIMEOUT_MS, each answer by
ADMIT_REPLY_TIMEOUT_MS and MAX_ADMIT_REPLY_BYTES. RESP is spoken here by hand, hiredis parsing
the answers: the node layer does not import the protocol adapters (api/).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from typing import Any

import hiredis

from ringkv.cluster.gossip import NodeStatus
from ringkv.cluster.ring import Member, Ring
from ringkv.errors import AdminConflictError, AdminRequestError, HandshakeError, RpcError
from ringkv.node.gossiper import Gossiper
from ringkv.node.membership import MembershipManager
from ringkv.node.messages import NodeInfo
from ringkv.node.placement import Placement

log = logging.getLogger("ringkv.admission")

ADMIT_CONNECT_TIMEOUT_MS = 2_000  # resolving the host and connecting to the new node
ADMIT_REPLY_TIMEOUT_MS = 5_000  # each answer of the new node
MAX_ADMIT_REPLY_BYTES = 1024 * 1024  # a membership document is a few hundred bytes
ADMIT_MAX_SEEDS = 16  # members given as seeds; gossip tells the node of the others

# host:port, host a name, an IPv4 address or a bracketed IPv6 address.
_ADDRESS = re.compile(r"([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):([0-9]{1,5})")


def parse_node_address(text: str) -> tuple[str, int]:
    """(host, port) of "host:port"; AdminRequestError naming the field when malformed."""
    m = _ADDRESS.fullmatch(text.strip())
    if m is None or not 1 <= int(m.group(2)) <= 65535:
        raise AdminRequestError(
            f"node_address {text[:200]!r} is not host:port (the new node's RESP port, e.g. 10.0.1.10:6379)")
    host = m.group(1)
    return (host[1:-1] if host.startswith("[") else host), int(m.group(2))


def host_port(host: str, port: int) -> str:
    """"host:port", an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def seed_entry(node_id: str, host: str, port: int, rack: str = "") -> str:
    """A `members` entry, node_id@host:rpc_port[/rack] (config.parse_member reads it)."""
    return f"{node_id}@{host_port(host, port)}" + (f"/{rack}" if rack else "")


class RespExchange:
    """One RESP connection to a node, for a few commands in turn, every step bounded."""

    def __init__(self, host: str, port: int, *, connect_timeout_ms: int = ADMIT_CONNECT_TIMEOUT_MS,
                 reply_timeout_ms: int = ADMIT_REPLY_TIMEOUT_MS, max_reply_bytes: int = MAX_ADMIT_REPLY_BYTES):
        self.host = host
        self.port = port
        self.where = host_port(host, port)
        self.connect_timeout_ms = connect_timeout_ms
        self.reply_timeout_ms = reply_timeout_ms
        self.max_reply_bytes = max_reply_bytes
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RespExchange:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout_ms / 1000)
        except TimeoutError:
            raise AdminConflictError(
                f"cannot reach the node at {self.where}: no connection within {self.connect_timeout_ms} ms "
                "(is it running, and is the address reachable from this member?)") from None
        except socket.gaierror as exc:
            raise AdminConflictError(f"cannot resolve {self.host!r}: {exc.strerror}") from None
        except OSError as exc:
            why = "connection refused" if isinstance(exc, ConnectionRefusedError) else exc.strerror or str(exc)
            raise AdminConflictError(
                f"cannot reach the node at {self.where}: {why} (is it running? start it with "
                "`ringkv admin join` first, and give its RESP port)") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await asyncio.wait_for(self._writer.wait_closed(), self.connect_timeout_ms / 1000)
            except (OSError, TimeoutError):
                pass

    async def call(self, *args: str) -> Any:
        """The node's answer to one command: a str/bytes/int/list, or hiredis.ReplyError for
        an error answer. AdminConflictError when nothing RESP comes back in time."""
        assert self._reader is not None and self._writer is not None
        self._writer.write(b"".join(
            [b"*%d\r\n" % len(args)] + [b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args]))
        parser = hiredis.Reader()
        received = 0
        not_resp = (f"{self.where} does not answer RESP: give the new node's RESP port (not its HTTP "
                    "or RPC port)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reply_timeout_ms / 1000
        try:
            await asyncio.wait_for(self._writer.drain(), self.reply_timeout_ms / 1000)
            while True:
                reply = parser.gets()
                if reply is not False:
                    return reply
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                data = await asyncio.wait_for(self._reader.read(65536), remaining)
                if not data:
                    raise AdminConflictError(f"{not_resp}: it closed the connection without an answer")
                if received == 0 and data.startswith(b"HTTP/"):
                    raise AdminConflictError(f"{not_resp}: it answered HTTP")
                received += len(data)
                if received > self.max_reply_bytes:
                    raise AdminConflictError(f"{not_resp}: its answer to {args[0]} passed "
                                             f"{self.max_reply_bytes} bytes")
                parser.feed(data)
        except TimeoutError:
            raise AdminConflictError(f"{not_resp}: no answer to {args[0]} within {self.reply_timeout_ms} ms") from None
        except hiredis.ProtocolError:
            raise AdminConflictError(f"{not_resp}: its answer is not RESP") from None
        except OSError as exc:
            raise AdminConflictError(f"the connection to {self.where} failed: {exc.strerror or exc}") from None


class Admission:
    """Admits nodes into the cluster this member belongs to (see the module docstring)."""

    def __init__(self, node_id: str, cluster_name: str, placement: Placement, gossiper: Gossiper,
                 membership: MembershipManager, *, connect_timeout_ms: int = ADMIT_CONNECT_TIMEOUT_MS,
                 reply_timeout_ms: int = ADMIT_REPLY_TIMEOUT_MS):
        self.node_id = node_id
        self.cluster_name = cluster_name
        self.placement = placement
        self.gossiper = gossiper
        self.membership = membership
        self.connect_timeout_ms = connect_timeout_ms
        self.reply_timeout_ms = reply_timeout_ms

    async def admit(self, address: str) -> dict:
        host, port = parse_node_address(address)
        local = self.gossiper.membership.local
        if local.status is not NodeStatus.NORMAL:
            raise AdminConflictError(f"this node ({self.node_id}) is {local.status}, not a normal member: "
                                     "ask a normal member to admit the node")
        async with RespExchange(host, port, connect_timeout_ms=self.connect_timeout_ms,
                                reply_timeout_ms=self.reply_timeout_ms) as node:
            where = node.where
            doc = self._membership_doc(where, await node.call("RINGKV.ADMIN", "STATUS"))
            new_id = str(doc["node_id"])
            self._check(where, new_id, doc)
            await self._check_authentication(where, new_id, doc.get("rpc_address"))
            seeds = self.seeds()
            answer = await node.call("RINGKV.ADMIN", "JOIN", *seeds)
            if isinstance(answer, hiredis.ReplyError):
                raise AdminConflictError(f"the node at {where} refused the seeds: {_error_text(answer)}")
            progress = self._membership_doc(where, await node.call("RINGKV.ADMIN", "STATUS"))
        # The ring the cluster will have: computed off the loop (a few ms at 1024 partitions),
        # from the members as they are now.
        members = {m.node_id: m for m in self.membership.compute()[0]}
        members[new_id] = Member.at(new_id, str(doc.get("rack") or ""))
        ring = self.placement.ring
        to_receive = await asyncio.to_thread(
            _replica_partitions, [members[n] for n in sorted(members)], ring.partitions, ring.replication, new_id,
            ring.algorithm)
        log.info("admitted %s at %s (RPC %s): %d partitions to receive; seeds %s", new_id, where,
                 doc.get("rpc_address"), to_receive, ",".join(seeds))
        return {
            "node_id": new_id,
            "address": where,
            "rpc_address": doc.get("rpc_address"),
            "state": progress.get("local_status", "joining"),
            "admitted_by": self.node_id,
            "seeds": seeds,
            "partitions": self.placement.ring.partitions,
            "partitions_to_receive": to_receive,
            "move": progress.get("move", {}),
        }

    @staticmethod
    def _membership_doc(where: str, answer: Any) -> dict:
        """The new node's RINGKV.ADMIN STATUS answer, or why it cannot be admitted."""
        if isinstance(answer, hiredis.ReplyError):
            text = _error_text(answer)
            if "cluster of one" in text:
                raise AdminConflictError(
                    f"the node at {where} runs as a cluster of one, not as a joining node: restart it with "
                    "`ringkv admin join` (join = true) and an empty data directory")
            raise AdminConflictError(f"the node at {where} is not a ringkv node that can join: {text}")
        try:
            doc = json.loads(answer)
        except (TypeError, ValueError):
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("node_id"), str) or "local_status" not in doc:
            raise AdminConflictError(f"the node at {where} answered RINGKV.ADMIN STATUS with something that is "
                                     f"not a ringkv membership document: {str(answer)[:200]!r}")
        return doc

    def _check(self, where: str, new_id: str, doc: dict) -> None:
        """Refuse a node that cannot join this cluster now, saying why and what to do."""
        ring = self.placement.ring
        pending = self.placement.pending
        status = doc.get("local_status")
        if doc.get("cluster_name") != self.cluster_name:
            raise AdminConflictError(
                f"the node at {where} ({new_id}) belongs to cluster {doc.get('cluster_name')!r}, this one is "
                f"{self.cluster_name!r}: restart it with --cluster-name {self.cluster_name}")
        if status in ("normal", "leaving") and new_id in ring.node_ids:
            raise AdminConflictError(f"the node at {where} is {new_id}, already a member of this cluster")
        if status != "joining":
            raise AdminConflictError(
                f"the node at {where} ({new_id}) is not in joining mode (it is {status}): start it with "
                "`ringkv admin join` (join = true) and an empty data directory")
        if new_id in ring.node_ids:
            raise AdminConflictError(
                f"node id {new_id!r} of the node at {where} is already a member of the ring: give the new node "
                "another --node-id")
        if doc.get("partitions") != ring.partitions or doc.get("replicas") != ring.replicas:
            raise AdminConflictError(
                f"the node at {where} ({new_id}) runs with partitions={doc.get('partitions')} and "
                f"N={doc.get('replicas')}; this cluster has partitions={ring.partitions} and N={ring.replicas}: "
                "restart it with the cluster's settings (they are fixed at cluster creation)")
        # A node from before ring_algorithm existed places partitions as "dithered" does.
        if doc.get("ring_algorithm", "dithered") != ring.algorithm:
            raise AdminConflictError(
                f"the node at {where} ({new_id}) places partitions with ring_algorithm="
                f"{doc.get('ring_algorithm', 'dithered')}; this cluster with {ring.algorithm}: restart it with the "
                "cluster's ring_algorithm (fixed at cluster creation)")
        if (doc.get("dc_replicas") or {}) != dict(ring.dc_replicas):
            raise AdminConflictError(
                f"the node at {where} ({new_id}) counts replicas per datacenter as {doc.get('dc_replicas') or 'none'}; "
                f"this cluster as {dict(ring.dc_replicas) or 'none'}: restart it with the cluster's dc_replicas")
        if pending is not None:
            changing = sorted(set(pending.node_ids) ^ set(ring.node_ids))
            if changing != [new_id]:
                raise AdminConflictError(
                    f"a membership change is in progress ({', '.join(changing)}): admit {new_id} once it has "
                    "finished (one node joins or leaves at a time; see `ringkv admin status`)")

    async def _check_authentication(self, where: str, new_id: str, rpc_address: Any) -> None:
        """Refuse a node that this cluster's members would refuse at every RPC handshake (no
        or another cluster secret, a certificate that is not of the cluster CA or does not
        name it): admitted, it would wait as joining forever. One NodeInfo call to its RPC
        address tells. A node this member cannot reach is let through (gossip starts from the
        new node's side) with a warning."""
        try:
            host, port = parse_node_address(str(rpc_address))
        except AdminRequestError:
            log.warning("admitting %s at %s: its RPC address %r is not host:port; not checked", new_id,
                        where, rpc_address)
            return
        transport = self.membership.transport
        transport.set_peer_address(new_id, host, port)
        try:
            await transport.call(new_id, NodeInfo(), self.reply_timeout_ms)
        except HandshakeError as exc:
            raise AdminConflictError(
                f"the node at {where} ({new_id}) fails this cluster's member authentication: {exc.reason}. "
                "Start it with the cluster's secret (cluster_secret_file, the same file as every member's) "
                f"and/or a certificate of the cluster CA naming {new_id} (rpc_tls_cert)") from None
        except RpcError as exc:
            log.warning("admitting %s at %s: its RPC port %s did not answer this member (%s); admitted "
                        "unchecked", new_id, where, host_port(host, port), exc)

    def seeds(self) -> list[str]:
        """This member first, then other normal members, those believed up first, at most
        ADMIT_MAX_SEEDS: enough for the new node to learn the rest by gossip."""
        local = self.gossiper.membership.local
        mine = seed_entry(self.node_id, local.rpc_host, local.rpc_port, local.rack)
        others = [s for s in self.gossiper.membership.states()
                  if s.node_id != self.node_id and s.status is NodeStatus.NORMAL and s.rpc_port]
        others.sort(key=lambda s: (not self.gossiper.is_up(s.node_id), s.node_id))
        return [mine] + [seed_entry(s.node_id, s.rpc_host, s.rpc_port, s.rack)
                         for s in others[:ADMIT_MAX_SEEDS - 1]]


def _replica_partitions(members: list[Member], partitions: int, replicas: int | dict[str, int], node_id: str,
                        algorithm: str = "dithered") -> int:
    """How many partitions `node_id` holds as a replica in the ring of `members`."""
    return len(Ring(members, partitions, replicas, algorithm).replica_partitions(node_id))


def _error_text(error: Exception) -> str:
    text = str(error)
    return text[4:] if text.startswith("ERR ") else text
