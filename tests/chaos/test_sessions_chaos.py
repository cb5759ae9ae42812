"""Sessions under chaos (docs/reliability.md, "Sessions"): clients at ONE, each in a session
of its own that it carries from node to node (chaos/workloads.py), under kill, pause,
partition and clock skew; the session checks (checker.check_sessions: every read descends
what the session wrote and read of the key) and the read-your-writes check per session must
find nothing. A session error reply is allowed and counted, never a stale answer.

The checks themselves are tested on hand-written histories first: a stale session read is
caught, as read-your-writes or monotonic reads, and what a session may do (read newer,
read siblings that descend, err, lose a reply) is not reported. A live run with a planted bug
(every n-th session read recorded with the session's first answer for the key, what a read
ignoring the token would give) must be caught too.
"""

from __future__ import annotations

import json

import pytest

from ringkv.chaos import checker
from ringkv.chaos.history import FAIL, OK, UNKNOWN, Op
from ringkv.chaos.runner import ChaosConfig, run
from ringkv.versioning import dvv

# seed 32 on 3 nodes in 12 s with short faults: kill n1, pause n1, a bridge (n1 and n3 cut),
# skews of n3 +17 s and n1 +9.7 s, then n3 isolated: every kind at least once.
SMOKE = {"seed": 32, "nodes": 3, "duration_s": 12.0, "nemesis": ("kill", "pause", "partition", "skew"),
         "hold_s": (1.5, 3.0), "gap_s": (0.5, 1.5), "clients": 6, "consistency": "session"}


def ctx(**counters: int) -> str:
    """A context as the history records it: hex of the encoded clock (actor -> counter)."""
    return dvv.encode_context({a.encode(): n for a, n in counters.items()}).hex()


