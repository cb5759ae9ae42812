"""Sets: the pure commands against a real redis-server 7.0 (random command streams, replies,
errors and the keys' state compared; SPOP's random choices judged, then Redis's applied),
properties of the commands against Python's set algebra (hypothesis), and the contract details a
node relies on (TTL kept or dropped as Redis does, SMOVE s s, STORE over any type, replies that
survive msgpack, COMMAND INFO)."""

from __future__ import annotations

import os
import random

import msgspec
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.errors import CommandError
from ringkv.service.datatypes import COMMANDS, execute
from ringkv.service.datatypes.base import KIND_HASH, KIND_SET, KIND_STRING, TYPE_NAMES, Ctx, Entry
from ringkv.service.datatypes.codec import decode, encode

FULL = os.environ.get("RINGKV_TEST_FULL") == "1"

SET_COMMANDS = [
    "SADD", "SREM", "SISMEMBER", "SMISMEMBER", "SMEMBERS", "SCARD", "SPOP", "SRANDMEMBER", "SMOVE",
    "SINTER", "SINTERCARD", "SUNION", "SDIFF", "SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE", "SSCAN",
]
KEYS = [b"s1", b"s2", b"s3", b"str"]
STRING_KEY = b"str"
MEMBERS = [b"a", b"b", b"c", b"1", b"2", b"10", b"", b"\xff", b"m\x00n"]
COUNTS = [b"0", b"1", b"2", b"3", b"5", b"12", b"-1", b"-2", b"-5", b"-12", b"x", b"", b"1.0", b"+1",
          b"-9223372036854775808", b"9223372036854775807", b"01", b"1_0"]
NUMKEYS = [b"0", b"-1", b"x", b"9", b"", b"1.5"]
CURSORS = [b"x", b"-1", b"", b" 0", b"18446744073709551616", b"18446744073709551615", b"+0", b"-0",
           b"0\x00x", b"1", b"2", b"00", b"1a"]
PATTERNS = [b"*", b"a*", b"?", b"[ab]", b"[^a]*", b"", b"1*", b"*0", b"\\*", b"[0-9]", b"\xff", b"m*"]


# --- running a command on both sides -------------------------------------------------------


def ours(store: dict[bytes, Entry], argv: list[bytes], rng: random.Random):
    name = argv[0].decode()
    try:
        reply = execute(store, name, argv[1:], Ctx(now_ms=0, random=rng))
    except CommandError as exc:
        return ("error", str(exc) if exc.kind == "ERR" else f"{exc.kind} {exc}")
    spec = COMMANDS[name]
    if spec.write:
        # A write's reply travels as msgpack from the consensus round to the client's node,
        # and `shape` makes of it what the adapter encodes.
        travelled = msgspec.msgpack.decode(msgspec.msgpack.encode(reply))
        assert travelled == reply, argv
        reply = spec.shape(travelled)
    return reply


def theirs_batch(client: redis.Redis, commands: list[list[bytes]]) -> list:
    pipe = client.pipeline(transaction=False)
    for argv in commands:
        pipe.execute_command(*argv)
    return [("error", str(r)) if isinstance(r, redis.ResponseError) else r for r in pipe.execute(raise_on_error=False)]


def is_error(reply) -> bool:
    return isinstance(reply, tuple) and reply[:1] == ("error",)


def members_of(store: dict[bytes, Entry], key: bytes) -> set[bytes]:
    entry = store.get(key)
    return set(entry.value) if entry is not None and entry.kind == KIND_SET else set()


def random_verdict(argv: list[bytes], reply, members: set[bytes]):
    """SRANDMEMBER's or SPOP's answer judged against the set it drew from: what Redis and
    ringkv must agree on (sizes, distinctness, membership), since the draws themselves differ."""
    if is_error(reply):
        return reply
    if len(argv) == 2:
        return ("one", reply in members) if members else ("nil", reply)
    count = int(argv[2])
    drawn = list(reply)
    consistent = all(m in members for m in drawn)
    if count >= 0:
        return ("sample", len(drawn), len(set(drawn)) == len(drawn), consistent)
    return ("repeats", len(drawn), consistent)


