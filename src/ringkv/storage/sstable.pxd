# Field declarations for sstable.py where Cython compiles it (see api/resp_server.pxd).
cdef class Table:
    cdef public object _block_cache, _index_keys, _index_offsets, _index_sizes, _opener, _table_cache
    cdef public object bloom, largest, meta, number, path, smallest
