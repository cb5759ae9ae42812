"""Redis's data types on real processes, against a real redis-server 7.0: the same seeded random
command streams (hashes, sets, sorted sets, lists, and the keyspace commands over every type)
go to redis-server and to ringkv over RESP2 with raw replies (no client-side parsing), first to
one node, then to a 3-node cluster whose three connections read and write at ALL and take the
commands in turn. Every reply must be identical, error texts included, once normalised where
Redis leaves the answer open: the order of SMEMBERS/HGETALL/SUNION/..., which members SPOP,
SRANDMEMBER, HRANDFIELD and RANDOMKEY pick (checked for size and membership), the value of a
TTL (checked for sign) and SCAN-family cursors (iterated to the end, the union compared).

Every CHECK_EVERY commands (and at the end) each key's type, value and TTL sign are compared as
well, so a wrong write whose reply looked right is caught. After a mismatch both servers are
flushed and the stream goes on, so one run reports many mismatches, not the first only.

The keys of a stream share one hash tag (`{hash}a`, `{hash}b`, ...), so SMOVE, SINTERSTORE,
LMOVE, ZUNIONSTORE, RENAME, COPY and the other multi-key writes are legal in the cluster; the
last test checks that keys of two tags are refused there (CROSSSLOT, nothing written) and work
on one node. Where ringkv knowingly answers differently, docs/redis-compat.md ("Data types:
known differences") says so and `known_difference` names the case.

A type whose commands are not yet in ringkv.service.datatypes.COMMANDS is skipped, saying which.
Reproduce a failure with its seed: the stream of `(type, target)` is seeded by SEED.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import redis

from ringkv.service.datatypes import COMMANDS as TYPE_COMMANDS
from ringkv.testing.launcher import LocalCluster, NodeProcess

FULL = os.environ.get("RINGKV_TEST_FULL") == "1"
SINGLE_COMMANDS = 5000 if FULL else 1500  # per type, against one node
CLUSTER_COMMANDS = 2000 if FULL else 500  # per type, against the cluster (a consensus round per write)
CHECK_EVERY = 50  # commands between two comparisons of every key's whole value
MISMATCHES_SHOWN = 25  # distinct mismatches listed in a failure
SEED = int(os.environ.get("RINGKV_DIFF_SEED", "15"))
REPLY_TIMEOUT_S = 30

# The string-valued commands of ringkv's own RESP table that the streams use beside the type
# commands (WRONGTYPE on collections, expiry of whole keys).
NATIVE = frozenset({
    "SET", "GET", "DEL", "EXISTS", "EXPIRE", "PEXPIRE", "PERSIST", "TTL", "PTTL", "APPEND", "INCR",
    "STRLEN", "SCAN", "RANDOMKEY",
})


# ------------------------------------------------------------------------------- the servers


@dataclass(frozen=True, slots=True)
class Err:
    """An error reply: redis-py's exception class (it maps WRONGTYPE, CROSSSLOT, ... to their
    own) and its text."""

    kind: str
    text: str

    def __repr__(self) -> str:
        return f"-{self.kind}: {self.text}"


class Server:
    """One side of the comparison: raw RESP2 connections (no redis-py reply callbacks), used in
    turn, so a cluster's commands go round-robin to its nodes."""

    def __init__(self, name: str, ports: list[int], *setup: tuple[str, ...], protocol: int = 2):
        self.name = name
        self.conns: list[redis.Connection] = []
        for port in ports:
            conn = redis.Connection(host="127.0.0.1", port=port, protocol=protocol,
                                    socket_timeout=REPLY_TIMEOUT_S, retry=None)
            conn.connect()
            self.conns.append(conn)
            for command in setup:
                reply = self._on(conn, command)
                assert reply == b"OK", (name, command, reply)
        self.turn = 0

    @staticmethod
    def _on(conn: redis.Connection, args):
        conn.send_command(*args)
        try:
            return conn.read_response()
        except redis.ResponseError as exc:
            return Err(type(exc).__name__, str(exc))

    def __call__(self, *args):
        conn = self.conns[self.turn]
        self.turn = (self.turn + 1) % len(self.conns)
        return self._on(conn, args)

    def close(self) -> None:
        for conn in self.conns:
            conn.disconnect()


@pytest.fixture(scope="module")
def redis_side(redis_server):
    server = Server("redis", [redis_server])
    yield server
    server.close()


@pytest.fixture(scope="module")
def single_node(tmp_path_factory):
    node = NodeProcess(tmp_path_factory.mktemp("types-single") / "n1", http_enabled="false")
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def single(single_node):
    server = Server("ringkv-1", [single_node.resp_port])
    yield server
    server.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("types-cluster"), nodes=3, http_enabled="false").start()
    server = Server("ringkv-3", [n.resp_port for n in c.nodes], ("RINGKV.CONSISTENCY", "ALL"))
    yield server
    server.close()
    c.stop()


# ------------------------------------------------------------------------------ the streams


