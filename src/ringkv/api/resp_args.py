"""What the RESP command handlers share: common replies, argument parsing, the error to raise
when an argument is wrong (answered as a ready-made reply)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ringkv.api.resp import error
from ringkv.errors import CommandError
from ringkv.service.numbers import parse_int

if TYPE_CHECKING:
    from ringkv.api.resp_server import RespConnection

OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
SYNTAX = error("ERR syntax error")
MAX_EXPIRE_MS = 1 << 62  # an expiry further out is refused, as Redis refuses overflows


class CommandReply(Exception):
    """Raised by argument parsing to answer with a ready-made error reply."""

    def __init__(self, reply: bytes):
        self.reply = reply


def int_arg(data: bytes) -> int:
    try:
        return parse_int(data)
    except CommandError:
        raise CommandReply(error("ERR value is not an integer or out of range")) from None


def expire_ms(c: RespConnection, seconds_or_ms: bytes, unit_ms: int, absolute: bool, command: str) -> int:
    """An expiry argument as absolute milliseconds on the node's clock."""
    n = int_arg(seconds_or_ms)
    if n <= 0:  # relative or absolute: 0 would mean "no expiry" downstream
        raise CommandReply(error(f"ERR invalid expire time in '{command}' command"))
    ms = n * unit_ms
    if ms > MAX_EXPIRE_MS:
        raise CommandReply(error(f"ERR invalid expire time in '{command}' command"))
    return ms if absolute else c.kv.now_ms() + ms


def text(data: bytes, limit: int = 128) -> str:
    """An argument as it may appear in an error message."""
    return data.decode("utf-8", "replace")[:limit]
