"""Network namespaces for chaos runs (chaos/netns.py): nodes reach each other and the root
namespace through the bridge, a block cuts exactly the pair, and nothing is left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ringkv.chaos.netns import NetnsNetwork, unavailable
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