@dataclass
class Gen:
    """Random arguments over one hash tag's keys and small alphabets, so that collisions,
    empty collections, WRONGTYPE and edge arguments come often."""

    rng: random.Random
    tag: str
    names: tuple[str, ...] = ("a", "b", "c")

    @property
    def type_keys(self) -> list[bytes]:
        return [f"{{{self.tag}}}{n}".encode() for n in self.names]

    @property
    def string_key(self) -> bytes:
        return f"{{{self.tag}}}str".encode()

    @property
    def all_keys(self) -> list[bytes]:
        return [*self.type_keys, self.string_key, f"{{{self.tag}}}none".encode()]

    def key(self) -> bytes:
        x = self.rng.random()
        if x < 0.86:
            return self.rng.choice(self.type_keys)
        if x < 0.94:
            return self.string_key  # WRONGTYPE for every collection command
        return f"{{{self.tag}}}none".encode()

    def keys(self, lo: int = 1, hi: int = 3) -> list[bytes]:
        return [self.key() for _ in range(self.rng.randint(lo, hi))]

    def elem(self) -> bytes:
        return self.rng.choice([b"a", b"b", b"c", b"d", b"e", b"a", b"b", b"c", b"1", b"2", b"", b"\x00\xff"])

    def elems(self, lo: int = 1, hi: int = 4) -> list[bytes]:
        return [self.elem() for _ in range(self.rng.randint(lo, hi))]

    def value(self) -> bytes:
        return self.rng.choice([b"v", b"w", b"1", b"2", b"-3", b"10", b"1.5", b"x", b"", b"9223372036854775807"])

    def int_arg(self) -> bytes:
        if self.rng.random() < 0.8:
            return str(self.rng.randint(-4, 6)).encode()
        return self.rng.choice([b"x", b"", b"1.5", b"+1", b"01", b" 1", b"100", b"-100",
                                b"9223372036854775807", b"-9223372036854775808", b"9223372036854775808"])

    def count_arg(self) -> bytes:
        if self.rng.random() < 0.85:
            return str(self.rng.randint(-3, 6)).encode()
        return self.rng.choice([b"x", b"1.5", b"-9223372036854775808", b"9223372036854775807", b""])

    def float_arg(self) -> bytes:
        return self.rng.choice([b"1", b"-1", b"0.5", b"2.5", b"-0.25", b"1e2", b"2.5e-3", b"0.1", b"10",
                                b"x", b"", b"nan", b"inf", b"-inf", b"1e400", b"3", b"-3", b"1e-5", b"17e-2",
                                b"5.0e3", b"0.2", b"-0"])

    def score(self) -> bytes:
        return self.rng.choice([b"0", b"1", b"2", b"3", b"-1", b"1.5", b"2.5", b"1", b"2", b"0",
                                b"-inf", b"+inf", b"inf", b"1e2", b"-0", b"x", b"nan", b"", b"0x10", b"0.1", b"0.2",
                                b"1e-5", b"123456789.125", b"1e20", b"-1e-300", b"17e-1"])

    def score_bound(self) -> bytes:
        return self.rng.choice([b"-inf", b"+inf", b"0", b"1", b"2", b"(1", b"(2", b"1.5", b"(-inf",
                                b"3", b"-1", b"(0", b"x", b"(x", b"inf", b"nan", b"(0.1", b"0.3", b"(+inf"])

    def lex_bound(self) -> bytes:
        return self.rng.choice([b"-", b"+", b"[a", b"(a", b"[c", b"(c", b"[b", b"(d", b"[", b"(",
                                b"a", b"[e", b"[z", b"(+"])

    def case(self, word: str) -> bytes:
        """An option as a client might spell it."""
        return (word if self.rng.random() < 0.8 else word.lower()).encode()

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


Op = tuple[bytes, ...]
Builder = Callable[[Gen], list]


def _scan_opts(g: Gen) -> list:
    opts: list = []
    if g.chance(0.3):
        opts += [b"MATCH", g.rng.choice([b"*", b"a*", b"[ab]", b"?", b"*1*"])]
    if g.chance(0.3):
        opts += [b"COUNT", g.rng.choice([b"1", b"2", b"10", b"0", b"x"])]
    return opts


HASH_OPS: dict[str, tuple[int, Builder]] = {
    "HSET": (10, lambda g: ["HSET", g.key(), *[x for _ in range(g.rng.randint(1, 3)) for x in (g.elem(), g.value())]]
             + ([g.elem()] if g.chance(0.04) else [])),
    "HMSET": (2, lambda g: ["HMSET", g.key(), g.elem(), g.value(), *([g.elem(), g.value()] if g.chance(0.5) else [])]),
    "HSETNX": (3, lambda g: ["HSETNX", g.key(), g.elem(), g.value()]),
    "HGET": (5, lambda g: ["HGET", g.key(), g.elem()]),
    "HMGET": (3, lambda g: ["HMGET", g.key(), *g.elems()]),
    "HDEL": (5, lambda g: ["HDEL", g.key(), *g.elems(1, 3)]),
    "HEXISTS": (2, lambda g: ["HEXISTS", g.key(), g.elem()]),
    "HGETALL": (3, lambda g: ["HGETALL", g.key()]),
    "HKEYS": (2, lambda g: ["HKEYS", g.key()]),
    "HVALS": (2, lambda g: ["HVALS", g.key()]),
    "HLEN": (2, lambda g: ["HLEN", g.key()]),
    "HSTRLEN": (2, lambda g: ["HSTRLEN", g.key(), g.elem()]),
    "HINCRBY": (5, lambda g: ["HINCRBY", g.key(), g.elem(), g.int_arg()]),
    "HINCRBYFLOAT": (4, lambda g: ["HINCRBYFLOAT", g.key(), g.elem(), g.float_arg()]),
    "HRANDFIELD": (3, lambda g: ["HRANDFIELD", g.key(), *([g.count_arg(), *([g.case("WITHVALUES")] if g.chance(0.5) else [])]
                                                          if g.chance(0.7) else [])]),
    "HSCAN": (2, lambda g: ["HSCAN", g.key(), b"0", *_scan_opts(g)]),
    "DEL": (1, lambda g: ["DEL", g.key()]),
    "EXPIRE": (1, lambda g: ["EXPIRE", g.key(), g.rng.choice([b"100", b"1000", b"0", b"-1"])]),
    "TTL": (1, lambda g: ["TTL", g.key()]),
}

