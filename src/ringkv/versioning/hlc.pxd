# Field declarations for hlc.py where Cython compiles it (see api/resp_server.pxd).
cdef class HybridLogicalClock:
    cdef public object _last, max_offset_ms