def random_command(rng: random.Random) -> list[bytes]:
    key = rng.choice(KEYS)
    member = rng.choice(MEMBERS)
    name = rng.choice([*SET_COMMANDS, "SADD", "SADD", "SADD", "SREM", "SMEMBERS"])
    if name in ("SADD", "SREM"):
        return [name.encode(), key, *rng.choices(MEMBERS, k=rng.randint(1, 4))]
    if name == "SISMEMBER":
        return [b"SISMEMBER", key, member]
    if name == "SMISMEMBER":
        return [b"SMISMEMBER", key, *rng.choices(MEMBERS, k=rng.randint(1, 3))]
    if name in ("SMEMBERS", "SCARD"):
        return [name.encode(), key]
    if name in ("SPOP", "SRANDMEMBER"):
        argv = [name.encode(), key]
        if rng.random() < 0.7:
            argv.append(rng.choice(COUNTS) if rng.random() < 0.3 else rng.choice(COUNTS[:10]))
            if rng.random() < 0.03:
                argv.append(b"1")
        return argv
    if name == "SMOVE":
        return [b"SMOVE", key, rng.choice(KEYS), member]
    if name in ("SINTER", "SUNION", "SDIFF"):
        return [name.encode(), *rng.choices(KEYS, k=rng.randint(1, 3))]
    if name in ("SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"):
        return [name.encode(), key, *rng.choices(KEYS, k=rng.randint(1, 3))]
    if name == "SINTERCARD":
        keys = rng.choices(KEYS, k=rng.randint(1, 3))
        numkeys = b"%d" % len(keys) if rng.random() < 0.85 else rng.choice(NUMKEYS)
        argv = [b"SINTERCARD", numkeys, *keys]
        if rng.random() < 0.4:
            argv.append(rng.choice([b"LIMIT", b"limit", b"LIMIT", b"BOGUS", b"limit\x00x"]))
            if rng.random() < 0.93:
                argv.append(rng.choice([b"0", b"1", b"2", b"5", b"-1", b"x", b"9223372036854775807"]))
        return argv
    # SSCAN
    argv = [b"SSCAN", key, b"0" if rng.random() < 0.8 else rng.choice(CURSORS)]
    for _ in range(rng.choice([0, 1, 1, 2])):
        opt = rng.choice([b"COUNT", b"count", b"MATCH", b"match", b"TYPE", b"BOGUS"])
        argv.append(opt)
        if rng.random() < 0.95:
            argv.append(rng.choice([b"1", b"2", b"3", b"100", b"0", b"-1", b"x"]) if b"OUNT" in opt.upper()
                        else rng.choice(PATTERNS))
    return argv


def full_scan_ours(store, argv, rng) -> list[bytes]:
    """Every page of our SSCAN from argv's cursor until the cursor is 0 again."""
    got: list[bytes] = []
    cursor = argv[2]
    for _ in range(10_000):
        reply = ours(store, [*argv[:2], cursor, *argv[3:]], rng)
        assert not is_error(reply), f"{argv!r}: {reply!r}"
        got += reply[1]
        cursor = reply[0]
        if cursor == b"0":
            return got
    raise AssertionError(f"SSCAN did not finish: {argv!r}")


def full_scan_theirs(client, argv, first) -> set[bytes]:
    got = set(first[1])
    cursor = first[0]
    while cursor != b"0":
        reply = client.execute_command(*argv[:2], cursor, *argv[3:])
        got |= set(reply[1])
        cursor = reply[0]
    return got


def state_of_ours(store: dict[bytes, Entry]) -> list:
    out = []
    for key in KEYS:
        entry = store.get(key)
        out.append(b"none" if entry is None else TYPE_NAMES[entry.kind].encode())
        out.append(entry is not None and entry.expire_at_ms != 0)
        out.append(entry.value if entry is not None and entry.kind == KIND_SET else None)
    return out


def state_commands() -> list[list[bytes]]:
    return [c for key in KEYS for c in ([b"TYPE", key], [b"PTTL", key], [b"SMEMBERS", key])]


