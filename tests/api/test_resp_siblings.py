"""Sibling-aware reads and writes over RESP (RINGKV.GETV, RINGKV.PUTV, RINGKV.DELV), driven by
redis-py and a raw socket against a real `ringkv serve`.

The scenario every test builds on: two clients read the same version of a key and both write
with the context they read. Neither write saw the other, so both values stay, as siblings; a
write with the context that covers both resolves them into one.
"""

from __future__ import annotations

import time

import pytest
import redis

INVALID_CONTEXT = "invalid causal context: "


def getv(client: redis.Redis, key) -> tuple[bytes | None, list[list]]:
    context, siblings = client.execute_command("RINGKV.GETV", key)
    return context, siblings


def values(client: redis.Redis, key) -> list[bytes]:
    return sorted(value for value, _, _ in getv(client, key)[1])


def putv(client: redis.Redis, key, value, context: bytes | None = None, *options) -> bytes:
    args = ["RINGKV.PUTV", key, value]
    if context is not None:
        args += ["CONTEXT", context]
    return client.execute_command(*args, *options)


def error_of(client: redis.Redis, *args) -> str:
    with pytest.raises(redis.ResponseError) as info:
        client.execute_command(*args)
    return str(info.value)


@pytest.fixture
def r(shared_node):
    client = redis.Redis(port=shared_node.resp_port, protocol=2, socket_timeout=10)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def other(shared_node):
    """A second client, on its own connection."""
    client = redis.Redis(port=shared_node.resp_port, protocol=2, socket_timeout=10)
    yield client
    client.close()


def make_siblings(a: redis.Redis, b: redis.Redis, key: str) -> bytes:
    """Two clients read `key` (one version), both write with that context: two siblings.
    Returns the context both read."""
    a.set(key, "start")
    context_a, _ = getv(a, key)
    context_b, _ = getv(b, key)
    assert context_a == context_b
    putv(a, key, "from-a", context_a)
    putv(b, key, "from-b", context_b)
    return context_a


# ---------------------------------------------------------------------- siblings


def test_two_writers_with_the_same_context_both_survive_as_siblings(r, other):
    make_siblings(r, other, "cart")
    context, siblings = getv(r, "cart")
    assert isinstance(context, bytes) and context
    assert sorted(s[0] for s in siblings) == [b"from-a", b"from-b"]
    for _value, timestamp, ttl_ms in siblings:
        assert isinstance(timestamp, int) and timestamp > 0
        assert ttl_ms == -1
    assert getv(other, "cart") == (context, siblings)  # every reader sees the same


def test_plain_get_answers_the_same_winner_every_time(r, other):
    make_siblings(r, other, "cart")
    _, siblings = getv(r, "cart")
    newest = max(siblings, key=lambda s: s[1])[0]  # the winner rule: highest HLC timestamp
    assert {r.get("cart") for _ in range(5)} | {other.get("cart") for _ in range(5)} == {newest}
    assert r.exists("cart") == 1


def test_a_write_with_the_context_covering_both_resolves_them(r, other):
    make_siblings(r, other, "cart")
    context, _ = getv(r, "cart")
    new_context = putv(r, "cart", "from-a,from-b", context)
    assert isinstance(new_context, bytes) and new_context != context
    assert getv(other, "cart") == (new_context, getv(r, "cart")[1])
    assert values(r, "cart") == [b"from-a,from-b"]
    assert r.get("cart") == b"from-a,from-b"


def test_a_write_with_a_stale_context_keeps_what_it_did_not_see(r, other):
    stale = make_siblings(r, other, "cart")
    putv(r, "cart", "merged", getv(r, "cart")[0])
    putv(other, "cart", "late", stale)
    assert values(r, "cart") == [b"late", b"merged"]


def test_a_blind_write_adds_a_sibling(r):
    r.set("k", "one")
    putv(r, "k", "two")
    assert values(r, "k") == [b"one", b"two"]
    putv(r, "k", "three")
    assert values(r, "k") == [b"one", b"three", b"two"]


