"""A node process killed, stopped and misconfigured, as an operator meets it.

kill -9 in the middle of a write load, then a restart on the same data directory and ports:
every write the node acknowledged is there with its last acknowledged value. Writes in flight
at the kill (sent, not yet answered) may or may not be. This holds under the default sync policy
(`interval`: the WAL record is written to the OS before the reply, and a process kill does not
lose what the OS holds) and under `sync=always`.

SIGTERM drains: the node exits 0 and restarts with everything. A bad setting stops start-up with
exit code 2 and a message naming the field.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ringkv.testing.launcher import NodeProcess
from ringkv.testing.wait import wait_until

HTTP_ENABLED = "true" if importlib.util.find_spec("ringkv.api.http_serving") else "false"
NO_RETRY = Retry(NoBackoff(), 0)  # a write to a dead node must fail, not be resent later
KEYS_PER_WRITER = 200
PIPELINE_DEPTH = 20


class AckedWriter(threading.Thread):
    """Overwrites its own keys in a loop and records what the node acknowledged.

    `acked[key]` is the last value whose SET returned OK; `in_flight` holds the SETs sent and
    not yet answered (one, or a pipeline of distinct keys), which a crash may or may not keep.
    The model survives restarts: a new writer continues from the old one's state.
    """

    def __init__(self, port: int, name: str, pipelined: bool, previous: AckedWriter | None = None):
        super().__init__(name=name)
        self.port = port
        self.pipelined = pipelined
        self.stop = threading.Event()
        self.acked: dict[bytes, bytes] = dict(previous.acked) if previous else {}
        self.unsure: dict[bytes, set[bytes]] = (
            {k: set(v) for k, v in previous.unsure.items()} if previous else {}
        )
        self.in_flight: dict[bytes, bytes] = {}
        self.round = (previous.round + 1) if previous else 0
        self.acks = 0
        self.failure: Exception | None = None

    def run(self) -> None:
        client = redis.Redis(port=self.port, protocol=2, socket_timeout=10, retry=NO_RETRY)
        i = 0
        try:
            while not self.stop.is_set():
                batch = {}
                for _ in range(PIPELINE_DEPTH if self.pipelined else 1):
                    key = b"%s:%d" % (self.name.encode(), i % KEYS_PER_WRITER)
                    batch[key] = b"r%d-i%d" % (self.round, i)
                    i += 1
                self.in_flight = batch
                if self.pipelined:
                    pipe = client.pipeline(transaction=False)
                    for key, value in batch.items():
                        pipe.set(key, value)
                    replies = pipe.execute()
                else:
                    ((key, value),) = batch.items()
                    replies = [client.set(key, value)]
                assert replies == [True] * len(batch), replies
                for key, value in batch.items():
                    self.acked[key] = value
                    self.unsure.pop(key, None)
                self.acks += len(batch)
                self.in_flight = {}
        except (redis.ConnectionError, redis.TimeoutError):
            # The node went away: what was in flight is now unsure.
            for key, value in self.in_flight.items():
                self.unsure.setdefault(key, set()).add(value)
        except Exception as exc:
            self.failure = exc
        finally:
            client.close()

    def allowed(self, key: bytes) -> set[bytes | None]:
        return {self.acked.get(key), *self.unsure.get(key, ())}


def run_writers_until_stopped(node: NodeProcess, stop_node, previous=None, min_acks=400):
    """Start four writers (two pipelined), let them write, stop the node under them."""
    names = ["w0", "w1", "w2", "w3"]
    writers = [
        AckedWriter(
            node.resp_port, name, pipelined=n >= 2, previous=previous[n] if previous else None
        )
        for n, name in enumerate(names)
    ]
    for w in writers:
        w.start()
    started = time.monotonic()

    def written_enough() -> bool:
        assert all(w.is_alive() for w in writers), [w.failure for w in writers]
        # At least half a second of writing too, so the stop lands amid a steady load.
        return sum(w.acks for w in writers) >= min_acks and time.monotonic() - started >= 0.5

    wait_until(written_enough, 30, lambda: f"{min_acks} acknowledged writes "
               f"(got {sum(w.acks for w in writers)})", interval_s=0.02)
    stop_node()
    for w in writers:
        w.stop.set()
    for w in writers:
        w.join(30)
        assert not w.is_alive(), f"{w.name} hung after the node stopped"
        assert w.failure is None, f"{w.name} failed: {w.failure!r}"
    return writers


def check_acknowledged_writes(node: NodeProcess, writers: list[AckedWriter]) -> int:
    """Every key reads back as its last acknowledged value or an unanswered later one."""
    client = redis.Redis(port=node.resp_port, protocol=2)
    wrong = []
    present = 0
    for w in writers:
        keys = [b"%s:%d" % (w.name.encode(), i) for i in range(KEYS_PER_WRITER)]
        for key, value in zip(keys, client.mget(keys)):
            if value is not None:
                present += 1
            if value not in w.allowed(key):
                wrong.append(
                    f"{key!r}: read {value!r}, acknowledged {w.acked.get(key)!r}, "
                    f"unanswered {sorted(w.unsure.get(key, ()))!r}"
                )
    client.close()
    assert not wrong, f"{len(wrong)} keys lost or wrong:\n" + "\n".join(wrong[:10])
    return present


@pytest.mark.parametrize("sync", ["interval", "always"])
def test_kill_9_during_writes_loses_no_acknowledged_write(tmp_path, sync):
    settings = {} if sync == "interval" else {"sync": sync}  # interval is the default
    node = NodeProcess(tmp_path / "n1", http_enabled=HTTP_ENABLED, **settings)
    node.start()
    try:
        writers = None
        for _ in range(2):  # crash, recover, crash the recovered node, recover again
            writers = run_writers_until_stopped(node, node.kill, previous=writers)
            assert sum(len(w.acked) for w in writers) > 0
            node.start()
            present = check_acknowledged_writes(node, writers)
            assert redis.Redis(port=node.resp_port).dbsize() == present
        client = redis.Redis(port=node.resp_port)
        assert client.set("after-recovery", "ok") is True and client.get("after-recovery") == b"ok"
        assert client.info("persistence")["sync_policy"] == sync
    finally:
        node.stop()


def test_sigterm_drains_and_the_node_restarts_with_everything(tmp_path):
    node = NodeProcess(tmp_path / "n1", http_enabled=HTTP_ENABLED, sync="always")
    node.start()
    try:
        exit_codes = []
        writers = run_writers_until_stopped(node, lambda: exit_codes.append(node.stop()))
        assert exit_codes == [0], node.log()
        assert "stopped" in node.log()
        started = time.monotonic()
        node.start()
        assert time.monotonic() - started < 20
        present = check_acknowledged_writes(node, writers)
        acked_keys = set().union(*(w.acked for w in writers))
        assert present >= len(acked_keys)
        assert redis.Redis(port=node.resp_port).dbsize() == present
        # A second clean stop with nothing written in between is just as clean.
        assert node.stop() == 0
        node.start()
        assert check_acknowledged_writes(node, writers) == present
    finally:
        node.stop()


# ---------------------------------------------------------------------- bad configuration


def serve(tmp_path, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `ringkv serve` with a clean RINGKV_* environment plus `env`; it must exit.

    Ports default to 0 (any free one) so that a node which wrongly starts takes no fixed port.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
    environ.update({"RINGKV_RESP_PORT": "0", "RINGKV_HTTP_PORT": "0", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "ringkv.cli", "serve", "--data-dir", str(tmp_path / "data"), *flags],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "case, named",
    [
        ("RINGKV_RESP_PORT=notaport", ["resp_port", "RINGKV_RESP_PORT", "notaport"]),
        ("RINGKV_MAX_CONNECTIONS=0", ["max_connections", ">= 1"]),
        ("RINGKV_FLUSH_ENABLED=maybe", ["flush_enabled", "true or false"]),
        ("toml: resp_prot = 7400", ["resp_prot", "unknown setting"]),
        ('toml: sync = "sometimes"', ["sync", "always, interval or never"]),
        ('toml: http_port = "eighty"', ["http_port", "eighty"]),
        ("toml: not toml at all", ["not valid TOML"]),
        ("--sync sometimes", ["--sync", "sometimes"]),
    ],
)
def test_bad_configuration_stops_start_up_with_exit_code_2(tmp_path, case, named):
    if case.startswith("RINGKV_"):
        name, value = case.split("=", 1)
        done = serve(tmp_path, env={name: value})
    elif case.startswith("toml: "):
        config = tmp_path / "ringkv.toml"
        config.write_text(case.removeprefix("toml: ") + "\n")
        done = serve(tmp_path, "--config", str(config))
    else:
        done = serve(tmp_path, *case.split())
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    for word in named:
        assert word in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "ready" not in done.stdout
