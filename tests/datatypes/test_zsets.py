"""Sorted sets: the pure commands against a real redis-server 7.0 (random command streams,
replies and errors compared), against small models (hypothesis), Redis's glob as MATCH reads
it, and the contract details a node relies on (TTL kept, a STORE destination's TTL dropped,
reads write nothing, RESP3 pair shapes, COMMAND INFO metadata)."""

from __future__ import annotations

import math
import os
import random

import msgspec
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.errors import CommandError
from ringkv.service.datatypes import COMMANDS, execute
from ringkv.service.datatypes.base import KIND_SET, KIND_STRING, KIND_ZSET, Ctx, Entry
from ringkv.service.datatypes.codec import decode, encode
from ringkv.service.datatypes.zsets import (
    Walk,
    pair_up,
    parse_score,
    resp3_pairs,
    score_text,
    walk_of,
    walked,
)
from ringkv.service.glob import GlobPattern

FULL = os.environ.get("RINGKV_TEST_FULL") == "1"

ZSET_COMMANDS = [
    "ZADD", "ZINCRBY", "ZREM", "ZSCORE", "ZMSCORE", "ZCARD", "ZCOUNT", "ZLEXCOUNT", "ZRANGE",
    "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZRANGEBYLEX", "ZREVRANGEBYLEX", "ZRANK",
    "ZREVRANK", "ZPOPMIN", "ZPOPMAX", "ZREMRANGEBYRANK", "ZREMRANGEBYSCORE", "ZREMRANGEBYLEX",
    "ZUNIONSTORE", "ZINTERSTORE", "ZSCAN",
]  # fmt: skip

ZKEYS = [b"za", b"zb", b"zc"]
SET_KEY = b"st"
STRING_KEY = b"str"
MISSING = b"nokey"
MEMBERS = [b"a", b"b", b"c", b"d", b"", b"ab", b"A", b"\xff", b"b\x00"]
SCORES = [b"0", b"1", b"2", b"3", b"-1", b"1.5", b"0.1", b"inf", b"-inf", b"+inf", b"-0",
          b"1e3", b"0x10", b"2.5e-1", b".5", b"7."]  # fmt: skip
BAD_SCORES = [b"abc", b"", b" 1", b"1 ", b"nan", b"1e400", b"1e-400", b"(1", b"1_0", b"infinit"]
SCORE_BOUNDS = [b"(1", b"1", b"-inf", b"+inf", b"(-inf", b"(+inf", b"2.5", b"(0.1", b"0", b"3",
                b"(3", b"", b"(", b" 1", b"1e400", b"1\x00x", b"-0", b"(1.5"]  # fmt: skip
BAD_SCORE_BOUNDS = [b"abc", b"nan", b"[1", b"1 ", b"((1", b"-"]
LEX_BOUNDS = [b"-", b"+", b"[a", b"(a", b"[b", b"(c", b"[", b"(", b"[ab", b"[\xff", b"-\x00", b"[d",
              b"(b\x00"]  # fmt: skip
BAD_LEX_BOUNDS = [b"a", b"+x", b"", b"1"]
INTS = [b"0", b"1", b"-1", b"2", b"-2", b"5", b"-100", b"100", b"3"]
BAD_INTS = [b"abc", b"01", b"+1", b"-0", b" 1", b"1.5", b"9223372036854775807",
            b"-9223372036854775808", b"9223372036854775808"]  # fmt: skip
PATTERNS = [b"*", b"a*", b"*b*", b"?", b"", b"[a-c]", b"[^a]", b"\\a", b"[a-\xff]", b"**", b"b?",
            b"[ab", b"[]", b"[^]", b"*\\"]  # fmt: skip
CURSORS = [b"0", b"0", b"0", b"", b"abc", b" 0", b"-", b"18446744073709551616", b"0x"]


