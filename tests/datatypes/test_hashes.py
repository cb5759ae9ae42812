"""Hashes: the pure commands against a real redis-server 7.0 (random command streams, replies,
errors and the keys' state compared), HINCRBYFLOAT's long double arithmetic digit for digit,
properties of the commands against a dict model (hypothesis), and the contract details a node
relies on (TTL kept, only changed keys written, replies that survive msgpack, COMMAND INFO)."""

from __future__ import annotations

import os
import random
from fractions import Fraction

import msgspec
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.errors import CommandError
from ringkv.service import longdouble
from ringkv.service.datatypes import COMMANDS, execute
from ringkv.service.datatypes.base import KIND_HASH, KIND_STRING, TYPE_NAMES, Ctx, Entry
from ringkv.service.datatypes.codec import decode, encode
from ringkv.service.datatypes.iteration import MAX_RANDOM_REPLY_BYTES

FULL = os.environ.get("RINGKV_TEST_FULL") == "1"

HASH_COMMANDS = [
    "HSET", "HSETNX", "HGET", "HMGET", "HMSET", "HDEL", "HEXISTS", "HGETALL", "HKEYS", "HVALS",
    "HLEN", "HSTRLEN", "HINCRBY", "HINCRBYFLOAT", "HRANDFIELD", "HSCAN",
]
KEYS = [b"h1", b"h2", b"str"]
STRING_KEY = b"str"
FIELDS = [b"a", b"b", b"c", b"", b"f\x00g", b"\xff"]
VALUES = [b"1", b"0", b"-3", b"10", b"9223372036854775807", b"-9223372036854775808", b"1.5", b"0.1",
          b"x", b"", b"inf", b"1e3", b" 2", b"07", b"-0"]
INTS = [b"0", b"1", b"2", b"-1", b"5", b"-7", b"100", b"9223372036854775807", b"-9223372036854775808",
        b"9223372036854775808", b"x", b"", b"1.5", b"+1", b"01", b"-0", b" 1", b"1_0"]
FLOATS = [b"0.1", b"-0.2", b"1", b"1e2", b"3.0e-3", b"0.3", b"-1.5", b"2.5e-17", b"1e17", b"123456789.123",
          b"inf", b"-inf", b"nan", b"x", b"", b" 1", b"1 ", b"0x10", b"1e5000", b"1e-5000", b".5", b"5.",
          b"+3", b"1e308", b"-1e4000"]
COUNTS = [b"0", b"1", b"2", b"3", b"5", b"9", b"-1", b"-2", b"-5", b"-12", b"x", b"", b"1.0",
          b"-9223372036854775808", b"9223372036854775807", b"4611686018427387904", b"4611686018427387903"]
CURSORS = [b"x", b"-1", b"", b" 0", b"18446744073709551616", b"18446744073709551615", b"+0", b"-0",
           b"0\x00x", b"1", b"2", b"00", b"1a"]
PATTERNS = [b"*", b"a*", b"?", b"[ab]", b"[^a]*", b"", b"f*", b"*g", b"\\*", b"[a-c]", b"\xff"]


# --- running a command on both sides -------------------------------------------------------


def ours(store: dict[bytes, Entry], argv: list[bytes], rng: random.Random):
    try:
        reply = execute(store, argv[0].decode(), argv[1:], Ctx(now_ms=0, random=rng))
    except CommandError as exc:
        return ("error", str(exc) if exc.kind == "ERR" else f"{exc.kind} {exc}")
    if COMMANDS[argv[0].decode()].write:
        # A write's reply travels as msgpack from the consensus round to the client's node.
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(reply)) == reply, argv
    return reply


def theirs_batch(client: redis.Redis, commands: list[list[bytes]]) -> list:
    pipe = client.pipeline(transaction=False)
    for argv in commands:
        pipe.execute_command(*argv)
    return [("error", str(r)) if isinstance(r, redis.ResponseError) else r for r in pipe.execute(raise_on_error=False)]


def is_error(reply) -> bool:
    return isinstance(reply, tuple) and reply[:1] == ("error",)


def pairs(flat_list: list) -> list[tuple[bytes, bytes]]:
    return list(zip(flat_list[::2], flat_list[1::2], strict=True))


