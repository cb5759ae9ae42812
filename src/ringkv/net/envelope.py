"""The RPC envelope and the codec of message bodies (docs/formats/rpc.md, "Messages").

The net layer does not know the cluster protocol: the node layer defines its message types as
tagged msgspec Structs and hands them to a `MessageCodec`. The codec wraps a body in the
envelope (`Request`, `Response`), encodes it as msgpack, and on the way back decodes the
envelope first and the body second, so that a body of an unknown type costs one `Error`
reply instead of the whole connection.

Wire stability rule: `Handshake` and `HandshakeReply` keep their leading fields forever (new
fields may only be appended), so that any two versions can read each other's handshake and
refuse each other politely. The challenge fields of the cluster secret were appended that way:
a node without a secret still speaks protocol version 1 as it always did.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Union

import msgspec

PROTOCOL_VERSION = 1


class ErrorCode(enum.IntEnum):
    """Codes of `Error` replies. Values are part of the wire format; never reuse one."""

    # The request body did not decode as any message type this node has registered
    # (a newer peer sent a type we do not know yet, or the body is malformed).
    BAD_REQUEST = 1
    # The handler raised; the message carries the exception's type and text.
    HANDLER_FAILED = 2
    # The handler's reply could not be sent: over max_frame_bytes or not a registered type.
    BAD_REPLY = 3
    # The node is shutting down and did not run the request.
    SHUTTING_DOWN = 4


# Bounds of the handshake's fields: a peer is not trusted before its handshake is done, so
# nothing it sends then may be large (the whole frame is bounded by max_handshake_bytes too).
MAX_HANDSHAKE_NAME_CHARS = 255  # cluster_name and node_id
MAX_HANDSHAKE_REASON_CHARS = 1024
MAX_HANDSHAKE_TOKEN_BYTES = 64  # a nonce or a proof (net/auth.py sends 32 of each)

HandshakeName = Annotated[str, msgspec.Meta(max_length=MAX_HANDSHAKE_NAME_CHARS)]
HandshakeToken = Annotated[bytes, msgspec.Meta(max_length=MAX_HANDSHAKE_TOKEN_BYTES)]


class Handshake(msgspec.Struct, tag="Handshake", array_like=True):
    """First frame a connecting node sends. `nonce`: its challenge to the accepting node when
    it holds the cluster secret, empty otherwise (net/auth.py)."""

    protocol_version: int
    cluster_name: HandshakeName
    node_id: HandshakeName
    nonce: HandshakeToken = b""


class HandshakeReply(msgspec.Struct, tag="HandshakeReply", array_like=True):
    """The accepting node's answer to a Handshake. On refusal the connection is then closed.

    `node_id` names the accepting node, so a caller whose address book is stale learns that it
    reached the wrong node instead of sending it another node's requests. With the cluster
    secret, `nonce` is the accepting node's challenge and `proof` its answer to the caller's.
    """

    accepted: bool
    reason: Annotated[str, msgspec.Meta(max_length=MAX_HANDSHAKE_REASON_CHARS)] = ""
    node_id: HandshakeName = ""
    nonce: HandshakeToken = b""
    proof: HandshakeToken = b""


class HandshakeProof(msgspec.Struct, tag="HandshakeProof", array_like=True):
    """The connecting node's answer to the accepting node's challenge (cluster secret only):
    its last handshake frame, sent before any Request."""

    proof: HandshakeToken


class Error(msgspec.Struct, array_like=True):
    """Why a request failed on the peer; `code` is an ErrorCode value (or a newer one)."""

    code: int
    message: str


class Request(msgspec.Struct, tag="Request", array_like=True):
    """A call. `id` is unique among the calls in flight on one connection; `body` is an
    instance of a registered message type. The receiver decodes it as a ReceivedRequest."""

    id: int
    body: Any


class Response(msgspec.Struct, tag="Response", array_like=True):
    """The answer to the Request with the same `id`: a body (may be None) or an Error."""

    id: int
    body: Any = None
    error: Error | None = None


class ReceivedRequest(msgspec.Struct, tag="Request", array_like=True):
    """A Request as decoded by the receiver: same layout, the body still encoded."""

    id: int
    body: msgspec.Raw


class ReceivedResponse(msgspec.Struct, tag="Response", array_like=True):
    """A Response as decoded by the receiver: same layout, the body still encoded."""

    id: int
    body: msgspec.Raw
    error: Error | None = None


class MessageCodec:
    """Encodes envelopes and decodes them with bodies typed by the registered message types.

    REQUIRES: every body type is a msgspec Struct with a tag (`tag=True` or a string tag), the
    tags are distinct, and all of them agree on `array_like` (a msgspec union cannot mix the
    two). Tags are required even for a single type, so that registering a second type later
    does not change how the first one is encoded.

    A codec is immutable after construction and may be shared by any number of connections.
    """

    __slots__ = ("body_types", "decode_body", "decode_envelope", "decode_handshake",
                 "decode_handshake_proof", "decode_handshake_reply", "encode", "encode_into")

    def __init__(self, body_types: Iterable[type[msgspec.Struct]]):
        types = tuple(body_types)
        tags: dict[Any, type] = {}
        array_like: set[bool] = set()
        for body_type in types:
            if not (isinstance(body_type, type) and issubclass(body_type, msgspec.Struct)):
                raise TypeError(f"message type {body_type!r} is not a msgspec.Struct")
            config = body_type.__struct_config__
            if config.tag is None:
                raise TypeError(
                    f"message type {body_type.__name__} needs a tag: declare it with "
                    "`msgspec.Struct, tag=True`"
                )
            if config.tag in tags:
                raise TypeError(
                    f"message types {tags[config.tag].__name__} and {body_type.__name__} "
                    f"share the tag {config.tag!r}"
                )
            tags[config.tag] = body_type
            array_like.add(config.array_like)
        if len(array_like) > 1:
            raise TypeError("message types must all be array_like or all not array_like")
        self.body_types = frozenset(types)
        encoder = msgspec.msgpack.Encoder()
        body_union = Union[(*types, None)] if types else None
        # The codec's operations are msgspec's own bound methods, not wrappers around them:
        # they run several times per request, and a Python call layer each is measurable.
        #
        # encode(message) -> bytes
        self.encode: Callable[[msgspec.Struct], bytes] = encoder.encode
        # encode_into(message, buffer, offset): write the encoding at `offset` of `buffer`
        # (its current end), resizing it to fit.
        self.encode_into: Callable[[msgspec.Struct, bytearray, int], None] = encoder.encode_into
        # decode_handshake(payload) -> Handshake; decode_handshake_reply(payload) ->
        # HandshakeReply. Both raise msgspec.DecodeError (ValidationError is one) otherwise.
        self.decode_handshake: Callable[[bytes], Handshake] = (
            msgspec.msgpack.Decoder(Handshake).decode)
        self.decode_handshake_reply: Callable[[bytes], HandshakeReply] = (
            msgspec.msgpack.Decoder(HandshakeReply).decode)
        self.decode_handshake_proof: Callable[[bytes], HandshakeProof] = (
            msgspec.msgpack.Decoder(HandshakeProof).decode)
        # decode_envelope(payload) -> ReceivedRequest | ReceivedResponse, the body left raw.
        self.decode_envelope: Callable[[bytes], ReceivedRequest | ReceivedResponse] = (
            msgspec.msgpack.Decoder(ReceivedRequest | ReceivedResponse).decode)
        # decode_body(raw) -> an instance of a registered type, or None.
        self.decode_body: Callable[[msgspec.Raw | bytes], Any] = (
            msgspec.msgpack.Decoder(body_union).decode)


def describe_exception(exc: BaseException) -> str:
    """The text an Error reply carries for a handler's exception."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
