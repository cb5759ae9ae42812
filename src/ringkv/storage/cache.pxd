# Field declarations for cache.py where Cython compiles it (see api/resp_server.pxd).
cdef class BlockCache:
    cdef public object _entries, _lock, capacity_bytes, hits, misses, used_bytes
