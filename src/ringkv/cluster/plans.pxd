# Field declarations for plans.py where Cython compiles it (see api/resp_server.pxd).
cdef class ReadPlan:
    cdef public object _answered, _by_digest, _data_open, _digest, _digesting, _down_reason, _held
    cdef public object _is_up, _needs, _open, _started, _undigested, fanout, local, pref, quorum
    cdef public object unasked

cdef class WritePlan:
    cdef public object _down_reason, _extra_failed, _failed, _fallbacks, _is_up, _me, _open
    cdef public object _reasons, _sent, _started, _used, acked_by, extra, pref, quorum
