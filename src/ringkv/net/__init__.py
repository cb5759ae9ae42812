"""Inter-node RPC: framing, connections and the Transport interface (docs/formats/rpc.md).

The net layer is generic over the cluster's message types: the node layer declares them as
tagged msgspec Structs and passes them to a `MessageCodec`. This package never imports
ringkv.node, ringkv.storage or ringkv.api.
"""

from ringkv.net.envelope import (
    PROTOCOL_VERSION,
    Error,
    ErrorCode,
    Handshake,
    HandshakeReply,
    MessageCodec,
    Request,
    Response,
)
from ringkv.net.framing import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, encode_frame
from ringkv.net.rpc import RequestHandler, RpcClient, RpcLimits, RpcServer
from ringkv.net.transport import MemoryNetwork, MemoryTransport, TcpTransport, Transport

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "Error",
    "ErrorCode",
    "FrameDecoder",
    "Handshake",
    "HandshakeReply",
    "MemoryNetwork",
    "MemoryTransport",
    "MessageCodec",
    "Request",
    "RequestHandler",
    "Response",
    "RpcClient",
    "RpcLimits",
    "RpcServer",
    "TcpTransport",
    "Transport",
    "encode_frame",
]
