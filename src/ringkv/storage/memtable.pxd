# Field declarations for memtable.py where Cython compiles it (see api/resp_server.pxd).
cdef class MemTable:
    cdef object __weakref__
    cdef public object _base, _delta, _pending, _snapshots, data, wal
    cdef public object approx_bytes, user_bytes, wal_number