def random_verdict(argv: list[bytes], reply, fields: dict[bytes, bytes]):
    """HRANDFIELD's answer judged against the hash it drew from: what Redis and ringkv must agree
    on (sizes, distinctness, membership), since the draws themselves differ."""
    if is_error(reply):
        return reply
    if len(argv) == 2:
        return ("one", reply in fields) if fields else ("nil", reply)
    count = int(argv[2])
    with_values = len(argv) == 4
    if with_values:  # Redis's RESP3 answer is [field, value] pairs, ours a flat list
        items = [tuple(p) for p in reply] if reply and isinstance(reply[0], list) else pairs(reply)
    else:
        items = [(f, fields.get(f)) for f in reply]
    consistent = all(f in fields and (not with_values or fields[f] == v) for f, v in items)
    if count >= 0:
        distinct = len({f for f, _ in items}) == len(items)
        return ("sample", len(items), consistent, distinct)
    return ("repeats", len(items), consistent)


def random_command(rng: random.Random) -> list[bytes]:
    key = rng.choice(KEYS)
    field = rng.choice(FIELDS)
    name = rng.choice([*HASH_COMMANDS, "HSET", "HSET", "HGETALL", "HINCRBYFLOAT", "HINCRBY", "HDEL"])
    if name in ("HSET", "HMSET"):
        n = rng.choice([1, 1, 2, 3])
        argv = [name.encode(), key]
        for _ in range(n):
            argv += [rng.choice(FIELDS), rng.choice(VALUES)]
        if rng.random() < 0.05:
            argv.pop()  # odd: Redis's own arity check
        return argv
    if name == "HSETNX":
        return [b"HSETNX", key, field, rng.choice(VALUES)]
    if name in ("HGET", "HEXISTS", "HSTRLEN"):
        return [name.encode(), key, field]
    if name in ("HMGET", "HDEL"):
        return [name.encode(), key, *rng.choices(FIELDS, k=rng.randint(1, 3))]
    if name in ("HGETALL", "HKEYS", "HVALS", "HLEN"):
        return [name.encode(), key]
    if name == "HINCRBY":
        pool = INTS if rng.random() < 0.3 else INTS[:7]
        return [b"HINCRBY", key, field, rng.choice(pool)]
    if name == "HINCRBYFLOAT":
        pool = FLOATS if rng.random() < 0.3 else FLOATS[:10]
        return [b"HINCRBYFLOAT", key, field, rng.choice(pool)]
    if name == "HRANDFIELD":
        argv = [b"HRANDFIELD", key]
        if rng.random() < 0.8:
            argv.append(rng.choice(COUNTS) if rng.random() < 0.3 else rng.choice(COUNTS[:10]))
            if rng.random() < 0.4:
                argv.append(rng.choice([b"WITHVALUES", b"withvalues", b"WithValues", b"VALUES", b"withvalues\x00x"]))
            if rng.random() < 0.03:
                argv.append(b"WITHVALUES")
        return argv
    # HSCAN
    argv = [b"HSCAN", key, b"0" if rng.random() < 0.8 else rng.choice(CURSORS)]
    for _ in range(rng.choice([0, 1, 1, 2])):
        opt = rng.choice([b"COUNT", b"count", b"MATCH", b"match", b"TYPE", b"BOGUS"])
        argv.append(opt)
        if rng.random() < 0.95:
            argv.append(rng.choice([b"1", b"2", b"3", b"100", b"0", b"-1", b"x"]) if b"OUNT" in opt.upper()
                        else rng.choice(PATTERNS))
    return argv


def full_scan_ours(store, argv, rng) -> list[tuple[bytes, bytes]]:
    """Every page of our HSCAN from argv's cursor until the cursor is 0 again."""
    got: list[tuple[bytes, bytes]] = []
    cursor = argv[2]
    for _ in range(10_000):
        reply = ours(store, [*argv[:2], cursor, *argv[3:]], rng)
        assert not is_error(reply), f"{argv!r}: {reply!r}"
        got += pairs(reply[1])
        cursor = reply[0]
        if cursor == b"0":
            return got
    raise AssertionError(f"HSCAN did not finish: {argv!r}")


