"""Inter-node RPC over TCP: asyncio protocol server and client (docs/formats/rpc.md).

`RpcServer` accepts connections, checks each one's handshake, and runs every Request through
`async handler(peer_node_id, body) -> reply body` as a task of its own, at most
`max_concurrent_handlers` at a time per connection. `RpcClient` keeps ONE connection per peer
(a `PeerChannel`), opened on first use and shared by every caller: requests carry ids, so
replies may come back in any order.

Theory of operation, client side. A call takes an in-flight slot (at most
`max_inflight_requests` per peer; callers queue for a slot up to their deadline), makes sure
the peer's connection is open (one connect attempt at a time, shared by all waiting callers),
writes its frame and waits for the Response with that id. A deadline timer, not a task
cancellation, fails the call with RpcTimeoutError. A failed connect attempt sets a jittered,
exponentially growing back-off (capped at `reconnect_max_backoff_ms`); calls made during the
back-off fail at once with the last failure, because a coordinator would rather pick another
replica now than wait on a node that just refused.

Concurrency contract: everything here runs on one event loop; nothing is thread-safe. A
protocol object is owned by its transport; the channel only reads its `closed` flag and calls
`request`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from ringkv.errors import (
    ClosedError,
    ConfigError,
    ConnectionLostError,
    FrameTooLargeError,
    HandshakeError,
    PeerUnavailableError,
    RemoteError,
    RingkvError,
    RpcError,
    RpcProtocolError,
    RpcTimeoutError,
)
from ringkv.net.auth import (
    CLIENT,
    NO_SECURITY,
    NONCE_BYTES,
    SERVER,
    RpcSecurity,
    handshake_proof,
    new_nonce,
    proof_matches,
)
from ringkv.net.envelope import (
    MAX_HANDSHAKE_REASON_CHARS,
    PROTOCOL_VERSION,
    Error,
    ErrorCode,
    Handshake,
    HandshakeProof,
    HandshakeReply,
    MessageCodec,
    ReceivedRequest,
    ReceivedResponse,
    Request,
    Response,
    describe_exception,
)
from ringkv.net.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    FRAME_HEADER_BYTES,
    LARGEST_MAX_FRAME_BYTES,
    FrameDecoder,
    begin_frame,
    end_frame,
)
from ringkv.net.tls import certificate_names, describe_names

logger = logging.getLogger(__name__)

# Plaintext taken out of TLS per read call: a TLS record holds at most 16 KiB.
TLS_READ_BYTES = 256 * 1024

RequestHandler = Callable[[str, Any], Awaitable[Any]]
"""`async handler(peer_node_id, body) -> reply body (a registered message, or None)`."""

NOT_HANDLED = object()
FastHandler = Callable[[str, Any], Any]
"""`fast_handler(peer_node_id, body) -> reply body, or NOT_HANDLED`: tried first, on the
connection's callback, for requests answerable without waiting; NOT_HANDLED sends the request
to the async handler (in a task), so the fast one must not have acted on it."""


@dataclass(frozen=True, slots=True)
class RpcLimits:
    """Every bound of the RPC layer, with its unit in its name. Validated on construction."""

    # Largest frame payload sent or accepted; a larger incoming one closes the connection.
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    # Calls outstanding to one peer; more callers wait for a slot up to their timeout.
    max_inflight_requests: int = 256
    # Handler tasks running for one incoming connection; beyond it the server stops reading.
    max_concurrent_handlers: int = 256
    # TCP connect plus handshake, for one attempt.
    connect_timeout_ms: float = 1000.0
    # How long an accepted connection may take to finish its handshake (TLS included).
    handshake_timeout_ms: float = 2000.0
    # Largest frame accepted before the peer is authenticated: a stranger's handshake.
    max_handshake_bytes: int = 4096
    # Back-off after the first failed connect attempt; doubles per failure, jittered.
    reconnect_base_backoff_ms: float = 50.0
    reconnect_max_backoff_ms: float = 5000.0
    # Transport write buffer above which we stop producing (pause_writing).
    write_buffer_high_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.max_frame_bytes <= LARGEST_MAX_FRAME_BYTES:
            raise ConfigError(
                "max_frame_bytes", f"must be in [1, {LARGEST_MAX_FRAME_BYTES}], got "
                f"{self.max_frame_bytes}"
            )
        for name in ("max_inflight_requests", "max_concurrent_handlers",
                     "write_buffer_high_bytes", "max_handshake_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("connect_timeout_ms", "handshake_timeout_ms",
                     "reconnect_base_backoff_ms", "reconnect_max_backoff_ms"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)}")
        if self.reconnect_max_backoff_ms < self.reconnect_base_backoff_ms:
            raise ConfigError(
                "reconnect_max_backoff_ms",
                f"must be at least reconnect_base_backoff_ms={self.reconnect_base_backoff_ms}",
            )


def reconnect_backoff_ms(failures: int, limits: RpcLimits, rng: random.Random) -> float:
    """Delay before the next connect attempt after `failures` failed ones in a row.

    Exponential from `reconnect_base_backoff_ms`, capped at `reconnect_max_backoff_ms`, then
    "equal jitter": somewhere in the upper half of that value, so that nodes which lost the
    same peer at the same moment do not all knock again in step, yet none retries at once.
    """
    exponent = min(max(failures - 1, 0), 32)  # no float overflow however long a peer is gone
    ceiling = min(limits.reconnect_max_backoff_ms, limits.reconnect_base_backoff_ms * 2**exponent)
    return ceiling / 2 + rng.random() * ceiling / 2


def _format_address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _write_nowhere(data: bytes | bytearray) -> None:
    raise RuntimeError("RPC connection written to before it was made")


def _shown(name: str) -> str:
    """A peer's claimed name as a log line may show it: as given when printable, else quoted
    (a stranger's newline must not forge log lines)."""
    return name if name.isprintable() else repr(name)


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror.lower() if exc.strerror else describe_exception(exc)


class _FramedConnection:
    """What both ends share: framing, coalesced writes, write backpressure, closing.

    Each side defines what this class calls: `_frame_received(frame)` when one whole frame
    arrived (the server and client sides read different messages), and
    `_frame_too_large(size_bytes)` when the peer announced a frame over max_frame_bytes (the
    connection must close).

    An asyncio protocol with no base class (asyncio and uvloop call its methods by name): the
    compiled build makes it and its subclasses extension types (rpc.pxd, docs/compiled.md)."""

    __slots__ = ("_codec", "_decoder", "_flush_scheduled", "_handshaking", "_limits", "_loop",
                 "_out", "_transport", "_write", "_write_paused", "closed", "remote")

    def __init__(self, codec: MessageCodec, limits: RpcLimits, loop: asyncio.AbstractEventLoop):
        self._codec = codec
        self._limits = limits
        self._loop = loop
        # Until the handshake is done, frames are read one at a time under the smaller
        # handshake limit: a peer not yet authenticated cannot make us buffer 16 MiB.
        self._handshaking = True
        self._decoder = FrameDecoder(min(limits.max_handshake_bytes, limits.max_frame_bytes))
        self._out = bytearray()
        self._flush_scheduled = False
        self._write_paused = False
        self._transport: asyncio.Transport | None = None
        # Where outgoing bytes go: the transport's write, or TLS's on an accepted connection.
        self._write: Callable[[bytes | bytearray], None] = _write_nowhere
        self.closed = False
        self.remote = "?"

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but provide its methods.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._write = transport.write
        transport.set_write_buffer_limits(high=self._limits.write_buffer_high_bytes)
        self.remote = _format_address(transport.get_extra_info("peername"))

    def data_received(self, data: bytes) -> None:
        if self._handshaking:
            self._handshake_data(data)
            return
        try:
            frames = self._decoder.feed(data)
        except FrameTooLargeError as exc:
            self._frame_too_large(exc.size_bytes)
            return
        for frame in frames:
            if self.closed:
                return
            self._frame_received(frame)

    def _handshake_data(self, data: bytes) -> None:
        """Feed handshake frames one by one to `_frame_received`, which ends the handshake
        (`_end_handshake`) or closes; frames that came in the same read after the last
        handshake frame are then read as the connection's traffic, under the full limit."""
        decoder = self._decoder
        while self._handshaking and not self.closed:
            try:
                frames = decoder.feed(data, 1)
            except FrameTooLargeError as exc:
                self._frame_too_large(exc.size_bytes)
                return
            data = b""
            if not frames:
                return
            self._frame_received(frames[0])
        if not self.closed and decoder.buffered_bytes:
            self.data_received(b"")

    def _end_handshake(self) -> None:
        self._handshaking = False
        self._decoder.max_frame_bytes = self._limits.max_frame_bytes

    def _frame_limit(self) -> str:
        """The limit the decoder applies now, as a log line names it."""
        name = "max_handshake_bytes" if self._handshaking else "max_frame_bytes"
        return f"{name}={self._decoder.max_frame_bytes}"

    def eof_received(self) -> bool:
        # Half-open connections are of no use to a request/response protocol: close fully.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def pause_writing(self) -> None:
        self._write_paused = True
        self._writing_paused_changed()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._writing_paused_changed()

    # -- for subclasses -----------------------------------------------------------------------

    def _writing_paused_changed(self) -> None:
        pass

    def _before_flush(self) -> None:
        """Hook: runs before buffered frames are handed to the transport."""

    def _send(self, message: msgspec.Struct) -> None:
        """Append one frame to the output buffer; it leaves with the next flush.

        Raises FrameTooLargeError (buffer unchanged) if the encoded message is over the limit.
        """
        out = self._out
        start = begin_frame(out)
        try:
            self._codec.encode_into(message, out, start + FRAME_HEADER_BYTES)
        except BaseException:
            del out[start:]
            raise
        end_frame(out, start, self._limits.max_frame_bytes)
        if not self._flush_scheduled:
            # Writes are coalesced per loop iteration: the many callers (or handler tasks)
            # that send in one iteration share one transport.write, hence one send() syscall
            # and few TCP segments, instead of one each. asyncio and uvloop set TCP_NODELAY,
            # so without this every small frame would go out as its own packet.
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._before_flush()
        out = self._out
        if not out or self.closed:
            return
        # Hand the transport this buffer and start a fresh one rather than write-and-clear:
        # a transport may keep a reference to what it could not send yet.
        self._out = bytearray()
        self._write(out)

    def _close(self, *, abort: bool) -> None:
        """Close the connection; without `abort`, frames already sent still go out first."""
        if self.closed:
            return
        self.closed = True
        if self._transport is None:
            return
        if abort:
            self._transport.abort()
        else:
            if self._out:
                self._write(self._out)
                self._out = bytearray()
            self._transport.close()


class _ServerConnection(_FramedConnection):
    """One accepted connection: the handshake, then Requests, each run as a task.

    The handshake, in states (docs/formats/rpc.md, "Handshake"): waiting for the Handshake
    (`_hello` None); with the cluster secret, waiting for the caller's HandshakeProof
    (`_hello` set); open (`peer_node_id` set). Nothing the peer sends is acted on before it
    is open, and all of it is bounded by handshake_timeout_ms and max_handshake_bytes.
    """

    __slots__ = ("_backlog", "_handshake_timer", "_hello", "_nonce", "_peer_names",
                 "_reading_paused", "_running", "_server", "peer_node_id")

    def __init__(self, server: RpcServer, loop: asyncio.AbstractEventLoop):
        super().__init__(server.codec, server.limits, loop)
        self._server = server
        self.peer_node_id: str | None = None
        self._running = 0
        # Requests that arrived in a read while all handler slots were taken. Bounded by what
        # one read can hold: reading is paused as soon as the slots are full.
        self._backlog: deque[ReceivedRequest] = deque()
        self._reading_paused = False
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._hello: Handshake | None = None  # the caller's, once received
        self._nonce = b""  # our challenge to it (cluster secret)
        self._peer_names: frozenset[str] = frozenset()  # what its certificate names (TLS)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server._connections.add(self)
        self._handshake_timer = self._loop.call_later(
            self._limits.handshake_timeout_ms / 1000.0, self._handshake_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed and self._hello is not None and self.peer_node_id is None:
            # A caller that finds our proof wrong (another secret) hangs up without its own.
            logger.warning("refused RPC connection from %s (node %s): it closed the connection "
                           "instead of proving the cluster secret (the nodes hold different "
                           "secrets?)", self.remote, _shown(self._hello.node_id))
            self._server.stats.refused("secret")
        super().connection_lost(exc)
        self._server._connections.discard(self)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        # Handlers already running are left to finish (a write may be half applied); their
        # replies are dropped. RpcServer.close() cancels whatever is still running.
        self._backlog.clear()

    def _who(self) -> str:
        node = f" (node {self.peer_node_id})" if self.peer_node_id else ""
        return f"{self.remote}{node}"

    def _violation(self, detail: str) -> None:
        logger.warning("closing RPC connection from %s: %s", self._who(), detail)
        if self.peer_node_id is None and not self.closed:
            self._server.stats.refused("malformed")
        self._close(abort=True)

    def _frame_too_large(self, size_bytes: int) -> None:
        self._violation(f"frame of {size_bytes} bytes is over {self._frame_limit()}")

    def _handshake_timed_out(self) -> None:
        if self.peer_node_id is None and not self.closed:
            what = "no handshake" if self._hello is None else "handshake not finished"
            logger.warning("closing RPC connection from %s: %s within handshake_timeout_ms=%g",
                           self._who(), what, self._limits.handshake_timeout_ms)
            self._server.stats.refused("timeout")
            self._close(abort=True)

    def _before_flush(self) -> None:
        hook = self._server.before_reply
        if hook is not None:
            hook()

    def _frame_received(self, frame: bytes) -> None:
        if self.peer_node_id is None:
            if self._hello is None:
                self._hello_received(frame)
            else:
                self._proof_received(frame)
            return
        try:
            envelope = self._codec.decode_envelope(frame)
        except msgspec.DecodeError as exc:
            self._violation(f"undecodable frame ({exc})")
            return
        if type(envelope) is not ReceivedRequest:
            self._violation("sent a Response to the server side")
            return
        if (
            self._running < self._limits.max_concurrent_handlers
            and not self._backlog
            and not self._write_paused
        ):
            self._start_handler(envelope)
            if self._running < self._limits.max_concurrent_handlers:
                return
        else:
            self._backlog.append(envelope)
        self._update_reading()

    def _hello_received(self, frame: bytes) -> None:
        server = self._server
        security = server.security
        try:
            hello = self._codec.decode_handshake(frame)
        except msgspec.DecodeError as exc:
            self._violation(f"first frame is not a handshake ({exc})")
            return
        claimed = hello.node_id
        kind = reason = None
        if hello.protocol_version != server.protocol_version:
            kind, reason = "version", (
                f"protocol version {hello.protocol_version} is not supported "
                f"(node {server.node_id} speaks version {server.protocol_version})"
            )
        elif hello.cluster_name != server.cluster_name:
            kind, reason = "cluster", (
                f"cluster name {hello.cluster_name!r} does not match "
                f"{server.cluster_name!r} of node {server.node_id}"
            )
        elif not claimed:
            kind, reason = "malformed", "the handshake names no node"
        elif security.server_tls is not None and claimed not in self._peer_names:
            kind, reason = "certificate", (
                f"its certificate names {describe_names(self._peer_names)}, not node {claimed}"
            )
        elif security.secret is not None and len(hello.nonce) != NONCE_BYTES:
            kind, reason = "secret", (
                f"node {server.node_id} requires the cluster secret, and the handshake offered "
                "none (set cluster_secret_file on every member)" if not hello.nonce else
                f"its challenge is {len(hello.nonce)} bytes, not {NONCE_BYTES}"
            )
        if reason is not None:
            self._refuse(claimed, kind or "malformed", reason)
            return
        if security.secret is None:
            self._open(claimed)
            self._send(HandshakeReply(True, "", server.node_id))
            return
        # The cluster secret: prove it first (the caller checks before it proves its own), and
        # wait for the caller's proof before reading anything else.
        self._hello = hello
        self._nonce = new_nonce()
        proof = handshake_proof(security.secret, SERVER, hello.protocol_version, server.cluster_name,
                                claimed, server.node_id, hello.nonce, self._nonce)
        self._send(HandshakeReply(True, "", server.node_id, self._nonce, proof))

    def _proof_received(self, frame: bytes) -> None:
        server = self._server
        hello = self._hello
        assert hello is not None and server.security.secret is not None
        try:
            given = self._codec.decode_handshake_proof(frame).proof
        except msgspec.DecodeError:
            self._refuse(hello.node_id, "secret",
                         "it did not answer the cluster secret's challenge (sent another frame)")
            return
        expected = handshake_proof(server.security.secret, CLIENT, hello.protocol_version,
                                   server.cluster_name, hello.node_id, server.node_id,
                                   hello.nonce, self._nonce)
        if not proof_matches(expected, given):
            self._refuse(hello.node_id, "secret",
                         "its proof of the cluster secret does not match (the nodes hold "
                         "different secrets)")
            return
        self._open(hello.node_id)

    def _open(self, node_id: str) -> None:
        assert self._handshake_timer is not None
        self._handshake_timer.cancel()
        self.peer_node_id = node_id
        self._end_handshake()

    def _refuse(self, claimed: str, kind: str, reason: str) -> None:
        server = self._server
        logger.warning("refused RPC connection from %s (node %s): %s", self.remote,
                       _shown(claimed), reason)
        server.stats.refused(kind)
        self._send(HandshakeReply(False, reason[:MAX_HANDSHAKE_REASON_CHARS], server.node_id))
        self._close(abort=False)

    def _start_handler(self, envelope: ReceivedRequest) -> None:
        try:
            body = self._codec.decode_body(envelope.body)
        except msgspec.DecodeError as exc:
            # The envelope was fine, so only this request is refused: a newer peer may know
            # message types we do not, and the connection stays useful for the others.
            self._send(Response(envelope.id, None, Error(ErrorCode.BAD_REQUEST, str(exc))))
            return
        fast = self._server.fast_handler
        if fast is not None:
            # Requests that need no waiting are answered here, without a task each.
            try:
                reply = fast(self.peer_node_id, body)
            except Exception as exc:
                logger.warning("RPC handler failed on %s from %s: %s", type(body).__name__,
                               self.peer_node_id, describe_exception(exc),
                               exc_info=not isinstance(exc, RingkvError))
                self._send_response(Response(envelope.id, None,
                                             Error(ErrorCode.HANDLER_FAILED, describe_exception(exc))))
                return
            if reply is not NOT_HANDLED:
                self._send_response(Response(envelope.id, reply))
                return
        self._running += 1
        task = self._loop.create_task(self._serve(envelope.id, body))
        self._server._tasks.add(task)
        task.add_done_callback(self._handler_done)

    async def _serve(self, request_id: int, body: Any) -> None:
        assert self.peer_node_id is not None
        try:
            reply = await self._server.handler(self.peer_node_id, body)
        except Exception as exc:
            # The connection survives a failing handler: the error goes back to that caller.
            # A traceback only for what is not a typed ringkv error, i.e. probably a bug.
            logger.warning(
                "RPC handler failed on %s from %s: %s", type(body).__name__, self.peer_node_id,
                describe_exception(exc), exc_info=not isinstance(exc, RingkvError),
            )
            response = Response(request_id, None,
                                Error(ErrorCode.HANDLER_FAILED, describe_exception(exc)))
        else:
            response = Response(request_id, reply)
        if not self.closed:
            self._send_response(response)

    def _send_response(self, response: Response) -> None:
        body = response.body
        if body is not None and type(body) not in self._codec.body_types:
            detail = f"reply type {type(body).__name__} is not a registered message type"
        else:
            try:
                self._send(response)
                return
            except FrameTooLargeError as exc:
                detail = (f"reply of {exc.size_bytes} bytes is over "
                          f"max_frame_bytes={exc.max_frame_bytes}")
            except Exception as exc:
                detail = f"reply could not be encoded ({describe_exception(exc)})"
        logger.warning("RPC reply to %s not sent: %s", self.peer_node_id, detail)
        self._send(Response(response.id, None, Error(ErrorCode.BAD_REPLY, detail)))

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._running -= 1
        self._server._tasks.discard(task)
        if not self.closed:
            self._drain_backlog()

    def _writing_paused_changed(self) -> None:
        if not self.closed:
            self._drain_backlog()

    def _drain_backlog(self) -> None:
        # No new handler starts while the peer is not reading our replies: each would add a
        # reply to a write buffer that is already over its high-water mark.
        backlog = self._backlog
        while (
            backlog
            and self._running < self._limits.max_concurrent_handlers
            and not self._write_paused
        ):
            self._start_handler(backlog.popleft())
        if self._reading_paused or self._write_paused:
            self._update_reading()

    def _update_reading(self) -> None:
        # Stop reading while every handler slot is taken or the peer is not draining our
        # replies: TCP flow control then slows the sender instead of our memory growing.
        pause = (
            self._write_paused
            or bool(self._backlog)
            or self._running >= self._limits.max_concurrent_handlers
        )
        if pause == self._reading_paused or self.closed or self._transport is None:
            return
        self._reading_paused = pause
        if pause:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()


class _TlsServerConnection(_ServerConnection):
    """An accepted connection on a TLS port: TLS runs here over memory buffers rather than
    in the listener, so that a failed TLS handshake is ours to log and count like any other
    refusal (a listener's TLS drops it silently), bounded by the same handshake timer."""

    __slots__ = ("_tls", "_tls_in", "_tls_out", "_tls_ready")

    def __init__(self, server: RpcServer, loop: asyncio.AbstractEventLoop):
        super().__init__(server, loop)
        context = server.security.server_tls
        assert context is not None
        self._tls_in, self._tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._tls_in, self._tls_out, server_side=True)
        self._tls_ready = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._write = self._tls_write

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        tls = self._tls
        self._tls_in.write(data)
        try:
            if not self._tls_ready:
                try:
                    tls.do_handshake()
                except ssl.SSLWantReadError:
                    self._tls_send()
                    return
                self._tls_ready = True
                self._peer_names = certificate_names(tls.getpeercert())
            plain = bytearray()
            try:
                while chunk := tls.read(TLS_READ_BYTES):
                    plain += chunk
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:  # the peer closed TLS: as an EOF
                self._close(abort=False)
        except ssl.SSLError as exc:
            self._tls_failed(exc)
            return
        self._tls_send()  # the handshake's last flight, tickets, alerts
        if plain and not self.closed:
            super().data_received(bytes(plain))

    def _tls_write(self, data: bytes | bytearray) -> None:
        self._tls.write(data)
        self._tls_send()

    def _tls_send(self) -> None:
        if self._tls_out.pending and self._transport is not None:
            self._transport.write(self._tls_out.read())

    def _tls_failed(self, exc: ssl.SSLError) -> None:
        if self.peer_node_id is None:
            logger.warning("refused RPC connection from %s: TLS handshake failed (%s)", self.remote,
                           exc.reason or exc)
            self._server.stats.refused("tls")
        else:
            logger.warning("closing RPC connection from %s: TLS failed (%s)", self._who(),
                           exc.reason or exc)
        self._tls_send()  # the alert that tells the peer why
        self._close(abort=False)


class HandshakeStats:
    """Handshakes refused, by why: counted for the node's INFO and metrics.

    Kinds on the accepting side: version, cluster (another cluster's name), secret (no proof
    of the cluster secret, or a wrong one), certificate (a certificate that does not name the
    claimed node), tls (the TLS handshake failed: no certificate, another CA), timeout,
    malformed (not a handshake, too large). On the connecting side, `peers_refused` counts
    peers that refused us or failed to prove themselves (each connect attempt once)."""

    __slots__ = ("by_kind", "peers_refused")

    def __init__(self) -> None:
        self.by_kind: dict[str, int] = {}
        self.peers_refused = 0

    def refused(self, kind: str) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


class RpcServer:
    """Accepts RPC connections for one node and answers their requests with `handler`.

    Handlers run concurrently, each as a task; a handler's exception becomes an Error reply
    (HANDLER_FAILED) and the connection carries on. Handlers should be cancel-safe at their
    await points: close() cancels those still running. With `security`, a connection is
    answered only once the peer has proved the cluster secret and/or presented a certificate
    of the cluster CA naming it (net/auth.py, net/tls.py); refusals are counted in `stats`.
    """

    __slots__ = ("_connections", "_server", "_tasks", "before_reply", "cluster_name", "codec",
                 "fast_handler", "handler", "limits", "node_id", "protocol_version", "security",
                 "stats")

    def __init__(
        self,
        handler: RequestHandler,
        cluster_name: str,
        node_id: str,
        codec: MessageCodec,
        *,
        limits: RpcLimits | None = None,
        protocol_version: int = PROTOCOL_VERSION,
        fast_handler: FastHandler | None = None,
        before_reply: Callable[[], None] | None = None,
        security: RpcSecurity = NO_SECURITY,
    ):
        self.handler = handler
        self.security = security
        self.stats = HandshakeStats()
        self.fast_handler = fast_handler
        # Called before replies leave, e.g. to write the log records a handler deferred: the
        # replies of one loop iteration then share one log write, made before any of them.
        self.before_reply = before_reply
        self.cluster_name = cluster_name
        self.node_id = node_id
        self.codec = codec
        self.limits = limits or RpcLimits()
        # Only tests and upgrade drills set another version.
        self.protocol_version = protocol_version
        self._server: asyncio.Server | None = None
        self._connections: set[_ServerConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on host:port (port 0 picks a free one); return the bound address."""
        loop = asyncio.get_running_loop()
        connection = _ServerConnection if self.security.server_tls is None else _TlsServerConnection
        self._server = await loop.create_server(
            lambda: connection(self, loop), host, port, reuse_address=True
        )
        return self.address

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None or not self._server.sockets:
            raise ClosedError(f"RPC server of {self.node_id} is not listening")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def close(self) -> None:
        """Stop listening, drop every connection and cancel the handlers still running."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self._connections):
            connection._close(abort=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()


def _expire(future: asyncio.Future[Any], peer: str, timeout_ms: float,
            waiting_for: str | None = None) -> None:
    if not future.done():
        future.set_exception(RpcTimeoutError(peer, timeout_ms, waiting_for))


def _retrieve_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _ClientConnection(_FramedConnection):
    """The connection to one peer: our handshake first, then Requests out, Responses in.

    With TLS, the peer's certificate must name `peer` before anything is sent; with the
    cluster secret, the peer must answer our challenge before we answer its own
    (docs/formats/rpc.md, "Handshake"). `handshake_done` resolves only then."""

    __slots__ = ("_handshake", "_next_id", "_pending", "_security", "_stats", "_writable",
                 "handshake_done", "peer")

    def __init__(self, peer: str, handshake: Handshake, codec: MessageCodec, limits: RpcLimits,
                 loop: asyncio.AbstractEventLoop, security: RpcSecurity = NO_SECURITY,
                 stats: HandshakeStats | None = None):
        super().__init__(codec, limits, loop)
        self.peer = peer
        self.handshake_done: asyncio.Future[None] = loop.create_future()
        # Nobody awaits the handshake if the connect attempt was cancelled or timed out.
        self.handshake_done.add_done_callback(_retrieve_outcome)
        self._security = security
        self._stats = stats or HandshakeStats()
        if security.secret is not None:
            handshake = msgspec.structs.replace(handshake, nonce=new_nonce())
        self._handshake = handshake
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._security.client_tls is not None:
            names = certificate_names(transport.get_extra_info("peercert"))
            if self.peer not in names:
                self._refused(f"the certificate of {self.remote} names {describe_names(names)}, "
                              f"not node {self.peer}")
                return
        self._send(self._handshake)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if isinstance(exc, ssl.SSLError) and not self.handshake_done.done():
            # TLS 1.3 checks our certificate after our side of the TLS handshake is done: the
            # peer's refusal arrives as an alert instead.
            self._refused(f"its TLS refused our certificate ({exc.reason or exc})")
            return
        reason = "connection lost" + (f" ({describe_exception(exc)})" if exc else "")
        self._fail(lambda: PeerUnavailableError(self.peer, reason))

    def _refused(self, reason: str) -> None:
        logger.warning("RPC handshake with %s at %s refused: %s", self.peer, self.remote, reason)
        self._stats.peers_refused += 1
        self._fail(lambda: HandshakeError(self.peer, reason))

    def abort(self, reason: str = "connection closed by this node") -> None:
        """Close now; calls waiting on this connection fail with PeerUnavailableError."""
        self._fail(lambda: PeerUnavailableError(self.peer, reason))

    def _fail(self, make_error: Callable[[], RpcError]) -> None:
        """Close and fail every waiter; each gets its own exception object."""
        self._close(abort=True)
        if not self.handshake_done.done():
            self.handshake_done.set_exception(make_error())
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                error = make_error()
                if type(error) is PeerUnavailableError:
                    # These requests were sent: the peer may have run them.
                    error = ConnectionLostError(error.peer, error.reason)
                future.set_exception(error)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def _frame_too_large(self, size_bytes: int) -> None:
        if self._handshaking:
            self._violation(f"handshake reply of {size_bytes} bytes is over {self._frame_limit()}")
            return
        limit = self._limits.max_frame_bytes
        logger.warning(
            "closing RPC connection to %s at %s: frame of %d bytes is over max_frame_bytes=%d",
            self.peer, self.remote, size_bytes, limit,
        )
        self._fail(lambda: FrameTooLargeError(size_bytes, limit, self.peer, "from"))

    def _violation(self, detail: str) -> None:
        logger.warning("closing RPC connection to %s at %s: %s", self.peer, self.remote, detail)
        self._fail(lambda: RpcProtocolError(f"{self.peer} broke the RPC protocol: {detail}",
                                            self.peer))

    def _frame_received(self, frame: bytes) -> None:
        if not self.handshake_done.done():
            self._reply_received(frame)
            return
        try:
            envelope = self._codec.decode_envelope(frame)
        except msgspec.DecodeError as exc:
            try:
                # With the cluster secret, the peer refuses our proof after our side of the
                # handshake is done: its refusal is the one frame that is not an envelope.
                refusal = self._codec.decode_handshake_reply(frame)
            except msgspec.DecodeError:
                refusal = None
            if refusal is not None and not refusal.accepted:
                self._refused(refusal.reason)
            else:
                self._violation(f"undecodable frame ({exc})")
            return
        if type(envelope) is not ReceivedResponse:
            self._violation("sent a Request on a connection we opened")
            return
        future = self._pending.pop(envelope.id, None)
        if future is None or future.done():
            return  # the caller gave up (timeout or cancellation) before the reply came
        error = envelope.error
        if error is not None:
            future.set_exception(RemoteError(self.peer, error.code, error.message))
            return
        try:
            future.set_result(self._codec.decode_body(envelope.body))
        except msgspec.DecodeError as exc:
            future.set_exception(
                RpcProtocolError(f"{self.peer} sent a reply that does not decode: {exc}", self.peer)
            )

    def _reply_received(self, frame: bytes) -> None:
        try:
            reply = self._codec.decode_handshake_reply(frame)
        except msgspec.DecodeError as exc:
            self._violation(f"answered the handshake with something else ({exc})")
            return
        reason = None
        secret = self._security.secret
        if not reply.accepted:
            reason = reply.reason
        elif reply.node_id and reply.node_id != self.peer:
            # A stale address book: whoever listens there now is not the node we meant.
            reason = f"expected node {self.peer} at {self.remote}, found node {reply.node_id}"
        elif secret is not None:
            hello = self._handshake
            if len(reply.nonce) != NONCE_BYTES or not reply.proof:
                reason = (f"node {self.peer} did not answer the cluster secret's challenge: it runs "
                          "without a secret (set cluster_secret_file on every member)")
            else:
                expected = handshake_proof(secret, SERVER, hello.protocol_version,
                                           hello.cluster_name, hello.node_id, self.peer,
                                           hello.nonce, reply.nonce)
                if not proof_matches(expected, reply.proof):
                    reason = (f"node {self.peer} failed the cluster secret's challenge: its proof "
                              "does not match (the nodes hold different secrets)")
                else:
                    self._send(HandshakeProof(handshake_proof(
                        secret, CLIENT, hello.protocol_version, hello.cluster_name,
                        hello.node_id, self.peer, hello.nonce, reply.nonce)))
        if reason is None:
            self._end_handshake()
            self.handshake_done.set_result(None)
            return
        self._refused(reason)

    def _writing_paused_changed(self) -> None:
        if not self._write_paused and self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)
            self._writable = None

    def send_request(self, body: Any) -> tuple[int, asyncio.Future[Any]]:
        """Queue a Request for `body`; return its id and the future its reply will resolve.

        The caller owns the deadline and must `forget(id)` once done with the future.
        """
        if self.closed:
            raise PeerUnavailableError(self.peer, "connection lost")
        request_id = self._next_id
        self._next_id = request_id + 1
        try:
            self._send(Request(request_id, body))
        except FrameTooLargeError as exc:
            raise FrameTooLargeError(exc.size_bytes, exc.max_frame_bytes, self.peer, "to") from None
        future = self._loop.create_future()
        self._pending[request_id] = future
        return request_id, future

    def forget(self, request_id: int) -> None:
        self._pending.pop(request_id, None)

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    async def wait_writable(self, deadline: float, timeout_ms: float) -> None:
        """Wait until the transport drains below its high-water mark (or the connection
        closes), at most until `deadline`."""
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                await asyncio.shield(self._writable)
        except TimeoutError:
            if timeout.expired():
                raise RpcTimeoutError(self.peer, timeout_ms, "peer not reading") from None
            raise


class PeerChannel:
    """One peer's pooled connection, in-flight slots and reconnect back-off.

    Owned by an RpcClient. At most one connect attempt runs at a time; the callers waiting on
    it share its outcome.
    """

    __slots__ = ("_client", "_conn", "_connecting", "_failures", "_inflight", "_last_failure",
                 "_max_inflight", "_retry_at", "_slot_waiters", "host", "peer", "port")

    def __init__(self, client: RpcClient, peer: str, host: str, port: int):
        self._client = client
        self.peer = peer
        self.host = host
        self.port = port
        self._conn: _ClientConnection | None = None
        self._connecting: asyncio.Task[_ClientConnection] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_failure: RpcError | None = None
        self._max_inflight = client.limits.max_inflight_requests
        self._inflight = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def call(self, body: Any, timeout_ms: float) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000.0
        if self._inflight < self._max_inflight and not self._slot_waiters:
            self._inflight += 1  # a free slot: taken without suspending
        else:
            await self._wait_for_slot(loop, deadline, timeout_ms)
        try:
            conn = self._conn
            if conn is None or conn.closed:
                conn = await self._connection(deadline, timeout_ms)
            if conn.write_paused:
                await conn.wait_writable(deadline, timeout_ms)
            request_id, future = conn.send_request(body)
            # A timer that fails the future is cheaper than asyncio.timeout() on this hot
            # path: no task cancellation to unwind.
            timer = loop.call_at(deadline, _expire, future, self.peer, timeout_ms)
            try:
                return await future
            finally:
                timer.cancel()
                conn.forget(request_id)
        finally:
            self._release_slot()

    def start_call(self, body: Any, timeout_ms: float,
                   on_done: Callable[[asyncio.Future[Any]], None] | None = None) -> asyncio.Future[Any] | None:
        """call() without a coroutine, when nothing needs waiting for: the request is sent now
        and the returned future resolves as call() would return or raise. None when it cannot
        be sent at once (not connected, no free slot, writes paused): use call().

        `on_done(future)` runs in the future's own done callback, after the call's slot is
        released: a caller that only needs to know the outcome adds no callback of its own
        (each is a handle the loop schedules and runs)."""
        conn = self._conn
        if (conn is None or conn.closed or conn.write_paused
                or self._inflight >= self._max_inflight or self._slot_waiters):
            return None
        self._inflight += 1
        try:
            request_id, future = conn.send_request(body)
        except BaseException:
            self._release_slot()
            raise
        loop = conn._loop
        timer = loop.call_at(loop.time() + timeout_ms / 1000.0, _expire, future, self.peer, timeout_ms)

        def finished(_future: asyncio.Future[Any]) -> None:
            timer.cancel()
            conn.forget(request_id)
            self._release_slot()
            if on_done is not None:
                on_done(_future)

        future.add_done_callback(finished)
        return future

    # In-flight slots are counted by hand rather than with asyncio.Semaphore: the free-slot
    # case, which is nearly every call, then costs an integer compare instead of a coroutine.

    async def _wait_for_slot(self, loop: asyncio.AbstractEventLoop, deadline: float,
                             timeout_ms: float) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        self._slot_waiters.append(waiter)
        waiting_for = f"no in-flight slot free, max_inflight_requests={self._max_inflight}"
        timer = loop.call_at(deadline, _expire, waiter, self.peer, timeout_ms, waiting_for)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release_slot()  # handed a slot, then cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(waiter)
            raise
        finally:
            timer.cancel()

    def _release_slot(self) -> None:
        waiters = self._slot_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the longest waiter
                return
        self._inflight -= 1

    async def _connection(self, deadline: float, timeout_ms: float) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        task = self._connecting
        if task is None:
            now = loop.time()
            if now < self._retry_at:
                raise self._failure_during_backoff(now)
            task = self._connecting = loop.create_task(self._connect())
            # If every caller's deadline passes first, nobody awaits the outcome; mark it
            # retrieved so asyncio does not log "exception was never retrieved".
            task.add_done_callback(_retrieve_outcome)
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                # Shielded: one caller's deadline must not cancel the attempt others wait on.
                return await asyncio.shield(task)
        except TimeoutError:
            if timeout.expired():
                raise RpcTimeoutError(self.peer, timeout_ms, "still connecting") from None
            raise

    def _failure_during_backoff(self, now: float) -> RpcError:
        last = self._last_failure
        wait_ms = (self._retry_at - now) * 1000.0
        if isinstance(last, HandshakeError):
            return HandshakeError(self.peer, last.reason)
        reason = last.reason if isinstance(last, PeerUnavailableError) else str(last)
        return PeerUnavailableError(self.peer, f"{reason}; next attempt in {wait_ms:.0f} ms")

    async def _connect(self) -> _ClientConnection:
        client = self._client
        limits = client.limits
        loop = asyncio.get_running_loop()
        address = f"{self.host}:{self.port}"
        conn: _ClientConnection | None = None
        timeout = asyncio.timeout(limits.connect_timeout_ms / 1000.0)
        try:
            async with timeout:
                _, conn = await loop.create_connection(
                    lambda: _ClientConnection(self.peer, client.handshake, client.codec, limits,
                                              loop, client.security, client.stats),
                    self.host, self.port, ssl=client.security.client_tls,
                )
                await conn.handshake_done
        except (OSError, RpcError) as exc:  # TimeoutError is an OSError
            if conn is not None:
                conn.abort()
            if isinstance(exc, ssl.SSLError):
                # The peer's certificate is not of our CA (or it has none): no handshake.
                reason = f"TLS handshake with {address} failed ({exc.reason or exc})"
                logger.warning("RPC handshake with %s at %s refused: %s", self.peer, address,
                               reason)
                client.stats.peers_refused += 1
                exc = HandshakeError(self.peer, reason)
            if timeout.expired():
                error: RpcError = PeerUnavailableError(
                    self.peer, f"no handshake from {address} within connect_timeout_ms="
                    f"{limits.connect_timeout_ms:g}"
                )
            elif isinstance(exc, RpcError):
                error = exc
            else:
                error = PeerUnavailableError(self.peer, f"{_describe_os_error(exc)} at {address}")
            self._failures += 1
            self._last_failure = error
            self._retry_at = loop.time() + reconnect_backoff_ms(
                self._failures, limits, client.rng) / 1000.0
            raise error from None
        except BaseException:
            if conn is not None:
                conn.abort()
            raise
        finally:
            # Only if it is still ours: close() or move() may have replaced this attempt.
            if self._connecting is asyncio.current_task():
                self._connecting = None
        self._failures = 0
        self._last_failure = None
        self._conn = conn
        return conn

    def move(self, host: str, port: int) -> None:
        """The peer is now at host:port: drop the old connection and any back-off."""
        old = f"{self.host}:{self.port}"
        self.host, self.port = host, port
        self._failures = 0
        self._retry_at = 0.0
        self.close(f"moved from {old} to {host}:{port}")

    def close(self, reason: str = "connection closed by this node") -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if self._conn is not None:
            self._conn.abort(reason)
            self._conn = None


class RpcClient:
    """Calls other nodes of the cluster over one pooled connection per peer.

    Peers are named by node id; `set_peer_address` says where each one listens. A call to a
    peer without an address fails with PeerUnavailableError.
    """

    __slots__ = ("_channels", "_closed", "codec", "handshake", "limits", "node_id", "rng",
                 "security", "stats")

    def __init__(
        self,
        node_id: str,
        cluster_name: str,
        codec: MessageCodec,
        *,
        limits: RpcLimits | None = None,
        rng: random.Random | None = None,
        protocol_version: int = PROTOCOL_VERSION,
        security: RpcSecurity = NO_SECURITY,
    ):
        self.node_id = node_id
        self.security = security
        self.stats = HandshakeStats()
        self.codec = codec
        self.limits = limits or RpcLimits()
        # Injected so tests (and the simulator) get reproducible back-off jitter.
        self.rng = rng or random.Random()
        self.handshake = Handshake(protocol_version, cluster_name, node_id)
        self._channels: dict[str, PeerChannel] = {}
        self._closed = False

    def set_peer_address(self, node_id: str, host: str, port: int) -> None:
        channel = self._channels.get(node_id)
        if channel is None:
            self._channels[node_id] = PeerChannel(self, node_id, host, port)
        elif (channel.host, channel.port) != (host, port):
            channel.move(host, port)

    def peer_address(self, node_id: str) -> tuple[str, int] | None:
        channel = self._channels.get(node_id)
        return None if channel is None else (channel.host, channel.port)

    def channel(self, node_id: str) -> PeerChannel | None:
        return self._channels.get(node_id)

    async def call(self, peer: str, body: Any, timeout_ms: float) -> Any:
        """Send `body` to `peer` and return its reply body.

        Raises RpcTimeoutError, PeerUnavailableError, HandshakeError, RemoteError (the
        handler failed), FrameTooLargeError or RpcProtocolError; all are RpcError.
        """
        if self._closed:
            raise ClosedError(f"RPC client of {self.node_id} is closed")
        if type(body) not in self.codec.body_types:
            raise TypeError(f"{type(body).__name__} is not a registered message type")
        channel = self._channels.get(peer)
        if channel is None:
            raise PeerUnavailableError(peer, "no address known for it")
        return await channel.call(body, timeout_ms)

    def start_call(self, peer: str, body: Any, timeout_ms: float,
                   on_done: Callable[[asyncio.Future[Any]], None] | None = None) -> asyncio.Future[Any] | None:
        """PeerChannel.start_call for `peer` (None: use call())."""
        channel = self._channels.get(peer)
        if channel is None or self._closed or type(body) not in self.codec.body_types:
            return None
        return channel.start_call(body, timeout_ms, on_done)

    async def close(self) -> None:
        """Close every connection; calls still waiting fail with PeerUnavailableError."""
        self._closed = True
        for channel in self._channels.values():
            channel.close()
