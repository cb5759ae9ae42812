"""The test launcher: one process per node, whatever its callers do."""

from __future__ import annotations

import redis

from ringkv.testing.launcher import NodeProcess


def test_starting_a_running_node_again_keeps_its_one_process(tmp_path):
    # A chaos restart whose ready-wait timed out is retried; the retry must not start a
    # second process on the same data directory and ports.
    node = NodeProcess(tmp_path / "n1").start()
    try:
        pid = node.proc.pid
        redis.Redis(port=node.resp_port).set("k", "v")
        assert node.start() is node
        assert node.proc.pid == pid
        assert redis.Redis(port=node.resp_port).get("k") == b"v"
        node.kill()
        node.start()
        assert node.proc.pid != pid
        assert redis.Redis(port=node.resp_port).get("k") == b"v"
    finally:
        node.stop()