def full_scan_theirs(client, argv, first) -> set[tuple[bytes, bytes]]:
    got = set(pairs(first[1]))
    cursor = first[0]
    while cursor != b"0":
        reply = client.execute_command(*argv[:2], cursor, *argv[3:])
        got |= set(pairs(reply[1]))
        cursor = reply[0]
    return got


def state_of_ours(store: dict[bytes, Entry]) -> list:
    out = []
    for key in KEYS:
        entry = store.get(key)
        out.append(b"none" if entry is None else TYPE_NAMES[entry.kind].encode())
        out.append(entry is not None and entry.expire_at_ms != 0)
        out.append(entry.value if entry is not None and entry.kind == KIND_HASH else None)
    return out


def state_commands() -> list[list[bytes]]:
    return [c for key in KEYS for c in ([b"TYPE", key], [b"PTTL", key], [b"HGETALL", key])]


def state_of_theirs(replies: list) -> list:
    out = []
    for type_reply, pttl, contents in zip(replies[::3], replies[1::3], replies[2::3], strict=True):
        out.append(type_reply)
        out.append(pttl >= 0)
        out.append(contents if type_reply == b"hash" else None)
    return out


def side_effect(rng: random.Random) -> list[bytes] | None:
    """Now and then: a key deleted, given a TTL, or made a string again, on both sides."""
    roll = rng.random()
    if roll < 0.02:
        return [b"DEL", rng.choice(KEYS)]
    if roll < 0.04:
        return [b"EXPIRE", rng.choice(KEYS), b"100000"]
    if roll < 0.05:
        return [b"SET", STRING_KEY, b"text"]
    return None


def apply_side_effect(store: dict[bytes, Entry], argv: list[bytes]) -> None:
    key = argv[1]
    if argv[0] == b"DEL":
        store.pop(key, None)
    elif argv[0] == b"EXPIRE":
        if key in store:
            store[key].expire_at_ms = 1
    else:
        store[key] = Entry(KIND_STRING, b"text")


@pytest.fixture(scope="module")
def client(redis_server):
    # RESP3, so that maps (HGETALL) arrive as maps; no callbacks, so replies arrive raw.
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
        # A batch ends with its first HSCAN, so that Redis's further pages (its hash tables
        # page by COUNT) are read before anything else changes the hash.
        batch: list[list[bytes]] = []
        while len(batch) < 100:
            effect = side_effect(rng)
            batch.append(effect or random_command(rng))
            if batch[-1][0] == b"HSCAN":
                break
        done += len(batch)
        replies = theirs_batch(client, [*batch, *state_commands()])
        for argv, expected in zip(batch, replies, strict=False):
            where = f"seed={seed} command={argv!r}"
            if argv[0] in (b"DEL", b"EXPIRE", b"SET"):
                apply_side_effect(store, argv)
                continue
            name = argv[0].decode()
            if name == "HRANDFIELD":
                entry = store.get(argv[1])
                fields = dict(entry.value) if entry is not None and entry.kind == KIND_HASH else {}
                got = ours(store, argv, draws)
                assert random_verdict(argv, got, fields) == random_verdict(argv, expected, fields), where
                continue
            if name == "HSCAN" and not is_error(expected) and argv[2] in (b"0", b"", b"+0", b"-0", b"0\x00x", b"00"):
                got = full_scan_ours(store, argv, draws)
                assert len(got) == len(set(got)), f"{where}: a field came twice: {got!r}"
                assert set(got) == full_scan_theirs(client, argv, expected), where
                continue
            got = ours(store, argv, draws)
            if name == "HSCAN" and not is_error(expected):
                # A cursor that is not ours: only the shape is comparable.
                assert isinstance(got[0], bytes) and isinstance(got[1], list), where
                continue
            if name in ("HKEYS", "HVALS") and not is_error(got):
                got, expected = sorted(got), sorted(expected)
            elif got == "OK":
                got = b"OK"
            assert got == expected, f"{where}: ours {got!r}, redis {expected!r}"
        assert state_of_ours(store) == state_of_theirs(replies[len(batch):]), f"seed={seed}: state after {batch[-1]!r}"


def test_random_streams_answer_as_redis_does(client):
    streams, length = (16, 5000) if FULL else (4, 1500)
    for seed in range(streams):
        run_stream(client, seed, length)


