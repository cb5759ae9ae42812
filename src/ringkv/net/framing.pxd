# Field declarations for framing.py where Cython compiles it (see api/resp_server.pxd).
cdef class FrameDecoder:
    cdef public object _buffer, _failed, max_frame_bytes
