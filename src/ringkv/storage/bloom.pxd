# C types for bloom.py where Cython compiles it (setup.py, ringkv/hotpath.py); bloom.py itself
# stays plain Python and is what runs without a build or with RINGKV_PURE=1. The probe loop is
# integer arithmetic on one bytes object: typed, it runs in C (docs/compiled.md has the figures).
# The arithmetic cannot overflow: h1 + k*h2 < 2**32 + 30 * 2**32 < 2**64.
cimport cython

cdef class BloomFilter:
    cdef bytes _bits
    cdef Py_ssize_t _k
    cdef unsigned long long _nbits

    @cython.locals(nbits="unsigned long long", h="unsigned long long", h1="unsigned long long",
                   h2="unsigned long long", pos="unsigned long long", bits=bytes)
    cpdef bint may_contain(self, key)