SET_OPS: dict[str, tuple[int, Builder]] = {
    "SADD": (12, lambda g: ["SADD", g.key(), *g.elems()]),
    "SREM": (6, lambda g: ["SREM", g.key(), *g.elems(1, 3)]),
    "SISMEMBER": (3, lambda g: ["SISMEMBER", g.key(), g.elem()]),
    "SMISMEMBER": (2, lambda g: ["SMISMEMBER", g.key(), *g.elems()]),
    "SMEMBERS": (3, lambda g: ["SMEMBERS", g.key()]),
    "SCARD": (2, lambda g: ["SCARD", g.key()]),
    "SPOP": (3, lambda g: ["SPOP", g.key(), *([g.count_arg()] if g.chance(0.6) else [])]),
    "SRANDMEMBER": (3, lambda g: ["SRANDMEMBER", g.key(), *([g.count_arg()] if g.chance(0.7) else [])]),
    "SMOVE": (4, lambda g: ["SMOVE", g.key(), g.key(), g.elem()]),
    "SINTER": (2, lambda g: ["SINTER", *g.keys()]),
    "SUNION": (2, lambda g: ["SUNION", *g.keys()]),
    "SDIFF": (2, lambda g: ["SDIFF", *g.keys()]),
    "SINTERSTORE": (2, lambda g: ["SINTERSTORE", g.key(), *g.keys()]),
    "SUNIONSTORE": (2, lambda g: ["SUNIONSTORE", g.key(), *g.keys()]),
    "SDIFFSTORE": (2, lambda g: ["SDIFFSTORE", g.key(), *g.keys()]),
    "SINTERCARD": (2, lambda g: _sintercard(g)),
    "SSCAN": (2, lambda g: ["SSCAN", g.key(), b"0", *_scan_opts(g)]),
    "DEL": (1, lambda g: ["DEL", g.key()]),
    "EXPIRE": (1, lambda g: ["EXPIRE", g.key(), g.rng.choice([b"100", b"1000", b"0"])]),
    "TTL": (1, lambda g: ["TTL", g.key()]),
}


def _sintercard(g: Gen) -> list:
    keys = g.keys()
    numkeys = str(len(keys)).encode() if g.chance(0.85) else g.rng.choice([b"0", b"4", b"-1", b"x"])
    return ["SINTERCARD", numkeys, *keys, *([g.case("LIMIT"), g.count_arg()] if g.chance(0.4) else [])]


def _zadd(g: Gen) -> list:
    opts = [g.case(o) for o in ("NX", "XX", "GT", "LT", "CH", "INCR") if g.chance(0.12)]
    g.rng.shuffle(opts)
    pairs = [x for _ in range(1 if g.chance(0.3) else g.rng.randint(1, 3)) for x in (g.score(), g.elem())]
    if g.chance(0.03):
        pairs.pop()  # an odd count: syntax error
    return ["ZADD", g.key(), *opts, *pairs]


def _zrange(g: Gen) -> list:
    by = g.rng.choice([None, None, "BYSCORE", "BYLEX"])
    if by == "BYSCORE":
        lo, hi = g.score_bound(), g.score_bound()
    elif by == "BYLEX":
        lo, hi = g.lex_bound(), g.lex_bound()
    else:
        lo, hi = g.int_arg(), g.int_arg()
    opts = [g.case(by)] if by else []
    if g.chance(0.3):
        opts.append(g.case("REV"))
    if g.chance(0.25):
        opts += [g.case("LIMIT"), g.int_arg(), g.int_arg()]
    if g.chance(0.3):
        opts.append(g.case("WITHSCORES"))
    return ["ZRANGE", g.key(), lo, hi, *opts]


def _zstore(name: str) -> Builder:
    def build(g: Gen) -> list:
        keys = g.keys()
        numkeys = str(len(keys)).encode() if g.chance(0.9) else g.rng.choice([b"0", b"4", b"-1", b"x"])
        opts: list = []
        if g.chance(0.3):
            opts += [g.case("WEIGHTS"), *[g.rng.choice([b"1", b"2", b"0", b"-1", b"0.5", b"inf", b"x"]) for _ in keys]]
        if g.chance(0.3):
            opts += [g.case("AGGREGATE"), g.rng.choice([b"SUM", b"MIN", b"MAX", b"max", b"AVG"])]
        return [name, g.key(), numkeys, *keys, *opts]
    return build


def _limit(g: Gen) -> list:
    return [g.case("LIMIT"), g.int_arg(), g.int_arg()] if g.chance(0.25) else []