class Session:
    """A hand-written history of sessions, one completed operation per second."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.t = 0.0

    def op(self, session: str, f: str, key: str, context: str | None, result=None, value=None,
           outcome=OK, error=None, process=0, observed=None, workload="register") -> Op:
        op = Op(len(self.ops), process, workload, f, key, value, self.t, f"n{len(self.ops) % 3 + 1}",
                False, observed, self.t + 0.5, outcome, result, error, session=session, context=context)
        self.t += 1.0
        self.ops.append(op)
        return op

    def write(self, s, key, value, context, outcome=OK, observed=None):
        return self.op(s, "write", key, context, value=value, outcome=outcome, observed=observed)

    def read(self, s, key, context, values=(), outcome=OK, error=None):
        return self.op(s, "read", key, context, list(values) if outcome == OK else None,
                       outcome=outcome, error=error)


def kinds(anomalies) -> list[str]:
    return sorted(a.kind for a in anomalies)


def test_a_read_that_misses_the_sessions_write_is_caught():
    h = Session()
    w = h.write("s0", "k", "a", ctx(n1=1))
    r = h.read("s0", "k", None)  # no record: what a replica that missed the write answers
    found = checker.check_sessions(h.ops)
    assert kinds(found) == ["session-read-your-writes"]
    assert found[0].ops == [w.index, r.index]
    assert "session s0 wrote version {n1:1}" in found[0].detail


def test_a_read_that_goes_back_is_caught():
    h = Session()
    h.read("s0", "k", ctx(n1=1, n2=2), ["b"])
    h.read("s0", "k", ctx(n1=1), ["a"])  # older: a read that ignored the token
    assert kinds(checker.check_sessions(h.ops)) == ["session-monotonic-reads"]


def test_a_concurrent_version_does_not_descend_and_is_caught():
    h = Session()
    h.write("s0", "k", "a", ctx(n1=2))
    h.read("s0", "k", ctx(n2=5), ["x"])  # newer elsewhere, but without the session's dot
    assert kinds(checker.check_sessions(h.ops)) == ["session-read-your-writes"]


def test_what_a_session_may_do_is_not_reported():
    h = Session()
    h.write("s0", "k", "a", ctx(n1=1))
    h.read("s0", "k", ctx(n1=1), ["a"])
    h.read("s0", "k", ctx(n1=1, n2=1), ["a", "b"])  # a sibling written by another client
    h.read("s0", "k", None, outcome=FAIL, error="session: no reachable replica of key 'k' ...")
    h.write("s0", "k", "c", None, outcome=UNKNOWN)  # its clock never reached the client
    h.read("s0", "k", ctx(n1=1, n2=1), ["a", "b"])  # the unknown write need not show
    h.write("s0", "k", "d", ctx(n1=3, n2=1), observed=["a", "b"])
    h.read("s0", "k", ctx(n1=3, n2=4), ["e"])  # replaced by a write that saw it: descends
    # Another session reading older data is not this session's business, nor another key.
    h.read("s1", "k", ctx(n1=1), ["a"])
    h.read("s0", "other", None)
    assert checker.check_sessions(h.ops) == []
    stats = checker.session_stats(h.ops)
    assert stats["session_errors"] == 1 and stats["sessions"] == 2, stats


def test_operations_outside_sessions_are_not_checked_as_sessions():
    h = Session()
    h.op(None, "write", "k", ctx(n1=2), value="a")
    h.op(None, "read", "k", ctx(n1=1), ["z"])
    assert checker.check_sessions(h.ops) == []


def test_the_value_read_your_writes_check_groups_a_sessions_processes():
    # A session's client continues as a new process after a lost reply (as in Jepsen); its
    # session does not end, so its reads must still show its writes by value too.
    h = Session()
    h.write("s0", "k", "a", ctx(n1=1), observed=[])
    h.op("s0", "read", "k", ctx(n1=1), ["a"], process=6)
    h.op("s0", "read", "k", None, [], process=6)
    found = checker.check_registers(h.ops, {"k": checker.FinalRead(["a"])})
    assert kinds(found) == ["read-your-writes"]


def _assert_sessions_clean(result) -> dict:
    print(result.summary())
    s = result.stats
    assert s["faults"]["applied"] == s["faults"]["begun"] >= 4, s["faults"]
    assert result.anomalies == [], result.summary()
    sessions = s["sessions"]
    assert sessions["sessions"] == result.config.clients, sessions
    assert sessions["reads_ok"] > 200 and sessions["moves"] > 20, sessions
    doc = json.loads(result.history_path.read_text())
    session_ops = [o for o in doc["ops"] if o["session"] and o["outcome"] == "ok" and o["f"] != "read"]
    assert len(session_ops) > 100 and all(o["context"] for o in session_ops if o["f"] == "write")
    return sessions


@pytest.mark.timeout(150)
def test_sessions_at_one_under_kill_pause_partition_and_skew(tmp_path):
    result = run(ChaosConfig(workdir=str(tmp_path / "chaos"), workloads=("register", "set"), **SMOKE),
                 log=print)
    kinds_applied = set(k.split("/")[0] for k in result.stats["fault_kinds"])
    assert kinds_applied == {"kill", "pause", "partition", "skew"}, result.stats["fault_kinds"]
    _assert_sessions_clean(result)


@pytest.mark.slow  # short mode: the crafted histories above prove the checker catches it
@pytest.mark.timeout(150)
def test_a_planted_stale_session_read_is_caught(tmp_path):
    config = dict(SMOKE, duration_s=6.0, nemesis=("partition",))
    result = run(ChaosConfig(workdir=str(tmp_path / "chaos"), workloads=("register", "set"),
                             stale_every=10, **config), log=print)
    print(result.summary())
    found = {a.kind for a in result.anomalies}
    assert {"session-read-your-writes", "session-monotonic-reads"} <= found, result.summary()
    assert "--plant-stale-session-reads 10" in result.config.command()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sessions_with_every_workload_under_combined_nemeses(tmp_path):
    config = dict(SMOKE, duration_s=60.0, nemesis=("kill", "pause", "partition", "skew", "restart"),
                  hold_s=(2.0, 6.0), gap_s=(1.0, 3.0), clients=8)
    result = run(ChaosConfig(workdir=str(tmp_path / "chaos"), **config), log=print)
    _assert_sessions_clean(result)


# ------------------------------------------------------------------ Finding: the pipelined token


@pytest.mark.timeout(120)
def test_a_token_pipelined_behind_a_command_that_waits_includes_what_it_read(tmp_path):
    # Found by the first long session run: a session read at SERIAL (or any command that
    # waits on the network) ran past the RINGKV.SESSION TOKEN pipelined behind it, which
    # answered the token from before the read. A client that carries that token to its next
    # connection (the Python client does, on every request) reads back in time.
    import redis

    from ringkv.testing.launcher import LocalCluster

    with LocalCluster(tmp_path, nodes=3, replicas=3, partitions=16) as cluster:
        node = cluster.nodes[0]
        conn = redis.Connection(host=node.host, port=node.resp_port, protocol=2)
        conn.connect()
        conn.send_command("RINGKV.CONSISTENCY", "SESSION")
        assert conn.read_response() == b"OK"
        other = redis.Redis(port=cluster.nodes[1].resp_port)
        for i in range(20):
            key = f"k{i}"
            other.execute_command("RINGKV.AT", "ALL", "SET", key, f"v{i}")
            conn.send_packed_command(conn.pack_commands([
                ("RINGKV.AT", "SERIAL", "RINGKV.GETV", key), ("RINGKV.SESSION", "TOKEN")]))
            _, siblings = conn.read_response()
            assert [s[0] for s in siblings] == [f"v{i}".encode()]
            pipelined = conn.read_response()
            conn.send_command("RINGKV.SESSION", "TOKEN")
            assert conn.read_response() == pipelined, f"read {i}: the pipelined token missed the read"
        conn.disconnect()
