"""A running node's settings as CONFIG GET shows them and CONFIG SET changes them
(docs/configuration.md, "Changing settings at run time"; docs/redis-compat.md, "CONFIG,
FUNCTION and SCRIPT").

Names: every `NodeConfig` field by its configuration-file name (`max_connections`), values as
text as the file would write them (`true`/`false` for booleans), and the Redis names that
harnesses and clients ask for where ringkv has an equivalent (`REDIS_NAMES`): an alias of a
ringkv setting, possibly in Redis's unit or words (`timeout` is client_idle_timeout_ms in
seconds, `appendfsync` is `sync` in Redis's words), or a fixed answer saying what ringkv does
(`save` "": no RDB snapshots on a timer; `maxmemory` 0: the data lives on disk, not in a
memory budget). Secrets (`SECRET_SETTINGS`) are never answered, by any name.

Changes: only the settings in `LIVE_SETTINGS` change on a running node, each because its
reader reads it at every use (a new connection, an idle sweep, a KEYS call, a log record);
every other setting is read once at start, and a change is refused naming it. A change is
all-or-nothing, as Redis 7's CONFIG SET: every pair is converted and the whole configuration
they make is validated by `NodeConfig.validate` (the loader's rules, errors naming the field)
before any of it is applied. Changes are not written anywhere: a restart takes the
configuration file's values (CONFIG REWRITE is refused for that reason: the file is the
operator's).

Who applies a change: the node itself for its own readers (`keys_max_count`, `log_level`),
and every listener given to `watch` (the process, ringkv/server.py, updates the RESP and HTTP
servers' limits). Listeners run on the event loop, after the new values are in the config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ringkv.errors import AdminRequestError, ConfigError, ConfigSetError
from ringkv.node.config import FIELDS, NodeConfig, _convert
from ringkv.service.glob import GlobPattern

# The settings a running node takes, and where each takes effect.
LIVE_SETTINGS: dict[str, str] = {
    "max_connections": "RESP and HTTP: the next connection accepted (open ones stay)",
    "max_connections_per_ip": "RESP and HTTP: the next connection accepted (open ones stay)",
    "client_idle_timeout_ms": "RESP: the next idle sweep; HTTP: request bodies and keep-alive from now on",
    "http_header_timeout_ms": "HTTP: request heads started from now on",
    "max_inflight_commands": "RESP: every connection, at its next command",
    "max_output_buffer_bytes": "RESP: every connection, at its next write",
    "max_client_memory_bytes": "RESP: the next client-memory check",
    "keys_max_count": "KEYS: the next call",
    "log_level": "every log record from now on",
}

# One CONFIG GET matches every name against each pattern: the patterns are bounded so that one
# request cannot hold the event loop (Redis has no bound; no harness sends more than a few).
MAX_GET_PATTERNS = 256  # the most cost ~8 ms of matching

# Never answered by CONFIG GET: the cluster secret and the default user's bootstrap password.
# (Paths of key and password files are answered: the path is not the secret.)
SECRET_SETTINGS = frozenset({"cluster_secret", "requirepass"})


@dataclass(frozen=True)
class RedisName:
    """A Redis configuration name answered by ringkv: `show(config, settings)` gives its
    value. A live alias has the ringkv `setting` it changes and `parse(text)`, the Redis value
    as that setting's text; any other is read-only, `why` says so."""

    show: Callable[[NodeConfig, RuntimeSettings], str]
    setting: str | None = None
    parse: Callable[[str], str] | None = None
    why: str = ""
    fixed: bool = False  # what ringkv does, not a setting: CONFIG SET to this same value is a no-op


def _fixed(value: str, why: str) -> RedisName:
    return RedisName(lambda cfg, rt: value, why=why, fixed=True)


def _read_at_start(show: Callable[[NodeConfig, RuntimeSettings], str], setting: str) -> RedisName:
    return RedisName(show, why=f"it follows {setting}, which is read at start")


def _seconds_as_ms(text: str) -> str:
    """`timeout` in seconds (Redis's unit) as client_idle_timeout_ms."""
    try:
        seconds = int(text.strip())
    except ValueError:
        raise ConfigError("client_idle_timeout_ms", f"timeout is a whole number of seconds, got {text!r}") from None
    return str(seconds * 1000)


_APPENDFSYNC = {"always": "always", "interval": "everysec", "never": "no"}

