# Field declarations for version.py where Cython compiles it (see api/resp_server.pxd).
cdef class Version:
    cdef object __weakref__
    cdef public object _deep, _largest, levels