ZSET_OPS: dict[str, tuple[int, Builder]] = {
    "ZADD": (14, _zadd),
    "ZREM": (4, lambda g: ["ZREM", g.key(), *g.elems(1, 3)]),
    "ZSCORE": (3, lambda g: ["ZSCORE", g.key(), g.elem()]),
    "ZMSCORE": (2, lambda g: ["ZMSCORE", g.key(), *g.elems()]),
    "ZINCRBY": (4, lambda g: ["ZINCRBY", g.key(), g.score(), g.elem()]),
    "ZCARD": (2, lambda g: ["ZCARD", g.key()]),
    "ZCOUNT": (2, lambda g: ["ZCOUNT", g.key(), g.score_bound(), g.score_bound()]),
    "ZLEXCOUNT": (2, lambda g: ["ZLEXCOUNT", g.key(), g.lex_bound(), g.lex_bound()]),
    "ZRANGE": (6, _zrange),
    "ZRANGEBYSCORE": (3, lambda g: ["ZRANGEBYSCORE", g.key(), g.score_bound(), g.score_bound(),
                                    *([g.case("WITHSCORES")] if g.chance(0.4) else []), *_limit(g)]),
    "ZREVRANGE": (2, lambda g: ["ZREVRANGE", g.key(), g.int_arg(), g.int_arg(),
                                *([g.case("WITHSCORES")] if g.chance(0.4) else [])]),
    "ZRANGEBYLEX": (2, lambda g: ["ZRANGEBYLEX", g.key(), g.lex_bound(), g.lex_bound(), *_limit(g)]),
    "ZRANK": (2, lambda g: ["ZRANK", g.key(), g.elem()]),
    "ZREVRANK": (2, lambda g: ["ZREVRANK", g.key(), g.elem()]),
    "ZPOPMIN": (2, lambda g: ["ZPOPMIN", g.key(), *([g.count_arg()] if g.chance(0.5) else [])]),
    "ZPOPMAX": (2, lambda g: ["ZPOPMAX", g.key(), *([g.count_arg()] if g.chance(0.5) else [])]),
    "ZREMRANGEBYRANK": (1, lambda g: ["ZREMRANGEBYRANK", g.key(), g.int_arg(), g.int_arg()]),
    "ZREMRANGEBYSCORE": (1, lambda g: ["ZREMRANGEBYSCORE", g.key(), g.score_bound(), g.score_bound()]),
    "ZUNIONSTORE": (2, _zstore("ZUNIONSTORE")),
    "ZINTERSTORE": (2, _zstore("ZINTERSTORE")),
    "ZREVRANGEBYSCORE": (1, lambda g: ["ZREVRANGEBYSCORE", g.key(), g.score_bound(), g.score_bound(),
                                       *([g.case("WITHSCORES")] if g.chance(0.4) else []), *_limit(g)]),
    "ZREVRANGEBYLEX": (1, lambda g: ["ZREVRANGEBYLEX", g.key(), g.lex_bound(), g.lex_bound(), *_limit(g)]),
    "ZREMRANGEBYLEX": (1, lambda g: ["ZREMRANGEBYLEX", g.key(), g.lex_bound(), g.lex_bound()]),
    "ZSCAN": (2, lambda g: ["ZSCAN", g.key(), b"0", *_scan_opts(g)]),
    "DEL": (1, lambda g: ["DEL", g.key()]),
    "EXPIRE": (1, lambda g: ["EXPIRE", g.key(), g.rng.choice([b"100", b"1000", b"0"])]),
    "TTL": (1, lambda g: ["TTL", g.key()]),
}


def _side(g: Gen) -> bytes:
    return g.rng.choice([b"LEFT", b"RIGHT", b"left", b"RIGHT", b"LEFT", b"up"] if g.chance(0.97)
                        else [b"middle"])


def _lpos(g: Gen) -> list:
    opts: list = []
    for word in ("RANK", "COUNT", "MAXLEN"):
        if g.chance(0.3):
            opts += [g.case(word), g.count_arg()]
    return ["LPOS", g.key(), g.elem(), *opts]


def _lmpop(g: Gen) -> list:
    keys = g.keys(1, 2)
    numkeys = str(len(keys)).encode() if g.chance(0.9) else g.rng.choice([b"0", b"3", b"-1", b"x"])
    return ["LMPOP", numkeys, *keys, _side(g), *([g.case("COUNT"), g.count_arg()] if g.chance(0.5) else [])]


LIST_OPS: dict[str, tuple[int, Builder]] = {
    "LPUSH": (8, lambda g: ["LPUSH", g.key(), *g.elems()]),
    "RPUSH": (8, lambda g: ["RPUSH", g.key(), *g.elems()]),
    "LPUSHX": (2, lambda g: ["LPUSHX", g.key(), *g.elems(1, 2)]),
    "RPUSHX": (2, lambda g: ["RPUSHX", g.key(), *g.elems(1, 2)]),
    "LPOP": (4, lambda g: ["LPOP", g.key(), *([g.count_arg()] if g.chance(0.4) else [])]),
    "RPOP": (4, lambda g: ["RPOP", g.key(), *([g.count_arg()] if g.chance(0.4) else [])]),
    "LLEN": (2, lambda g: ["LLEN", g.key()]),
    "LRANGE": (5, lambda g: ["LRANGE", g.key(), g.int_arg(), g.int_arg()]),
    "LINDEX": (3, lambda g: ["LINDEX", g.key(), g.int_arg()]),
    "LSET": (3, lambda g: ["LSET", g.key(), g.int_arg(), g.elem()]),
    "LREM": (3, lambda g: ["LREM", g.key(), g.int_arg(), g.elem()]),
    "LTRIM": (2, lambda g: ["LTRIM", g.key(), g.int_arg(), g.int_arg()]),
    "LINSERT": (3, lambda g: ["LINSERT", g.key(), g.rng.choice([b"BEFORE", b"AFTER", b"after", b"NEAR"]),
                              g.elem(), g.elem()]),
    "LPOS": (3, _lpos),
    "LMOVE": (3, lambda g: ["LMOVE", g.key(), g.key(), _side(g), _side(g)]),
    "RPOPLPUSH": (2, lambda g: ["RPOPLPUSH", g.key(), g.key()]),
    "LMPOP": (2, _lmpop),
    "DEL": (1, lambda g: ["DEL", g.key()]),
    "EXPIRE": (1, lambda g: ["EXPIRE", g.key(), g.rng.choice([b"100", b"1000", b"0"])]),
    "TTL": (1, lambda g: ["TTL", g.key()]),
}


def _bulk_create(g: Gen) -> list:
    """A collection big enough to cross Redis's compact-encoding thresholds (OBJECT ENCODING)."""
    n = g.rng.choice([3, 130, 600])
    kind = g.rng.choice(["HSET", "SADD", "SADD", "ZADD", "RPUSH"])
    if kind == "HSET":
        items = [x for i in range(n) for x in (b"f%d" % i, b"v")]
    elif kind == "ZADD":
        items = [x for i in range(n) for x in (b"%d" % i, b"m%d" % i)]
    elif kind == "SADD":
        items = [(b"%d" if g.chance(0.5) else b"s%d") % i for i in range(n)]
    else:
        items = [b"i%d" % i for i in range(n)]
    return [kind, g.key(), *items]


