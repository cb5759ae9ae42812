# Field declarations for rpc.py where Cython compiles it (see api/resp_server.pxd). The
# connection classes keep their hierarchy: an extension type may subclass another.
cdef class _FramedConnection:
    cdef public object _codec, _decoder, _flush_scheduled, _handshaking, _limits, _loop, _out
    cdef public object _transport, _write, _write_paused, closed, remote

cdef class _ServerConnection(_FramedConnection):
    cdef public object _backlog, _handshake_timer, _hello, _nonce, _peer_names, _reading_paused
    cdef public object _running, _server, peer_node_id

cdef class _TlsServerConnection(_ServerConnection):
    cdef public object _tls, _tls_in, _tls_out, _tls_ready

cdef class _ClientConnection(_FramedConnection):
    cdef public object _handshake, _next_id, _pending, _security, _stats, _writable
    cdef public object handshake_done, peer

cdef class RpcServer:
    cdef public object _connections, _server, _tasks, before_reply, cluster_name, codec
    cdef public object fast_handler, handler, limits, node_id, protocol_version, security, stats

cdef class PeerChannel:
    cdef public object _client, _conn, _connecting, _failures, _inflight, _last_failure
    cdef public object _max_inflight, _retry_at, _slot_waiters, host, peer, port

cdef class RpcClient:
    cdef public object _channels, _closed, codec, handshake, limits, node_id, rng, security, stats
