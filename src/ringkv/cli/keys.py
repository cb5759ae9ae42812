"""`ringkv admin keys`: the key file of encryption at rest (storage/sealing.py, docs/security.md).

    keys new --file F            add a random key under the next id (it seals new files after
                                 the node's next restart); makes F, mode 0600, if missing
    keys list --file F           the ids, which one is current, and a fingerprint of each key
    keys status --data-dir D     which key id sealed each WAL and table under D (no key needed)
    keys reseal --data-dir D --file F [--config C]
                                 with the node stopped: rewrite every table of every engine
                                 under D not sealed with F's current key, so older ids can go;
                                 C, the node's configuration, opens the data engine with its
                                 column families and compaction strategies (required when it
                                 has families)

Exit 0 on success, 2 when an argument or the key file is wrong, 1 when `reseal` could not
open an engine (a running node holds its lock). Keys are never printed.
"""

from __future__ import annotations

import os

import click

from ringkv.cli.exit_codes import EXIT_NO, EXIT_USAGE

ENGINE_DIRS = ("engine", "hints", "batchlog", "paxos")  # the engines a node keeps in data_dir


def _fail(exc) -> None:
    click.echo(f"ringkv admin keys: {exc}", err=True)
    raise SystemExit(EXIT_USAGE)


@click.group("keys")
def keys_group() -> None:
    """Encryption-at-rest keys: make one, list them, see which files use which, reseal."""


@keys_group.command("new")
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False),
              help="The key file (the node's encryption_key_file).")
def new_command(path: str) -> None:
    """Add a new random AES-256 key under the next id; it becomes the current key."""
    from ringkv.errors import ConfigError
    from ringkv.storage import sealing

    try:
        if os.path.exists(path):
            ring = sealing.load_key_file(path).with_new_key()
        else:
            ring = sealing.KeyRing({1: os.urandom(sealing.KEY_BYTES)}, f"{sealing.SETTING} {path}")
        sealing.write_key_file(path, ring)
    except (ConfigError, OSError) as exc:
        _fail(exc)
    click.echo(f"key {ring.current_id} (fingerprint {ring.fingerprint(ring.current_id)}) added to {path}; it "
               f"seals new files from the node's next restart. Keep every older id until `ringkv admin keys "
               f"status` shows no file using it.")


@keys_group.command("list")
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False), help="The key file.")
def list_command(path: str) -> None:
    """The key ids in the file, the current one marked, each with a fingerprint (not the key)."""
    from ringkv.errors import ConfigError
    from ringkv.storage import sealing

    try:
        ring = sealing.load_key_file(path)
    except ConfigError as exc:
        _fail(exc)
    for key_id in ring.ids():
        mark = "  (current: seals new files)" if key_id == ring.current_id else ""
        click.echo(f"{key_id}  {ring.fingerprint(key_id)}{mark}")


@keys_group.command("status")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="A node's data directory (or one engine's).")
def status_command(data_dir: str) -> None:
    """How many WAL and table files each key id sealed (`none`: not sealed)."""
    from ringkv.errors import CorruptionError
    from ringkv.storage import sealing

    try:
        used = sealing.key_ids_in_use(data_dir)
    except CorruptionError as exc:
        _fail(exc)
    counts: dict[str, int] = {}
    for key_id in used.values():
        name = "none" if key_id is None else str(key_id)
        counts[name] = counts.get(name, 0) + 1
    if not counts:
        click.echo(f"no WAL or table files under {data_dir}")
    for name in sorted(counts, key=lambda n: (n != "none", int(n) if n.isdigit() else 0)):
        click.echo(f"key {name}: {counts[name]} files")


@keys_group.command("reseal")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="A stopped node's data directory.")
@click.option("--file", "path", required=True, type=click.Path(dir_okay=False),
              help="The key file, holding every key id in use and the new current key.")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False, exists=True),
              help="The node's configuration (TOML, as `ringkv serve --config`; RINGKV_* variables "
                   "apply): its namespaces' compaction strategies. Required when the data engine "
                   "has column families.")
def reseal_command(data_dir: str, path: str, config_path: str | None) -> None:
    """Rewrite every table not sealed with the current key (the node must be stopped: its
    engines are opened here). WAL files are replayed into tables under the current key."""
    from ringkv.errors import ConfigError, RingkvError
    from ringkv.storage import Engine, sealing

    try:
        ring = sealing.load_key_file(path)
        data_options = _data_engine_options(config_path, data_dir, ring)
    except ConfigError as exc:
        _fail(exc)
    engines = [os.path.join(data_dir, n) for n in ENGINE_DIRS if os.path.isdir(os.path.join(data_dir, n))]
    if not engines and os.path.exists(os.path.join(data_dir, "MANIFEST")):
        engines = [data_dir]  # one engine's directory
    if not engines:
        _fail(f"--data-dir {data_dir} holds no engine (none of {', '.join(ENGINE_DIRS)}, no MANIFEST)")
    for engine_dir in engines:
        try:
            with Engine.open(engine_dir, _options_for(engine_dir, data_dir, data_options, ring)) as db:
                n = db.reseal()
        except ConfigError as exc:
            _fail(exc)
        except RingkvError as exc:
            click.echo(f"ringkv admin keys reseal: {engine_dir}: {exc}", err=True)
            raise SystemExit(EXIT_NO) from None
        click.echo(f"{engine_dir}: {n} tables rewritten under key {ring.current_id}")


def _data_engine_options(config_path: str | None, data_dir: str, ring):
    """The data engine's options as the node opens it (its families, their strategies and
    router), from the node's configuration; None without one."""
    if config_path is None:
        return None
    from ringkv.clock import Clock
    from ringkv.node.assembly import data_engine_options
    from ringkv.node.config import load_config

    cfg = load_config(config_path, overrides={"data_dir": data_dir})
    # No compaction filter: reseal rewrites, it does not expire records (the node does).
    return data_engine_options(cfg, Clock(), None, ring)


def _options_for(engine_dir: str, data_dir: str, data_options, ring):
    """The options to open `engine_dir` with: the node's for its data engine. Without them a
    data engine with column families is refused: opened with one family, every table would be
    merged back into it (and re-routed again at the node's next start, its time windows lost)."""
    from ringkv.errors import ConfigError
    from ringkv.storage import Options, manifest
    from ringkv.storage.fs import PosixFileSystem

    if engine_dir not in (os.path.join(data_dir, "engine"), data_dir):
        return Options(encryption_keys=ring)  # hints, batch log, paxos: one family each
    if data_options is not None:
        return data_options
    state = manifest.read(PosixFileSystem(), engine_dir, keys=ring)
    if state is not None and (state.families or state.routing is not None):
        raise ConfigError("config", f"{engine_dir} has column families ({', '.join(['default', *state.families])}): "
                                    "give --config with the node's configuration, so that reseal opens it with "
                                    "their compaction strategies")
    return Options(encryption_keys=ring)
