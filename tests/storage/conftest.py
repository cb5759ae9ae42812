"""The `seal` fixture: a storage test that takes it runs twice, on a plain store and on one
sealed with encryption at rest (Options.encryption_keys, docs/security.md), so every path of
the engine it exercises (families, tiered and time-window merges, expired-table deletions,
re-routing at open) is shown to write sealed files and to read them back."""

from __future__ import annotations

import os
import struct

import pytest

from ringkv.storage import manifest, sealing
from ringkv.storage.sealing import KeyRing

SEAL_KEY = bytes(range(32))


class Sealing:
    def __init__(self, sealed: bool):
        self.sealed = sealed
        self.keys = KeyRing({1: SEAL_KEY}, "the test's key") if sealed else None

    def manifest_version(self, plain: int) -> int:
        """The manifest format version a store writes: `plain` unsealed, 3 sealed."""
        return manifest.SEALED_MANIFEST_FORMAT_VERSION if self.sealed else plain

    def check(self, path) -> None:
        """Every table and log in `path`, and its manifest, is sealed (with key 1) or plain,
        as this run wants. Call it with the engine closed."""
        path = str(path)
        want = 1 if self.sealed else None
        names = [n for n in os.listdir(path) if n.endswith((".sst", ".wal"))]
        assert names, f"no table or log in {path}"
        for name in names:
            assert sealing.file_key_id(os.path.join(path, name)) == want, name
        with open(os.path.join(path, manifest.MANIFEST_NAME), "rb") as f:
            version = struct.unpack_from("<8sI", f.read(12))[1]
        assert (version == manifest.SEALED_MANIFEST_FORMAT_VERSION) == self.sealed, version


@pytest.fixture(params=[False, True], ids=["plain", "sealed"])
def seal(request) -> Sealing:
    return Sealing(request.param)
