# Field declarations for engine.py where Cython compiles it (see api/resp_server.pxd).
cdef class _State:
    cdef public object imms, versions, mem

cdef class Engine:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object path, options, _fs, _write_lock, _wal, _closed, _bg_error
    cdef public object _max_key, _max_value, _memtable_bytes, _sync_always, _family_index, _router
    cdef public _State _state
