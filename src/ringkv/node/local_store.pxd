# Field declarations for local_store.py where Cython compiles it (see api/resp_server.pxd).
cdef class LocalStore:
    cdef dict __dict__
    cdef object __weakref__
    cdef public object replica, engine, hot_keys
    cdef public object clock, namespaces, policy, max_value_bytes, keys_max_count, sync_always
    cdef public object partitions, _partition_shift, _partition_keys, _ns_partition_keys, live_keys
    cdef public object usage, quotas, hot_cache, _expiry_heap, _expiring, _expiry_max, _after_commit, score_index