KEYSPACE_OPS: dict[str, tuple[int, Builder]] = {
    "SET": (4, lambda g: ["SET", g.key(), g.rng.choice([b"v", b"12", b"x" * 50, b"-5", b""])]),
    "HSET": (4, lambda g: ["HSET", g.key(), g.elem(), g.value()]),
    "SADD": (4, lambda g: ["SADD", g.key(), *g.elems()]),
    "ZADD": (3, lambda g: ["ZADD", g.key(), g.rng.choice([b"1", b"2"]), g.elem()]),
    "RPUSH": (4, lambda g: ["RPUSH", g.key(), *g.elems()]),
    "BULK": (1, _bulk_create),
    "TYPE": (4, lambda g: ["TYPE", g.key()]),
    "EXISTS": (2, lambda g: ["EXISTS", *g.keys()]),
    "DEL": (3, lambda g: ["DEL", *g.keys(1, 2)]),
    "RENAME": (4, lambda g: ["RENAME", g.key(), g.key()]),
    "RENAMENX": (3, lambda g: ["RENAMENX", g.key(), g.key()]),
    "COPY": (4, lambda g: ["COPY", g.key(), g.key(), *([g.case("REPLACE")] if g.chance(0.4) else [])]
             + ([g.rng.choice([b"NOPE", b"REPLACE"])] if g.chance(0.03) else [])),
    "EXPIRE": (3, lambda g: ["EXPIRE", g.key(), g.rng.choice([b"100", b"1000", b"0", b"-1", b"x"]),
                             *([g.rng.choice([b"NX", b"XX", b"GT", b"LT"])] if g.chance(0.3) else [])]),
    "PEXPIRE": (1, lambda g: ["PEXPIRE", g.key(), g.rng.choice([b"100000", b"5000000", b"0"])]),
    "PERSIST": (2, lambda g: ["PERSIST", g.key()]),
    "TTL": (3, lambda g: ["TTL", g.key()]),
    "PTTL": (1, lambda g: ["PTTL", g.key()]),
    "GET": (2, lambda g: ["GET", g.key()]),
    "APPEND": (1, lambda g: ["APPEND", g.key(), b"z"]),
    "INCR": (1, lambda g: ["INCR", g.key()]),
    "STRLEN": (1, lambda g: ["STRLEN", g.key()]),
    "HLEN": (1, lambda g: ["HLEN", g.key()]),
    "SCARD": (1, lambda g: ["SCARD", g.key()]),
    "ZCARD": (1, lambda g: ["ZCARD", g.key()]),
    "LLEN": (1, lambda g: ["LLEN", g.key()]),
    "OBJECT": (3, lambda g: ["OBJECT", g.rng.choice([b"ENCODING", b"encoding", b"NOPE"]), g.key()]),
    "RANDOMKEY": (1, lambda g: ["RANDOMKEY"]),
    "SCAN": (1, lambda g: ["SCAN", b"0", b"MATCH", f"{{{g.tag}}}*".encode(),
                           *([b"TYPE", g.rng.choice([b"string", b"hash", b"set", b"zset", b"list", b"stream",
                                                      b"nope"])] if g.chance(0.8) else [])]),
}


@dataclass(frozen=True)
class Stream:
    """One type's stream: its commands with weights, and the command without which it cannot
    run at all."""

    name: str
    ops: dict[str, tuple[int, Builder]]
    core: tuple[str, ...]
    names: tuple[str, ...] = ("a", "b", "c")


STREAMS = {
    "hash": Stream("hash", HASH_OPS, ("HSET",)),
    "set": Stream("set", SET_OPS, ("SADD",)),
    "zset": Stream("zset", ZSET_OPS, ("ZADD",)),
    "list": Stream("list", LIST_OPS, ("RPUSH", "LPUSH")),
    "keyspace": Stream("keyspace", KEYSPACE_OPS, ("TYPE", "RENAME", "COPY"), ("a", "b", "c", "d")),
}


def _available(name: str) -> bool:
    if name == "BULK":
        return all(c in TYPE_COMMANDS for c in ("HSET", "SADD", "ZADD", "RPUSH"))
    return name in TYPE_COMMANDS or name in NATIVE


def usable_ops(stream: Stream) -> tuple[list[str], list[int], list[str]]:
    """The stream's commands ringkv has, their weights, and the ones it lacks; skips the test
    when a core command is missing."""
    missing_core = [c for c in stream.core if c not in TYPE_COMMANDS]
    if missing_core:
        pytest.skip(f"{stream.name}: {', '.join(missing_core)} not in ringkv.service.datatypes.COMMANDS yet")
    names = [n for n in stream.ops if _available(n)]
    lacking = [n for n in stream.ops if not _available(n)]
    return names, [stream.ops[n][0] for n in names], lacking


# ----------------------------------------------------------------------------- comparing


UNORDERED = frozenset({"SMEMBERS", "SINTER", "SUNION", "SDIFF", "HKEYS", "HVALS"})
PAIRS_UNORDERED = frozenset({"HGETALL"})
SCANS = {"SCAN": 1, "HSCAN": 2, "SSCAN": 2, "ZSCAN": 2}  # name -> index of the cursor in args
SCAN_PAIRS = frozenset({"HSCAN", "ZSCAN"})
TTLS = frozenset({"TTL", "PTTL"})
RANDOM_PICKS = frozenset({"SPOP", "SRANDMEMBER", "HRANDFIELD", "RANDOMKEY"})
SCAN_PAGES_MAX = 10_000  # a SCAN that has not ended after this many pages is a bug