def run_ours(store: dict[bytes, Entry], argv: list[bytes]):
    """What execute() answers, rendered as Redis 7.0 sends it over RESP2 (a double is %.17g
    text; ZSCAN iterated to its end and its pairs sorted), or the error as redis-py reports
    it."""
    name = argv[0].decode().upper()
    ctx = Ctx(now_ms=0)
    try:
        reply = execute(store, name, argv[1:], ctx)
        if name == "ZSCAN":
            pairs = list(reply[1])
            while reply[0] != b"0":
                reply = execute(store, name, [argv[1], reply[0], *argv[3:]], ctx)
                pairs += reply[1]
            return [b"0", sorted(zip(pairs[::2], pairs[1::2], strict=True))]
    except CommandError as exc:
        return ("error", str(exc) if exc.kind == "ERR" else f"{exc.kind} {exc}")
    if COMMANDS[name].write:
        # A write's reply travels as msgpack from the consensus round to the client's node.
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(reply)) == reply, argv
    return resp2(reply)


def resp2(reply):
    if isinstance(reply, float):
        return redis7_double(reply)
    if isinstance(reply, list):
        return [resp2(item) for item in reply]
    return reply


def redis7_double(value: float) -> bytes:
    """Redis 7.0's addReplyDouble: inf/-inf, else printf's %.17g."""
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    return b"%.17g" % value


