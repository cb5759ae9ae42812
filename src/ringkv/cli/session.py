"""Talking to a node from a command: the options every such command shares (`--host`,
repeatable or comma-separated for seeds to fail over to, `--port`, `--timeout-ms`, `--json`, TLS: `--tls`, `--cacert`, `--cert`, `--key`,
`--insecure`, as redis-cli's, and credentials: `--user` and `--pass`, or `--url
ringkv://user:password@host:port`; environment RINGKV_USER, RINGKV_PASSWORD, RINGKV_URL), the
`NodeSession` it is given, and the exit codes of failures, in one place. A password on the
command line is visible to other users of the machine (ps): prefer RINGKV_PASSWORD.

    @click.command("get")
    @click.argument("key")
    @node_command
    def get_command(session: NodeSession, key: str) -> int:
        ...                                  # returns its exit code (0 or 1)

Contract of a `node_command`: it gets a NodeSession whose client is closed when it returns; a
node that cannot be reached (or does not answer within --timeout-ms) exits 3, a node that
answers with an error (a refused password or permission included) exits 4, and with --json that error is the one JSON document printed.
`fetch_json` runs a ringkv command that answers one JSON document (RINGKV.STATUS and friends)
under the same rules.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from rich.console import Console

from ringkv.cli.exit_codes import EXIT_SERVER_ERROR, EXIT_UNREACHABLE


class NodeSession:
    """What a data command needs: a client of the node and a way to print results and errors."""

    def __init__(self, host: str, port: int, timeout_ms: int, as_json: bool, username: str | None = None,
                 password: str | None = None, seeds: tuple[tuple[str, int], ...] = (), **tls: Any):
        """`tls`: the client's TLS arguments (tls, ca_file, cert_file, key_file, tls_verify).
        `seeds`: more nodes to try, in order, when one refuses the connection."""
        from ringkv.client import Client

        self.as_json = as_json
        self.client = Client(host, port, timeout_ms=timeout_ms, connect_timeout_ms=timeout_ms, username=username,
                             password=password, seeds=seeds, **tls)
        self.out = Console(highlight=False, emoji=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)

    def emit(self, doc: Any) -> None:
        """The one JSON document of a --json run."""
        sys.stdout.buffer.write(json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n")
        sys.stdout.flush()

    def say(self, text: str) -> None:
        self.out.print(text, markup=False)

    def note(self, text: str) -> None:
        """A remark for the person at the terminal, kept off stdout so pipes get data only."""
        self.err.print(text, style="dim", markup=False)

    def fail(self, code: int, kind: str, message: str) -> NoReturn:
        if self.as_json:
            self.emit({"error": {"kind": kind, "message": message}})
        else:
            self.err.print(f"ringkv: {message}", style="red", markup=False)
        raise SystemExit(code)


def node_command(func: Callable[..., int | None]) -> Callable[..., None]:
    """Give a data command the shared options, a NodeSession, and the exit codes of errors."""

    @functools.wraps(func)
    def command(host: tuple[str, ...], port: int, timeout_ms: int, as_json: bool, tls: bool, tls_ca: str | None,
                tls_cert: str | None, tls_key: str | None, tls_insecure: bool, user: str | None,
                password: str | None, url: str | None, **kwargs: Any) -> None:
        from ringkv.client import (
            AuthenticationFailedError,
            ConnectionFailedError,
            RequestTimeoutError,
            ResultUnknownError,
            ServerError,
        )
        from ringkv.client.options import parse_address, parse_url
        from ringkv.errors import ConfigError

        try:
            # --host h1 --host h2:7380, or --host h1,h2:7380 (RINGKV_HOST="h1 h2"): the first is
            # the node, the others seeds tried in order when one refuses (ringkv.client.options).
            addresses = [parse_address(a, port) for h in (host or ("127.0.0.1",)) for a in h.split(",") if a.strip()]
            if not addresses:
                raise ConfigError("host", "is empty: give host[:port]")
            (first_host, first_port), seeds = addresses[0], tuple(addresses[1:])
            if url:  # its host, port and credentials; --user / --pass win over the URL's
                first_host, first_port, url_user, url_password = parse_url(url)
                if user is None and password is None:
                    user, password = url_user, url_password
            session = NodeSession(first_host, first_port, timeout_ms, as_json, username=user or None,
                                  password=password or None, seeds=seeds,
                                  tls=tls or bool(tls_ca or tls_cert), ca_file=tls_ca, cert_file=tls_cert,
                                  key_file=tls_key, tls_verify=not tls_insecure)
        except ConfigError as exc:
            flag = {"ca_file": "cacert", "cert_file": "cert", "key_file": "key", "username": "user",
                    "password": "pass", "seeds": "host"}.get(exc.field, exc.field)
            raise click.BadParameter(str(exc).split(": ", 1)[1], param_hint=f"--{flag}") from None
        try:
            code = func(session, **kwargs)
        except (ConnectionFailedError, RequestTimeoutError, ResultUnknownError) as exc:
            session.fail(EXIT_UNREACHABLE, "unreachable", str(exc))
        except AuthenticationFailedError as exc:
            session.fail(EXIT_SERVER_ERROR, "authentication_failed", str(exc))
        except ServerError as exc:
            session.fail(EXIT_SERVER_ERROR, "server_error", str(exc))
        finally:
            session.client.close()
        if code:
            raise SystemExit(code)

    options = [
        click.option("--host", envvar="RINGKV_HOST", show_envvar=True, multiple=True, default=["127.0.0.1"],
                     show_default=True, metavar="HOST[:PORT]",
                     help="Node address; repeat it (or separate with commas) to give seeds tried in turn "
                          "when one refuses the connection."),
        click.option("--port", envvar="RINGKV_PORT", show_envvar=True, default=7379,
                     show_default=True, type=click.IntRange(1, 65535),
                     help="Node's Redis-protocol port."),
        click.option("--timeout-ms", default=1000, show_default=True, type=click.IntRange(1, 3_600_000),
                     help="Give up on a request (and on connecting) after this long."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print one JSON document on stdout (non-UTF-8 bytes as {\"base64\": ...})."),
        click.option("--tls", is_flag=True, envvar="RINGKV_TLS", show_envvar=True,
                     help="Connect with TLS (to the node's tls_port); implied by --cacert and --cert."),
        click.option("--cacert", "tls_ca", envvar="RINGKV_TLS_CA", show_envvar=True, type=click.Path(dir_okay=False),
                     help="CA certificate (PEM) to verify the node with [the system's CAs]."),
        click.option("--cert", "tls_cert", envvar="RINGKV_TLS_CERT", show_envvar=True, type=click.Path(dir_okay=False),
                     help="Client certificate (PEM), for a node with tls_client_auth."),
        click.option("--key", "tls_key", envvar="RINGKV_TLS_KEY", show_envvar=True, type=click.Path(dir_okay=False),
                     help="The client certificate's private key (PEM)."),
        click.option("--insecure", "tls_insecure", is_flag=True, envvar="RINGKV_TLS_INSECURE", show_envvar=True,
                     help="Do not verify the node's certificate (tests only)."),
        click.option("--user", envvar="RINGKV_USER", show_envvar=True, default=None,
                     help="User to authenticate as (with --pass); without it, --pass is the default user's."),
        click.option("--pass", "password", envvar="RINGKV_PASSWORD", show_envvar=True, default=None,
                     help="Password (prefer the environment variable: a flag is visible in ps)."),
        click.option("--url", envvar="RINGKV_URL", show_envvar=True, default=None,
                     help="ringkv://[user:password@]host[:port], instead of --host, --port, --user, --pass."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def fetch_status(session: NodeSession) -> dict[str, Any]:
    """RINGKV.STATUS of the session's node."""
    return fetch_json(session, "RINGKV.STATUS",
                      lambda d: isinstance(d.get("nodes"), list))