def state_of_theirs(replies: list) -> list:
    out = []
    for type_reply, pttl, contents in zip(replies[::3], replies[1::3], replies[2::3], strict=True):
        out += [type_reply, pttl >= 0, set(contents) if type_reply == b"set" else None]
    return out


def side_effect(rng: random.Random) -> list[bytes] | None:
    """Now and then: a key deleted, given a TTL, or made a string or a hash, on both sides."""
    roll = rng.random()
    if roll < 0.02:
        return [b"DEL", rng.choice(KEYS)]
    if roll < 0.04:
        return [b"EXPIRE", rng.choice(KEYS), b"100000"]
    if roll < 0.05:
        return [b"SET", STRING_KEY, b"text"]
    if roll < 0.055:
        return [b"HSET", rng.choice(KEYS), b"f", b"v"]
    return None


def apply_side_effect(store: dict[bytes, Entry], argv: list[bytes], expected) -> None:
    key = argv[1]
    if argv[0] == b"DEL":
        store.pop(key, None)
    elif argv[0] == b"EXPIRE":
        if key in store:
            store[key].expire_at_ms = 1
    elif argv[0] == b"SET":
        store[key] = Entry(KIND_STRING, b"text")
    elif not is_error(expected):  # HSET, where the key was missing or a hash
        entry = store.get(key)
        if entry is None:
            store[key] = Entry(KIND_HASH, {b"f": b"v"})
        else:
            entry.value[b"f"] = b"v"


def check_spop(store, argv, expected, draws, where) -> None:
    """Our SPOP must pop as many distinct members of the set as Redis did; then the members
    Redis popped are taken from our set too, so both sides go on from the same state."""
    key = argv[1]
    before = members_of(store, key)
    entry = store.get(key)
    got = ours(store, argv, draws)
    assert random_verdict(argv, got, before) == random_verdict(argv, expected, before), where
    if is_error(got):
        return
    assert len(argv) == 2 or isinstance(got, set), f"{where}: SPOP with a count answers a set"
    popped = [got] if len(argv) == 2 else list(got)
    popped = [m for m in popped if m is not None]
    assert members_of(store, key) == before - set(popped), where
    theirs = [expected] if len(argv) == 2 else list(expected)
    remaining = before - {m for m in theirs if m is not None}
    if remaining:
        entry.value = remaining
        store[key] = entry
    else:
        store.pop(key, None)


@pytest.fixture(scope="module")
def client(redis_server):
    # RESP3, so that sets arrive as sets; no callbacks, so replies arrive raw.
    c = redis.Redis(port=redis_server, decode_responses=False, protocol=3)
    c.response_callbacks.clear()
    yield c
    c.close()


def run_stream(client: redis.Redis, seed: int, length: int) -> None:
    rng = random.Random(seed)
    draws = random.Random(seed + 1000)
    client.execute_command("FLUSHALL")
    client.execute_command("SET", STRING_KEY, b"text")
    store: dict[bytes, Entry] = {STRING_KEY: Entry(KIND_STRING, b"text")}
    done = 0
    while done < length:
        # A batch ends with its first SSCAN, so that Redis's further pages (its hash tables
        # page by COUNT) are read before anything else changes the set.
        batch: list[list[bytes]] = []
        while len(batch) < 100:
            batch.append(side_effect(rng) or random_command(rng))
            if batch[-1][0] == b"SSCAN":
                break
        done += len(batch)
        replies = theirs_batch(client, [*batch, *state_commands()])
        for argv, expected in zip(batch, replies, strict=False):
            where = f"seed={seed} command={argv!r}"
            name = argv[0].decode()
            if name in ("DEL", "EXPIRE", "SET", "HSET"):
                apply_side_effect(store, argv, expected)
                continue
            if name == "SPOP":
                check_spop(store, argv, expected, draws, where)
                continue
            if name == "SRANDMEMBER":
                before = members_of(store, argv[1])
                got = ours(store, argv, draws)
                assert random_verdict(argv, got, before) == random_verdict(argv, expected, before), where
                continue
            if name == "SSCAN" and not is_error(expected) and argv[2] in (b"0", b"", b"+0", b"-0", b"0\x00x", b"00"):
                got = full_scan_ours(store, argv, draws)
                assert len(got) == len(set(got)), f"{where}: a member came twice: {got!r}"
                assert set(got) == full_scan_theirs(client, argv, expected), where
                continue
            got = ours(store, argv, draws)
            if name == "SSCAN" and not is_error(expected):
                # A cursor that is not ours: only the shape is comparable.
                assert isinstance(got[0], bytes) and isinstance(got[1], list), where
                continue
            if isinstance(got, set) and isinstance(expected, list):
                # Redis sent a RESP3 set (`~`), which redis-py's parser gives as a list.
                assert len(set(expected)) == len(expected), f"{where}: redis repeated a member"
                expected = set(expected)
            assert got == expected, f"{where}: ours {got!r}, redis {expected!r}"
        assert state_of_ours(store) == state_of_theirs(replies[len(batch):]), f"seed={seed}: state after {batch[-1]!r}"


