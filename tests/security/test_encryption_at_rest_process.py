"""Encryption at rest on a real node, as an operator sets it up: `ringkv admin keys new` makes
the key file, the node is started with encryption_key_file, and nothing it writes to its data
directory holds a value or key in plaintext, whether the writes are still in the log (kill -9)
or flushed to tables (a clean stop). It restarts serving them; started without the key file it
refuses to start, naming the setting and the key id. A new key seals new files after a restart.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

from ringkv.storage.sealing import key_ids_in_use
from ringkv.testing.launcher import NodeProcess

pytestmark = pytest.mark.timeout(240)

MARK = b"SECRET-VALUE-do-not-store-in-clear-"
KEY_MARK = b"secret-key-name-"


def keys_cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "ringkv.cli", "admin", "keys", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def plaintext_hits(data_dir) -> list[str]:
    hits = []
    for root, _, names in os.walk(data_dir):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            if MARK in data or KEY_MARK in data:
                hits.append(os.path.join(root, name))
    return hits


def write(node: NodeProcess, start: int, n: int) -> None:
    client = redis.Redis(port=node.resp_port, socket_timeout=10)
    for i in range(start, start + n):
        assert client.set(KEY_MARK + b"%05d" % i, MARK + b"%05d" % i)


def check(node: NodeProcess, n: int) -> None:
    client = redis.Redis(port=node.resp_port, socket_timeout=10)
    for i in range(n):
        assert client.get(KEY_MARK + b"%05d" % i) == MARK + b"%05d" % i


def test_node_with_encryption_key_file_stores_no_plaintext_and_restarts_serving(tmp_path):
    key_file = tmp_path / "keys"
    keys_cli("new", "--file", str(key_file))
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    data_dir = tmp_path / "n1"
    node = NodeProcess(data_dir, encryption_key_file=key_file, sync="always")
    try:
        node.start()
        write(node, 0, 300)
        node.kill()  # the writes are only in the log
        assert plaintext_hits(data_dir) == []
        node.start()
        check(node, 300)
        write(node, 300, 300)
        assert node.stop() == 0  # a clean stop flushes the memtable to a table
        assert plaintext_hits(data_dir) == []
        assert any(p.endswith(".sst") for p in key_ids_in_use(str(data_dir)))
        assert set(key_ids_in_use(str(data_dir)).values()) == {1}

        # Without the key file the node does not start, and says what it needs.
        bare = NodeProcess(data_dir, sync="always", resp_port=node.resp_port, http_port=node.http_port,
                           rpc_port=node.rpc_port)
        bare.start(wait=False)
        assert bare.proc.wait(timeout=60) != 0
        assert "encryption_key_file" in bare.log_tail() and "key id 1" in bare.log_tail()

        # Rotation: a new key seals the files written after the restart; old ones still read.
        keys_cli("new", "--file", str(key_file))
        node.start()
        check(node, 600)
        write(node, 600, 100)
        assert node.stop() == 0
        assert 2 in set(key_ids_in_use(str(data_dir)).values())
        assert plaintext_hits(data_dir) == []
        out = keys_cli("reseal", "--data-dir", str(data_dir), "--file", str(key_file))
        assert "under key 2" in out
        assert set(key_ids_in_use(str(data_dir)).values()) == {2}
        node.start()
        check(node, 700)
    finally:
        node.kill()