def test_hincrbyfloat_adds_as_redis_long_doubles_do(client):
    """Sums a float64 would round differently (0.1 + 0.2), long runs of small steps, and
    magnitudes past a double's range, digit for digit."""
    client.execute_command("FLUSHALL")
    rng = random.Random(7)
    store: dict[bytes, Entry] = {}
    steps = [b"0.1", b"0.2", b"-0.3", b"1e-17", b"3.3333333333333333333", b"1e300", b"-1e300", b"1e4000",
             b"-1e4000", b"7", b"0x1p-60", b"1e-4940", b"2.5", b"-2.5e-5"]
    for _ in range(400 if FULL else 150):
        argv = [b"HINCRBYFLOAT", b"h", rng.choice([b"f", b"g"]), rng.choice(steps)]
        expected = theirs_batch(client, [argv])[0]
        assert ours(store, argv, rng) == expected, argv


def test_command_info_matches_redis(client):
    for name in HASH_COMMANDS:
        spec = COMMANDS[name]
        info = client.execute_command("COMMAND", "INFO", name)[0]
        assert (spec.arity, spec.first_key, spec.last_key, spec.key_step) == tuple(info[1:2] + info[3:6]), name
        assert spec.write == (b"write" in info[2]), name


# --- the contract a node relies on -----------------------------------------------------------


def ctx() -> Ctx:
    return Ctx(now_ms=0, random=random.Random(1))


def test_writes_keep_the_ttl_and_a_new_hash_has_none():
    store = {b"k": Entry(KIND_HASH, {b"a": b"1"}, expire_at_ms=123)}
    execute(store, "HSET", [b"k", b"b", b"2"], ctx())
    execute(store, "HINCRBY", [b"k", b"a", b"4"], ctx())
    execute(store, "HINCRBYFLOAT", [b"k", b"a", b"0.5"], ctx())
    execute(store, "HDEL", [b"k", b"b"], ctx())
    assert store[b"k"] == Entry(KIND_HASH, {b"a": b"5.5"}, 123)
    execute(store, "HSETNX", [b"new", b"f", b"v"], ctx())
    assert store[b"new"] == Entry(KIND_HASH, {b"f": b"v"}, 0)
    execute(store, "HDEL", [b"k", b"a"], ctx())
    assert b"k" not in store  # emptied, so deleted


def test_only_a_changed_hash_is_written():
    entry = Entry(KIND_HASH, {b"a": b"1"})
    for name, args in [("HSET", [b"k", b"a", b"1"]), ("HSETNX", [b"k", b"a", b"2"]), ("HDEL", [b"k", b"zz"])]:
        writes, _ = COMMANDS[name].run(ctx(), args, {b"k": entry})
        assert writes == {}, name
    writes, reply = COMMANDS["HSET"].run(ctx(), [b"k", b"a", b"2"], {b"k": entry})
    assert (writes, reply) == ({b"k": entry}, 0)


def test_a_failed_increment_changes_nothing():
    store = {b"k": Entry(KIND_HASH, {b"n": b"9223372036854775807", b"s": b"text"})}
    for args, message in [
        ([b"k", b"n", b"1"], "increment or decrement would overflow"),
        ([b"k", b"s", b"1"], "hash value is not an integer"),
    ]:
        with pytest.raises(CommandError, match=message):
            execute(store, "HINCRBY", args, ctx())
    with pytest.raises(CommandError, match="hash value is not a float"):
        execute(store, "HINCRBYFLOAT", [b"k", b"s", b"1"], ctx())
    assert store[b"k"].value == {b"n": b"9223372036854775807", b"s": b"text"}


def test_hmset_answers_ok_and_hgetall_a_map():
    store: dict[bytes, Entry] = {}
    assert execute(store, "HMSET", [b"k", b"a", b"1", b"b", b"2"], ctx()) == "OK"
    assert execute(store, "HGETALL", [b"k"], ctx()) == {b"a": b"1", b"b": b"2"}
    assert execute(store, "HGETALL", [b"missing"], ctx()) == {}