REDIS_NAMES: dict[str, RedisName] = {
    "maxclients": RedisName(lambda cfg, rt: str(cfg.max_connections), "max_connections", str),
    "maxmemory-clients": RedisName(lambda cfg, rt: str(cfg.max_client_memory_bytes), "max_client_memory_bytes", str),
    "timeout": RedisName(lambda cfg, rt: str(cfg.client_idle_timeout_ms // 1000), "client_idle_timeout_ms",
                         _seconds_as_ms),
    "port": _read_at_start(lambda cfg, rt: str(rt.resp_port()), "resp_port"),
    "bind": _read_at_start(lambda cfg, rt: cfg.host, "host"),
    "dir": _read_at_start(lambda cfg, rt: cfg.data_dir, "data_dir"),
    "proto-max-bulk-len": _read_at_start(lambda cfg, rt: str(cfg.max_value_bytes), "max_value_bytes"),
    "client-query-buffer-limit": _read_at_start(lambda cfg, rt: str(cfg.max_query_buffer_bytes),
                                                "max_query_buffer_bytes"),
    "appendfsync": _read_at_start(lambda cfg, rt: _APPENDFSYNC[cfg.sync], "sync"),
    "protected-mode": _read_at_start(lambda cfg, rt: "yes" if cfg.protected_mode else "no", "protected_mode"),
    # Fixed answers: what ringkv does where Redis has a knob.
    "databases": _fixed("1", "one database; ringkv's namespaces are chosen with RINGKV.NAMESPACE"),
    "maxmemory": _fixed("0", "the data lives on disk, not in a memory budget (block_cache_bytes is the cache)"),
    "maxmemory-policy": _fixed("noeviction", "keys leave by DEL or expiry, never to make room"),
    "save": _fixed("", "no snapshot on a timer: the write-ahead log holds every write (SAVE still works)"),
    "appendonly": _fixed("no", "no AOF file: the write-ahead log is the durability (sync)"),
    "cluster-enabled": _fixed("no", "a ringkv cluster does not speak Redis Cluster's protocol"),
    "notify-keyspace-events": _fixed("", "ringkv sends no keyspace notifications"),
}


def _kind(name: str) -> str:
    return str(FIELDS[name].type)


def setting_text(config: NodeConfig, name: str) -> str:
    """A setting's value as the configuration file writes it."""
    value = getattr(config, name)
    if _kind(name) == "bool":
        return "true" if value else "false"
    return str(value)


class RuntimeSettings:
    """CONFIG GET and CONFIG SET over one node's live `NodeConfig` (see the module docstring).

    `resp_port()` gives the RESP port clients reach (the bound one when resp_port = 0 picked
    a free port; 0 when plain RESP is not served, as Redis's `port 0`)."""

    def __init__(self, config: NodeConfig, resp_port: Callable[[], int]):
        self.config = config
        self.resp_port = resp_port
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def watch(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call `listener(changed)` after each change, with the changed settings' new values
        (ringkv names)."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ CONFIG GET

    def get(self, patterns: Iterable[str]) -> dict[str, str]:
        """Every setting (ringkv and Redis names) matching any of the glob `patterns`, in any
        case, with its value as text; secrets never."""
        patterns = list(patterns)
        if len(patterns) > MAX_GET_PATTERNS:
            raise AdminRequestError(f"CONFIG GET takes at most {MAX_GET_PATTERNS} patterns (MAX_GET_PATTERNS), "
                                    f"got {len(patterns)}")
        globs = [GlobPattern(p.lower().encode("utf-8", "surrogateescape")) for p in patterns]
        config = self.config
        out: dict[str, str] = {}
        for name in FIELDS:
            if name not in SECRET_SETTINGS and any(g.matches(name.encode()) for g in globs):
                out[name] = setting_text(config, name)
        for name, redis in REDIS_NAMES.items():
            if any(g.matches(name.encode()) for g in globs):
                out[name] = redis.show(config, self)
        return dict(sorted(out.items()))

    # ------------------------------------------------------------------ CONFIG SET

    def set(self, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        """Change every pair or none (ConfigSetError naming the first argument refused);
        the changed settings and their new values."""
        changes: dict[str, Any] = {}
        named: dict[str, str] = {}  # ringkv setting -> the argument that named it
        seen: set[str] = set()
        for argument, text in pairs:
            key = argument.lower()
            if key in seen:
                raise ConfigSetError(argument, "duplicate parameter")
            seen.add(key)
            setting, raw = self._setting_of(argument, key, text)
            if setting is None:
                continue  # a fixed Redis answer set to what it already is
            if setting in named:
                raise ConfigSetError(argument, f"duplicate parameter (sets {setting}, as {named[setting]!r} does)")
            try:
                changes[setting] = _convert(setting, raw, f"CONFIG SET {argument}")
            except ConfigError as exc:
                raise ConfigSetError(argument, str(exc)) from None
            named[setting] = argument
        if not changes:
            return {}
        candidate = dataclasses.replace(self.config, **changes)
        try:
            candidate.validate()
        except ConfigError as exc:
            raise ConfigSetError(named.get(exc.field, exc.field), str(exc)) from None
        for name, value in changes.items():
            setattr(self.config, name, value)
        for listener in self._listeners:
            listener(dict(changes))
        return changes

    def _setting_of(self, argument: str, key: str, text: str) -> tuple[str | None, str]:
        """The ringkv setting a CONFIG SET argument changes and the value as that setting's
        text; (None, "") for a fixed Redis answer given its own value."""
        redis = REDIS_NAMES.get(key)
        if redis is not None:
            if redis.parse is None or redis.setting is None:
                shown = redis.show(self.config, self)
                if redis.fixed and text.lower() == shown:
                    return None, ""  # a fixed answer set to itself: a harness's set-up, nothing to do
                raise ConfigSetError(argument, f"can't set immutable config (ringkv answers {key} {shown!r}: "
                                               f"{redis.why})")
            try:
                return redis.setting, redis.parse(text)
            except ConfigError as exc:
                raise ConfigSetError(argument, str(exc)) from None
        if key not in FIELDS:
            raise ConfigSetError(argument, "unknown", unknown=True)
        if key not in LIVE_SETTINGS:
            raise ConfigSetError(argument, f"can't set immutable config ({key} is read at start: change it in the "
                                           "node's configuration and restart it)")
        return key, text