def _pairs(flat: list) -> list[tuple]:
    return sorted(zip(flat[::2], flat[1::2], strict=True))


def normalise(name: str, reply):
    """What must be equal: the reply with what Redis leaves open taken out."""
    if isinstance(reply, Err):
        return reply
    if isinstance(reply, set):  # RESP3 set
        return sorted(reply)
    if isinstance(reply, dict):  # RESP3 map
        return sorted(reply.items())
    if name in UNORDERED and isinstance(reply, list):
        return sorted(reply)
    if name in PAIRS_UNORDERED and isinstance(reply, list):
        return _pairs(reply)
    if name in TTLS and isinstance(reply, int):
        return reply if reply < 0 else "positive"
    return reply


def strict(reply):
    """The reply with each scalar's type beside it: 1, 1.0 and True are equal in Python, but
    an integer, a RESP3 double and a RESP3 boolean are different replies."""
    if isinstance(reply, list | tuple):
        return tuple(strict(x) for x in reply)
    return reply if isinstance(reply, Err) else (type(reply).__name__, reply)


def scan_all(server: Server, args: list[bytes]):
    """A SCAN-family command iterated to its end: the sorted union of its pages (pairs for
    HSCAN/ZSCAN), or the first error."""
    name = args[0].decode().upper()
    at = SCANS[name] - 1
    args = list(args)
    seen: set = set()
    for _ in range(SCAN_PAGES_MAX):
        reply = server(*args)
        if isinstance(reply, Err):
            return reply
        cursor, page = reply
        seen.update(_pairs(page) if name in SCAN_PAIRS else page)
        if cursor == b"0":
            return sorted(seen)
        args[at + 1] = cursor
    raise AssertionError(f"{server.name}: {args} did not end after {SCAN_PAGES_MAX} pages")


def _as_list(reply):
    """A RESP3 set as a list (SPOP with a count)."""
    return list(reply) if isinstance(reply, set) else reply


def _flat(reply):
    """RESP3's [[field, value], ...] as RESP2's [field, value, ...]."""
    if isinstance(reply, list) and reply and all(isinstance(p, list) for p in reply):
        return [x for p in reply for x in p]
    return reply


DOUBLE_TEXT = "a double printed in its shortest form"
APPENDED = "OBJECT ENCODING of an appended string"
CROSSSLOT_WORDS = "CROSSSLOT for option words counted as keys by numkeys (cluster)"


def _same_double(theirs: bytes, ours: bytes) -> bool:
    """Redis 7.0's "%.17g" text of a double (0.10000000000000001) against another text of the
    same double (0.1)."""
    try:
        value = float(theirs)
        return theirs == b"%.17g" % value and float(ours) == value
    except ValueError:
        return False


def equal_but_double_text(theirs, ours) -> bool:
    """Whether two replies (or strict() forms) are equal once each double reads as its value."""
    if isinstance(theirs, list | tuple) and isinstance(ours, list | tuple):
        return len(theirs) == len(ours) and all(equal_but_double_text(a, b) for a, b in zip(theirs, ours, strict=True))
    if isinstance(theirs, bytes) and isinstance(ours, bytes):
        return theirs == ours or _same_double(theirs, ours)
    return theirs == ours


def known_difference(differ: Differ, args: list[bytes], theirs, ours) -> str | None:
    """Where docs/redis-compat.md ("Data types: known differences") says ringkv answers
    otherwise than the installed redis-server 7.0: the reason, else None."""
    name = args[0].decode().upper()
    if differ.target == "cluster" and isinstance(ours, Err) and ours.kind == "ClusterCrossSlotError":
        # numkeys larger than the keys given: the words after them (AGGREGATE, LEFT, COUNT)
        # count as keys, of other slots, as Redis Cluster counts them.
        tag = f"{{{differ.gen.tag}}}".encode()
        if name in TYPE_COMMANDS and not all(k.startswith(tag) for k in TYPE_COMMANDS[name].keys(args[1:])):
            return CROSSSLOT_WORDS
    if equal_but_double_text(theirs, ours):
        # Scores and other doubles: ringkv prints the shortest text that reads back the same
        # (Redis 7.2's fpconv); Redis 7.0 prints 17 significant digits.
        return DOUBLE_TEXT
    if args[0].upper() == b"OBJECT" and len(args) == 3 and theirs == b"raw" and ours == b"embstr":
        # Redis answers from how the string was built (APPEND leaves `raw` whatever the
        # length); ringkv from the value alone.
        return APPENDED
    return None


@dataclass
class Mismatch:
    target: str
    args: list[bytes]
    redis_reply: object
    ringkv_reply: object

    def line(self) -> str:
        args = " ".join(repr(a)[2:-1] if isinstance(a, bytes) else str(a) for a in self.args)
        return f"[{self.target}] {args} | redis: {self.redis_reply!r} | ringkv: {self.ringkv_reply!r}"


