# Field declarations for write_path.py where Cython compiles it (see api/resp_server.pxd).
cdef class WritePath:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object calls, hints, node_id, placement, stats, store

cdef class _Replication:
    cdef public object calls, data, decided, hinted_by_relay, hints, placement, plain, plan
    cdef public object settled, skey, stats