def test_random_streams_answer_as_redis_does(client):
    streams, length = (16, 5000) if FULL else (4, 1500)
    for seed in range(streams):
        run_stream(client, seed, length)


def test_command_info_matches_redis(client):
    for name in SET_COMMANDS:
        spec = COMMANDS[name]
        info = client.execute_command("COMMAND", "INFO", name)[0]
        assert (spec.arity, spec.first_key, spec.last_key, spec.key_step) == tuple(info[1:2] + info[3:6]), name
        assert spec.write == (b"write" in info[2]), name


# --- the contract a node relies on -----------------------------------------------------------


def ctx(seed: int = 1) -> Ctx:
    return Ctx(now_ms=0, random=random.Random(seed))


def test_writes_keep_the_ttl_and_store_forms_drop_it():
    store = {b"s": Entry(KIND_SET, {b"a", b"b"}, expire_at_ms=123), b"d": Entry(KIND_STRING, b"x", 55)}
    execute(store, "SADD", [b"s", b"c"], ctx())
    execute(store, "SREM", [b"s", b"a"], ctx())
    execute(store, "SPOP", [b"s", b"1"], ctx())
    assert store[b"s"].expire_at_ms == 123 and len(store[b"s"].value) == 1
    assert execute(store, "SUNIONSTORE", [b"d", b"s", b"s"], ctx()) == 1  # over a string
    assert store[b"d"] == Entry(KIND_SET, store[b"s"].value, 0)
    assert store[b"d"].value is not store[b"s"].value  # a copy, not the source's set
    assert execute(store, "SINTERSTORE", [b"d", b"s", b"missing"], ctx()) == 0
    assert b"d" not in store  # an empty result deletes the destination


def test_smove_to_itself_only_answers_membership():
    entry = Entry(KIND_SET, {b"a"}, 9)
    writes, reply = COMMANDS["SMOVE"].run(ctx(), [b"s", b"s", b"a"], {b"s": entry})
    assert (writes, reply) == ({}, 1)
    writes, reply = COMMANDS["SMOVE"].run(ctx(), [b"s", b"s", b"zz"], {b"s": entry})
    assert (writes, reply) == ({}, 0)


def test_smove_creates_the_destination_and_deletes_an_emptied_source():
    store = {b"src": Entry(KIND_SET, {b"m"}, 7)}
    assert execute(store, "SMOVE", [b"src", b"dst", b"m"], ctx()) == 1
    assert store == {b"dst": Entry(KIND_SET, {b"m"}, 0)}


def test_smove_into_another_type_changes_nothing():
    store = {b"src": Entry(KIND_SET, {b"m"}), b"str": Entry(KIND_STRING, b"v")}
    with pytest.raises(CommandError) as err:
        execute(store, "SMOVE", [b"src", b"str", b"m"], ctx())
    assert err.value.kind == "WRONGTYPE"
    assert store[b"src"].value == {b"m"}


def test_spop_with_a_count_answers_a_set_after_msgpack():
    store = {b"s": Entry(KIND_SET, {b"a", b"b", b"c"})}
    spec = COMMANDS["SPOP"]
    reply = execute(store, "SPOP", [b"s", b"2"], ctx())
    assert isinstance(reply, list) and len(reply) == 2
    assert spec.shape(msgspec.msgpack.decode(msgspec.msgpack.encode(reply))) == set(reply)
    assert spec.shape(b"a") == b"a" and spec.shape(None) is None