def run_redis_batch(client: redis.Redis, commands: list[list[bytes]]) -> list:
    pipe = client.pipeline(transaction=False)
    for argv in commands:
        pipe.execute_command(*argv)
    out = []
    for argv, reply in zip(commands, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(reply, redis.ResponseError):
            out.append(("error", str(reply)))
        elif argv[0] == b"ZSCAN":
            # A small sorted set is a listpack in Redis: one call answers it all, cursor 0.
            assert reply[0] == b"0", f"redis gave cursor {reply[0]!r}: the set outgrew a listpack"
            pairs = reply[1]
            out.append([b"0", sorted(zip(pairs[::2], pairs[1::2], strict=True))])
        else:
            out.append(reply)
    return out


def pick(rng: random.Random, good: list[bytes], bad: list[bytes], bad_rate: float = 0.08) -> bytes:
    return rng.choice(bad) if rng.random() < bad_rate else rng.choice(good)


def any_key(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.05:
        return STRING_KEY
    if r < 0.09:
        return SET_KEY
    if r < 0.12:
        return MISSING
    return rng.choice(ZKEYS)


def mixed_case(rng: random.Random, word: bytes) -> bytes:
    return word.upper() if rng.random() < 0.5 else word.lower()


def limit(rng: random.Random) -> list[bytes]:
    return [mixed_case(rng, b"limit"), pick(rng, INTS, BAD_INTS, 0.05), pick(rng, INTS, BAD_INTS, 0.05)]


def random_command(rng: random.Random) -> list[bytes]:
    name = rng.choice([*ZSET_COMMANDS, "ZADD", "ZADD", "ZADD", "ZRANGE", "ZRANGE", "ZUNIONSTORE"])
    key = any_key(rng)
    member = rng.choice(MEMBERS)
    if name == "ZADD":
        flags = [mixed_case(rng, f) for f in (b"nx", b"xx", b"ch", b"incr", b"gt", b"lt") if rng.random() < 0.12]
        pairs = rng.randint(1, 1 if b"INCR" in [f.upper() for f in flags] and rng.random() < 0.9 else 4)
        args = []
        for _ in range(pairs):
            args += [pick(rng, SCORES, BAD_SCORES, 0.04), rng.choice(MEMBERS)]
        if rng.random() < 0.03:
            args = args[:-1]
        return [b"ZADD", key, *flags, *args]
    if name == "ZINCRBY":
        return [b"ZINCRBY", key, pick(rng, SCORES, [*BAD_SCORES, b"nx", b"GT"]), member]
    if name in ("ZREM", "ZMSCORE"):
        return [name.encode(), key, *rng.choices(MEMBERS, k=rng.randint(1, 3))]
    if name in ("ZSCORE", "ZRANK", "ZREVRANK"):
        return [name.encode(), key, member]
    if name == "ZCARD":
        return [b"ZCARD", key] if rng.random() < 0.97 else [b"ZCARD"]
    if name in ("ZCOUNT", "ZREMRANGEBYSCORE"):
        return [name.encode(), key, pick(rng, SCORE_BOUNDS, BAD_SCORE_BOUNDS), pick(rng, SCORE_BOUNDS, BAD_SCORE_BOUNDS)]
    if name in ("ZLEXCOUNT", "ZREMRANGEBYLEX"):
        return [name.encode(), key, pick(rng, LEX_BOUNDS, BAD_LEX_BOUNDS), pick(rng, LEX_BOUNDS, BAD_LEX_BOUNDS)]
    if name == "ZREMRANGEBYRANK":
        return [b"ZREMRANGEBYRANK", key, pick(rng, INTS, BAD_INTS), pick(rng, INTS, BAD_INTS)]
    if name in ("ZPOPMIN", "ZPOPMAX"):
        extra = [] if rng.random() < 0.4 else [pick(rng, INTS, BAD_INTS)]
        if rng.random() < 0.03:
            extra = [b"1", b"2"]
        return [name.encode(), key, *extra]
    if name in ("ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZRANGEBYLEX", "ZREVRANGEBYLEX"):
        return range_command(rng, name, key)
    if name in ("ZUNIONSTORE", "ZINTERSTORE"):
        n = rng.randint(1, 3)
        sources = [any_key(rng) for _ in range(n)]
        numkeys = str(n).encode() if rng.random() < 0.93 else rng.choice([b"0", b"-1", b"9", b"x"])
        opts: list[bytes] = []
        if rng.random() < 0.4:
            weights = [rng.choice([b"1", b"2", b"0", b"-1", b"0.5", b"inf", b"-inf"]) for _ in range(n)]
            if rng.random() < 0.05:
                weights[-1] = rng.choice([b"x", b"nan", b""])
            if rng.random() < 0.03:
                weights = weights[:-1]
            opts += [mixed_case(rng, b"weights"), *weights]
        if rng.random() < 0.4:
            opts += [mixed_case(rng, b"aggregate"), rng.choice([b"sum", b"MIN", b"max", b"avg"])]
        if rng.random() < 0.03:
            opts.append(b"withscores")
        if rng.random() < 0.05:
            rng.shuffle(opts)
        destination = rng.choice([*ZKEYS, *ZKEYS, SET_KEY, STRING_KEY, b"zdest"])
        return [name.encode(), destination, numkeys, *sources, *opts]
    # ZSCAN
    opts = []
    if rng.random() < 0.5:
        opts += [mixed_case(rng, b"match"), rng.choice(PATTERNS)]
    if rng.random() < 0.5:
        opts += [mixed_case(rng, b"count"), rng.choice([b"1", b"2", b"3", b"10", b"0", b"-1", b"x"])]
    if rng.random() < 0.03:
        opts.append(b"type")
    return [b"ZSCAN", key, rng.choice(CURSORS), *opts]


def range_command(rng: random.Random, name: str, key: bytes) -> list[bytes]:
    by = {"ZRANGEBYSCORE": "score", "ZREVRANGEBYSCORE": "score", "ZRANGEBYLEX": "lex", "ZREVRANGEBYLEX": "lex"}
    kind = by.get(name) or rng.choice(["rank", "score", "lex"])
    bounds, bad = {"rank": (INTS, BAD_INTS), "score": (SCORE_BOUNDS, BAD_SCORE_BOUNDS), "lex": (LEX_BOUNDS, BAD_LEX_BOUNDS)}[kind]
    if rng.random() < 0.04:
        bounds = rng.choice([INTS, SCORE_BOUNDS, LEX_BOUNDS])
    opts: list[bytes] = []
    if name == "ZRANGE":
        if kind != "rank":
            opts.append(mixed_case(rng, b"by" + kind.encode()))
        if rng.random() < 0.4:
            opts.append(mixed_case(rng, b"rev"))
    if rng.random() < (0.4 if kind != "lex" else 0.05):
        opts.append(mixed_case(rng, b"withscores"))
    if rng.random() < (0.4 if kind != "rank" else 0.05):
        opts += limit(rng)
    if rng.random() < 0.1:
        rng.shuffle(opts)
    if rng.random() < 0.03:
        opts.append(rng.choice([b"rev", b"byscore", b"bylex", b"limit", b"junk"]))
    return [name.encode(), key, pick(rng, bounds, bad, 0.05), pick(rng, bounds, bad, 0.05), *opts]


def seed_other_types(client: redis.Redis, store: dict[bytes, Entry], rng: random.Random) -> None:
    """The string key and the set key (a ZUNIONSTORE/ZINTERSTORE source), on both sides."""
    members = set(rng.sample(MEMBERS, rng.randint(1, 5)))
    client.execute_command("DEL", STRING_KEY, SET_KEY)
    client.execute_command("SET", STRING_KEY, b"text")
    client.execute_command("SADD", SET_KEY, *sorted(members))
    store[STRING_KEY] = Entry(KIND_STRING, b"text")
    store[SET_KEY] = Entry(KIND_SET, members)


@pytest.fixture(scope="module")
def client(redis_server):
    c = redis.Redis(port=redis_server, protocol=2, decode_responses=False)
    c.response_callbacks.clear()  # raw replies: scores as Redis's text, ZADD INCR's nil
    yield c
    c.close()


def test_random_streams_answer_as_redis_does(client):
    streams, per_stream = (12, 4000) if FULL else (4, 1600)
    batch = 200
    for seed in range(streams):
        rng = random.Random(seed)
        client.execute_command("FLUSHALL")
        store: dict[bytes, Entry] = {}
        done = 0
        while done < per_stream:
            seed_other_types(client, store, rng)
            commands = [random_command(rng) for _ in range(batch)]
            # Read every key back at the end of each batch, so a divergent state shows even
            # when no later reply happened to depend on it.
            commands += [[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"] for key in [*ZKEYS, b"zdest"]]
            theirs = run_redis_batch(client, commands)
            for argv, expected in zip(commands, theirs, strict=True):
                ours = run_ours(store, argv)
                assert ours == expected, f"seed={seed} command={argv!r}: ours {ours!r}, redis {expected!r}"
            done += batch
        keys = sorted(client.execute_command("KEYS", "*"))
        assert keys == sorted(store), f"seed={seed}: keys differ"


def test_command_info_matches_redis(client):
    for name in ZSET_COMMANDS:
        spec = COMMANDS[name]
        info = client.execute_command("COMMAND", "INFO", name)[0]
        assert (spec.arity, spec.first_key, spec.last_key, spec.key_step) == tuple(info[1:2] + info[3:6]), name
        assert spec.write == (b"write" in info[2]), name


def test_resp3_pairs_are_what_redis_answers_a_resp3_client(redis_server):
    c3 = redis.Redis(port=redis_server, protocol=3, decode_responses=False)
    c3.response_callbacks.clear()
    try:
        c3.execute_command("DEL", b"r3")
        c3.execute_command("ZADD", b"r3", b"1", b"a", b"2.5", b"b", b"3", b"c", b"4", b"d")
        store = {b"r3": Entry(KIND_ZSET, {b"a": 1.0, b"b": 2.5, b"c": 3.0, b"d": 4.0})}
        for argv in (
            [b"ZRANGE", b"r3", b"0", b"-1", b"WITHSCORES"],
            [b"ZRANGE", b"r3", b"0", b"-1"],
            [b"ZREVRANGEBYSCORE", b"r3", b"+inf", b"2", b"withscores"],
            [b"ZRANGEBYLEX", b"r3", b"-", b"+"],
            [b"ZPOPMIN", b"r3"],
            [b"ZPOPMAX", b"r3", b"2"],
        ):
            theirs = c3.execute_command(*argv)
            ours = execute(store, argv[0].decode(), argv[1:], Ctx(now_ms=0))
            if resp3_pairs(argv[0].decode(), argv[1:]):
                ours = pair_up(ours)
            assert ours == theirs, argv
    finally:
        c3.close()


# --- the contract a node relies on -----------------------------------------------------------


def test_writes_keep_the_ttl_and_a_stored_destination_has_none():
    store = {b"z": Entry(KIND_ZSET, {b"a": 1.0}, expire_at_ms=5000)}
    for argv in ([b"z", b"2", b"b"], [b"z", b"INCR", b"1", b"a"]):
        execute(store, "ZADD", argv, Ctx(now_ms=0))
    execute(store, "ZREM", [b"z", b"b"], Ctx(now_ms=0))
    execute(store, "ZPOPMAX", [b"z", b"0"], Ctx(now_ms=0))
    assert store[b"z"].expire_at_ms == 5000 and store[b"z"].value == {b"a": 2.0}
    store[b"d"] = Entry(KIND_ZSET, {b"x": 1.0}, expire_at_ms=9000)
    assert execute(store, "ZUNIONSTORE", [b"d", b"2", b"z", b"d"], Ctx(now_ms=0)) == 2
    assert store[b"d"].expire_at_ms == 0 and store[b"d"].value == {b"a": 2.0, b"x": 1.0}
    assert execute(store, "ZINTERSTORE", [b"d", b"1", b"missing"], Ctx(now_ms=0)) == 0
    assert b"d" not in store


def test_store_commands_name_destination_then_sources_and_check_numkeys_first():
    keys = COMMANDS["ZUNIONSTORE"].keys
    assert keys([b"d", b"2", b"a", b"b", b"WEIGHTS", b"1", b"2"]) == [b"d", b"a", b"b"]
    for numkeys, message in ((b"0", "at least 1 input key is needed for 'zinterstore' command"),
                             (b"x", "value is not an integer or out of range"), (b"3", "syntax error")):  # fmt: skip
        with pytest.raises(CommandError, match=message):
            COMMANDS["ZINTERSTORE"].keys([b"d", numkeys, b"a", b"b"])


def test_reads_write_nothing_and_a_missing_key_is_created_only_by_an_add():
    store: dict[bytes, Entry] = {}
    ctx = Ctx(now_ms=0)
    assert execute(store, "ZADD", [b"z", b"XX", b"1", b"a"], ctx) == 0
    assert execute(store, "ZADD", [b"z", b"XX", b"INCR", b"1", b"a"], ctx) is None
    assert execute(store, "ZPOPMIN", [b"z"], ctx) == []
    assert execute(store, "ZSCAN", [b"z", b"0", b"COUNT", b"0"], ctx) == [b"0", []]
    assert store == {}
    store[b"z"] = Entry(KIND_ZSET, {b"a": 1.0, b"b": 2.0})
    for name in ZSET_COMMANDS:
        spec = COMMANDS[name]
        if not spec.write:
            args = {"ZSCAN": [b"z", b"0"], "ZCARD": [b"z"], "ZSCORE": [b"z", b"a"], "ZMSCORE": [b"z", b"a"],
                    "ZRANK": [b"z", b"a"], "ZREVRANK": [b"z", b"a"]}.get(name, [b"z", b"-", b"+"])  # fmt: skip
            if name in ("ZCOUNT", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE"):
                args = [b"z", b"-inf", b"+inf"]
            if name in ("ZRANGE", "ZREVRANGE"):
                args = [b"z", b"0", b"-1"]
            writes, _ = spec.run(ctx, args, {b"z": store[b"z"]})
            assert writes == {}, name
    assert store[b"z"].value == {b"a": 1.0, b"b": 2.0}


def test_a_failing_incr_changes_nothing():
    store = {b"z": Entry(KIND_ZSET, {b"a": math.inf})}
    with pytest.raises(CommandError, match=r"resulting score is not a number \(NaN\)"):
        execute(store, "ZINCRBY", [b"z", b"-inf", b"a"], Ctx(now_ms=0))
    assert store[b"z"].value == {b"a": math.inf}


def test_a_negative_zero_is_stored_as_zero():
    store: dict[bytes, Entry] = {}
    assert execute(store, "ZADD", [b"z", b"INCR", b"-0", b"a"], Ctx(now_ms=0)) == 0.0
    assert math.copysign(1.0, store[b"z"].value[b"a"]) == 1.0
    assert encode(KIND_ZSET, store[b"z"].value) == encode(KIND_ZSET, {b"a": 0.0})


# --- models ----------------------------------------------------------------------------------

members = st.binary(max_size=4)
scores = st.one_of(st.integers(-5, 5).map(float), st.floats(allow_nan=False), st.sampled_from([math.inf, -math.inf]))
zsets = st.dictionaries(members, scores.map(lambda s: s + 0.0), max_size=20)


@given(zsets)
def test_a_sorted_set_survives_the_codec(zset):
    assert decode(KIND_ZSET, encode(KIND_ZSET, zset)) == zset


def fresh(zset: dict[bytes, float]) -> dict[bytes, Entry]:
    return {b"z": Entry(KIND_ZSET, dict(zset))} if zset else {}


@given(zsets)
def test_ranks_and_ranges_follow_score_then_member_order(zset):
    ctx = Ctx(now_ms=0)
    store = fresh(zset)
    order = sorted(zset, key=lambda m: (zset[m], m))
    assert execute(store, "ZRANGE", [b"z", b"0", b"-1"], ctx) == order
    assert execute(store, "ZREVRANGE", [b"z", b"0", b"-1"], ctx) == order[::-1]
    for rank, member in enumerate(order):
        assert execute(store, "ZRANK", [b"z", member], ctx) == rank
        assert execute(store, "ZREVRANK", [b"z", member], ctx) == len(order) - 1 - rank


@given(zsets, scores, scores, st.booleans(), st.booleans())
def test_zcount_and_zrangebyscore_agree_with_a_filter(zset, lo, hi, lo_open, hi_open):
    ctx = Ctx(now_ms=0)
    store = fresh(zset)

    def bound(value: float, is_open: bool) -> bytes:
        return (b"(" if is_open else b"") + repr(value).encode()

    def inside(score: float) -> bool:
        return (score > lo if lo_open else score >= lo) and (score < hi if hi_open else score <= hi)

    expected = sorted((m for m in zset if inside(zset[m])), key=lambda m: (zset[m], m))
    args = [b"z", bound(lo, lo_open), bound(hi, hi_open)]
    assert execute(store, "ZRANGEBYSCORE", args, ctx) == expected
    assert execute(store, "ZCOUNT", args, ctx) == len(expected)
    assert execute(store, "ZREVRANGEBYSCORE", [b"z", args[2], args[1]], ctx) == expected[::-1]


@given(st.sets(members, max_size=12), members, members, st.booleans(), st.booleans())
def test_lex_ranges_of_equal_scores_are_byte_order_intervals(elems, lo, hi, lo_open, hi_open):
    ctx = Ctx(now_ms=0)
    store = fresh(dict.fromkeys(elems, 0.0))
    expected = sorted(m for m in elems if (m > lo if lo_open else m >= lo) and (m < hi if hi_open else m <= hi))
    args = [b"z", (b"(" if lo_open else b"[") + lo, (b"(" if hi_open else b"[") + hi]
    assert execute(store, "ZRANGEBYLEX", args, ctx) == expected
    assert execute(store, "ZLEXCOUNT", args, ctx) == len(expected)
    assert execute(store, "ZREMRANGEBYLEX", args, ctx) == len(expected)
    assert sorted(store[b"z"].value if store else []) == sorted(elems - set(expected))


@given(zsets, st.integers(1, 7), st.sampled_from([None, b"*a*", b"?", b"[^b]*"]))
def test_a_full_zscan_meets_every_member_once(zset, count, match):
    ctx = Ctx(now_ms=0)
    store = fresh(zset)
    opts = [b"COUNT", str(count).encode()] + ([b"MATCH", match] if match else [])
    seen: list[bytes] = []
    cursor = b"0"
    for _ in range(len(zset) + 2):
        cursor, page = execute(store, "ZSCAN", [b"z", cursor, *opts], ctx)
        assert len(page) <= 2 * count
        seen += page[::2]
        if cursor == b"0":
            break
    assert cursor == b"0"
    wanted = [m for m in zset if match is None or GlobPattern(match).matches(m)]  # no MATCH: every member, "" too
    assert sorted(seen) == sorted(wanted)
    assert len(seen) == len(set(seen))


weights = st.sampled_from([1.0, 2.0, 0.5, -1.0, 0.0])


@given(st.lists(st.tuples(zsets, weights), min_size=1, max_size=3), st.sampled_from(["SUM", "MIN", "MAX"]))
def test_union_and_intersection_agree_with_a_model_of_finite_scores(inputs, how):
    inputs = [({m: s for m, s in z.items() if math.isfinite(s) and abs(s) < 1e6}, w) for z, w in inputs]
    store = {b"k%d" % i: Entry(KIND_ZSET, dict(z)) for i, (z, _) in enumerate(inputs) if z}
    names = [b"k%d" % i for i in range(len(inputs))]
    args = [str(len(inputs)).encode(), *names, b"WEIGHTS", *(repr(w).encode() for _, w in inputs), b"AGGREGATE", how.encode()]
    combine = {"SUM": sum, "MIN": min, "MAX": max}[how]
    union: dict[bytes, list[float]] = {}
    for z, w in inputs:
        for m, s in z.items():
            union.setdefault(m, []).append(s * w)
    inter = {m: v for m, v in union.items() if len(v) == len(inputs)}
    for name, model in (("ZUNIONSTORE", union), ("ZINTERSTORE", inter)):
        store.pop(b"dest", None)
        assert execute(store, name, [b"dest", *args], Ctx(now_ms=0)) == len(model)
        got = store[b"dest"].value if model else {}
        assert got.keys() == model.keys()
        for m, values in model.items():
            assert got[m] == pytest.approx(combine(values)), (name, m)


@given(st.floats(allow_nan=False))
def test_a_score_reads_back_from_redis_text(value):
    assert parse_score(redis7_double(value)) == value
    assert parse_score(score_text(value)) == value


# --- Redis's glob ----------------------------------------------------------------------------


def stringmatchlen(pattern: bytes, string: bytes) -> bool:
    """Redis 7.0's util.c stringmatchlen, transliterated (recursive, with its nesting guard and
    skipLongerMatches), as the oracle for GlobPattern."""
    skip = [False]

    def signed(b: int) -> int:
        return b - 256 if b >= 128 else b

    def impl(p: int, s: int, nesting: int) -> bool:
        if nesting > 1000:
            return False
        pat = pattern + b"\x00"  # C strings end with a NUL the loop may peek at
        plen, slen = len(pattern) - p, len(string) - s
        while plen and slen:
            c = pat[p]
            if c == 0x2A:
                while plen and pat[p + 1] == 0x2A:
                    p += 1
                    plen -= 1
                if plen == 1:
                    return True
                while slen:
                    if impl(p + 1, s, nesting + 1):
                        return True
                    if skip[0]:
                        return False
                    s += 1
                    slen -= 1
                skip[0] = True
                return False
            if c == 0x3F:
                s += 1
                slen -= 1
            elif c == 0x5B:
                p += 1
                plen -= 1
                negate = pat[p] == 0x5E
                if negate:
                    p += 1
                    plen -= 1
                match = False
                while True:
                    if pat[p] == 0x5C and plen >= 2:
                        p += 1
                        plen -= 1
                        match |= pat[p] == string[s]
                    elif pat[p] == 0x5D:
                        break
                    elif plen == 0:
                        p -= 1
                        plen += 1
                        break
                    elif plen >= 3 and pat[p + 1] == 0x2D:
                        lo, hi = sorted((signed(pat[p]), signed(pat[p + 2])))
                        match |= lo <= signed(string[s]) <= hi
                        p += 2
                        plen -= 2
                    else:
                        match |= pat[p] == string[s]
                    p += 1
                    plen -= 1
                if negate:
                    match = not match
                if not match:
                    return False
                s += 1
                slen -= 1
            else:
                if c == 0x5C and plen >= 2:
                    p += 1
                    plen -= 1
                if pat[p] != string[s]:
                    return False
                s += 1
                slen -= 1
            p += 1
            plen -= 1
            if slen == 0:
                while pat[p] == 0x2A:
                    p += 1
                    plen -= 1
                break
        return plen == 0 and slen == 0

    return impl(0, 0, 0)


glob_bytes = st.lists(st.sampled_from([*b"ab*?[]^-\\", 0xFF, 0x10]), max_size=8).map(bytes)


@settings(max_examples=200)
@given(glob_bytes, st.lists(st.sampled_from([*b"ab]-^\\*", 0xFF, 0x10]), max_size=6).map(bytes))
def test_glob_matches_as_redis_stringmatchlen_does(pattern, element):
    assert GlobPattern(pattern).matches(element) == stringmatchlen(pattern, element), (pattern, element)


def test_glob_corner_cases_redis_has():
    assert not GlobPattern(b"*").matches(b"")  # Redis never looks at the pattern for ""
    assert GlobPattern(b"").matches(b"")
    assert GlobPattern(b"[a-\xff]").matches(b"\x10") and not GlobPattern(b"[a-\xff]").matches(b"b")
    deep = b"a*" * 1050
    assert not GlobPattern(deep).matches(b"a" * 1100)  # past Redis's nesting guard
    assert GlobPattern(b"a*" * 900).matches(b"a" * 1100)


@settings(max_examples=300)
@given(zsets, st.integers(0, 2**32))
def test_a_command_answers_the_same_on_the_members_its_walk_reaches(zset, seed):
    """A store with a score index loads only the members `walk_of` names (the first ones in
    score order, within a score range): on them, each command answers and removes exactly what
    it does on the whole set, errors included. Commands whose walk is None read every member."""
    rng = random.Random(seed)
    for _ in range(20):
        argv = random_command(rng)
        name, args = argv[0].decode().upper(), [b"z", *argv[2:]]
        walk = walk_of(name, args)
        if walk is None or COMMANDS[name].keys(args) != [b"z"]:
            continue
        whole, part = fresh(zset), fresh(walked(zset, walk))
        assert run_ours(part, [argv[0], *args]) == run_ours(whole, [argv[0], *args]), (argv, walk)
        if COMMANDS[name].write:
            kept = whole[b"z"].value if b"z" in whole else {}
            left = part[b"z"].value if b"z" in part else {}
            assert {m for m in zset if m not in kept} == {m for m in walked(zset, walk) if m not in left}, argv


def test_walks_of_each_order_and_the_commands_that_need_every_member():
    assert walk_of("ZRANGE", [b"z", b"0", b"-1"]) is None  # counted from the end
    assert walk_of("ZREVRANGE", [b"z", b"-3", b"-1"]) is None
    assert walk_of("ZRANGE", [b"z", b"[a", b"[b", b"BYLEX"]) is None
    assert walk_of("ZCARD", [b"z"]) is None
    assert walk_of("ZRANGE", [b"z", b"2", b"9"]) == Walk(most=10)
    assert walk_of("ZREVRANGE", [b"z", b"0", b"1"]) == Walk(most=2, reverse=True)
    assert walk_of("ZRANGE", [b"z", b"0", b"1", b"REV"]) == Walk(most=2, reverse=True)
    assert walk_of("ZRANGEBYSCORE", [b"z", b"(1", b"5", b"LIMIT", b"2", b"3"]) == Walk(1.0, 5.0, 5, low_open=True)
    assert walk_of("ZREVRANGEBYSCORE", [b"z", b"(5", b"1", b"LIMIT", b"0", b"2"]) == Walk(
        1.0, 5.0, 2, high_open=True, reverse=True)
    assert walk_of("ZRANGE", [b"z", b"5", b"1", b"BYSCORE", b"REV"]) == Walk(1.0, 5.0, reverse=True)
    assert walk_of("ZRANK", [b"z", b"m"]) == Walk(member=b"m")
    assert walk_of("ZREVRANK", [b"z", b"m"]) == Walk(member=b"m", reverse=True)
    assert walk_of("ZPOPMAX", [b"z", b"3"]) == Walk(most=3, reverse=True)


@given(zsets, scores, scores, st.booleans(), st.booleans(), st.integers(-1, 6), st.integers(-1, 6))
def test_a_score_walk_with_a_limit_reaches_every_member_it_answers(zset, lo, hi, lo_open, hi_open, offset, count):
    """ZRANGEBYSCORE ... LIMIT on the members its walk reaches answers as on the whole set,
    whatever the bounds' openness (an open low bound's own members do not count)."""
    args = [b"z", (b"(" if lo_open else b"") + repr(lo).encode(), (b"(" if hi_open else b"") + repr(hi).encode(),
            b"LIMIT", b"%d" % offset, b"%d" % count]
    walk = walk_of("ZRANGEBYSCORE", args)
    ctx = Ctx(now_ms=0)
    assert execute(fresh(walked(zset, walk)), "ZRANGEBYSCORE", args, ctx) == execute(fresh(zset), "ZRANGEBYSCORE",
                                                                                       args, ctx)



@given(zsets, scores, scores, st.booleans(), st.booleans(), st.integers(-1, 6), st.integers(-1, 6))
def test_a_reverse_score_walk_with_a_limit_reaches_every_member_it_answers(zset, hi, lo, hi_open, lo_open, offset,
                                                                            count):
    """As above, from the highest score down: ZREVRANGEBYSCORE max min ... LIMIT, whose open
    high end's own members do not count."""
    args = [b"z", (b"(" if hi_open else b"") + repr(hi).encode(), (b"(" if lo_open else b"") + repr(lo).encode(),
            b"WITHSCORES", b"LIMIT", b"%d" % offset, b"%d" % count]
    walk = walk_of("ZREVRANGEBYSCORE", args)
    ctx = Ctx(now_ms=0)
    assert execute(fresh(walked(zset, walk)), "ZREVRANGEBYSCORE", args, ctx) == execute(
        fresh(zset), "ZREVRANGEBYSCORE", args, ctx)
