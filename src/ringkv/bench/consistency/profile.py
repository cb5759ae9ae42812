"""py-spy profiles of the ringkv nodes during one phase, summarised for the report.

    with Recording(profile_dir, "incr", {"n1": pid1, ...}) as rec:
        ...                                   # run the phase
    lines = summarise(rec.paths, "INCR")

py-spy samples each node 100 times a second, only while the sampled thread holds the GIL
(`--gil`, as bench/cluster.py does), so time waiting in epoll is not counted and the shares
are of the CPU the node's Python thread used. Summaries: the own-time groups and top functions
of bench/cluster.py's `profile_summary`, and this benchmark's own table, each sample charged
to the deepest stage of the consensus path on its stack.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from ringkv.bench.cluster import profile_summary

ATTACH_S = 1.0  # py-spy needs a moment to attach before the phase starts
SAMPLE_RATE_HZ = 100

# (name prefix of a frame, what that code does), in no particular order: a sample is charged to
# the deepest frame on its stack that matches one of these.
STAGES = (
    ("Proposer._apply", "proposer: applying the command to the current value (the new record)"),
    ("Proposer._phase1", "proposer: Prepare (phase 1), sending and counting promises"),
    ("Proposer._phase2", "proposer: Propose (phase 2), sending and counting acceptances"),
    ("Proposer._chosen", "proposer: the value chosen: stored here, commits sent"),
    ("Proposer.", "proposer: the rest (lease, ballots, driving the rounds)"),
    ("Acceptor.prepare", "acceptor: promising (state written to its engine)"),
    ("Acceptor.propose", "acceptor: accepting (state written to its engine)"),
    ("Acceptor.", "acceptor: commits and the rest"),
    ("AcceptorStore.", "acceptor: its state store"),
    ("Forwarder.", "forwarding a command to the key's proposer, and running it there"),
    ("WritePath.", "Dynamo write path (SET's replication)"),
    ("ReplicaService.", "serving peers' RPCs (dispatch, replica writes)"),
    ("RespConnection.", "RESP: client requests read, parsed, answered"),
    ("_FramedConnection.", "RPC connections: frames read and written"),
    ("_ClientConnection.", "RPC connections: frames read and written"),
    ("_ServerConnection.", "RPC connections: frames read and written"),
    ("PeerChannel.", "RPC calls: timers, futures"),
    ("Runner.run", "the event loop itself (uvloop in C: epoll, socket reads, callbacks)"),
)
OTHER = "other"


def py_spy() -> str | None:
    """The py-spy executable (PATH, or beside this Python: the bench extra installs it there)."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return shutil.which("py-spy") or (beside if os.path.exists(beside) else None)


class Recording:
    """py-spy attached to every pid in `pids` ({node id: pid}) while the `with` block runs."""

    def __init__(self, directory: str, label: str, pids: dict[str, int]):
        self.directory = directory
        self.label = label
        self.pids = pids
        self.paths: list[str] = []
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> Recording:
        spy = py_spy()
        if spy is None:
            raise RuntimeError("py-spy is not installed: pip install 'ringkv[bench]' (or py-spy)")
        os.makedirs(self.directory, exist_ok=True)
        for node, pid in self.pids.items():
            path = os.path.abspath(os.path.join(self.directory, f"{self.label}-{node}.txt"))
            self.paths.append(path)
            self._procs.append(subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE_HZ), "--format", "raw",
                 "--gil", "--nonblocking", "--output", path],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(ATTACH_S)
        return self

    def __exit__(self, *exc) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for p in self._procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.paths = [p for p in self.paths if os.path.exists(p)]


def _samples(paths: list[str]):
    """(frame names from root to leaf, sample count) of py-spy's raw (collapsed) output."""
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.rstrip()
                if not line:
                    continue
                stack, n = line.rsplit(" ", 1)
                yield [frame.partition(" (")[0] for frame in stack.split(";")], int(n)


def stage_shares(paths: list[str]) -> tuple[dict[str, int], int]:
    """Samples per stage (STAGES' descriptions, and OTHER), and the total."""
    counts: dict[str, int] = {}
    total = 0
    for frames, n in _samples(paths):
        total += n
        where = OTHER
        for name in reversed(frames):
            stage = next((what for prefix, what in STAGES if name.startswith(prefix)), None)
            if stage is not None:
                where = stage
                break
        counts[where] = counts.get(where, 0) + n
    return counts, total


def summarise(paths: list[str], phase: str, top: int = 20) -> list[str]:
    """Markdown lines for the report."""
    counts, total = stage_shares(paths)
    if not total:
        return ["(py-spy recorded no samples: it may need ptrace permission, e.g. run as root "
                "or set kernel.yama.ptrace_scope=0)"]
    lines = [
        f"py-spy samples ({SAMPLE_RATE_HZ} per second per node, of the thread holding the GIL, so "
        f"idle waits in epoll do not count) of the three nodes during one extra {phase} phase "
        f"(same clients, not counted in the tables above): {total:,} samples. The profiled "
        "nodes are a cluster of their own running the Python source (`RINGKV_PURE=1`): py-spy "
        "reads Python frames and sees nothing inside the compiled modules the measured nodes "
        "run (docs/compiled.md), so the shares are those of the source, whose request path "
        "costs more CPU than the compiled one.",
        "",
        "Each sample charged to the deepest stage of the request path on its stack (the code that "
        "stage runs and what it calls, up to the next stage):",
        "",
        "| stage | share |",
        "|---|---:|",
    ]
    for what, n in sorted(counts.items(), key=lambda kv: kv[1], reverse=True):
        lines.append(f"| {what} | {n / total:.1%} |")
    # profile_summary's first line describes bench/cluster.py's SET and GET runs: ours is above.
    lines += ["", "Own time (the function on top of the stack), grouped as in "
              "docs/benchmarks/cluster.md:", "", *profile_summary(paths, top)[2:]]
    return lines
