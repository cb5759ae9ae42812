"""Encryption at rest: AES-256-GCM sealing of WAL records and SSTable blocks, and the key ring.

Implements the "Encrypted" sections of docs/formats/wal.md and docs/formats/sstable.md and the
key file of docs/security.md ("Encryption at rest"). wal.py and sstable.py frame and check
their files as before; this module only turns a record's payload or a whole stored block into
ciphertext and back, and reads and writes the 36-byte seal header that says how a file was
sealed:

    cipher u8 (1 = AES-256-GCM) | 3 zero bytes | key id u32 | file salt 16 | key check 8 | crc32c u32

Every file gets its own key, HKDF-SHA256(master key, salt = the file's random salt), so nonces
only need to be unique within a file: a WAL record's nonce is its sequence number in the log
(stored with the record; never reused, even where a failed write is cut back and the next
record lands at the same offset), a table block's nonce is its offset (a table is written once,
front to back). The associated data binds each record or block to its file number and offset,
so bytes moved between files or positions fail authentication. The key check (8 more bytes of
the HKDF output) tells a wrong key from a tampered file.

A `KeyRing` is plain data (ids and 32-byte keys) so that it pickles into the compaction worker;
the AESGCM objects are made per file and never leave the process that made them.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import struct

from crc32c import crc32c
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ringkv.errors import ConfigError, CorruptionError, LimitError

SETTING = "encryption_key_file"  # the node setting every key error names (node/config.py)

CIPHER_AES_256_GCM = 1
KEY_BYTES = 32
SALT_BYTES = 16
KEY_CHECK_BYTES = 8
TAG_BYTES = 16
MAX_KEY_ID = 2**32 - 1
MAX_KEYS = 1024  # a key ring holds at most this many keys
MAX_KEY_FILE_BYTES = 256 * 1024

_SEAL_HEADER = struct.Struct("<B3xI16s8s")  # cipher, key id, salt, key check
SEAL_HEADER_BYTES = _SEAL_HEADER.size + 4  # 36, with its crc32c
_U32 = struct.Struct("<I")
_NONCE = struct.Struct("<Q4x")  # 12 bytes: a WAL record's sequence number or a block's offset
_AAD = struct.Struct("<8sQQ")  # file kind, file number, offset
WAL_KIND = b"ringkvWL"
TABLE_KIND = b"ringkvST"
MANIFEST_KIND = b"ringkvMF"
MAX_WAL_RECORDS = 2**32 - 1  # the sequence number is stored as a u32
WAL_SEQUENCE_BYTES = 4
WAL_RECORD_OVERHEAD_BYTES = WAL_SEQUENCE_BYTES + 1 + TAG_BYTES  # sequence, inner type, tag


class KeyRing:
    """Encryption keys by id; the highest id (`current_id`) seals new files, every id opens
    the files sealed with it. Immutable and picklable. `source` names where the keys came from
    (the key file), for errors."""

    __slots__ = ("_keys", "current_id", "source")

    def __init__(self, keys: dict[int, bytes], source: str = "the key ring"):
        if not keys:
            raise ConfigError(SETTING, f"{source} holds no key")
        if len(keys) > MAX_KEYS:
            raise ConfigError(SETTING, f"{source} holds {len(keys)} keys; the limit is {MAX_KEYS}")
        for key_id, key in keys.items():
            if not (isinstance(key_id, int) and 1 <= key_id <= MAX_KEY_ID):
                raise ConfigError(SETTING, f"{source}: key id {key_id!r} is not 1..{MAX_KEY_ID}")
            if not (isinstance(key, bytes) and len(key) == KEY_BYTES):
                raise ConfigError(SETTING, f"{source}: key {key_id} is not {KEY_BYTES} bytes")
        self._keys = dict(keys)
        self.current_id = max(keys)
        self.source = source

    def __getstate__(self):
        return self._keys, self.current_id, self.source

    def __setstate__(self, state) -> None:
        self._keys, self.current_id, self.source = state

    def __repr__(self) -> str:  # never the keys themselves
        return f"KeyRing(ids={self.ids()}, current={self.current_id}, source={self.source!r})"

    def ids(self) -> list[int]:
        return sorted(self._keys)

    def with_new_key(self, key: bytes | None = None) -> KeyRing:
        """This ring plus a new random key under the next id (which becomes current)."""
        return KeyRing({**self._keys, self.current_id + 1: key or os.urandom(KEY_BYTES)}, self.source)

    def fingerprint(self, key_id: int) -> str:
        """A short public name of a key (not the key): to compare rings without showing keys."""
        _, check = _derive(self._keys[key_id], bytes(SALT_BYTES), b"fingerprint")
        return check.hex()

    def _file_key(self, key_id: int, salt: bytes, kind: bytes, check: bytes, path: str) -> AESGCM:
        key = self._keys.get(key_id)
        if key is None:
            raise ConfigError(
                SETTING,
                f"{path} is sealed with key id {key_id}, which {self.source} does not hold (it holds "
                f"key ids {', '.join(map(str, self.ids()))}): put key {key_id} back into the key file",
            )
        file_key, expected = _derive(key, salt, kind)
        if check != expected:
            raise ConfigError(
                SETTING,
                f"key id {key_id} of {self.source} is not the key {path} was sealed with (the file's key "
                f"check does not match): restore the original key {key_id}",
            )
        return AESGCM(file_key)

    def _new_file_key(self, kind: bytes) -> tuple[bytes, AESGCM]:
        """(seal header, cipher) of a new file sealed with the current key."""
        salt = os.urandom(SALT_BYTES)
        file_key, check = _derive(self._keys[self.current_id], salt, kind)
        head = _SEAL_HEADER.pack(CIPHER_AES_256_GCM, self.current_id, salt, check)
        return head + _U32.pack(crc32c(head)), AESGCM(file_key)


def _derive(key: bytes, salt: bytes, kind: bytes) -> tuple[bytes, bytes]:
    out = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES + KEY_CHECK_BYTES, salt=salt,
               info=b"ringkv file key " + kind).derive(key)
    return out[:KEY_BYTES], out[KEY_BYTES:]


def seal_header_intact(data: bytes, offset: int) -> bool:
    """Whether a whole seal header with a right CRC is at `offset`."""
    end = offset + SEAL_HEADER_BYTES
    if len(data) < end:
        return False
    return crc32c(data[offset : end - 4]) == _U32.unpack_from(data, end - 4)[0]


def read_seal_header(data: bytes, offset: int, path: str) -> tuple[int, bytes, bytes]:
    """(key id, salt, key check) of the seal header at `offset`; CorruptionError if it is bad."""
    if not seal_header_intact(data, offset):
        raise CorruptionError("seal header checksum mismatch", path, offset)
    cipher, key_id, salt, check = _SEAL_HEADER.unpack_from(data, offset)
    if cipher != CIPHER_AES_256_GCM:
        raise CorruptionError(f"seal header names unknown cipher {cipher}", path, offset)
    return key_id, salt, check


def _no_keys(path: str, key_id: int) -> ConfigError:
    return ConfigError(
        SETTING,
        f"{path} is sealed (AES-256-GCM, key id {key_id}) but no encryption key is configured: set "
        f"{SETTING} (Options.encryption_keys) to the key file that holds key id {key_id}",
    )


def file_number(path: str) -> int:
    """The number in a WAL's or table's name (`000012.sst` -> 12); 0 if the name has none."""
    stem = os.path.basename(path).partition(".")[0]
    return int(stem) if stem.isdigit() else 0


class WalSealer:
    """Seals the records of one new log. Not thread-safe: the engine's write lock serializes
    appends. REQUIRES: records sealed in the order they are written."""

    __slots__ = ("_aad", "_encrypt", "_next", "_number", "seal_header")

    def __init__(self, keys: KeyRing, path: str):
        self.seal_header, aead = keys._new_file_key(WAL_KIND)
        self._encrypt = aead.encrypt
        self._number = file_number(path)
        self._next = 0

    def seal(self, rtype: int, payload, offset: int) -> bytes:
        """The sealed payload of the record (type `rtype`) that will start at file `offset`:
        sequence u32 | AES-GCM(type u8 | payload) with its 16-byte tag."""
        seq = self._next
        if seq > MAX_WAL_RECORDS:
            raise LimitError(f"a sealed WAL holds at most {MAX_WAL_RECORDS} records; lower memtable_bytes")
        self._next = seq + 1
        sealed = self._encrypt(_NONCE.pack(seq), bytes((rtype,)) + payload, _AAD.pack(WAL_KIND, self._number, offset))
        return _U32.pack(seq) + sealed


class WalOpener:
    """Opens the sealed records of one log."""

    __slots__ = ("_decrypt", "_number", "key_id", "path")

    def __init__(self, data: bytes, offset: int, path: str, keys: KeyRing | None):
        key_id, salt, check = read_seal_header(data, offset, path)
        if keys is None:
            raise _no_keys(path, key_id)
        self._decrypt = keys._file_key(key_id, salt, WAL_KIND, check, path).decrypt
        self._number = file_number(path)
        self.key_id = key_id
        self.path = path

    def open(self, payload: bytes, offset: int) -> tuple[int, bytes]:
        """(type, payload) of the sealed record at `offset`; CorruptionError if it does not
        authenticate (changed, or moved from another log or position)."""
        if len(payload) < WAL_RECORD_OVERHEAD_BYTES:
            raise CorruptionError("sealed WAL record is shorter than its sequence number and tag", self.path, offset)
        (seq,) = _U32.unpack_from(payload)
        try:
            plain = self._decrypt(_NONCE.pack(seq), payload[WAL_SEQUENCE_BYTES:],
                                  _AAD.pack(WAL_KIND, self._number, offset))
        except InvalidTag:
            raise CorruptionError(
                "sealed WAL record fails authentication (changed, or moved from another log or offset)",
                self.path, offset,
            ) from None
        return plain[0], plain[1:]


class TableSealer:
    """Seals the blocks of one new table."""

    __slots__ = ("_encrypt", "_number", "seal_header")

    def __init__(self, keys: KeyRing, number: int):
        self.seal_header, aead = keys._new_file_key(TABLE_KIND)
        self._encrypt = aead.encrypt
        self._number = number

    def seal(self, block: bytes, offset: int) -> bytes:
        """The stored form of a whole block (payload, compression byte, CRC) at `offset`:
        AES-GCM ciphertext of the same length plus the 16-byte tag. REQUIRES: each offset once."""
        return self._encrypt(_NONCE.pack(offset), block, _AAD.pack(TABLE_KIND, self._number, offset))


class TableOpener:
    """Opens the blocks of one sealed table. Safe for concurrent readers."""

    __slots__ = ("_decrypt", "_number", "key_id", "path")

    def __init__(self, data: bytes, offset: int, path: str, number: int, keys: KeyRing | None):
        key_id, salt, check = read_seal_header(data, offset, path)
        if keys is None:
            raise _no_keys(path, key_id)
        self._decrypt = keys._file_key(key_id, salt, TABLE_KIND, check, path).decrypt
        self._number = number
        self.key_id = key_id
        self.path = path

    def open(self, data, offset: int) -> bytes:
        """The block as it was before sealing; CorruptionError if it does not authenticate."""
        if len(data) < TAG_BYTES:
            raise CorruptionError("sealed SSTable block is shorter than its tag", self.path, offset)
        try:
            return self._decrypt(_NONCE.pack(offset), data, _AAD.pack(TABLE_KIND, self._number, offset))
        except InvalidTag:
            raise CorruptionError(
                "sealed SSTable block fails authentication (changed, or moved from another table or offset)",
                self.path, offset,
            ) from None


def seal_manifest(payload: bytes, keys: KeyRing) -> bytes:
    """A manifest's payload sealed: seal header | AES-GCM(payload) | tag. Each manifest written
    has a salt and so a key of its own: its one nonce (zero) is never reused."""
    head, aead = keys._new_file_key(MANIFEST_KIND)
    return head + aead.encrypt(_NONCE.pack(0), payload, _AAD.pack(MANIFEST_KIND, 0, 0))


def open_manifest(payload: bytes, path: str, offset: int, keys: KeyRing | None) -> bytes:
    """The payload of a sealed manifest; ConfigError without the right key, CorruptionError if
    it does not authenticate."""
    key_id, salt, check = read_seal_header(payload, 0, path)
    if keys is None:
        raise _no_keys(path, key_id)
    aead = keys._file_key(key_id, salt, MANIFEST_KIND, check, path)
    try:
        return aead.decrypt(_NONCE.pack(0), payload[SEAL_HEADER_BYTES:], _AAD.pack(MANIFEST_KIND, 0, 0))
    except InvalidTag:
        raise CorruptionError("sealed manifest fails authentication", path, offset + SEAL_HEADER_BYTES) from None


# ---------------------------------------------------------------- the key file

KEY_FILE_HEADER = (
    "# ringkv encryption keys (docs/security.md): one \"<key id> <base64 of 32 bytes>\" per line.\n"
    "# The highest id seals new files; every listed id opens files sealed with it. Keep mode 0600.\n"
)


def parse_key_file(data: bytes, source: str) -> KeyRing:
    """A key ring from a key file's bytes: `<id> <base64 key>` lines (comments `#`), or a
    single key (32 raw bytes, or one base64 line), which is key id 1."""
    if len(data) == KEY_BYTES and not _looks_like_text(data):
        return KeyRing({1: data}, source)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(SETTING, f"{source} is neither 32 raw bytes nor text lines of '<key id> <base64 key>'") from None
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) == 1 and " " not in lines[0][1]:
        return KeyRing({1: _b64_key(lines[0][1], source, lines[0][0])}, source)
    keys: dict[int, bytes] = {}
    for n, line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ConfigError(SETTING, f"{source} line {n}: expected '<key id> <base64 key>'")
        key_id = int(parts[0])
        if not 1 <= key_id <= MAX_KEY_ID:
            raise ConfigError(SETTING, f"{source} line {n}: key id {key_id} is not 1..{MAX_KEY_ID}")
        if key_id in keys:
            raise ConfigError(SETTING, f"{source} line {n}: key id {key_id} is listed twice")
        keys[key_id] = _b64_key(parts[1], source, n)
    return KeyRing(keys, source)


def _looks_like_text(data: bytes) -> bool:
    return all(32 <= b < 127 or b in (9, 10, 13) for b in data)


def _b64_key(text: str, source: str, line: int) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(SETTING, f"{source} line {line}: the key is not base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(SETTING, f"{source} line {line}: the key is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
    return key


def format_key_file(keys: KeyRing) -> bytes:
    lines = [f"{i} {base64.b64encode(keys._keys[i]).decode()}\n" for i in keys.ids()]
    return (KEY_FILE_HEADER + "".join(lines)).encode()


def load_key_file(path: str) -> KeyRing:
    """The key ring in `path`; ConfigError naming encryption_key_file if it is missing,
    unreadable, malformed, or readable by other users (a key others can read protects nothing)."""
    source = f"{SETTING} {path}"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(SETTING, f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(SETTING, f"{path} is not a regular file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(SETTING, f"{path} can be read by other users (mode {stat.S_IMODE(st.st_mode):o}): "
                                       f"chmod 600 it")
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise ConfigError(SETTING, f"{path} is {st.st_size} bytes; a key file is at most {MAX_KEY_FILE_BYTES}")
        data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    return parse_key_file(data, source)


def write_key_file(path: str, keys: KeyRing) -> None:
    """Write the ring to `path` atomically (a 0600 temporary file, fsynced, renamed over it)."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing .tmp keeps its mode under O_CREAT
        data = format_key_file(keys)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# ---------------------------------------------------------------- what sealed the files