def test_pops_depend_only_on_the_seed_and_the_members():
    members = {bytes([c]) for c in range(97, 123)}
    a = execute({b"s": Entry(KIND_SET, set(members))}, "SPOP", [b"s", b"5"], ctx(3))
    b = execute({b"s": Entry(KIND_SET, set(sorted(members, reverse=True)))}, "SPOP", [b"s", b"5"], ctx(3))
    assert a == b


def test_sintercard_reads_its_keys_from_numkeys():
    spec = COMMANDS["SINTERCARD"]
    assert spec.keys([b"2", b"a", b"b", b"LIMIT", b"1"]) == [b"a", b"b"]
    for args, message in [([b"0", b"a"], "numkeys should be greater than 0"),
                          ([b"x", b"a"], "numkeys should be greater than 0"),
                          ([b"3", b"a", b"b"], "Number of keys can't be greater than number of args")]:
        with pytest.raises(CommandError, match=message):
            spec.keys(args)


# --- properties ------------------------------------------------------------------------------

small_sets = st.sets(st.binary(max_size=4), max_size=10)


@given(small_sets)
def test_a_set_survives_the_codec(members):
    assert decode(KIND_SET, encode(KIND_SET, members)) == members


@given(small_sets, small_sets, small_sets)
@settings(max_examples=80)
def test_the_algebra_is_python_set_algebra(a, b, c):
    store = {k: Entry(KIND_SET, set(v)) for k, v in ((b"a", a), (b"b", b), (b"c", c)) if v}
    keys = [b"a", b"b", b"c"]
    assert execute(store, "SINTER", keys, ctx()) == a & b & c
    assert execute(store, "SUNION", keys, ctx()) == a | b | c
    assert execute(store, "SDIFF", keys, ctx()) == a - b - c
    assert execute(store, "SINTERCARD", [b"3", *keys], ctx()) == len(a & b & c)
    assert execute(store, "SINTERCARD", [b"2", b"a", b"b", b"LIMIT", b"1"], ctx()) == min(1, len(a & b))
    assert execute(store, "SDIFFSTORE", [b"d", *keys], ctx()) == len(a - b - c)
    assert members_of(store, b"d") == a - b - c
    assert execute(store, "SMISMEMBER", [b"a", *sorted(b | {b"zz"})], ctx()) == [int(m in a) for m in sorted(b | {b"zz"})]


@given(small_sets, st.integers(min_value=-15, max_value=15), st.integers(min_value=0, max_value=2**32))
@settings(max_examples=80)
def test_draws_and_pops_keep_their_promises(members, count, seed):
    store = {b"s": Entry(KIND_SET, set(members))} if members else {}
    drawn = execute(store, "SRANDMEMBER", [b"s", b"%d" % count], ctx(seed))
    assert all(m in members for m in drawn)
    if count >= 0:
        assert len(drawn) == min(count, len(members)) and len(set(drawn)) == len(drawn)
    else:
        assert len(drawn) == (-count if members else 0)
    if count >= 0:
        popped = execute(store, "SPOP", [b"s", b"%d" % count], ctx(seed))
        assert set(popped) <= members and len(set(popped)) == len(popped) == min(count, len(members))
        assert members_of(store, b"s") == members - set(popped)


@given(small_sets, st.integers(min_value=1, max_value=4), st.sampled_from([b"*", b"a*", b"?", b"[a-c]*", b"*\x00*"]))
@settings(max_examples=60)
def test_a_full_sscan_returns_each_matching_member_once(members, count, pattern):
    from ringkv.service.glob import GlobPattern

    store = {b"s": Entry(KIND_SET, set(members))} if members else {}
    got = full_scan_ours(store, [b"SSCAN", b"s", b"0", b"COUNT", b"%d" % count, b"MATCH", pattern], random.Random(0))
    matcher = GlobPattern(pattern)
    assert sorted(got) == sorted(m for m in members if pattern == b"*" or matcher.matches(m))
