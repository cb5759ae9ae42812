"""Lists: the pure commands against a real redis-server 7.0 (random command streams, replies and
errors compared), against small models (hypothesis), and the contract details a node relies on
(TTL kept, aliasing of LMOVE l l, which None is a null array, COMMAND INFO metadata)."""

from __future__ import annotations

import os
import random

import msgspec
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from ringkv.errors import CommandError
from ringkv.service.datatypes import COMMANDS, execute
from ringkv.service.datatypes.base import KIND_LIST, KIND_STRING, Ctx, Entry
from ringkv.service.datatypes.codec import decode, encode
from ringkv.service.datatypes.lists import OK, null_is_array

FULL = os.environ.get("RINGKV_TEST_FULL") == "1"

LIST_COMMANDS = [
    "LPUSH", "RPUSH", "LPUSHX", "RPUSHX", "LPOP", "RPOP", "LLEN", "LRANGE", "LINDEX", "LSET", "LREM",
    "LTRIM", "LINSERT", "LPOS", "LMOVE", "RPOPLPUSH", "LMPOP",
]

KEYS = [b"la", b"lb", b"lc", b"str"]
STRING_KEY = b"str"
ELEMENTS = [b"a", b"b", b"c", b"", b"1"]
INTS = [b"0", b"1", b"2", b"3", b"-1", b"-2", b"-3", b"5", b"-7", b"100", b"-100",
        b"9223372036854775807", b"-9223372036854775808", b"9223372036854775808",
        b"x", b"", b"1.5", b"+1", b"01", b"-0", b" 1"]
SIDES = [b"LEFT", b"right", b"Left", b"RIGHT", b"up", b"left\0junk"]


def run_ours(store: dict[bytes, Entry], argv: list[bytes]):
    """What execute() answers, or the error text as redis-py reports it."""
    try:
        reply = execute(store, argv[0].decode(), argv[1:], Ctx(now_ms=0))
    except CommandError as exc:
        return ("error", str(exc) if exc.kind == "ERR" else f"{exc.kind} {exc}")
    if COMMANDS[argv[0].decode()].write:
        # A write's reply travels as msgpack from the consensus round to the client's node.
        assert msgspec.msgpack.decode(msgspec.msgpack.encode(reply)) == reply, argv
    return normalise(reply)


def normalise(reply):
    if isinstance(reply, str):
        return reply.encode()  # "OK": a simple string, which redis-py gives as bytes
    if isinstance(reply, list):
        return [normalise(item) for item in reply]
    return reply


def run_redis_batch(client: redis.Redis, commands: list[list[bytes]]) -> list:
    pipe = client.pipeline(transaction=False)
    for argv in commands:
        pipe.execute_command(*argv)
    out = []
    for reply in pipe.execute(raise_on_error=False):
        out.append(("error", str(reply)) if isinstance(reply, redis.ResponseError) else reply)
    return out


def random_command(rng: random.Random) -> list[bytes]:
    key = rng.choice(KEYS)
    other = rng.choice(KEYS)
    el = rng.choice(ELEMENTS)
    num = rng.choice(INTS) if rng.random() < 0.3 else rng.choice(INTS[:10])
    name = rng.choice([*LIST_COMMANDS, "LPUSH", "RPUSH", "LRANGE", "LRANGE", "LPOS"])
    if name in ("LPUSH", "RPUSH", "LPUSHX", "RPUSHX"):
        return [name.encode(), key, *rng.choices(ELEMENTS, k=rng.randint(0 if rng.random() < 0.05 else 1, 4))]
    if name in ("LPOP", "RPOP"):
        extra = [] if rng.random() < 0.5 else [num]
        if rng.random() < 0.03:
            extra = [b"1", b"2"]
        return [name.encode(), key, *extra]
    if name == "LLEN":
        return [b"LLEN", key]
    if name in ("LRANGE", "LTRIM"):
        return [name.encode(), key, num, rng.choice(INTS) if rng.random() < 0.2 else rng.choice(INTS[:10])]
    if name == "LINDEX":
        return [b"LINDEX", key, num]
    if name == "LSET":
        return [b"LSET", key, num, el]
    if name == "LREM":
        return [b"LREM", key, num, el]
    if name == "LINSERT":
        where = rng.choice([b"BEFORE", b"after", b"After", b"middle"])
        return [b"LINSERT", key, where, rng.choice(ELEMENTS), el]
    if name == "LPOS":
        argv = [b"LPOS", key, el]
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            opt = rng.choice([b"RANK", b"COUNT", b"MAXLEN", b"rank", b"count", b"maxlen", b"BOGUS"])
            argv.append(opt)
            if rng.random() < 0.97:
                pool = rng.choice([INTS, INTS[:10], INTS[:10], [b"-9223372036854775808", b"-1", b"1", b"2"]])
                argv.append(rng.choice(pool))
        return argv
    if name == "LMOVE":
        return [b"LMOVE", key, other, rng.choice(SIDES), rng.choice(SIDES)]
    if name == "RPOPLPUSH":
        return [b"RPOPLPUSH", key, other]
    # LMPOP
    keys = rng.sample(KEYS, rng.randint(1, 3))
    numkeys = str(len(keys)).encode() if rng.random() < 0.9 else rng.choice(INTS)
    argv = [b"LMPOP", numkeys, *keys, rng.choice(SIDES)]
    if rng.random() < 0.5:
        argv += [rng.choice([b"COUNT", b"count"]), rng.choice(INTS) if rng.random() < 0.3 else rng.choice(INTS[1:10])]
        if rng.random() < 0.05:
            argv += [b"COUNT", b"1"]
    return argv