MAX_SCANNED_FILES = 1_000_000  # bound of key_ids_in_use's walk


def file_key_id(path: str) -> int | None:
    """The key id a WAL or table was sealed with, None if it is not sealed; reads only the
    file's header or trailer (no key needed). CorruptionError if those bytes are bad."""
    from ringkv.storage import sstable, wal  # here: they import this module

    with open(path, "rb") as f:
        if path.endswith(".wal"):
            head = f.read(wal.FILE_HEADER_BYTES + SEAL_HEADER_BYTES)
            if len(head) < wal.FILE_HEADER_BYTES or _U32.unpack_from(head, 8)[0] != wal.SEALED_WAL_VERSION:
                return None
            return read_seal_header(head, wal.FILE_HEADER_BYTES, path)[0]
        size = os.fstat(f.fileno()).st_size
        tail = sstable.FOOTER_BYTES + SEAL_HEADER_BYTES
        f.seek(max(size - tail, 0))
        data = f.read(tail)
        version = sstable.footer_version(data[-sstable.FOOTER_BYTES :], path, size)
        if version != sstable.SEALED_TABLE_FORMAT_VERSION:
            return None
        return read_seal_header(data, 0, path)[0]


def key_ids_in_use(directory: str) -> dict[str, int | None]:
    """Per WAL and table file under `directory` (recursively: a node's data directory holds
    several engines), the key id that sealed it or None."""
    out: dict[str, int | None] = {}
    for root, _, names in os.walk(directory):
        for name in sorted(names):
            if name.endswith((".wal", ".sst")) and name.partition(".")[0].isdigit():
                if len(out) >= MAX_SCANNED_FILES:
                    raise LimitError(f"more than {MAX_SCANNED_FILES} files under {directory}")
                path = os.path.join(root, name)
                try:
                    out[path] = file_key_id(path)
                except FileNotFoundError:
                    continue  # removed by a compaction meanwhile
    return out
