"""An application using hashes, sets, sorted sets and lists through `ringkv.client` against a
real node: redis-py's method names, arguments and reply shapes, on the blocking and the asyncio
client alike."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from ringkv.client import AsyncClient, Client, ServerError
from ringkv.testing.launcher import NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path_factory.mktemp("client-types") / "n1", http_enabled="false") as n:
        yield n


@pytest.fixture
def kv(node: NodeProcess) -> Iterator[Client]:
    redis.Redis(port=node.resp_port).flushall()
    with Client(port=node.resp_port) as client:
        yield client


def test_hash_methods_answer_as_redis_py(kv: Client) -> None:
    assert kv.hset("h", "a", "1") == 1
    assert kv.hset("h", mapping={"b": "2", "c": b"3"}, items=["d", "4"]) == 3
    assert kv.hsetnx("h", "a", "x") == 0
    assert kv.hget("h", "a") == b"1" and kv.hget("h", "zz") is None
    assert [s.value for s in kv.hget_versions("h", "a").siblings] == [b"1"]
    assert kv.hmget("h", ["a", "zz"], "b") == [b"1", None, b"2"]
    assert kv.hgetall("h") == {b"a": b"1", b"b": b"2", b"c": b"3", b"d": b"4"}
    assert kv.hgetall("missing") == {}
    assert kv.hexists("h", "a") is True and kv.hexists("h", "zz") is False
    assert sorted(kv.hkeys("h")) == [b"a", b"b", b"c", b"d"] and kv.hlen("h") == 4
    assert sorted(kv.hvals("h")) == [b"1", b"2", b"3", b"4"] and kv.hstrlen("h", "a") == 1
    assert kv.hincrby("h", "a", 5) == 6
    assert kv.hincrbyfloat("h", "f", 1.5) == 1.5
    assert kv.hdel("h", "a", "zz") == 1
    assert kv.hrandfield("h") in {b"b", b"c", b"d", b"f"}
    assert len(kv.hrandfield("h", 2, withvalues=True)) == 4
    cursor, page = kv.hscan("h", count=100)
    assert cursor == 0 and page[b"b"] == b"2"
    with pytest.raises(ValueError, match="hset needs"):
        kv.hset("h")


def test_set_methods_answer_as_redis_py(kv: Client) -> None:
    assert kv.sadd("s", "a", "b", "c") == 3
    assert kv.sadd("{g}1", "a", "b") == 2 and kv.sadd("{g}2", "b", "c") == 2
    assert kv.smembers("s") == {b"a", b"b", b"c"} and kv.smembers("nothing") == set()
    assert kv.sismember("s", "a") == 1 and kv.sismember("s", "z") == 0
    assert kv.smismember("s", ["a", "z"]) == [1, 0]
    assert kv.scard("s") == 3 and kv.srem("s", "c", "z") == 1
    assert kv.smove("s", "s2", "a") is True and kv.smove("s", "s2", "a") is False
    assert kv.sinter(["{g}1", "{g}2"]) == {b"b"}
    assert kv.sunion("{g}1", "{g}2") == {b"a", b"b", b"c"}
    assert kv.sdiff("{g}1", "{g}2") == {b"a"}
    assert kv.sintercard(2, ["{g}1", "{g}2"]) == 1
    assert kv.sunionstore("{g}u", "{g}1", "{g}2") == 3
    assert kv.sinterstore("{g}i", ["{g}1", "{g}2"]) == 1 and kv.sdiffstore("{g}d", "{g}1", "{g}2") == 1
    assert kv.spop("{g}u") in {b"a", b"b", b"c"}
    assert len(kv.spop("{g}u", 5)) == 2
    assert kv.srandmember("s") == b"b" and kv.srandmember("s", 2) == [b"b"]
    assert kv.sscan("s2") == (0, [b"a"])


def test_sorted_set_methods_answer_as_redis_py(kv: Client) -> None:
    assert kv.zadd("z", {"a": 1, "b": 2.5, "c": 3}) == 3
    assert kv.zadd("z", {"a": 5}, gt=True, ch=True) == 1
    assert kv.zadd("z", {"a": 1}, gt=True, ch=True) == 0
    assert kv.zadd("z", {"b": 1}, incr=True) == 3.5
    assert kv.zadd("z", {"new": 1}, xx=True, incr=True) is None
    assert kv.zscore("z", "a") == 5.0 and kv.zscore("z", "zz") is None
    assert [s.value for s in kv.zscore_versions("z", "a").siblings] == [b"5"]
    assert kv.zscore_versions("z", "zz").siblings == []
    assert kv.zmscore("z", ["a", "zz"]) == [5.0, None]
    assert kv.zincrby("z", 2, "c") == 5.0
    assert kv.zcard("z") == 3 and kv.zcount("z", "(3.5", "+inf") == 2
    assert kv.zrange("z", 0, -1) == [b"b", b"a", b"c"]
    assert kv.zrange("z", 0, 0, withscores=True) == [(b"b", 3.5)]
    assert kv.zrange("z", "+inf", 4, desc=True, byscore=True, withscores=True) == [(b"c", 5.0), (b"a", 5.0)]
    assert kv.zrevrange("z", 0, 0) == [b"c"]
    assert kv.zrangebyscore("z", 4, 10, withscores=True, score_cast_func=int) == [(b"a", 5), (b"c", 5)]
    assert kv.zrevrangebyscore("z", "+inf", "-inf", start=0, num=1) == [b"c"]
    assert kv.zrank("z", "b") == 0 and kv.zrevrank("z", "b") == 2 and kv.zrank("z", "zz") is None
    kv.zadd("lex", {"a": 0, "b": 0, "c": 0})
    assert kv.zrangebylex("lex", "[b", "+") == [b"b", b"c"] and kv.zrevrangebylex("lex", "+", "-", 0, 1) == [b"c"]
    assert kv.zlexcount("lex", "-", "+") == 3 and kv.zremrangebylex("lex", "[a", "[a") == 1
    assert kv.zpopmin("z") == [(b"b", 3.5)] and kv.zpopmax("z", 5) == [(b"c", 5.0), (b"a", 5.0)]
    kv.zadd("{t}x", {"m": 1, "n": 2})
    kv.zadd("{t}y", {"m": 10})
    assert kv.zunionstore("{t}u", {"{t}x": 1, "{t}y": 2}) == 2 and kv.zscore("{t}u", "m") == 21.0
    assert kv.zinterstore("{t}i", ["{t}x", "{t}y"], aggregate="MAX") == 1 and kv.zscore("{t}i", "m") == 10.0
    assert kv.zremrangebyrank("{t}x", 0, 0) == 1 and kv.zremrangebyscore("{t}x", "-inf", "+inf") == 1
    cursor, page = kv.zscan("{t}u")
    assert cursor == 0 and sorted(page) == [(b"m", 21.0), (b"n", 2.0)]
    with pytest.raises(ValueError, match="nx and xx"):
        kv.zadd("z", {"a": 1}, nx=True, xx=True)


def test_list_methods_answer_as_redis_py(kv: Client) -> None:
    assert kv.rpush("l", "a", "b", "c") == 3 and kv.lpush("l", "z") == 4
    assert kv.lpushx("nolist", "x") == 0 and kv.rpushx("l", "d") == 5
    assert kv.lrange("l", 0, -1) == [b"z", b"a", b"b", b"c", b"d"] and kv.llen("l") == 5
    assert kv.lindex("l", -1) == b"d" and kv.lpos("l", "b") == 2 and kv.lpos("l", "b", count=0) == [2]
    assert kv.lset("l", 0, "y") is True
    assert kv.linsert("l", "before", "a", "q") == 6 and kv.lrem("l", 0, "q") == 1
    assert kv.lpop("l") == b"y" and kv.rpop("l", 2) == [b"d", b"c"]
    assert kv.lpop("nolist") is None and kv.lpop("nolist", 2) is None
    assert kv.ltrim("l", 0, 0) is True and kv.lrange("l", 0, -1) == [b"a"]
    kv.rpush("{q}1", "x", "y")
    assert kv.lmove("{q}1", "{q}2", "LEFT", "RIGHT") == b"x" and kv.rpoplpush("{q}1", "{q}2") == b"y"
    assert kv.lmpop(2, "{q}1", "{q}2", direction="RIGHT", count=5) == [b"{q}2", [b"x", b"y"]]


def test_whole_key_methods_and_wrong_type(kv: Client) -> None:
    kv.set("str", "v")
    kv.sadd("{k}set", "m")
    assert kv.type("str") == b"string" and kv.type("{k}set") == b"set" and kv.type("none") == b"none"
    assert kv.rename("{k}set", "{k}moved") is True and kv.type("{k}moved") == b"set"
    assert kv.renamenx("{k}moved", "{k}moved") is False
    assert kv.copy("{k}moved", "{k}copy") is True and kv.copy("{k}moved", "{k}copy") is False
    assert kv.copy("{k}moved", "{k}copy", replace=True) is True
    assert kv.smembers("{k}copy") == {b"m"}
    assert kv.object("encoding", "{k}copy") is not None
    with pytest.raises(ServerError, match="WRONGTYPE"):
        kv.hget("str", "f")
    with pytest.raises(ServerError, match="WRONGTYPE"):
        kv.get("{k}copy")


def test_the_async_client_shares_the_methods(node: NodeProcess) -> None:
    redis.Redis(port=node.resp_port).flushall()

    async def scenario() -> None:
        async with AsyncClient(port=node.resp_port) as kv:
            assert await kv.hset("ah", mapping={"f": "v"}) == 1
            assert await kv.hgetall("ah") == {b"f": b"v"}
            assert await kv.sadd("as", "a", "b") == 2 and await kv.smembers("as") == {b"a", b"b"}
            assert await kv.zadd("az", {"m": 2}) == 1
            assert await kv.zrange("az", 0, -1, withscores=True) == [(b"m", 2.0)]
            assert await kv.rpush("al", "x", "y") == 2 and await kv.lpop("al", 5) == [b"x", b"y"]
            assert await kv.type("ah") == b"hash"

    asyncio.run(scenario())


def test_consistency_level_of_the_client_applies(node: NodeProcess) -> None:
    with Client(port=node.resp_port, consistency="ALL") as kv:
        kv.delete("lvl")
        assert kv.sadd("lvl", "a") == 1 and kv.smembers("lvl") == {b"a"}
