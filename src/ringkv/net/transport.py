"""The Transport a node talks to its peers through, over TCP or inside one process.

`Transport` is the whole contract the node layer sees: start with a request handler, call a
peer by node id with a timeout, be told where peers listen, close. `TcpTransport` is the real
one, built on rpc.py (docs/formats/rpc.md). `MemoryTransport`s share a `MemoryNetwork` that
delivers by calling the peer's handler in the same process, with the faults a simulator needs:
message loss, delay with jitter, partitions and nodes that are down, all driven by one
injected `random.Random`. Bodies still go through the msgpack codec and the frame limit, so
what crosses the simulated network is exactly what would cross TCP.

Both raise the same typed errors for the same situations: a down or unknown peer is
PeerUnavailableError at once ("connection refused"), a lost message is RpcTimeoutError at the
caller's deadline, a failing handler is RemoteError.
"""

from __future__ import annotations

import abc
import asyncio
import random
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from ringkv.errors import (
    ClosedError,
    ConnectionLostError,
    FrameTooLargeError,
    PeerUnavailableError,
    RemoteError,
    RpcProtocolError,
    RpcTimeoutError,
)
from ringkv.net.auth import NO_SECURITY, RpcSecurity
from ringkv.net.envelope import (
    Error,
    ErrorCode,
    MessageCodec,
    Request,
    Response,
    describe_exception,
)
from ringkv.net.framing import DEFAULT_MAX_FRAME_BYTES
from ringkv.net.rpc import FastHandler, RequestHandler, RpcClient, RpcLimits, RpcServer


class Transport(abc.ABC):
    """How a node reaches its peers. Peers are named by node id.

    `call` returns the peer handler's reply body or raises an RpcError (see ringkv.errors):
    RpcTimeoutError, PeerUnavailableError, HandshakeError, RemoteError, FrameTooLargeError,
    RpcProtocolError. A body must be an instance of a type registered with the codec.
    """

    node_id: str

    @abc.abstractmethod
    async def start(self, handler: RequestHandler, fast_handler: FastHandler | None = None,
                    before_reply: Callable[[], None] | None = None) -> None:
        """Begin answering peers' requests with `handler(peer_node_id, body)`; a transport may
        try `fast_handler` first (see rpc.FastHandler), and must call `before_reply` before
        replies leave (rpc.RpcServer.before_reply)."""

    @abc.abstractmethod
    async def call(self, peer: str, body: Any, timeout_ms: float) -> Any:
        """Send `body` to `peer`; return its reply body."""

    def start_call(self, peer: str, body: Any, timeout_ms: float,
                   on_done: Callable[[asyncio.Future[Any]], None] | None = None) -> asyncio.Future[Any] | None:
        """`call` without a coroutine where the transport can: a future of the reply, or None
        (then use `call`). `on_done(future)` is called once the future is done, from the
        transport's own done callback (one callback per call, not two). The default always
        says None."""
        return None

    @abc.abstractmethod
    def set_peer_address(self, node_id: str, host: str, port: int) -> None:
        """Record where `node_id` listens (a changed address drops the old connection)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop answering and calling; calls still waiting fail."""

    def handshake_stats(self) -> dict[str, int]:
        """Handshakes refused (rpc.HandshakeStats), as flat counters; none without handshakes."""
        return {}


