"""Worker processes for flushes and compaction merges.

Merging tables is CPU-bound Python; run on the caller's thread it would hold the GIL and stall
whatever else the process does (a node's event loop above all). A worker is a plain
`python -m ringkv.storage.worker_main` child talking over its stdin/stdout pipes: length-prefixed
pickles of (job function name, job) in, (ok, result or exception) out. Unlike a
multiprocessing pool it never re-imports the parent's `__main__`, so the engine can be embedded
in any script, a REPL or a notebook.

A worker exits when its parent goes away (EOF on stdin). Idle workers are kept in a small
process-wide pool and reused by every engine in the process.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from ringkv.errors import RingkvError

_LEN = struct.Struct("<Q")
MAX_IDLE_WORKERS = 4


class WorkerDiedError(RingkvError):
    """The worker process ended while running a job."""


def _functions():
    from ringkv.storage import compaction

    return {"flush": compaction.run_flush, "compact": compaction.run_compaction}


class WorkerProcess:
    """One child process; `run` is called by one thread at a time.

    Workers are started from one long-lived thread: Linux delivers the parent-death signal
    when the *thread* that forked the child exits, and the engine threads that use workers
    come and go with their engines.
    """

    def __init__(self) -> None:
        env = dict(os.environ)
        # The child must import what the parent can: the same ringkv (even from a source
        # checkout) and the module of a compaction filter, wherever the parent found it.
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        paths = [src] + [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env["RINGKV_WORKER_PARENT"] = str(os.getpid())
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ringkv.storage.worker_main"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )

    def alive(self) -> bool:
        return self._proc.poll() is None

    def run(self, name: str, job) -> tuple[bool, object]:
        """(True, result) or (False, the exception the job raised); the worker stays usable."""
        data = pickle.dumps((name, job), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self._proc.stdin.write(_LEN.pack(len(data)) + data)
            self._proc.stdin.flush()
            head = self._proc.stdout.read(_LEN.size)
            if len(head) < _LEN.size:
                raise WorkerDiedError(f"compaction worker exited with code {self._proc.wait()}")
            (n,) = _LEN.unpack(head)
            ok, result = pickle.loads(self._proc.stdout.read(n))
        except (BrokenPipeError, EOFError) as exc:
            raise WorkerDiedError(f"compaction worker died: {exc}") from exc
        return ok, result

    def close(self) -> None:
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()


_idle: list[WorkerProcess] = []
_idle_lock = threading.Lock()
_spawner: ThreadPoolExecutor | None = None


def _spawn() -> WorkerProcess:
    global _spawner
    with _idle_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ringkv-worker-spawner")
    return _spawner.submit(WorkerProcess).result()


def run_in_worker(name: str, job):
    """Run `job` in an idle worker (starting one if none is idle); retried once if it dies."""
    for attempt in range(2):
        with _idle_lock:
            worker = _idle.pop() if _idle else None
        if worker is None or not worker.alive():
            worker = _spawn()
        try:
            ok, result = worker.run(name, job)
        except WorkerDiedError:
            if attempt:
                raise
            continue
        except BaseException:
            worker.close()  # interrupted mid-protocol: its pipes are out of step
            raise
        # A job that failed reported it and left its worker ready for the next one.
        with _idle_lock:
            if len(_idle) < MAX_IDLE_WORKERS:
                _idle.append(worker)
                worker = None
        if worker is not None:
            worker.close()
        if not ok:
            raise result
        return result
    raise AssertionError("unreachable")


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent goes away (PR_SET_PDEATHSIG).

    Without it a worker finishes its job after the engine's process was killed, and writes
    tables under file numbers that a restarted engine hands out again.
    """
    parent = int(os.environ.get("RINGKV_WORKER_PARENT", "0"))
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker still exits at the next job it cannot read
    if parent and os.getppid() != parent:
        os._exit(0)  # the parent died before prctl took effect


def main() -> None:
    _die_with_parent()
    # Keep the protocol pipe to ourselves: anything the job prints goes to stderr.
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    proto_in = sys.stdin.buffer
    functions = _functions()
    while True:
        head = proto_in.read(_LEN.size)
        if len(head) < _LEN.size:
            return  # the parent closed the pipe or died
        (n,) = _LEN.unpack(head)
        data = proto_in.read(n)
        try:
            name, job = pickle.loads(data)  # a filter whose module cannot be imported fails here
            reply = (True, functions[name](job))
        except BaseException as exc:  # report every failure to the parent, then keep serving
            try:
                pickle.dumps(exc)
            except Exception:
                exc = RingkvError(f"{type(exc).__name__}: {exc}")
            reply = (False, exc)
        data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        proto_out.write(_LEN.pack(len(data)) + data)
        proto_out.flush()
