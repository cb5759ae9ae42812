# Field declarations for resp_server.py where Cython compiles it (setup.py, ringkv/hotpath.py);
# the .py stays plain Python and is what runs without a build or with RINGKV_PURE=1. Declared
# here, the class is an extension type: its fields are C struct members that compiled code
# reads and writes without a lookup by name. Every field stays a Python object, so the
# compiled class holds what the source assigns; none is typed as another module's class, so
# each module may run compiled or as Python independently (docs/compiled.md).
cdef class RespConnection:
    cdef public object _counted_bytes, _held, _held_bytes, _idle_ticks, _ip, _lingered_bytes
    cdef public object _out, _out_bytes, _paused, _pending, _resume_scheduled, base, closing
    cdef public object enc, id, kv, kv_session, levels, name, parser, peer, server, session
    cdef public object transport
