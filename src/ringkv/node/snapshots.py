"""Named snapshots of a node's data engine, under `<data_dir>/snapshots/NAME/`.

A snapshot is an engine checkpoint (storage/snapshot.py: hard links to the live tables, the
manifest, the logs' unflushed tail) in `NAME/engine/`, beside `NAME/SNAPSHOT.json` saying what
it is: the node, when, the HLC at that moment, what was linked and copied, and whether the
store is encrypted (a snapshot of an encrypted store stays encrypted and opens only with the
node's key file). `ringkv admin snapshot`, SAVE and BGSAVE make them; docs/backup.md, "Node
snapshots", says how to restore one.

Thread safety: `create` and `remove` block on file IO (the node runs them off its loop) and
are serialized by one lock; `list` reads the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

from ringkv.errors import AdminConflictError, AdminRequestError

SNAPSHOTS_DIR = "snapshots"
ENGINE_DIR = "engine"
INFO_NAME = "SNAPSHOT.json"
FORMAT_VERSION = 1
MAX_SNAPSHOTS_COUNT = 64  # kept at once on a node: each pins the tables compaction has replaced
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    if _NAME.fullmatch(name) is None:
        raise AdminRequestError(f"snapshot name {name!r}: 1 to 64 letters, digits, '.', '_' or '-', "
                                f"starting with a letter or digit")
    return name


class NodeSnapshots:
    def __init__(self, data_dir: str, engine, node_id: str, now_ms: Callable[[], int], hlc_now: Callable[[], int],
                 encrypted: bool, max_count: int = MAX_SNAPSHOTS_COUNT):
        self.root = os.path.join(os.path.abspath(data_dir), SNAPSHOTS_DIR)
        self.engine = engine
        self.node_id = node_id
        self.now_ms = now_ms
        self.hlc_now = hlc_now
        self.encrypted = encrypted
        self.max_count = max_count
        self._lock = threading.Lock()
        self.last_save_ms = 0  # LASTSAVE: the last snapshot made by this process, 0: none yet

    def default_name(self) -> str:
        ms = self.now_ms()
        return time.strftime("snap-%Y%m%d-%H%M%S", time.gmtime(ms / 1000)) + f"-{ms % 1000:03d}"

    def create(self, name: str | None = None, replace: bool = False) -> dict[str, Any]:
        """Make snapshot `name` (a timestamped one when None); with `replace`, an existing one of
        that name is removed first (SAVE keeps one). AdminConflictError when it exists or
        MAX_SNAPSHOTS_COUNT are kept."""
        name = check_name(name) if name else self.default_name()
        with self._lock:
            path = os.path.join(self.root, name)
            if os.path.exists(path):
                if not replace:
                    raise AdminConflictError(f"snapshot {name!r} already exists on {self.node_id}; remove it "
                                             f"first or choose another name")
            elif len(self._names()) >= self.max_count:
                raise AdminConflictError(f"{self.node_id} keeps {self.max_count} snapshots, the most it keeps "
                                         f"(max_snapshots_count); remove one first")
            tmp = os.path.join(self.root, f".{name}.new")
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            try:
                hlc = self.hlc_now()
                started = self.now_ms()
                report = self.engine.checkpoint(os.path.join(tmp, ENGINE_DIR))
                info = {"version": FORMAT_VERSION, "name": name, "node_id": self.node_id, "created_ms": started,
                        "hlc": hlc, "encrypted": self.encrypted, "engine": report}
                with open(os.path.join(tmp, INFO_NAME), "w") as f:
                    json.dump(info, f, indent=1, sort_keys=True)
                    f.flush()
                    os.fsync(f.fileno())
                if os.path.exists(path):
                    shutil.rmtree(path)
                os.rename(tmp, path)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self.last_save_ms = started
        return {**info, "path": path}

    def _names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root) if _NAME.fullmatch(n))
        except FileNotFoundError:
            return []

    def list(self) -> list[dict[str, Any]]:
        """Every snapshot kept, oldest first: SNAPSHOT.json's fields, `path` and `bytes` (the
        files' sizes; hard-linked tables share their space with the live store)."""
        out = []
        for name in self._names():
            path = os.path.join(self.root, name)
            try:
                with open(os.path.join(path, INFO_NAME)) as f:
                    info = json.load(f)
            except (OSError, ValueError) as exc:
                info = {"name": name, "error": f"{INFO_NAME} unreadable: {exc}"}
            size = 0
            for dirpath, _, files in os.walk(path):
                for file in files:
                    with contextlib.suppress(OSError):  # removed while we walked: not counted
                        size += os.path.getsize(os.path.join(dirpath, file))
            out.append({**info, "path": path, "bytes": size})
        out.sort(key=lambda d: (d.get("created_ms", 0), d["name"]))
        return out

    def remove(self, name: str) -> dict[str, Any]:
        check_name(name)
        with self._lock:
            path = os.path.join(self.root, name)
            if not os.path.isdir(path):
                raise AdminRequestError(f"no snapshot {name!r} on {self.node_id}")
            shutil.rmtree(path)
        return {"removed": name, "node_id": self.node_id}
