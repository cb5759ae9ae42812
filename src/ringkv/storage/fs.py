"""The one file-system interface every engine file goes through, and the disk model tests use.

`PosixFileSystem` is the real thing. `FaultInjectingFileSystem` runs on a real directory but
remembers what a power cut would keep, and can cut the power after any operation or fail an
fsync; docs/storage-faults.md describes the disk model it implements.

Contract (what the engine may rely on, and what the model enforces):
- `WritableFile.write` hands bytes to the OS: a process crash loses nothing written, a power cut
  loses anything not covered by a later `sync()`.
- `sync()` makes a file's bytes durable, `sync_dir(d)` makes the creations, renames and unlinks
  in `d` durable. Neither is implied by the other.
- A failed fsync raises `FsyncFailedError`. The bytes it should have written may be gone for
  good (Linux drops the dirty pages and clears the error, so a retried fsync "succeeds" without
  writing them): callers must never count them as durable afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import pickle
import random
import shutil
import struct
import tempfile
import threading
import weakref

from ringkv.errors import RingkvError, StorageFullError


class FsyncFailedError(RingkvError, OSError):
    """An fsync (of a file or of a directory) failed.

    The writes made to that file since its last successful fsync may never reach the disk, even
    if a later fsync succeeds: the kernel may have dropped them (PostgreSQL's "fsyncgate",
    2018). An engine that meets this error stops taking writes; reopening it recovers exactly
    what was durable.
    """

    def __init__(self, path: str, errno_: int | None, strerror: str | None):
        OSError.__init__(self, errno_, strerror)
        self.path = path

    def __str__(self) -> str:
        code = errno.errorcode.get(self.errno, str(self.errno)) if self.errno is not None else "?"
        return (
            f"fsync of {self.path} failed ({code}: {self.strerror}); the writes made to it since "
            f"its last successful fsync may be lost"
        )

    def __reduce__(self):
        # Raised in worker processes and pickled back to the engine.
        return (type(self), (self.path, self.errno, self.strerror))


def _raise_full(exc: OSError, path: str) -> None:
    if exc.errno == errno.ENOSPC:
        raise StorageFullError(f"no space left on device writing {path}") from exc
    raise exc


def _fsync_failed(exc: OSError, path: str) -> OSError:
    if isinstance(exc, (FsyncFailedError, PowerCutError)):
        return exc  # a simulated power cut is not a failed fsync: the machine is gone
    return FsyncFailedError(path, exc.errno, exc.strerror or str(exc))


class WritableFile:
    """An append-only file. Not safe for concurrent writers; the WAL serializes them."""

    __slots__ = ("_fd", "path", "size")

    def __init__(self, path: str, fd: int, size: int = 0):
        self.path = path
        self._fd = fd
        self.size = size

    def write(self, data: bytes) -> None:
        try:
            n = os.write(self._fd, data)
            while n < len(data):  # short writes are rare but legal
                n += os.write(self._fd, memoryview(data)[n:])
        except OSError as exc:
            _raise_full(exc, self.path)
        self.size += len(data)

    def sync(self) -> None:
        """Make every byte written so far durable; raises FsyncFailedError if the disk did not."""
        try:
            self._fsync()
        except OSError as exc:
            failure = _fsync_failed(exc, self.path)
            if failure is exc:
                raise
            raise failure from exc

    def _fsync(self) -> None:
        os.fsync(self._fd)

    def cut_back(self, size: int) -> None:
        """Undo a failed append: shrink the file to `size` bytes, never grow it."""
        if os.fstat(self._fd).st_size > size:
            os.ftruncate(self._fd, size)
        self.size = size

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class RandomAccessFile:
    """An immutable file read at offsets through a memory map; safe for concurrent readers.

    A slice of the map costs about 0.15 us against 0.75 us for a pread system call, and the
    data comes from the page cache either way. Reads past the end return fewer bytes (callers
    check lengths and checksums). REQUIRES: nobody truncates the file while it is open.
    """

    __slots__ = ("_fd", "_map", "path", "size")

    def __init__(self, path: str, fd: int):
        self.path = path
        self._fd = fd
        self.size = os.fstat(fd).st_size
        self._map = mmap.mmap(fd, 0, prot=mmap.PROT_READ) if self.size else None

    def read(self, offset: int, length: int) -> bytes:
        m = self._map
        if m is None:
            return b""
        return m[offset : offset + length]

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        # The table cache drops evicted files without closing them (a reader may be mid-pread);
        # the descriptor is closed when the last reader lets go.
        self.close()


class PosixFileSystem:
    """The real file system. Stateless, so a job carries it into a worker process as is."""

    def create(self, path: str) -> WritableFile:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        return WritableFile(path, fd)

    def open_read(self, path: str) -> RandomAccessFile:
        return RandomAccessFile(path, os.open(path, os.O_RDONLY))

    def read_all(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def write_file_synced(self, path: str, data: bytes) -> None:
        f = self.create(path)
        try:
            f.write(data)
            f.sync()
        finally:
            f.close()

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def free_bytes(self, path: str) -> int:
        """Bytes an unprivileged writer may still use on the file system holding `path`
        (statvfs: f_bavail blocks of f_frsize bytes); what a merge checks before it starts."""
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    def sync_dir(self, path: str) -> None:
        """Make the creations, renames and unlinks in directory `path` durable."""
        try:
            self._fsync_dir(path)
        except OSError as exc:
            failure = _fsync_failed(exc, path)
            if failure is exc:
                raise
            raise failure from exc

    def _fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------ the disk model


class PowerCutError(OSError):
    """Raised by every operation of a FaultInjectingFileSystem after its power was cut."""

    def __init__(self) -> None:
        super().__init__(errno.EIO, "simulated power cut: the disk is gone")

    def __reduce__(self):
        return (type(self), ())


# Shared state of one simulated disk, a small file every process maps:
# power off (u8), operations so far (u64), cut the power after operation n (u64, 0: never),
# fsync failures still planned (u32).
_STATE = struct.Struct("<BQQI")
_LEN = struct.Struct("<I")
TAIL_FAULTS = ("drop", "keep", "torn", "garbage", "zeros")


class _TrackedFile(WritableFile):
    __slots__ = ("_disk",)

    def __init__(self, path: str, fd: int, disk: FaultInjectingFileSystem):
        super().__init__(path, fd)
        self._disk = disk

    # Every operation holds the disk's lock, so a power cut lands between operations, never
    # inside one (a real disk has no half-done write() system call either).
    def write(self, data: bytes) -> None:
        with self._disk._operation():
            super().write(data)
            self._disk._record(("write", self.path, self.size))

    def _fsync(self) -> None:
        disk = self._disk
        with disk._operation():
            if disk._fsync_fails(self.path, directory=False):
                disk._record(("sync_failed", self.path, self.size))
                raise OSError(errno.EIO, "simulated fsync failure: the kernel dropped the dirty pages")
            if disk.real_fsync:
                os.fsync(self._fd)
            disk._record(("sync", self.path, self.size))

    def cut_back(self, size: int) -> None:
        with self._disk._operation():
            super().cut_back(size)
            self._disk._record(("truncate", self.path, size))


class FaultInjectingFileSystem(PosixFileSystem):
    """A real directory with the memory of a disk: what a power cut would keep of it.

    Every mutating operation (create, write, sync, rename, remove, truncate, sync_dir) is
    numbered and appended to a journal. `crash()` (or `crash_after(n)`: the power goes off
    right after the n-th operation from now) replays the journal and rewrites the directory as
    the disk would hold it after the cut (docs/storage-faults.md):

    - a file keeps the bytes its last successful fsync covered; its unsynced tail is dropped,
      kept, torn (a prefix kept) or torn and then filled with garbage or zeros;
    - bytes a failed fsync should have written hold garbage, even if a later fsync succeeded;
    - creations, renames and unlinks made since the last `sync_dir` of their directory are
      undone: all of them, or (with a seed) all but a random prefix of them, since directory
      updates reach the disk in order, as a journaling file system commits them;
      `dir_order="any"` keeps a random subset instead, as a file system that reorders them might.

    Random choices come from `random.Random(seed)`; with no seed the cut is deterministic and
    keeps nothing that was not made durable (lost pages read as zeros).
    After the cut every operation raises PowerCutError; reopen the directory with a fresh file
    system. Files that existed before this object first touched them are taken as durable.

    The disk spans processes: pickled into a compaction or flush job, it reattaches in the
    worker to the same journal and state (files in a private control directory, guarded by an
    flock), so operations are numbered across the engine and its workers, and a worker that
    reaches the crash point cuts the power for everyone.

    `fail_fsync(...)` makes a chosen fsync raise EIO once; later ones succeed.
    """

    def __init__(self, seed: int | None = None, *, dir_order: str = "ordered", real_fsync: bool = False):
        if dir_order not in ("ordered", "any"):
            raise ValueError(f"dir_order must be 'ordered' or 'any', got {dir_order!r}")
        self.seed = seed
        self.dir_order = dir_order
        # Durability is decided by the journal alone; real fsyncs would only cost time.
        self.real_fsync = real_fsync
        self._control = tempfile.mkdtemp(prefix="ringkv-disk-")
        with open(os.path.join(self._control, "state"), "wb") as f:
            f.write(bytes(_STATE.size))
        for name in ("journal", "lock", "plans", "cut"):
            open(os.path.join(self._control, name), "wb").close()
        self._attach()
        self._owner = weakref.finalize(self, shutil.rmtree, self._control, True)

    # -------------------------------------------------------------- across processes

    def _attach(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._cut_requested = False
        c = self._control
        self._lock_fd = os.open(os.path.join(c, "lock"), os.O_RDWR)
        self._journal_fd = os.open(os.path.join(c, "journal"), os.O_WRONLY | os.O_APPEND)
        state_fd = os.open(os.path.join(c, "state"), os.O_RDWR)
        try:
            self._state = mmap.mmap(state_fd, _STATE.size)
        finally:
            os.close(state_fd)
        weakref.finalize(self, _release, self._lock_fd, self._journal_fd, self._state)

    def __getstate__(self) -> dict:
        return {"seed": self.seed, "dir_order": self.dir_order, "real_fsync": self.real_fsync, "_control": self._control}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._attach()  # not the owner: the engine's copy removes the control directory

    @contextlib.contextmanager
    def _held(self):
        """Hold the disk (every thread and process): no operation runs meanwhile."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if outer:
                    try:
                        if self._cut_requested and not self._state[0]:
                            self._cut_power()
                    finally:
                        self._cut_requested = False
                        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _operation(self):
        """Hold the disk for one operation: no power cut (from any process) lands inside it."""
        with self._held():
            if self._state[0]:
                raise PowerCutError()
            yield

    def _read_state(self) -> tuple[int, int, int, int]:
        return _STATE.unpack_from(self._state, 0)

    def _write_state(self, off: int, count: int, crash_at: int, plans: int) -> None:
        _STATE.pack_into(self._state, 0, off, count, crash_at, plans)

    def _record(self, entry: tuple) -> None:
        """Journal one completed operation. REQUIRES: inside _operation()."""
        data = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
        os.write(self._journal_fd, _LEN.pack(len(data)) + data)
        off, count, crash_at, plans = self._read_state()
        count += 1
        self._write_state(off, count, crash_at, plans)
        if count == crash_at:
            self._cut_power()

    def _journal(self) -> list[tuple]:
        """REQUIRES: the disk held (a record may be half-written otherwise)."""
        with open(os.path.join(self._control, "journal"), "rb") as f:
            data = f.read()
        entries, pos = [], 0
        while pos < len(data):
            (n,) = _LEN.unpack_from(data, pos)
            entries.append(pickle.loads(data[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        return entries

    # -------------------------------------------------------------- what tests drive

    @property
    def operations(self) -> int:
        """How many mutating operations this disk has completed (in every process)."""
        with self._held():
            return self._read_state()[1]

    @property
    def crashed(self) -> bool:
        return bool(self._state[0])

    def crash_after(self, n: int) -> None:
        """Cut the power right after the n-th mutating operation from now (n >= 1)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        with self._operation():
            off, count, _, plans = self._read_state()
            self._write_state(off, count, count + n, plans)

    def fail_fsync(self, match: str | None = None, *, nth: int = 1, directory: bool = False) -> None:
        """Make the `nth` fsync from now whose name contains `match` fail once with EIO.

        `directory=False` counts file fsyncs (matched against the file's name), `True` counts
        `sync_dir` calls (matched against the directory's path).
        """
        if nth < 1:
            raise ValueError(f"nth must be >= 1, got {nth}")
        with self._operation():
            plans = self._plans()
            plans.append({"match": match, "nth": nth, "directory": directory})
            self._save_plans(plans)

    def crash(self) -> None:
        """Cut the power now (a no-op if it is already off).

        Called from inside an operation (a test hooking a system call), the cut lands right
        after that operation: operations are atomic with respect to the power.
        """
        with self._lock:
            if self._depth:
                self._cut_requested = True
                return
            with self._held():
                if not self._state[0]:
                    self._cut_power()

    def trace(self) -> list[str]:
        """One line per journaled operation, for a failing test to show where it cut."""
        with self._held():
            journal = self._journal()
        out = []
        for e in journal:
            kind, path = e[0], os.path.basename(e[1])
            detail = f" {e[2]} bytes" if kind in ("write", "sync", "sync_failed", "truncate") else ""
            if kind == "rename":
                detail = f" -> {os.path.basename(e[2])}"
            out.append(f"{kind} {path}{detail}")
        return out

    def cut_report(self) -> list[str]:
        """What the power cut did to each file (kept bytes, garbage, undone directory updates)."""
        with open(os.path.join(self._control, "cut"), encoding="utf-8") as f:
            return f.read().splitlines()

    # -------------------------------------------------------------- fsync failures

    def _plans(self) -> list[dict]:
        with open(os.path.join(self._control, "plans"), "rb") as f:
            data = f.read()
        return pickle.loads(data) if data else []

    def _save_plans(self, plans: list[dict]) -> None:
        with open(os.path.join(self._control, "plans"), "wb") as f:
            f.write(pickle.dumps(plans))
        off, count, crash_at, _ = self._read_state()
        self._write_state(off, count, crash_at, len(plans))

    def _fsync_fails(self, path: str, directory: bool) -> bool:
        """Whether this fsync is one a plan says fails. REQUIRES: inside _operation()."""
        if not self._read_state()[3]:
            return False
        name = path if directory else os.path.basename(path)
        plans = self._plans()
        fires = False
        for plan in plans:
            if plan["directory"] == directory and (plan["match"] is None or plan["match"] in name):
                plan["nth"] -= 1
                fires = fires or plan["nth"] == 0
        self._save_plans([p for p in plans if p["nth"] > 0])
        return fires

    # -------------------------------------------------------------- operations

    def create(self, path: str) -> WritableFile:
        with self._operation():
            existed = os.path.exists(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            self._record(("create", path, existed))
            return _TrackedFile(path, fd, self)

    def rename(self, src: str, dst: str) -> None:
        with self._operation():
            replaced = _read_or_none(dst)
            os.replace(src, dst)
            self._record(("rename", src, dst, replaced))

    def remove(self, path: str) -> None:
        with self._operation():
            content = _read_or_none(path)
            if content is None:
                return
            os.remove(path)
            self._record(("remove", path, content))

    def truncate(self, path: str, size: int) -> None:
        with self._operation():
            os.truncate(path, size)
            self._record(("truncate", path, size))

    def _fsync_dir(self, path: str) -> None:
        with self._operation():
            if self._fsync_fails(path, directory=True):
                self._record(("sync_dir_failed", path))
                raise OSError(errno.EIO, "simulated fsync failure of a directory")
            if self.real_fsync:
                super()._fsync_dir(path)
            self._record(("sync_dir", path))

    # -------------------------------------------------------------- the power cut

    def _cut_power(self) -> None:
        """Rewrite the directory as the disk holds it after a cut now. REQUIRES: the disk held."""
        rng = random.Random(self.seed) if self.seed is not None else None
        model = _DiskModel()
        for entry in self._journal():
            model.apply(entry)
        report = model.materialize(rng, self.dir_order)
        with open(os.path.join(self._control, "cut"), "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in report))
        _, count, crash_at, plans = self._read_state()
        self._write_state(1, count, crash_at, plans)


def _release(lock_fd: int, journal_fd: int, state: mmap.mmap) -> None:
    for fd in (lock_fd, journal_fd):
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(BufferError, ValueError):
        state.close()


def _read_or_none(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


class _Inode:
    """One file as the disk knows it, whatever names it has had."""

    __slots__ = ("captured", "lost", "synced")

    def __init__(self, synced: int | None):
        self.synced = synced  # bytes a successful fsync covered; None: all (the file predates us)
        self.lost: list[tuple[int, int]] = []  # byte ranges a failed fsync dropped
        self.captured: bytes | None = None  # its bytes when it lost its last name


class _DiskModel:
    """The journal replayed: current names, durable names, and per-file durable bytes."""

    def __init__(self) -> None:
        self.bound: dict[str, _Inode] = {}  # name -> file, after every operation
        self.durable: dict[str, dict[str, _Inode]] = {}  # directory -> name -> file at its last fsync
        self.pending: dict[str, list[tuple]] = {}  # directory -> updates since then, in order

    def _adopt(self, path: str) -> _Inode:
        """A file that was there before the journal began: durable as it stands."""
        node = _Inode(None)
        self.bound[path] = node
        self.durable.setdefault(os.path.dirname(path), {})[path] = node
        return node

    def _node(self, path: str) -> _Inode:
        return self.bound.get(path) or self._adopt(path)

    def _update(self, path: str, op: tuple) -> None:
        self.pending.setdefault(os.path.dirname(path), []).append(op)

    def apply(self, e: tuple) -> None:
        kind = e[0]
        if kind == "create":
            _, path, existed = e
            if path in self.bound or existed:
                node = self._node(path)  # O_TRUNC of an existing file: same file, no new name
                node.synced, node.lost = 0, []
            else:
                node = self.bound[path] = _Inode(0)
                self._update(path, ("bind", path, node))
        elif kind == "sync":
            self._node(e[1]).synced = e[2]
        elif kind == "sync_failed":
            node = self._node(e[1])
            node.lost.append((node.synced or 0, e[2]))
        elif kind == "truncate":
            node = self._node(e[1])
            node.synced = e[2] if node.synced is None else min(node.synced, e[2])
        elif kind == "rename":
            _, src, dst, replaced = e
            node = self._node(src)
            del self.bound[src]
            if dst in self.bound or replaced is not None:
                self._node(dst).captured = replaced
            self.bound[dst] = node
            self._update(dst, ("rename", src, dst, node))
        elif kind == "remove":
            _, path, content = e
            node = self._node(path)
            del self.bound[path]
            node.captured = content
            self._update(path, ("unbind", path, node))
        elif kind == "sync_dir":
            d = e[1]
            self.durable[d] = {p: n for p, n in self.bound.items() if os.path.dirname(p) == d}
            self.pending[d] = []
        # "write" and "sync_dir_failed" change nothing a power cut keeps.

    def materialize(self, rng: random.Random | None, dir_order: str) -> list[str]:
        report: list[str] = []
        final: dict[str, _Inode | None] = {}
        names: set[str] = set(self.bound)
        for d in set(self.durable) | set(self.pending):
            ops = self.pending.get(d, [])
            if rng is None:
                kept: list[tuple] = []
            elif dir_order == "ordered":
                kept = ops[: rng.randint(0, len(ops))]
            else:
                kept = [op for op in ops if rng.random() < 0.5]
            if ops:
                report.append(f"{d}: kept {len(kept)} of {len(ops)} unsynced directory updates")
            entries: dict[str, _Inode] = dict(self.durable.get(d, {}))
            for op in ops:
                names.update(p for p in op[1:-1])
            for op in kept:
                node = op[-1]
                if op[0] == "bind":
                    entries[op[1]] = node
                elif op[0] == "rename":
                    if entries.get(op[1]) is node:
                        del entries[op[1]]
                    entries[op[2]] = node
                elif entries.get(op[1]) is node:  # unbind
                    del entries[op[1]]
            names.update(entries)
            for p, node in entries.items():
                final[p] = node

        where = {id(node): p for p, node in self.bound.items()}
        contents: dict[int, bytes | None] = {}
        for path in sorted(names):
            node = final.get(path)
            if node is None or id(node) in contents:
                continue
            current = where.get(id(node))
            if current is not None:
                size = os.path.getsize(current)
                if current == path and not node.lost and (node.synced is None or node.synced >= size):
                    contents[id(node)] = None  # durable as it stands: leave the file alone
                    continue
                data = _read_or_none(current) or b""
            else:
                data = node.captured or b""
            contents[id(node)] = _after_cut(node, data, rng, os.path.basename(path), report)

        for path in sorted(names):
            node = final.get(path)
            if node is None:
                if os.path.exists(path):
                    os.remove(path)
                    if path in self.bound:
                        report.append(f"{os.path.basename(path)}: gone (its directory entry was not durable)")
                continue
            data = contents[id(node)]
            if data is None:
                continue
            if os.path.exists(path):
                os.remove(path)  # a new file: readers of the old one (mmaps) keep theirs
            with open(path, "wb") as f:
                f.write(data)
        return report


def _after_cut(node: _Inode, data: bytes, rng: random.Random | None, name: str, report: list[str]) -> bytes:
    synced = len(data) if node.synced is None else min(node.synced, len(data))
    out = bytearray(data[:synced])
    tail = len(data) - synced
    if tail:
        fault = rng.choice(TAIL_FAULTS) if rng is not None else "drop"
        keep = {"drop": 0, "keep": tail}.get(fault)
        if keep is None:
            keep = rng.randrange(tail + 1)
        out += data[synced : synced + keep]
        if fault == "garbage":
            out += rng.randbytes(tail - keep)
        elif fault == "zeros":
            out += bytes(tail - keep)
        report.append(f"{name}: {synced} bytes synced; unsynced tail of {tail} bytes: {fault}, {keep} kept")
    for a, b in node.lost:
        a, b = min(a, len(out)), min(b, len(out))
        if a < b:
            out[a:b] = rng.randbytes(b - a) if rng is not None else bytes(b - a)
            report.append(f"{name}: bytes {a}..{b} lost by a failed fsync hold garbage")
    return bytes(out)
