# Field declarations for local_service.py where Cython compiles it (see api/resp_server.pxd).
cdef class LocalService:
    cdef public object _ns, get_value_now, limits, namespace, put_now, rate_limited, store
