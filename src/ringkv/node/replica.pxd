# Field declarations for replica.py where Cython compiles it (see api/resp_server.pxd).
cdef class Replica:
    cdef public object _decode, _encode, actor, wall, engine, hlc
