# Field declarations for replica_calls.py where Cython compiles it (see api/resp_server.pxd).
cdef class ReplicaCalls:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object figures, liveness, node_id, timeout_ms, transport

cdef class _Timed:
    cdef public object peer, started, then
