"""What an application sees using the client's compare-and-set family against real `ringkv
serve` processes: `cas` and `cad` on a key's version, Redis 8.4's value conditions (`set(...,
if_eq=...)`, `delex`, `digest`), SERIAL reads, and how a write whose outcome is unknown is
reported (never resent)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from xxhash import xxh3_64_hexdigest

from ringkv.client import (
    AsyncClient,
    CasResult,
    Client,
    Consistency,
    ResultUnknownError,
    ServerError,
    commands,
)
from ringkv.testing.launcher import LocalCluster, NodeProcess
from ringkv.testing.wait import wait_until

ROUNDS = 20  # concurrent compare-and-set rounds through the cluster's nodes


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path_factory.mktemp("client-cas") / "n1", http_enabled="false") as n:
        yield n


@pytest.fixture
def kv(node: NodeProcess) -> Iterator[Client]:
    redis.Redis(port=node.resp_port).flushall()
    with Client(port=node.resp_port) as client:
        yield client


# ---------------------------------------------------------------------- cas and cad


def test_cas_and_cad_take_the_version_number_as_the_http_api_shows_it(kv: Client) -> None:
    for i in range(3):
        kv.set("numbered", f"v{i}")
    assert kv.get_versions("numbered").version_number == 3
    refused = kv.cas("numbered", 2, "late")
    assert refused.success is False and refused.version_number == 3
    done = kv.cas("numbered", 3, "v3")
    assert done.success and done.version_number == 4 and kv.get("numbered") == b"v3"
    # 0, like None, expects no live value.
    assert kv.cas("fresh", 0, "first").version_number == 1
    assert kv.cas("fresh", 0, "again").success is False
    assert kv.cad("numbered", 3) is False and kv.cad("numbered", 4) is True
    assert kv.get("numbered") is None
    with pytest.raises(ValueError, match="version numbers are >= 0"):
        kv.cas("numbered", -1, "x")



def test_cas_creates_an_absent_key_then_writes_only_at_the_current_version(kv: Client) -> None:
    created = kv.cas("user:1", None, "ada")
    assert created.success is True and isinstance(created.version, bytes)
    assert kv.get_versions("user:1").version == created.version
    # Expecting "no value" fails now, and tells the version the key is at.
    assert kv.cas("user:1", None, "bob") == CasResult(False, created.version)

    updated = kv.cas("user:1", created.version, "ada lovelace")
    assert updated.success and updated.version != created.version
    assert kv.get("user:1") == b"ada lovelace"
    # A writer that read before that update is refused and learns the new version.
    assert kv.cas("user:1", created.version, "stale") == CasResult(False, updated.version)
    assert kv.get("user:1") == b"ada lovelace"


def test_a_read_modify_write_loop_on_cas_loses_no_update(kv: Client) -> None:
    def add_one() -> None:
        with Client(port=kv.options.port) as mine:
            for _ in range(25):
                while True:
                    seen = mine.get_versions("counter")
                    n = int(seen.values[0]) if seen.values else 0
                    if mine.cas("counter", seen.version, str(n + 1)).success:
                        break

    threads = [threading.Thread(target=add_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert kv.get("counter") == b"100"


def test_cas_takes_a_ttl(kv: Client) -> None:
    assert kv.cas("session", None, "s", ttl_s=60).success
    assert 59 < kv.ttl("session") <= 60
    version = kv.get_versions("session").version
    assert kv.cas("session", version, "s2", ttl_ms=5_000).success
    assert 4 < kv.ttl("session") <= 5


def test_cad_deletes_only_at_the_version(kv: Client) -> None:
    first = kv.cas("lock", None, "me").version
    second = kv.cas("lock", first, "me again").version
    assert kv.cad("lock", first) is False and kv.get("lock") == b"me again"
    assert kv.cad("lock", second) is True and kv.get("lock") is None
    # A deleted key has a context but no live value: its version for cas is None.
    seen = kv.get_versions("lock")
    assert seen.context is not None and seen.version is None
    assert kv.cas("lock", seen.version, "you").success


def test_version_arguments_are_checked_before_anything_is_sent(kv: Client) -> None:
    with pytest.raises(ValueError, match="expected_version is empty"):
        kv.cas("k", b"", "v")
    with pytest.raises(ValueError, match="cad needs the version"):
        kv.cad("k", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value must be bytes or str"):
        kv.cas("k", None, 5)  # type: ignore[arg-type]
    assert kv.exists("k") == 0
    # A version the node never gave out is refused by the node, and nothing is written.
    with pytest.raises(ServerError, match="invalid causal context"):
        kv.cas("k", b"\x00garbage", "v")
    assert kv.exists("k") == 0


# ---------------------------------------------------------------------- value conditions


def test_set_with_a_value_condition_writes_only_when_it_holds(kv: Client) -> None:
    # IFEQ never creates; IFNE creates a missing key.
    assert kv.set("k", "a", if_eq="a") is False and kv.get("k") is None
    assert kv.set("k", "a", if_ne="zzz") is True and kv.get("k") == b"a"
    assert kv.set("k", "b", if_eq="x") is False
    assert kv.set("k", "b", if_eq="a", ttl_s=30) is True and kv.get("k") == b"b"
    assert 29 < kv.ttl("k") <= 30
    assert kv.set("k", "c", if_ne="b") is False
    assert kv.set("k", "c", if_ne="a") is True and kv.get("k") == b"c"


def test_digest_and_the_digest_conditions(kv: Client) -> None:
    assert kv.digest("k") is None
    kv.set("k", b"\x00payload")
    digest = kv.digest("k")
    assert digest == xxh3_64_hexdigest(b"\x00payload") and len(digest) == 16
    assert kv.set("k", "new", if_digest_eq="0123456789abcdef") is False
    assert kv.set("k", "new", if_digest_eq=digest.upper()) is True  # hex digits in any case
    assert kv.set("k", "newer", if_digest_ne=kv.digest("k")) is False
    assert kv.set("k", "newer", if_digest_ne=digest) is True and kv.get("k") == b"newer"


def test_delex_deletes_when_its_condition_holds(kv: Client) -> None:
    kv.set("k", "v")
    assert kv.delex("k", if_eq="other") is False and kv.get("k") == b"v"
    assert kv.delex("k", if_ne="v") is False
    assert kv.delex("k", if_digest_eq=kv.digest("k")) is True and kv.get("k") is None
    assert kv.delex("k") is False
    kv.set("k", "v")
    assert kv.delex("k") is True
    kv.set("k", "v")
    assert kv.delex("k", if_eq="v") is True


def test_condition_mistakes_raise_before_sending(kv: Client) -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        kv.set("k", "v", if_eq="a", if_ne="b")
    with pytest.raises(ValueError, match="exclude each other"):
        kv.set("k", "v", if_not_exists=True, if_eq="a")
    with pytest.raises(ValueError, match="16 hex digits"):
        kv.set("k", "v", if_digest_eq="not-a-digest")
    with pytest.raises(ValueError, match="16 hex digits"):
        kv.delex("k", if_digest_ne=b"123")
    assert kv.exists("k") == 0


# ---------------------------------------------------------------------- SERIAL


def test_serial_reads_are_sent_as_ringkv_at_serial(kv: Client, node: NodeProcess) -> None:
    kv.set("k", "v")
    assert kv.get("k", consistency="SERIAL") == b"v"
    assert kv.get("k", consistency=Consistency.SERIAL) == b"v"
    assert kv.get_versions("k", consistency="serial").values == [b"v"]
    assert kv.mget(["k", "missing"], consistency="SERIAL") == [b"v", None]
    assert commands.wire_args(commands.get("k", Consistency.SERIAL)) == (b"RINGKV.AT", "SERIAL", b"GET", b"k")
    with Client(port=node.resp_port, consistency="serial") as serial:
        assert serial.consistency is Consistency.SERIAL and serial.get("k") == b"v"
        # A write at SERIAL is a write at QUORUM.
        assert serial.set("k", "w") is True and kv.get("k") == b"w"


# ---------------------------------------------------------------------- outcome unknown: never resent


def test_conditional_writes_are_not_idempotent_and_reads_are() -> None:
    assert not commands.cas("k", None, "v").idempotent
    assert not commands.cad("k", b"ctx").idempotent
    assert not commands.set_("k", "v", if_eq="a").idempotent
    assert not commands.delex("k", if_eq="a").idempotent
    assert commands.delex("k").idempotent  # DEL of one key
    assert commands.digest("k").idempotent
    assert commands.get("k", Consistency.SERIAL).idempotent


def test_cas_sent_to_a_paused_node_is_unknown_and_applied_exactly_once(tmp_path) -> None:
    n = NodeProcess(tmp_path / "n1", http_enabled="false", sync="always").start()
    try:
        with Client(port=n.resp_port, timeout_ms=500, retries=5) as kv:
            first = kv.cas("k", None, "v1").version
            os.kill(n.proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(ResultUnknownError) as info:
                    kv.cas("k", first, "v2")
                assert info.value.timed_out and info.value.server_message is None
                assert time.monotonic() - started < 3  # not resent: one timeout of 0.5 s
            finally:
                os.kill(n.proc.pid, signal.SIGCONT)
            # The unanswered CAS ran when the node woke up, once: the version moved on by one
            # write, and a resent copy would have failed against it (not applied twice).
            wait_until(lambda: kv.get("k") == b"v2", 30, "the CAS held by the paused node to run")
            now = kv.get_versions("k").version
            assert kv.cas("k", first, "v3") == CasResult(False, now)
    finally:
        n.kill()


class ErrorReplyServer:
    """A socket that answers every request with one RESP error, and counts the requests: what
    a node answering "outcome unknown" looks like to a client."""

    def __init__(self, reply: bytes):
        self.reply = reply
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):  # a client sends a request and waits for its reply
                self.requests += 1
                conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


def test_a_node_that_does_not_know_the_outcome_makes_it_result_unknown_and_nothing_is_resent() -> None:
    unknown = (b"-ERR consensus on the key did not finish after 8 rounds: the command may or may not have "
               b"been applied (its value was proposed at ballot 7.n1); read the key at SERIAL\r\n")
    server = ErrorReplyServer(unknown)
    try:
        with Client(port=server.port, retries=5) as kv:
            with pytest.raises(ResultUnknownError) as info:
                kv.cas("k", None, "v")
            err = info.value
            assert "may or may not have been applied" in err.server_message and not err.timed_out
            assert f"127.0.0.1:{server.port} answered" in str(err) and err.command == "RINGKV.CAS"
            # Even an idempotent write is not resent: the node said it does not know.
            with pytest.raises(ResultUnknownError):
                kv.set("k", "v")
        assert server.requests == 2
    finally:
        server.close()

    refused = b"-ERR consensus on the key was contended for 8 rounds (other proposers kept winning): " \
              b"nothing was applied; retry later\r\n"
    server = ErrorReplyServer(refused)
    try:
        with Client(port=server.port) as kv, pytest.raises(ServerError, match="nothing was applied"):
            kv.cas("k", None, "v")
        assert server.requests == 1
    finally:
        server.close()


# ---------------------------------------------------------------------- AsyncClient


def test_async_client_has_the_same_calls(node: NodeProcess) -> None:
    redis.Redis(port=node.resp_port).flushall()

    async def scenario() -> None:
        async with AsyncClient(port=node.resp_port) as kv:
            created = await kv.cas("k", None, "v1")
            assert created.success
            assert await kv.cas("k", None, "x") == CasResult(False, created.version)
            assert (await kv.get_versions("k", consistency="SERIAL")).version == created.version
            updated = await kv.cas("k", created.version, "v2", ttl_s=30)
            assert updated.success and await kv.get("k", consistency="SERIAL") == b"v2"
            assert await kv.set("k", "v3", if_eq="v2") is True
            assert await kv.set("k", "v4", if_digest_ne=await kv.digest("k")) is False
            assert await kv.cad("k", updated.version) is False
            assert await kv.cad("k", (await kv.get_versions("k")).version) is True
            await kv.set("k", "v")
            assert await kv.delex("k", if_eq="v") is True and await kv.get("k") is None

    asyncio.run(scenario())


# ---------------------------------------------------------------------- a cluster

CLUSTER = dict(replicas=3, partitions=16, gossip_interval_ms=200, replica_timeout_ms=2000)


@pytest.fixture(scope="module")
def cluster_clients(tmp_path_factory) -> Iterator[list[Client]]:
    with LocalCluster(tmp_path_factory.mktemp("client-cas-cluster"), nodes=3, **CLUSTER) as cluster:
        clients = [Client(port=n.resp_port, timeout_ms=30_000) for n in cluster.nodes]
        yield clients
        for c in clients:
            c.close()


def cas_all_at_once(clients: list[Client], key: str, expected: bytes | None,
                    values: list[str]) -> list[CasResult]:
    """One CAS per client, with the same expected version, released together."""
    barrier = threading.Barrier(len(clients))
    results: list[CasResult | BaseException | None] = [None] * len(clients)

    def write(i: int) -> None:
        barrier.wait()
        try:
            results[i] = clients[i].cas(key, expected, values[i])
        except BaseException as exc:  # reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(r, CasResult) for r in results), results
    return results  # type: ignore[return-value]


def test_concurrent_cas_through_three_coordinators_one_wins(cluster_clients: list[Client]) -> None:
    """Each round, three writers that read the same version send their CAS at once, each to
    another node: one is told success, the two others the winner's version, which the next
    round expects (so a round that wrongly let two win would show in the next)."""
    seen = cluster_clients[0].cas("race", None, "start").version
    value = b"start"
    for round_ in range(ROUNDS):
        values = [f"r{round_}-w{i}" for i in range(3)]
        results = cas_all_at_once(cluster_clients, "race", seen, values)
        winners = [i for i, r in enumerate(results) if r.success]
        assert len(winners) == 1, (round_, results)
        seen, value = results[winners[0]].version, values[winners[0]].encode()
        assert all(r == CasResult(False, seen) for i, r in enumerate(results) if i != winners[0]), results
    for c in cluster_clients:
        wait_until(lambda c=c: c.get("race") == value, 30, f"the last winner's value at {c.address}")


# A SERIAL read right after a proposer's leased rounds once picked the very ballot the acceptors
# had promised (the leased ballot was not counted as seen) and failed as unavailable.
def test_a_serial_read_right_after_writes_on_the_key_sees_the_last_one(cluster_clients: list[Client]) -> None:
    for i in range(30):
        kv = cluster_clients[i % 3]
        first = kv.cas(f"serial:{i}", None, "a").version
        kv.cas(f"serial:{i}", first, "b")
        assert kv.get(f"serial:{i}", consistency="SERIAL") == b"b"
