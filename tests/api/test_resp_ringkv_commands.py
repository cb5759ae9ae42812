"""ringkv's own RESP commands on a single node: levels, per-command levels, status, repair,
admin and fault commands, with the errors bad input gets (and the connection carries on)."""

from __future__ import annotations

import json

import pytest
import redis


@pytest.fixture
def r(shared_node):
    client = redis.Redis(port=shared_node.resp_port)
    yield client
    client.close()


def err(r: redis.Redis, *args) -> str:
    with pytest.raises(redis.ResponseError) as info:
        r.execute_command(*args)
    return str(info.value)


def test_consistency_levels_per_connection_and_their_errors(r):
    assert r.execute_command("RINGKV.CONSISTENCY") == [b"read", b"QUORUM", b"write", b"QUORUM", b"mode", b"SLOPPY"]
    assert r.execute_command("RINGKV.CONSISTENCY", "one") == b"OK"
    assert r.execute_command("RINGKV.CONSISTENCY", "WRITE", "ALL", "STRICT") == b"OK"
    assert r.execute_command("RINGKV.CONSISTENCY") == [b"read", b"ONE", b"write", b"ALL", b"mode", b"STRICT"]
    # One node holds one replica: a count above 1 can never be met, and says so.
    assert "r: must be in 1..1" in err(r, "RINGKV.CONSISTENCY", "2")
    assert "expected ONE, QUORUM, ALL, SERIAL, SESSION, LOCAL_ONE, LOCAL_QUORUM, EACH_QUORUM or a replica count" in err(r, "RINGKV.CONSISTENCY", "MOST")
    assert "syntax error" in err(r, "RINGKV.CONSISTENCY", "READ")
    assert "syntax error" in err(r, "RINGKV.CONSISTENCY", "SIDEWAYS", "ONE")
    # A refused change leaves the levels as they were.
    assert r.execute_command("RINGKV.CONSISTENCY") == [b"read", b"ONE", b"write", b"ALL", b"mode", b"STRICT"]
    assert r.set("rk:1", "v") is True


def test_at_runs_one_command_at_a_level_and_rejects_bad_ones(r):
    r.set("rk:at", "v")
    assert r.execute_command("RINGKV.AT", "ALL", "GET", "rk:at") == b"v"
    assert r.execute_command("RINGKV.AT", "ONE", "STRICT", "SET", "rk:at", "w") == b"OK"
    assert r.execute_command("RINGKV.AT", "quorum", "MGET", "rk:at", "nope") == [b"w", None]
    assert "wrong number of arguments for 'ringkv.at'" in err(r, "RINGKV.AT", "ONE")
    assert "wrong number of arguments for 'ringkv.at'" in err(r, "RINGKV.AT", "ONE", "STRICT")
    assert "unknown command 'NOSUCH'" in err(r, "RINGKV.AT", "ONE", "NOSUCH", "x")
    assert "expected ONE, QUORUM, ALL" in err(r, "RINGKV.AT", "EVERYONE", "GET", "rk:at")
    # The inner command's own errors come through, and the connection keeps its level.
    assert "wrong number of arguments for 'get'" in err(r, "RINGKV.AT", "ONE", "GET")
    assert r.execute_command("RINGKV.CONSISTENCY")[1] == b"QUORUM"
    assert r.get("rk:at") == b"w"


def test_status_repair_admin_and_fault_on_a_cluster_of_one(r):
    status = json.loads(r.execute_command("RINGKV.STATUS"))
    assert status["cluster"]["members"] == 1 and status["nodes"][0]["status"] == "healthy"
    assert json.loads(r.execute_command("RINGKV.REPAIR"))["comparisons"] == 0
    assert "a cluster of one has no membership" in err(r, "RINGKV.ADMIN", "STATUS")
    assert "fault injection is disabled" in err(r, "RINGKV.FAULT", "HEAL")
    assert r.ping() is True


def test_cas_takes_a_version_number_or_a_context_and_answers_contexts(r):
    r.delete("rk:cas")
    applied, first = r.execute_command("RINGKV.CAS", "rk:cas", "", "a")
    assert applied == 1
    # The number 1 and the context of version 1 both name it; a stale number is refused with
    # the current context.
    applied, second = r.execute_command("RINGKV.CAS", "rk:cas", "1", "b")
    assert applied == 1 and second != first
    applied, current = r.execute_command("RINGKV.CAS", "rk:cas", "1", "c")
    assert (applied, current) == (0, second)
    assert r.execute_command("RINGKV.CAS", "rk:cas", second, "c")[0] == 1
    # 0, as the empty string, expects no live value; RINGKV.CAD by number.
    assert r.execute_command("RINGKV.CAS", "rk:cas", "0", "x")[0] == 0
    assert r.execute_command("RINGKV.CAD", "rk:cas", "2") == 0
    assert r.execute_command("RINGKV.CAD", "rk:cas", "3") == 1
    assert r.get("rk:cas") is None
    assert "needs the version a read returned" in err(r, "RINGKV.CAD", "rk:cas", "0")


def test_msetatomic_writes_every_pair_or_none(r):
    assert r.execute_command("RINGKV.MSETATOMIC", "rk:a1", "1", "rk:a2", "2", "rk:a1", "3") == [b"success", []]
    assert r.mget("rk:a1", "rk:a2") == [b"3", b"2"]  # a key given twice keeps its later value
    assert "wrong number of arguments" in err(r, "RINGKV.MSETATOMIC", "rk:a1", "1", "rk:a2")
    # One value over the limit refuses the whole batch: nothing is written.
    too_big = "x" * ((1 << 20) + 1)  # over the default max_value_bytes (1 MiB), within max_bulk_bytes
    assert "max_value_bytes" in err(r, "RINGKV.MSETATOMIC", "rk:a3", "fine", "rk:a4", too_big)
    assert r.exists("rk:a3") == 0