@dataclass
class Differ:
    """Runs one stream on both servers in lock step and collects what differs."""

    theirs: Server
    ours: Server
    gen: Gen
    target: str
    mismatches: list[Mismatch] = field(default_factory=list)
    known: dict[str, int] = field(default_factory=dict)
    commands: int = 0

    def start(self) -> None:
        """Both keyspaces empty (RANDOMKEY and SCAN see only this stream's keys), then the
        string key the WRONGTYPE cases use."""
        for server in (self.theirs, self.ours):
            assert server("FLUSHALL") == b"OK"
        self.reset()

    def reset(self) -> None:
        """The stream's keys deleted on both sides, the string key set again. (DEL rather than
        FLUSHALL: see test_flushall_in_the_cluster_forgets_a_hash_tags_collections.)"""
        for server in (self.theirs, self.ours):
            assert not isinstance(server("DEL", *self.gen.all_keys), Err)
            assert server("SET", self.gen.string_key, b"hello") == b"OK"

    def run(self, args: list) -> None:
        args = [a if isinstance(a, bytes) else a.encode() for a in args]
        name = args[0].decode().upper()
        self.commands += 1
        if name in SCANS:
            theirs, ours = scan_all(self.theirs, args), scan_all(self.ours, args)
        else:
            theirs, ours = self.theirs(*args), self.ours(*args)
        if name in RANDOM_PICKS and not isinstance(theirs, Err) and not isinstance(ours, Err):
            if not self._random_pick_ok(name, args, theirs, ours):
                self._differ(args, theirs, ours)
            return
        if strict(normalise(name, theirs)) != strict(normalise(name, ours)):
            self._differ(args, theirs, ours)

    def _differ(self, args: list[bytes], theirs, ours) -> None:
        reason = known_difference(self, args, theirs, ours)
        if reason is not None:  # an answer that differs on equal values: nothing to reset
            self.known[reason] = self.known.get(reason, 0) + 1
            return
        self.mismatches.append(Mismatch(self.target, args, theirs, ours))
        self.reset()  # both sides equal again, so the rest of the stream still tests something

    # ----------------------------------------------------------- random picks

    def _random_pick_ok(self, name: str, args: list[bytes], theirs, ours) -> bool:
        if name == "RANDOMKEY":
            return (theirs is None) == (ours is None) and (ours is None or self.theirs("EXISTS", ours) == 1)
        key = args[1]
        theirs, ours = _as_list(theirs), _as_list(ours)
        if name == "SPOP":
            return self._spop_ok(key, len(args) > 2, theirs, ours)
        if name == "SRANDMEMBER":
            members = set(self.theirs("SMEMBERS", key) or [])
            return self._picks_ok(args[2:], theirs, ours, lambda m: m in members)
        # HRANDFIELD
        content = self.theirs("HGETALL", key)
        if isinstance(content, list):
            content = dict(zip(content[::2], content[1::2], strict=True))
        elif not isinstance(content, dict):
            content = {}
        if len(args) > 3:  # WITHVALUES: field, value pairs (RESP3: [field, value] arrays)
            theirs, ours = _flat(theirs), _flat(ours)
            if not (isinstance(theirs, list) and isinstance(ours, list)) or len(ours) % 2:
                return theirs == ours
            pairs_ok = all(content.get(f) == v for f, v in zip(ours[::2], ours[1::2], strict=True))
            return pairs_ok and self._picks_ok(args[2:3], theirs[::2], ours[::2], lambda f: f in content)
        return self._picks_ok(args[2:], theirs, ours, lambda f: f in content)

    @staticmethod
    def _picks_ok(count_args: list[bytes], theirs, ours, member: Callable[[bytes], bool]) -> bool:
        """SRANDMEMBER/HRANDFIELD: as many picks as Redis made, each one an element; distinct
        for a positive count."""
        if not count_args or theirs is None or ours is None:
            return (theirs is None) == (ours is None) and (ours is None or member(ours))
        if not (isinstance(theirs, list) and isinstance(ours, list)) or len(theirs) != len(ours):
            return False
        distinct = int(count_args[0]) < 0 or len(set(ours)) == len(ours)
        return distinct and all(member(m) for m in ours)

    def _spop_ok(self, key: bytes, with_count: bool, theirs, ours) -> bool:
        """Both popped as many distinct members; then Redis's set is made to lose what ringkv
        popped instead of what it popped itself, and the two sets must be equal."""
        popped_theirs = theirs if with_count else ([] if theirs is None else [theirs])
        popped_ours = ours if with_count else ([] if ours is None else [ours])
        if (theirs is None) != (ours is None) or len(popped_theirs) != len(popped_ours):
            return False
        if len(set(popped_ours)) != len(popped_ours):
            return False
        if set(popped_theirs) != set(popped_ours):
            # Redis's key still exists here (it kept as many members as ringkv's): its TTL stays.
            self.theirs("SADD", key, *popped_theirs)
            self.theirs("SREM", key, *popped_ours)
        return self._key_state(self.theirs, key) == self._key_state(self.ours, key)

    # ----------------------------------------------------------- whole values

    @staticmethod
    def _key_state(server: Server, key: bytes):
        kind = server("TYPE", key)
        reads = {
            b"string": ("GET", key), b"hash": ("HGETALL", key), b"list": ("LRANGE", key, 0, -1),
            b"set": ("SMEMBERS", key), b"zset": ("ZRANGE", key, 0, -1, "WITHSCORES"),
        }
        if kind not in reads:
            return kind, None, None
        read = reads[kind]
        value = normalise(read[0], server(*read))
        if kind == b"set":
            value = sorted(value)
        return kind, strict(value), normalise("TTL", server("TTL", key))

    def check_state(self) -> None:
        for key in self.gen.all_keys:
            theirs, ours = self._key_state(self.theirs, key), self._key_state(self.ours, key)
            if theirs != ours and equal_but_double_text(theirs, ours):
                self.known[DOUBLE_TEXT] = self.known.get(DOUBLE_TEXT, 0) + 1
            elif theirs != ours:
                self.mismatches.append(Mismatch(self.target, [b"(value of)", key], theirs, ours))
                self.reset()
                return


