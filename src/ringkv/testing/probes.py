"""What tests ask a running node about its view of the cluster, over RESP."""

from __future__ import annotations

import json
from typing import Any


def nodes_down(r: Any) -> set[str]:
    """The nodes this node's failure detector holds down (`INFO ringkv` nodes_down)."""
    value = r.info("ringkv").get("nodes_down", "")
    # redis-py turns a comma-separated INFO value into a list
    names = value if isinstance(value, list) else str(value).split(",")
    return {str(n) for n in names} - {""}


def hears_everyone(r: Any) -> bool:
    """Whether this node's failure detector has heard every member: a node never heard from
    is never held down, so a test that kills one must wait for this first."""
    nodes = json.loads(r.execute_command("RINGKV.STATUS"))["nodes"]
    return all(n.get("detector") == "up" and n.get("heartbeat", 0) > 1 for n in nodes)
