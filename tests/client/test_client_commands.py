"""What an application sees using `ringkv.client.Client` against a real `ringkv serve` node:
every method, bytes and str, TTLs, scans, options and argument checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from ringkv.client import Client, Consistency, ServerError
from ringkv.client.commands import parse_info
from ringkv.errors import ClosedError, ConfigError
from ringkv.testing.launcher import NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path_factory.mktemp("client") / "n1", http_enabled="false") as n:
        yield n


@pytest.fixture
def kv(node: NodeProcess) -> Iterator[Client]:
    # Every scenario starts from an empty node, so counts and scans see only its own keys.
    redis.Redis(port=node.resp_port).flushall()
    with Client(port=node.resp_port) as client:
        yield client


def test_set_then_get_returns_bytes_for_str_and_bytes_input(kv: Client) -> None:
    assert kv.set("greeting", "héllo") is True
    assert kv.get("greeting") == "héllo".encode()
    assert kv.get(b"greeting") == "héllo".encode()
    assert kv.set(b"raw", b"\x00\xff\x01") is True
    assert kv.get("raw") == b"\x00\xff\x01"
    assert kv.set(bytearray(b"ba"), memoryview(b"mv")) is True
    assert kv.get("ba") == b"mv"
    assert kv.get("missing") is None


def test_keys_and_values_of_other_types_are_refused_before_sending(kv: Client) -> None:
    with pytest.raises(TypeError, match="value must be bytes or str, got int"):
        kv.set("n", 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be bytes or str, got NoneType"):
        kv.get(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a single key"):
        kv.mget("abc")  # type: ignore[arg-type]
    assert kv.exists("n") == 0


def test_conditional_set_writes_only_when_its_condition_holds(kv: Client) -> None:
    assert kv.set("k", "first", if_exists=True) is False
    assert kv.get("k") is None
    assert kv.set("k", "first", if_not_exists=True) is True
    assert kv.set("k", "second", if_not_exists=True) is False
    assert kv.get("k") == b"first"
    assert kv.set("k", "third", if_exists=True) is True
    assert kv.get("k") == b"third"
    with pytest.raises(ValueError, match="exclude each other"):
        kv.set("k", "v", if_exists=True, if_not_exists=True)


def test_ttl_in_seconds_or_milliseconds_expires_the_key(kv: Client) -> None:
    # 1000 ms, not 1000 s; long enough that a stalled machine still reads it before it expires.
    assert kv.set("short", "v", ttl_ms=1000)
    assert kv.set("long", "v", ttl_s=100)
    assert kv.set("forever", "v")
    assert 0 < kv.ttl("short") <= 1.0
    assert 95 < kv.ttl("long") <= 100
    assert kv.ttl("forever") is None
    assert kv.ttl("missing") is None
    time.sleep(1.1)  # past the TTL: a read must find the key gone, whenever it is collected
    assert kv.get("short") is None
    with pytest.raises(ValueError, match="not both"):
        kv.set("k", "v", ttl_s=1, ttl_ms=1000)
    with pytest.raises(ValueError, match="ttl_s must be a positive number"):
        kv.set("k", "v", ttl_s=0)


def test_expire_and_persist_change_a_keys_expiry(kv: Client) -> None:
    kv.set("k", "v")
    assert kv.expire("k", 30) is True
    assert 29 < kv.ttl("k") <= 30
    assert kv.persist("k") is True
    assert kv.ttl("k") is None
    assert kv.persist("k") is False  # nothing left to remove
    assert kv.expire("missing", 30) is False
    assert kv.expire("k", 0.1) is True
    time.sleep(0.2)  # past the TTL: the key must read as gone, whenever it is collected
    assert kv.exists("k") == 0
    kv.set("gone", "v")
    assert kv.expire("gone", 0) is True  # as in Redis: a TTL of zero deletes
    assert kv.get("gone") is None


def test_delete_and_exists_count_keys(kv: Client) -> None:
    kv.mset({"a": "1", "b": "2", "c": "3"})
    assert kv.exists("a", "b", "missing") == 2
    assert kv.exists("a", "a") == 2  # named twice, counted twice, as Redis does
    assert kv.delete("a", "missing") == 1
    assert kv.delete("a") == 0
    assert kv.exists("a", "b", "c") == 2
    assert kv.delete() == 0 and kv.exists() == 0  # nothing asked, nothing sent


def test_incr_and_incr_float_return_the_new_number(kv: Client) -> None:
    assert kv.incr("n") == 1
    assert kv.incr("n", 41) == 42
    assert kv.incr("n", -50) == -8
    assert kv.get("n") == b"-8"
    assert kv.incr_float("f", 1.5) == 1.5
    assert kv.incr_float("f", -0.25) == 1.25
    with pytest.raises(ValueError, match="64-bit"):
        kv.incr("n", 1 << 63)
    with pytest.raises(ValueError, match="finite"):
        kv.incr_float("f", float("nan"))


def test_append_creates_or_extends_and_returns_the_length(kv: Client) -> None:
    assert kv.append("log", "ab") == 2
    assert kv.append("log", b"\xffc") == 4
    assert kv.get("log") == b"ab\xffc"


def test_mset_and_mget_keep_order_and_report_missing_keys(kv: Client) -> None:
    kv.mset([("x", "1"), (b"y", b"2")])
    kv.mset({"z": "3"})
    assert kv.mget(["x", "missing", "z", b"y"]) == [b"1", None, b"3", b"2"]
    assert kv.mget([]) == []
    kv.mset({})  # nothing to send


def test_mset_atomic_writes_every_pair_or_none(kv: Client) -> None:
    assert kv.mset_atomic({"acct:1": "90", "acct:2": "110"}) == []
    assert kv.mget(["acct:1", "acct:2"]) == [b"90", b"110"]
    assert kv.mset_atomic({}) == []
    with pytest.raises(ServerError, match="max_value_bytes"):
        kv.mset_atomic([("acct:1", "0"), ("acct:3", b"x" * ((1 << 20) + 1))])
    assert kv.mget(["acct:1", "acct:3"]) == [b"90", None]


def test_scan_iter_yields_every_key_exactly_once(kv: Client) -> None:
    keys = {f"user:{i:04d}".encode() for i in range(1000)} | {b"\x00binary\xff"}
    kv.mset({k: b"v" for k in keys})
    seen = list(kv.scan_iter(count=37))  # many small pages
    assert len(seen) == len(keys)
    assert set(seen) == keys
    assert kv.dbsize() == len(keys)


def test_scan_iter_match_filters_with_a_glob(kv: Client) -> None:
    kv.mset({"user:1": "a", "user:2": "b", "order:1": "c"})
    assert sorted(kv.scan_iter(match="user:*")) == [b"user:1", b"user:2"]
    assert sorted(kv.scan_iter(match=b"order:?")) == [b"order:1"]
    assert list(kv.scan_iter(match="nothing*")) == []
    with pytest.raises(ValueError, match="count must be"):
        kv.scan_iter(count=0)  # checked at the call, not at the first next()


def test_info_is_grouped_by_section_with_typed_values(kv: Client) -> None:
    kv.mset({"a": "1", "b": "2"})
    everything = kv.info()
    assert {"server", "clients", "stats", "keyspace"} <= everything.keys()
    assert everything["server"]["redis_mode"] == "standalone"
    assert isinstance(everything["server"]["uptime_in_seconds"], int)
    assert kv.info("keyspace") == {"keyspace": {"db0": {"keys": 2, "expires": 0, "avg_ttl": 0}}}


def test_parse_info_reads_numbers_keyspace_lines_and_empty_values() -> None:
    text = b"# Server\r\nversion:7.2.0\r\nrate:0.25\r\nn:-3\r\nerr:\r\n\r\n# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n"
    assert parse_info(text) == {
        "server": {"version": "7.2.0", "rate": 0.25, "n": -3, "err": ""},
        "keyspace": {"db0": {"keys": 1, "expires": 0, "avg_ttl": 0}},
    }


def test_ping_and_dbsize(kv: Client) -> None:
    assert kv.ping() is True
    assert kv.dbsize() == 0


def test_from_url_reads_host_and_port(node: NodeProcess) -> None:
    with Client.from_url(f"ringkv://127.0.0.1:{node.resp_port}", timeout_ms=5000) as kv:
        assert kv.ping()
        assert kv.address == f"127.0.0.1:{node.resp_port}"
        assert kv.options.timeout_ms == 5000
    assert Client.from_url("ringkv://db.example").options.port == 7379
    for bad in ("redis://127.0.0.1:7379", "ringkv://", "ringkv://h:99999", "ringkv://h:1/x"):
        with pytest.raises(ConfigError, match="url"):
            Client.from_url(bad)


def test_bad_options_name_the_field() -> None:
    with pytest.raises(ConfigError, match="timeout_ms: must be a number of milliseconds"):
        Client(timeout_ms=0)
    with pytest.raises(ConfigError, match="retries"):
        Client(retries=-1)
    with pytest.raises(ConfigError, match="backoff_max_ms: must be >= backoff_base_ms"):
        Client(backoff_base_ms=100, backoff_max_ms=10)
    with pytest.raises(ConfigError, match="consistency: must be one of ONE, QUORUM, ALL"):
        Client(consistency="MOST")


def test_consistency_is_kept_and_checked_per_call(kv: Client, node: NodeProcess) -> None:
    # A single node has one replica: every level reads and writes the same data.
    with Client(port=node.resp_port, consistency="quorum") as strict:
        assert strict.consistency is Consistency.QUORUM
        assert strict.set("k", "v", consistency="ALL")
        assert strict.get("k", consistency=Consistency.ONE) == b"v"
        assert strict.mget(["k"], consistency="one") == [b"v"]
        with pytest.raises(ConfigError, match="consistency"):
            strict.get("k", consistency="TWO")
    assert kv.consistency is None


def test_a_closed_client_refuses_calls(node: NodeProcess) -> None:
    kv = Client(port=node.resp_port)
    assert kv.ping()
    kv.close()
    with pytest.raises(ClosedError, match="closed"):
        kv.get("k")
    assert "closed" in repr(kv)


def test_threads_share_one_client_through_its_pool(kv: Client, node: NodeProcess) -> None:
    with Client(port=node.resp_port, max_connections=4) as shared:

        def work() -> None:
            for _ in range(50):
                shared.incr("counter")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert shared.get("counter") == b"400"
