# Field declarations for read_path.py where Cython compiles it (see api/resp_server.pxd).
cdef class ReadPath:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object _cap_s, _delays, _refresh_at, _repairs, _turn, _unknown_s, background, calls
    cdef public object digest, fanout, latencies, no_digest, node_id, placement, read_repair, stats
    cdef public object store

cdef class _Read:
    cdef public object body, decided, path, plan, settled, skey
