# Field declarations for hotkeys.py where Cython compiles it (see api/resp_server.pxd).
cdef class HotKeys:
    cdef public object _entries, _floor, _floor_keys, _halvings, _last_decay_ms, _now_ms, _since_refresh
    cdef public object capacity, half_life_ms, hot, min_count, min_share, sample_every, tick, total