def drive(stream: Stream, theirs: Server, ours: Server, target: str, commands: int) -> Differ:
    names, weights, lacking = usable_ops(stream)
    rng = random.Random(f"{SEED}/{stream.name}/{target}")
    gen = Gen(rng, f"{stream.name}-{target}", stream.names)
    differ = Differ(theirs, ours, gen, target)
    differ.start()
    for i in range(commands):
        name = rng.choices(names, weights)[0]
        args = stream.ops[name][1](gen)
        if rng.random() < 0.015 and len(args) > 1:
            args = args[:-1]  # one argument short: arity and syntax errors
        differ.run(args)
        if (i + 1) % CHECK_EVERY == 0:
            differ.check_state()
            differ.run(["SET", gen.string_key, b"hello"])  # a string again: WRONGTYPE stays frequent
    differ.check_state()
    if lacking:
        print(f"{stream.name}/{target}: not in ringkv yet, left out of the stream: {', '.join(lacking)}")
    return differ


def verdict(differ: Differ) -> None:
    if differ.known:
        print(f"{differ.target}: known differences (docs/redis-compat.md): {differ.known}")
    if not differ.mismatches:
        return
    seen: set = set()
    lines = []
    for m in differ.mismatches:
        sig = (m.args[0].upper(), repr(m.redis_reply)[:60])
        if sig not in seen:
            seen.add(sig)
            lines.append(m.line())
    shown = "\n".join(lines[:MISMATCHES_SHOWN])
    pytest.fail(f"{len(differ.mismatches)} mismatches in {differ.commands} commands "
                f"({len(lines)} distinct; seed {SEED}):\n{shown}", pytrace=False)


# -------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("type_name", list(STREAMS))
def test_single_node_answers_as_redis(type_name, redis_side, single):
    verdict(drive(STREAMS[type_name], redis_side, single, "single", SINGLE_COMMANDS))


@pytest.mark.parametrize("type_name", list(STREAMS))
def test_single_node_answers_as_redis_in_resp3(type_name, redis_server, single_node):
    """RESP3 (redis-py 8's default): maps, sets, doubles and nested pairs, as Redis shapes them."""
    theirs = Server("redis-resp3", [redis_server], protocol=3)
    ours = Server("ringkv-1-resp3", [single_node.resp_port], protocol=3)
    try:
        verdict(drive(STREAMS[type_name], theirs, ours, "single-resp3", SINGLE_COMMANDS))
    finally:
        theirs.close()
        ours.close()


@pytest.mark.parametrize("type_name", list(STREAMS))
def test_cluster_at_all_answers_as_redis(type_name, redis_side, cluster):
    verdict(drive(STREAMS[type_name], redis_side, cluster, "cluster", CLUSTER_COMMANDS))


CROSS_TAG_WRITES = [
    # (what sets up the source keys, the write naming keys of tags {x} and {y}, the keys it
    # would change); each case runs on tags of its own ({x} -> {x-SMOVE}).
    ([("SADD", "{x}s", "m")], ("SMOVE", "{x}s", "{y}s", "m"), ["{x}s", "{y}s"]),
    ([("SADD", "{x}s", "m")], ("SUNIONSTORE", "{y}d", "{x}s"), ["{y}d"]),
    ([("RPUSH", "{x}l", "a")], ("LMOVE", "{x}l", "{y}l", "LEFT", "RIGHT"), ["{x}l", "{y}l"]),
    ([("HSET", "{x}h", "f", "v")], ("RENAME", "{x}h", "{y}h"), ["{x}h", "{y}h"]),
    ([("HSET", "{x}h", "f", "v")], ("COPY", "{x}h", "{y}h"), ["{y}h"]),
    ([("ZADD", "{x}z", "1", "m")], ("ZUNIONSTORE", "{y}z", "1", "{x}z"), ["{y}z"]),
]


def _cross_tag_cases() -> list:
    cases = []
    for setup, write, keys in CROSS_TAG_WRITES:
        names = sorted({c[0] for c in setup} | {write[0]})
        lacking = [n for n in names if n not in TYPE_COMMANDS]
        marks = [pytest.mark.skip(reason=f"{', '.join(lacking)} not in COMMANDS yet")] if lacking else []
        cases.append(pytest.param(setup, write, keys, id=write[0], marks=marks))
    return cases


def _own_tags(args, case: str) -> list:
    return [a.replace("{x}", f"{{x-{case}}}").replace("{y}", f"{{y-{case}}}") for a in args]


def _keys_state(server: Server, keys: list[str]) -> list:
    return [Differ._key_state(server, k.encode()) for k in keys]


@pytest.mark.parametrize(("setup", "write", "keys"), _cross_tag_cases())
def test_a_write_across_two_hash_tags_is_crossslot_in_the_cluster_and_runs_on_one_node(
        setup, write, keys, redis_side, single, cluster):
    case = write[0]
    setup = [_own_tags(c, case) for c in setup]
    write, keys = _own_tags(write, case), _own_tags(keys, case)
    for server in (redis_side, single, cluster):
        for command in setup:
            assert not isinstance(server(*command), Err)
    before = _keys_state(cluster, keys)
    refused = cluster(*write)
    assert isinstance(refused, Err) and refused.kind == "ClusterCrossSlotError", refused
    assert refused.text.startswith("Keys in request don't hash to the same slot"), refused
    assert _keys_state(cluster, keys) == before  # nothing written
    # One node has every key in one place: the command runs there as on redis-server.
    assert single(*write) == redis_side(*write)
    assert _keys_state(single, keys) == _keys_state(redis_side, keys)


def test_flushall_in_the_cluster_forgets_a_hash_tags_collections(cluster):
    assert cluster("RPUSH", "{flushed}l", "a") == 1
    assert cluster("FLUSHALL") == b"OK"
    assert cluster("TYPE", "{flushed}l") == b"none"
    assert cluster("SADD", "{flushed}l", "m") == 1  # a new set, not WRONGTYPE on the list
    assert cluster("TYPE", "{flushed}l") == b"set"