def test_a_repeating_draw_past_the_reply_bound_is_refused_with_the_limit_named():
    store = {b"k": Entry(KIND_HASH, {b"f": b"v" * 1000})}
    with pytest.raises(CommandError, match=f"over {MAX_RANDOM_REPLY_BYTES} bytes"):
        execute(store, "HRANDFIELD", [b"k", b"-10000", b"WITHVALUES"], ctx())
    with pytest.raises(CommandError, match="max_random_reply_bytes"):
        execute(store, "HRANDFIELD", [b"k", b"-4611686018427387903"], ctx())
    assert len(execute(store, "HRANDFIELD", [b"k", b"-1000", b"WITHVALUES"], ctx())) == 2000


def test_draws_depend_only_on_the_seed_and_the_hash():
    fields = {bytes([c]): b"v" for c in range(97, 123)}
    a = execute({b"k": Entry(KIND_HASH, dict(fields))}, "HRANDFIELD", [b"k", b"5"], Ctx(0, random.Random(3)))
    reordered = dict(reversed(list(fields.items())))
    b = execute({b"k": Entry(KIND_HASH, reordered)}, "HRANDFIELD", [b"k", b"5"], Ctx(0, random.Random(3)))
    assert a == b


# --- properties ------------------------------------------------------------------------------

small_bytes = st.binary(max_size=6)
hashes = st.dictionaries(small_bytes, small_bytes, max_size=12)


@given(hashes)
def test_a_hash_survives_the_codec(fields):
    assert decode(KIND_HASH, encode(KIND_HASH, fields)) == fields


@given(hashes, st.integers(min_value=1, max_value=5), st.sampled_from([b"*", b"a*", b"?", b"[a-c]*", b"*\x00*"]))
@settings(max_examples=60)
def test_a_full_hscan_returns_each_matching_field_once(fields, count, pattern):
    from ringkv.service.glob import GlobPattern

    store = {b"k": Entry(KIND_HASH, dict(fields))} if fields else {}
    got = full_scan_ours(store, [b"HSCAN", b"k", b"0", b"COUNT", b"%d" % count, b"MATCH", pattern], random.Random(0))
    matcher = GlobPattern(pattern)
    want = sorted((f, v) for f, v in fields.items() if pattern == b"*" or matcher.matches(f))
    assert sorted(got) == want


@given(hashes, st.lists(st.tuples(small_bytes, small_bytes), max_size=6), st.lists(small_bytes, max_size=6))
@settings(max_examples=60)
def test_hset_then_hdel_agree_with_a_dict(fields, updates, deletions):
    model = dict(fields)
    store = {b"k": Entry(KIND_HASH, dict(fields))} if fields else {}
    if updates:
        args = [b"k"] + [x for pair in updates for x in pair]
        created = execute(store, "HSET", args, ctx())
        assert created == len({f for f, _ in updates} - set(model))
        model.update(updates)
    if deletions:
        removed = execute(store, "HDEL", [b"k", *deletions], ctx())
        assert removed == len(set(deletions) & set(model))
        for f in deletions:
            model.pop(f, None)
    assert execute(store, "HGETALL", [b"k"], ctx()) == model
    assert execute(store, "HLEN", [b"k"], ctx()) == len(model)
    assert (b"k" in store) == bool(model)


@given(st.lists(st.integers(min_value=-(10**6), max_value=10**6), max_size=8))
@settings(max_examples=60)
def test_hincrbyfloat_of_short_decimals_reads_back_what_it_wrote(steps):
    """Every reply parses back to itself, and is the exact sum to within long double rounding
    (a 64-bit significand: far closer than a float64's 53 bits). Each step stores its sum
    written with 17 decimals, so the error may grow by a rounding of that size per step."""
    store: dict[bytes, Entry] = {}
    total = Fraction(0)
    largest = Fraction(0)
    for i, n in enumerate(steps, 1):
        text = b"%s%d.%03d" % (b"-" if n < 0 else b"", abs(n) // 1000, abs(n) % 1000)
        total += Fraction(n, 1000)
        largest = max(largest, abs(total))
        reply = execute(store, "HINCRBYFLOAT", [b"k", b"f", text], ctx())
        assert store[b"k"].value[b"f"] == reply
        assert longdouble.format_human(longdouble.parse(reply)) == reply
        assert abs(Fraction(reply.decode()) - total) <= i * Fraction(1, 10**17) * (1 + largest)