def fetch_json(session: NodeSession, command: str, check,
               addresses: list[tuple[str, int]] | None = None, quiet: bool = False) -> dict[str, Any] | None:
    """A ringkv command answering one JSON document (the client has no method for these: one
    raw command over redis-py, with the client's connection settings and no retries), asked
    of the session's node and seeds in turn, or of `addresses` in turn. A failure ends the
    command with its exit code, or with `quiet` is None (the caller reports it)."""
    import redis
    import redis.backoff
    import redis.exceptions
    import redis.retry

    from ringkv.client.base import connection_class, pool_kwargs

    options = session.client.options
    addresses = addresses or options.addresses
    for i, (host, port) in enumerate(addresses):  # the seeds in turn while connecting fails
        options = dataclasses.replace(options, host=host, port=port)
        address = options.address
        pool = redis.BlockingConnectionPool(
            connection_class=connection_class(options),
            **pool_kwargs(options, redis.retry.Retry(redis.backoff.NoBackoff(), 0)))
        try:
            reply = redis.Redis(connection_pool=pool).execute_command(command)
            break
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                redis.exceptions.ResponseError) as exc:
            if i + 1 < len(addresses) and _not_connected(exc):
                session.note(f"{command}: could not connect to {address} ({exc}); trying {addresses[i + 1][0]}:"
                             f"{addresses[i + 1][1]}")
                continue
            if quiet:
                return None
            _fetch_failed(session, command, address, options.timeout_ms, exc)
        finally:
            pool.disconnect()
    try:
        doc = json.loads(reply)
        if not isinstance(doc, dict) or not check(doc):
            raise ValueError("not the expected document")
    except ValueError as exc:
        if quiet:
            return None
        session.fail(EXIT_SERVER_ERROR, "server_error",
                     f"{command} at {address}: unexpected reply {str(reply)[:200]!r} ({exc})")
    return doc


def _not_connected(exc: BaseException) -> bool:
    """A connect that failed (refused, unreachable, timed out): the command was not sent."""
    import redis.exceptions

    return (isinstance(exc, redis.exceptions.ConnectionError)
            and not isinstance(exc, redis.exceptions.AuthenticationError) and "connecting to" in str(exc))


def _fetch_failed(session: NodeSession, command: str, address: str, timeout_ms: float, exc: BaseException) -> NoReturn:
    import redis.exceptions

    if isinstance(exc, redis.exceptions.AuthenticationError):  # a ConnectionError to redis-py, but an answer
        session.fail(EXIT_SERVER_ERROR, "authentication_failed", f"{command}: {address} refused the credentials: {exc}")
    if isinstance(exc, redis.exceptions.TimeoutError):
        session.fail(EXIT_UNREACHABLE, "unreachable", f"{command}: no answer from {address} within {timeout_ms:g} ms ({exc})")
    if isinstance(exc, redis.exceptions.ConnectionError):
        session.fail(EXIT_UNREACHABLE, "unreachable", f"{command}: could not reach {address}: {exc}")
    session.fail(EXIT_SERVER_ERROR, "server_error", f"{command} at {address}: {exc}")