def seed_string(client: redis.Redis, store: dict[bytes, Entry]) -> None:
    client.execute_command("SET", STRING_KEY, b"text")
    store[STRING_KEY] = Entry(KIND_STRING, b"text")


@pytest.fixture(scope="module")
def client(redis_server):
    c = redis.Redis(port=redis_server, decode_responses=False)
    c.response_callbacks.clear()  # raw replies: b"OK", not True; LPOS lists, not parsed
    yield c
    c.close()


def test_random_streams_answer_as_redis_does(client):
    streams, per_stream = (12, 2000) if FULL else (4, 800)
    batch = 200
    for seed in range(streams):
        rng = random.Random(seed)
        client.execute_command("FLUSHALL")
        store: dict[bytes, Entry] = {}
        seed_string(client, store)
        done = 0
        while done < per_stream:
            commands = [random_command(rng) for _ in range(batch)]
            # Read every key back at the end of each batch, so a divergent state shows even
            # when no later reply happened to depend on it.
            commands += [[b"LRANGE", key, b"0", b"-1"] for key in KEYS]
            theirs = run_redis_batch(client, commands)
            for argv, expected in zip(commands, theirs):
                ours = run_ours(store, argv)
                assert ours == expected, f"seed={seed} command={argv!r}: ours {ours!r}, redis {expected!r}"
            done += batch
        keys = sorted(client.execute_command("KEYS", "*"))
        assert keys == sorted(store), f"seed={seed}: keys differ"


def test_command_info_matches_redis(client):
    for name in LIST_COMMANDS:
        spec = COMMANDS[name]
        info = client.execute_command("COMMAND", "INFO", name)[0]
        assert (spec.arity, spec.first_key, spec.last_key, spec.key_step) == tuple(info[1:2] + info[3:6]), name
        assert spec.write == (b"write" in info[2]), name


# --- the contract a node relies on -----------------------------------------------------------


def test_pushes_and_pops_keep_the_ttl_and_a_new_list_has_none():
    store = {b"k": Entry(KIND_LIST, [b"a"], expire_at_ms=123)}
    ctx = Ctx(now_ms=0)
    execute(store, "RPUSH", [b"k", b"b"], ctx)
    execute(store, "LPOP", [b"k"], ctx)
    execute(store, "LSET", [b"k", b"0", b"z"], ctx)
    assert store[b"k"] == Entry(KIND_LIST, [b"z"], 123)
    assert execute(store, "LMOVE", [b"k", b"new", b"LEFT", b"RIGHT"], ctx) == b"z"
    assert b"k" not in store  # emptied, so deleted
    assert store[b"new"] == Entry(KIND_LIST, [b"z"], 0)


def test_lmove_to_itself_rotates_one_list():
    store = {b"l": Entry(KIND_LIST, [b"a", b"b", b"c"], expire_at_ms=9)}
    writes, reply = COMMANDS["LMOVE"].run(Ctx(now_ms=0), [b"l", b"l", b"LEFT", b"RIGHT"], {b"l": store[b"l"]})
    assert reply == b"a"
    assert writes == {b"l": Entry(KIND_LIST, [b"b", b"c", b"a"], 9)}
    single = {b"l": Entry(KIND_LIST, [b"x"])}
    assert execute(single, "RPOPLPUSH", [b"l", b"l"], Ctx(now_ms=0)) == b"x"
    assert single[b"l"].value == [b"x"]


def test_lmove_into_another_type_changes_nothing():
    store = {b"l": Entry(KIND_LIST, [b"a"]), b"s": Entry(KIND_STRING, b"v")}
    with pytest.raises(CommandError) as err:
        execute(store, "LMOVE", [b"l", b"s", b"LEFT", b"LEFT"], Ctx(now_ms=0))
    assert err.value.kind == "WRONGTYPE"
    assert store[b"l"].value == [b"a"]


def test_which_none_replies_are_null_arrays():
    ctx = Ctx(now_ms=0)
    assert execute({}, "LPOP", [b"k", b"2"], ctx) is None and null_is_array("LPOP", [b"k", b"2"])
    assert execute({}, "RPOP", [b"k"], ctx) is None and not null_is_array("rpop", [b"k"])
    assert execute({}, "LMPOP", [b"1", b"k", b"LEFT"], ctx) is None and null_is_array("LMPOP", [])
    assert not null_is_array("LINDEX", [b"k", b"0"])
    assert execute({}, "LTRIM", [b"k", b"0", b"1"], ctx) == OK