class TcpTransport(Transport):
    """Transport over TCP: an RpcServer for incoming calls, an RpcClient for outgoing ones."""

    def __init__(
        self,
        node_id: str,
        cluster_name: str,
        codec: MessageCodec,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: RpcLimits | None = None,
        rng: random.Random | None = None,
        security: RpcSecurity = NO_SECURITY,
    ):
        self.node_id = node_id
        self.cluster_name = cluster_name
        self.codec = codec
        self.limits = limits or RpcLimits()
        # How peers are authenticated, both ways: the cluster secret, mutual TLS (net/auth.py).
        self.security = security
        self._host = host
        self._port = port
        self._client = RpcClient(node_id, cluster_name, codec, limits=self.limits, rng=rng,
                                 security=security)
        self._server: RpcServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where this node listens, once started (port 0 resolved to the bound port)."""
        if self._server is None:
            raise ClosedError(f"transport of {self.node_id} is not started")
        return self._server.address

    @property
    def client(self) -> RpcClient:
        return self._client

    @property
    def server(self) -> RpcServer | None:
        return self._server

    async def start(self, handler: RequestHandler, fast_handler: FastHandler | None = None,
                    before_reply: Callable[[], None] | None = None) -> None:
        server = RpcServer(handler, self.cluster_name, self.node_id, self.codec,
                           limits=self.limits, fast_handler=fast_handler, before_reply=before_reply,
                           security=self.security)
        await server.start(self._host, self._port)
        self._server = server

    async def call(self, peer: str, body: Any, timeout_ms: float) -> Any:
        return await self._client.call(peer, body, timeout_ms)

    def start_call(self, peer: str, body: Any, timeout_ms: float,
                   on_done: Callable[[asyncio.Future[Any]], None] | None = None) -> asyncio.Future[Any] | None:
        return self._client.start_call(peer, body, timeout_ms, on_done)

    def set_peer_address(self, node_id: str, host: str, port: int) -> None:
        self._client.set_peer_address(node_id, host, port)

    async def close(self) -> None:
        await self._client.close()
        if self._server is not None:
            await self._server.close()

    def handshake_stats(self) -> dict[str, int]:
        refused = self._server.stats if self._server is not None else None
        out = {"rpc_handshakes_refused": refused.total if refused else 0}
        for kind, count in sorted(refused.by_kind.items()) if refused else ():
            out[f"rpc_handshakes_refused_{kind}"] = count
        out["rpc_peers_refused"] = self._client.stats.peers_refused
        return out


class MemoryNetwork:
    """A simulated network joining the MemoryTransports of one process.

    Faults, all changeable at any time:
    - `drop_probability`: each message (request or reply, independently) is lost with this
      probability; the caller then times out, not knowing whether the request ran.
    - `delay_ms` + up to `delay_jitter_ms`: each message's one-way delay. Jitter reorders
      messages, as a real network of many connections would.
    - `partition(a, b)`: no message passes between a node of `a` and a node of `b`, either
      way; partitions add up until `heal()`. Lost like dropped messages.
    - `set_down(node, True)`: the node's process is gone. Calls to it fail at once with
      PeerUnavailableError, as a refused TCP connect does; its replies in flight are lost.

    Randomness comes only from `rng`, so one seed replays one run (given the same event loop
    scheduling, which a simulator's loop provides).
    """

    def __init__(
        self,
        codec: MessageCodec,
        rng: random.Random,
        *,
        drop_probability: float = 0.0,
        delay_ms: float = 0.0,
        delay_jitter_ms: float = 0.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ):
        self.codec = codec
        self.rng = rng
        self.drop_probability = drop_probability
        self.delay_ms = delay_ms
        self.delay_jitter_ms = delay_jitter_ms
        self.max_frame_bytes = max_frame_bytes
        self.messages_delivered = 0
        self.messages_lost = 0
        self._transports: dict[str, MemoryTransport] = {}
        self._cut: set[tuple[str, str]] = set()
        self._down: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def transport(self, node_id: str) -> MemoryTransport:
        """The transport of `node_id` on this network (made on first use)."""
        existing = self._transports.get(node_id)
        return existing if existing is not None else MemoryTransport(node_id, self)

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        side_a, side_b = set(side_a), set(side_b)
        if side_a & side_b:
            raise ValueError(f"nodes on both sides of a partition: {sorted(side_a & side_b)}")
        for a in side_a:
            for b in side_b:
                self._cut.add((a, b))
                self._cut.add((b, a))

    def heal(self) -> None:
        """End every partition."""
        self._cut.clear()

    def set_down(self, node_id: str, down: bool = True) -> None:
        if down:
            self._down.add(node_id)
        else:
            self._down.discard(node_id)

    def is_down(self, node_id: str) -> bool:
        return node_id in self._down

    def can_reach(self, source: str, destination: str) -> bool:
        return (
            (source, destination) not in self._cut
            and source not in self._down
            and destination not in self._down
        )

    async def close(self) -> None:
        """Cancel every delivery still in flight (handlers included)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- delivery -------------------------------------------------------------------------------

    def _register(self, transport: MemoryTransport) -> None:
        if transport.node_id in self._transports:
            raise ValueError(f"node {transport.node_id} already has a transport on this network")
        self._transports[transport.node_id] = transport

    def _unregister(self, transport: MemoryTransport) -> None:
        if self._transports.get(transport.node_id) is transport:
            del self._transports[transport.node_id]

    def _encode(self, message: msgspec.Struct, peer: str, direction: str) -> bytes:
        payload = self.codec.encode(message)
        if len(payload) > self.max_frame_bytes:
            raise FrameTooLargeError(len(payload), self.max_frame_bytes, peer, direction)
        return payload

    def _lost_on_the_way(self, source: str, destination: str) -> bool:
        """Decide the fate of one message as it leaves `source`."""
        if (source, destination) in self._cut or (
            self.drop_probability > 0 and self.rng.random() < self.drop_probability
        ):
            self.messages_lost += 1
            return True
        return False

    async def _travel(self) -> None:
        delay_ms = self.delay_ms
        if self.delay_jitter_ms > 0:
            delay_ms += self.rng.random() * self.delay_jitter_ms
        # Even with no delay, yield once: delivery is never synchronous, as over a socket.
        await asyncio.sleep(delay_ms / 1000.0)

    def _start(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, source: str, destination: str, payload: bytes,
                       future: asyncio.Future[Any]) -> None:
        """Carry one request to `destination`, run its handler, carry the reply back."""
        codec = self.codec
        if self._lost_on_the_way(source, destination):
            return
        await self._travel()
        if (source, destination) in self._cut:
            self.messages_lost += 1  # the partition began while the message was in flight
            return
        target = self._transports.get(destination)
        if destination in self._down or target is None or target.handler is None:
            if not future.done():
                future.set_exception(PeerUnavailableError(destination, "connection lost"))
            return
        self.messages_delivered += 1
        envelope = codec.decode_envelope(payload)
        try:
            body = codec.decode_body(envelope.body)
        except msgspec.DecodeError as exc:
            response = Response(0, None, Error(ErrorCode.BAD_REQUEST, str(exc)))
        else:
            try:
                reply = await target.handler(source, body)
            except Exception as exc:
                response = Response(0, None,
                                    Error(ErrorCode.HANDLER_FAILED, describe_exception(exc)))
            else:
                response = Response(0, reply)
        reply_payload = self._encode_reply(response, source)
        if destination in self._down:
            # The node went down while its handler ran: to the caller, a reset connection
            # after the request was sent (it may have run).
            if not future.done():
                future.set_exception(ConnectionLostError(destination, "connection lost"))
            return
        if self._lost_on_the_way(destination, source):
            return
        await self._travel()
        if (destination, source) in self._cut or source in self._down:
            self.messages_lost += 1
            return
        self.messages_delivered += 1
        if future.done():
            return  # the caller gave up already
        received = codec.decode_envelope(reply_payload)
        if received.error is not None:
            future.set_exception(
                RemoteError(destination, received.error.code, received.error.message))
            return
        try:
            future.set_result(codec.decode_body(received.body))
        except msgspec.DecodeError as exc:
            future.set_exception(RpcProtocolError(
                f"{destination} sent a reply that does not decode: {exc}", destination))

    def _encode_reply(self, response: Response, caller: str) -> bytes:
        body = response.body
        if body is not None and type(body) not in self.codec.body_types:
            detail = f"reply type {type(body).__name__} is not a registered message type"
        else:
            try:
                return self._encode(response, caller, "to")
            except FrameTooLargeError as exc:
                detail = (f"reply of {exc.size_bytes} bytes is over "
                          f"max_frame_bytes={exc.max_frame_bytes}")
            except Exception as exc:
                detail = f"reply could not be encoded ({describe_exception(exc)})"
        return self.codec.encode(Response(response.id, None, Error(ErrorCode.BAD_REPLY, detail)))


def _expire(future: asyncio.Future[Any], peer: str, timeout_ms: float) -> None:
    if not future.done():
        future.set_exception(RpcTimeoutError(peer, timeout_ms))


class MemoryTransport(Transport):
    """One node's end of a MemoryNetwork. Peers are reached by node id; addresses are kept
    (so the node layer can treat both transports alike) but not needed."""

    def __init__(self, node_id: str, network: MemoryNetwork):
        self.node_id = node_id
        self.network = network
        self.handler: RequestHandler | None = None
        self._addresses: dict[str, tuple[str, int]] = {}
        self._waiting: dict[asyncio.Future[Any], str] = {}
        self._closed = False
        network._register(self)

    async def start(self, handler: RequestHandler, fast_handler: FastHandler | None = None,
                    before_reply: Callable[[], None] | None = None) -> None:
        if self._closed:
            raise ClosedError(f"transport of {self.node_id} is closed")
        self.handler = handler

    def set_peer_address(self, node_id: str, host: str, port: int) -> None:
        self._addresses[node_id] = (host, port)

    def peer_address(self, node_id: str) -> tuple[str, int] | None:
        return self._addresses.get(node_id)

    async def call(self, peer: str, body: Any, timeout_ms: float) -> Any:
        if self._closed:
            raise ClosedError(f"transport of {self.node_id} is closed")
        network = self.network
        if type(body) not in network.codec.body_types:
            raise TypeError(f"{type(body).__name__} is not a registered message type")
        payload = network._encode(Request(0, body), peer, "to")
        if self.node_id in network._down:
            raise PeerUnavailableError(peer, f"this node ({self.node_id}) is down")
        target = network._transports.get(peer)
        if peer in network._down or target is None or target.handler is None:
            raise PeerUnavailableError(peer, "connection refused")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        # The delivery is a task of its own, as a request on a real peer is: the caller's
        # timeout or cancellation does not stop the handler on the other side.
        network._start(network._deliver(self.node_id, peer, payload, future))
        timer = loop.call_later(timeout_ms / 1000.0, _expire, future, peer, timeout_ms)
        self._waiting[future] = peer
        try:
            return await future
        finally:
            timer.cancel()
            del self._waiting[future]

    async def close(self) -> None:
        self._closed = True
        self.handler = None
        self.network._unregister(self)
        for future, peer in self._waiting.items():
            if not future.done():
                future.set_exception(ConnectionLostError(peer, "connection lost"))
