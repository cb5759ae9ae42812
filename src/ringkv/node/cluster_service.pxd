# Field declarations for cluster_service.py where Cython compiles it (see api/resp_server.pxd).
cdef class ClusterService:
    cdef public object _dc_r, _dc_w, _ns, levels, namespace, path, rate_limited, session