def test_reads_write_nothing_and_lrange_never_builds_more_than_the_list():
    items = [b"%d" % i for i in range(50)]
    entries = {b"l": Entry(KIND_LIST, items)}
    writes, reply = COMMANDS["LRANGE"].run(Ctx(now_ms=0), [b"l", b"-9223372036854775808", b"9223372036854775807"], entries)
    assert writes == {} and reply == items and reply is not items
    writes, reply = COMMANDS["LPOS"].run(Ctx(now_ms=0), [b"l", b"7", b"MAXLEN", b"0"], entries)
    assert writes == {} and reply == 7


# --- properties against small models ---------------------------------------------------------

lists_of_items = st.lists(st.sampled_from([b"a", b"b", b"c", b"", b"\x00\xff"]), max_size=12)
indexes = st.integers(min_value=-15, max_value=15)


@given(lists_of_items)
def test_a_list_survives_the_codec(items):
    assert decode(KIND_LIST, encode(KIND_LIST, items)) == items


def model_range(items, start, stop):
    n = len(items)
    start = start + n if start < 0 else start
    stop = stop + n if stop < 0 else stop
    return items[max(start, 0) : stop + 1] if stop >= 0 else []


@given(lists_of_items, indexes, indexes)
def test_lrange_and_ltrim_agree_with_slicing(items, start, stop):
    store = {b"l": Entry(KIND_LIST, list(items))} if items else {}
    args = [b"l", b"%d" % start, b"%d" % stop]
    got = execute(store, "LRANGE", args, Ctx(now_ms=0))
    assert got == model_range(items, start, stop)
    execute(store, "LTRIM", args, Ctx(now_ms=0))
    assert (store[b"l"].value if b"l" in store else []) == got


@given(lists_of_items, st.lists(st.sampled_from([b"x", b"y"]), min_size=1, max_size=4), st.booleans())
def test_a_push_then_a_counted_pop_of_the_same_end_gives_the_elements_back(items, pushed, head):
    store = {b"l": Entry(KIND_LIST, list(items))} if items else {}
    push, pop = ("LPUSH", "LPOP") if head else ("RPUSH", "RPOP")
    assert execute(store, push, [b"l", *pushed], Ctx(now_ms=0)) == len(items) + len(pushed)
    assert execute(store, pop, [b"l", b"%d" % len(pushed)], Ctx(now_ms=0)) == pushed[::-1]
    assert (store[b"l"].value if b"l" in store else []) == items


@given(lists_of_items, st.sampled_from([b"a", b"b"]), st.integers(min_value=-4, max_value=4))
def test_lrem_drops_the_matches_nearest_the_named_end(items, element, count):
    store = {b"l": Entry(KIND_LIST, list(items))} if items else {}
    removed = execute(store, "LREM", [b"l", b"%d" % count, element], Ctx(now_ms=0))
    hits = [i for i, item in enumerate(items) if item == element]
    chosen = hits if count == 0 else (hits[:count] if count > 0 else hits[count:])
    assert removed == len(chosen)
    assert (store[b"l"].value if b"l" in store else []) == [x for i, x in enumerate(items) if i not in chosen]


@given(lists_of_items, st.sampled_from([b"a", b"b"]), st.integers(min_value=-4, max_value=4).filter(bool),
       st.integers(min_value=0, max_value=3), st.integers(min_value=0, max_value=14))
def test_lpos_agrees_with_a_brute_force_search(items, element, rank, count, maxlen):
    entries = {b"l": Entry(KIND_LIST, list(items))}
    args = [b"l", element, b"RANK", b"%d" % rank, b"COUNT", b"%d" % count, b"MAXLEN", b"%d" % maxlen]
    _, got = COMMANDS["LPOS"].run(Ctx(now_ms=0), args, entries)
    order = list(range(len(items)))
    if rank < 0:
        order.reverse()
    if maxlen:
        order = order[:maxlen]
    hits = [i for i in order if items[i] == element][abs(rank) - 1 :]
    assert got == (hits[:count] if count else hits)


@given(st.lists(st.tuples(st.sampled_from([b"LEFT", b"RIGHT"]), st.sampled_from([b"LEFT", b"RIGHT"]),
                          st.booleans()), max_size=20), lists_of_items)
def test_lmove_keeps_every_element_somewhere(moves, items):
    store = {b"a": Entry(KIND_LIST, list(items))} if items else {}
    for side_from, side_to, swap in moves:
        src, dst = (b"b", b"a") if swap else (b"a", b"b")
        execute(store, "LMOVE", [src, dst, side_from, side_to], Ctx(now_ms=0))
    held = [item for key in (b"a", b"b") if key in store for item in store[key].value]
    assert sorted(held) == sorted(items)
