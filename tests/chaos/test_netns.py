"""Network namespaces for chaos runs (chaos/netns.py): nodes reach each other and the root
namespace through the bridge, a block cuts exactly the pair, traffic between groups (the
datacenters of `cluster up --netns`) takes a path of its own, and nothing is left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ringkv.chaos.netns import NetnsError, NetnsNetwork, netem_available, unavailable
from ringkv.testing.wait import wait_until

MISSING = unavailable()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=f"network namespaces: {MISSING}"),
              pytest.mark.timeout(60)]

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5000)); s.listen()
while True:
    c, _ = s.accept(); c.sendall(b"hi"); c.close()
"""
PROBE = "import socket, sys; s = socket.create_connection((sys.argv[1], 5000), timeout=1); print(s.recv(2).decode())"


def _reaches(prefix: list[str], address: str) -> bool:
    out = subprocess.run([*prefix, sys.executable, "-c", PROBE, address], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() == "hi"


def test_nodes_reach_each_other_until_blocked_and_everything_is_removed():
    net = NetnsNetwork(["a", "b", "c"], tag=9871).up()
    server = None
    try:
        b = net.address("b")
        server = subprocess.Popen([*net.exec_prefix("b"), sys.executable, "-c", SERVER, b])
        # From the root namespace, as the chaos clients are.
        wait_until(lambda: _reaches([], b), 30, "the server in b to answer", interval_s=0.2)
        assert _reaches(net.exec_prefix("a"), b) and _reaches(net.exec_prefix("c"), b)
        net.block("a", ["b"])
        assert not _reaches(net.exec_prefix("a"), b)
        assert _reaches(net.exec_prefix("c"), b) and _reaches([], b)  # only the pair is cut
        net.block("a", [])  # a block replaces the one before
        assert _reaches(net.exec_prefix("a"), b)
        net.slow("b", 64)
        net.lossy("b", 0.2)
        net.restore("b")
        assert _reaches(net.exec_prefix("a"), b)
        with pytest.raises(ValueError, match="loss must be between 0 and 1"):
            net.lossy("b", 1.5)
    finally:
        net.down()
        if server is not None:
            server.kill()
            server.wait()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "rkv9871" not in listed
    links = subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert "rkv9871" not in links


BULK_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen()
while True:
    c, _ = s.accept()
    try:
        c.sendall(b"x" * int(sys.argv[2]))
    except OSError:
        pass  # a probe that only connects
    c.close()
"""
BULK_PROBE = """
import socket, sys, time
started = time.monotonic()
s = socket.create_connection((sys.argv[1], 5001), timeout=10)
got = 0
while chunk := s.recv(65536):
    got += len(chunk)
assert got == int(sys.argv[2]), got
print(time.monotonic() - started)
"""
CONNECT_PROBE = """
import socket, sys, time
started = time.monotonic(); socket.create_connection((sys.argv[1], 5000), timeout=5).close()
print(time.monotonic() - started)
"""
BULK_BYTES = 128 * 1024  # 1 Mbit: 2 s through a 512 kbit/s leaf, milliseconds past it


def _download_s(prefix: list[str], address: str) -> float:
    out = subprocess.run([*prefix, sys.executable, "-c", BULK_PROBE, address, str(BULK_BYTES)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return float(out.stdout)


def test_traffic_between_groups_takes_the_shaped_path_and_the_rest_does_not():
    # dc1 = {a}, dc2 = {b, c}: what b sends to a goes through the leaf; what it sends to c (its
    # own group) and to the root namespace (a client) does not. tbf stands in for netem here.
    net = NetnsNetwork(["a", "b", "c"], tag=9872, namespace_names={"a": "rkv9872-dc1-a"},
                       slots={"a": 7, "b": 8, "c": 9}).up()
    server = None
    try:
        assert net.namespace("a") == "rkv9872-dc1-a" and net.address("a").endswith(".17")
        assert sorted(net.in_use()) == sorted(
            ["bridge rkv9872br", "veth rkv9872h0", "veth rkv9872h1", "veth rkv9872h2",
             "namespace rkv9872-dc1-a", "namespace rkv9872n1", "namespace rkv9872n2",
             f"subnet {net.subnet}.0/24 (on rkv9872br)"])
        b = net.address("b")
        server = subprocess.Popen([*net.exec_prefix("b"), sys.executable, "-c", BULK_SERVER, b, str(BULK_BYTES)])
        wait_until(lambda: subprocess.run([sys.executable, "-c", "import socket, sys; socket.create_connection("
                                           "(sys.argv[1], 5001), timeout=1).close()", b],
                                          capture_output=True).returncode == 0, 30, "the bulk server in b")
        net.shape_between({"a": "dc1", "b": "dc2", "c": "dc2"},
                          ["tbf", "rate", "512kbit", "burst", "4kb", "latency", "5000ms"])
        assert _download_s(net.exec_prefix("a"), b) >= 1.0  # across the groups: the leaf's rate
        assert _download_s(net.exec_prefix("c"), b) < 0.5  # within dc2
        assert _download_s([], b) < 0.5  # a client in the root namespace
        with pytest.raises(ValueError, match="groups must name each node once"):
            net.shape_between({"a": "dc1"}, ["pfifo"])
    finally:
        net.down()
        if server is not None:
            server.kill()
            server.wait()
    assert NetnsNetwork(["a"], tag=9872).in_use() == []  # everything went


def test_delay_between_delays_round_trips_between_groups_where_the_kernel_has_netem():
    net = NetnsNetwork(["a", "b"], tag=9873).up()
    server = None
    try:
        if not netem_available():
            # This project's machines: the kernel says so, and `cluster up --netns` falls back.
            with pytest.raises(NetnsError, match="Specified qdisc kind is unknown"):
                net.delay_between({"a": "dc1", "b": "dc2"}, 40)
            return
        b = net.address("b")
        server = subprocess.Popen([*net.exec_prefix("b"), sys.executable, "-c", SERVER, b])
        wait_until(lambda: _reaches([], b), 30, "the server in b to answer", interval_s=0.2)
        net.delay_between({"a": "dc1", "b": "dc2"}, 40)
        out = subprocess.run([*net.exec_prefix("a"), sys.executable, "-c", CONNECT_PROBE, b],
                             capture_output=True, text=True, timeout=30)
        assert float(out.stdout) >= 0.08, out  # SYN and SYN-ACK, 40 ms each
        assert _reaches([], b)  # a client in the root namespace, undelayed
    finally:
        net.down()
        if server is not None:
            server.kill()
            server.wait()