def test_a_blind_write_to_a_missing_key_creates_it(r):
    context = putv(r, "new", "v")
    assert getv(r, "new")[0] == context
    assert r.get("new") == b"v"


def test_plain_set_replaces_every_sibling(r, other):
    make_siblings(r, other, "cart")
    assert r.set("cart", "overwritten")
    assert values(r, "cart") == [b"overwritten"]


def test_delv_with_the_context_leaves_no_live_sibling(r, other):
    make_siblings(r, other, "cart")
    context, _ = getv(r, "cart")
    after = r.execute_command("RINGKV.DELV", "cart", "CONTEXT", context)
    assert isinstance(after, bytes) and after
    assert getv(r, "cart") == (after, [])  # tombstones keep a context, no values
    assert r.get("cart") is None
    assert r.exists("cart") == 0
    # A write with the tombstones' context replaces them: the key is back with one value.
    putv(r, "cart", "again", after)
    assert values(r, "cart") == [b"again"]


def test_a_blind_delv_leaves_the_siblings_it_did_not_see(r, other):
    make_siblings(r, other, "cart")
    r.execute_command("RINGKV.DELV", "cart")
    assert values(r, "cart") == [b"from-a", b"from-b"]


def test_getv_of_a_missing_key_has_no_context_and_no_siblings(r):
    assert getv(r, "missing") == (None, [])


def test_putv_with_px_or_ex_gives_the_sibling_a_ttl(r):
    putv(r, "short", "v", None, "PX", 60_000)
    putv(r, "short", "w", None, "ex", 100)
    ttls = sorted(ttl for _, _, ttl in getv(r, "short")[1])
    assert 59_000 < ttls[0] <= 60_000 and 99_000 < ttls[1] <= 100_000


def test_an_expired_sibling_is_not_returned(r):
    r.set("k", "forever")
    putv(r, "k", "brief", None, "PX", 1000)  # long enough to read it back on a stalled machine
    assert values(r, "k") == [b"brief", b"forever"]
    time.sleep(1.1)  # past the TTL: a read must leave it out, whenever it is collected
    assert values(r, "k") == [b"forever"]


# ---------------------------------------------------------------------- errors


def test_a_garbage_context_is_refused_and_nothing_is_written(r):
    r.set("k", "v")
    for garbage in (b"garbage", b"\x01\xff\xfe", b"\x07" + b"x" * 10):
        message = error_of(r, "RINGKV.PUTV", "k", "w", "CONTEXT", garbage)
        assert message.startswith(INVALID_CONTEXT), message
        message = error_of(r, "RINGKV.DELV", "k", "CONTEXT", garbage)
        assert message.startswith(INVALID_CONTEXT), message
    assert values(r, "k") == [b"v"]


def test_an_empty_context_is_refused_rather_than_taken_as_blind(r):
    r.set("k", "v")
    message = error_of(r, "RINGKV.PUTV", "k", "w", "CONTEXT", "")
    assert message.startswith(INVALID_CONTEXT) and "empty" in message
    assert values(r, "k") == [b"v"]


def test_bad_options_and_arities_are_refused(r):
    assert error_of(r, "RINGKV.PUTV", "k", "v", "CONTEXT") == "syntax error"
    assert error_of(r, "RINGKV.PUTV", "k", "v", "FOO", "x") == "syntax error"
    assert error_of(r, "RINGKV.PUTV", "k", "v", "PX", "1", "PX", "2") == "syntax error"
    assert error_of(r, "RINGKV.DELV", "k", "PX", "1") == "syntax error"
    assert error_of(r, "RINGKV.PUTV", "k", "v", "PX", "x") == "value is not an integer or out of range"
    assert "invalid expire time in 'ringkv.putv'" in error_of(r, "RINGKV.PUTV", "k", "v", "PX", "0")
    assert "wrong number of arguments for 'ringkv.getv'" in error_of(r, "RINGKV.GETV")
    assert "wrong number of arguments for 'ringkv.getv'" in error_of(r, "RINGKV.GETV", "a", "b")
    assert "wrong number of arguments for 'ringkv.putv'" in error_of(r, "RINGKV.PUTV", "k")
    assert "wrong number of arguments for 'ringkv.delv'" in error_of(r, "RINGKV.DELV")
    assert r.exists("k") == 0


# ---------------------------------------------------------------------- the wire


def test_command_names_are_case_insensitive(r):
    context = r.execute_command("ringkv.putv", "k", "v")
    assert r.execute_command("Ringkv.GetV", "k")[0] == context
    r.execute_command("RINGKV.delv", "k", "context", context)
    assert r.get("k") is None


def test_wire_format_in_resp2_and_resp3(r, raw_connect, shared_node):
    raw = raw_connect(shared_node.resp_port)
    assert raw.command("RINGKV.GETV", "missing") == b"*2\r\n$-1\r\n*0\r\n"
    context = r.execute_command("RINGKV.PUTV", "k", "hello", "PX", "100000")
    reply = raw.command("RINGKV.GETV", "k")
    head = b"*2\r\n$%d\r\n%s\r\n*1\r\n*3\r\n$5\r\nhello\r\n:" % (len(context), context)
    assert reply.startswith(head)
    timestamp, ttl = reply[len(head) : -2].split(b"\r\n:")
    assert int(timestamp) > 0 and 99_000 < int(ttl) <= 100_000
    assert raw.command("RINGKV.PUTV", "k", "v2", "CONTEXT", context).startswith(b"$")
    raw.command("HELLO", "3")
    assert raw.command("RINGKV.GETV", "missing") == b"*2\r\n_\r\n*0\r\n"
    assert raw.command("RINGKV.GETV", "k").startswith(b"*2\r\n$")
    assert raw.command("RINGKV.PUTV", "k", "v", "CONTEXT", "junk").startswith(
        b"-ERR invalid causal context: "
    )


def test_resp3_client_reads_the_same_shape(shared_node, r, other):
    make_siblings(r, other, "cart")
    r3 = redis.Redis(port=shared_node.resp_port, protocol=3)
    try:
        assert r3.execute_command("RINGKV.GETV", "cart") == list(getv(r, "cart"))
    finally:
        r3.close()


def test_command_info_describes_the_new_commands(r):
    # Sent on a bare connection: redis-py's callback for COMMAND would reshape the reply.
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command("COMMAND", "INFO", "ringkv.getv", "ringkv.putv", "ringkv.delv")
        getv_info, putv_info, delv_info = conn.read_response()
    finally:
        r.connection_pool.release(conn)
    assert getv_info[:2] == [b"ringkv.getv", 2] and getv_info[2] == [b"readonly"]
    assert putv_info[:2] == [b"ringkv.putv", -3] and putv_info[2] == [b"write"]
    assert delv_info[:2] == [b"ringkv.delv", -2] and delv_info[2] == [b"write"]
    assert getv_info[3:6] == putv_info[3:6] == delv_info[3:6] == [1, 1, 1]


# ---------------------------------------------------------------------- durability


def test_siblings_survive_a_crash_and_restart(start_node):
    node = start_node()
    a = redis.Redis(port=node.resp_port, socket_timeout=10)
    b = redis.Redis(port=node.resp_port, socket_timeout=10)
    make_siblings(a, b, "cart")
    before = getv(a, "cart")
    winner = a.get("cart")
    node.kill()
    node.start()
    after = redis.Redis(port=node.resp_port, socket_timeout=10)
    try:
        assert getv(after, "cart") == before
        assert after.get("cart") == winner
        # The context read before the crash still resolves the siblings after it.
        putv(after, "cart", "merged", before[0])
        assert values(after, "cart") == [b"merged"]
    finally:
        for client in (a, b, after):
            client.close()
