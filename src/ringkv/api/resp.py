"""RESP wire codec: request bytes in, commands out; reply values in, reply bytes out.

This module implements docs/formats/resp.md. It is pure: no sockets, no asyncio, no clock. The
Redis-protocol server (an asyncio.Protocol) feeds `RequestParser.feed` from `data_received` and
writes the bytes made by the functions and `ReplyEncoder`s below.

Contract of the request side:

- `RequestParser.feed(data)` returns every command completed by `data`, in arrival order, each as a
  list of `bytes` arguments (never empty). Requests are either RESP arrays of bulk strings (what
  every client library, redis-cli and redis-benchmark send) or inline commands (a text line, as
  typed in telnet), told apart by the first byte of each request exactly as Redis does: `*` starts
  an array, anything else a line.
- Input that Redis would refuse raises `ProtocolError`, with Redis's message where Redis has one.
  Commands completed before the bad bytes are in `ProtocolError.commands`: the server runs them,
  replies `-ERR <message>` and closes the connection. The parser stays failed afterwards.
- Every limit is a constructor argument and is checked as soon as the header that announces a size
  arrives, before the bytes it announces are buffered.

Theory of operation (why two parsers): hiredis parses RESP in C, about six times faster than the
best pure-Python loop, but it parses *replies*: it accepts element types that Redis refuses in a
request, it preallocates the list that an array header announces, and it cannot report sizes
before it has the data. So each chunk that starts a request with `*` goes to hiredis only after a
cheap pre-check (no array header with enough digits to exceed `max_args`), and its result is
accepted only when cheap whole-chunk checks prove it is exactly what the reference parser below
would return (see `_hiredis_prefix`). Anything else — inline commands, an incomplete last
request, odd input, errors — goes to the pure-Python parser, a transcription of Redis's
processMultibulkBuffer / processInlineBuffer / sdssplitargs, which is the behaviour of record.
Tests check that both paths agree on arbitrary input.

The reply side: module functions for the replies that RESP2 and RESP3 write the same way
(`simple`, `error`, `integer`, `bulk`), and `ReplyEncoder` (the `RESP2` and `RESP3` instances) for
those that differ (null, map, set, double, boolean, verbatim) and for nested values.

Measured on the development machine (CPython 3.11, hiredis 3.5, 2 cores shared with other
jobs, so take them as upper bounds), per command, with the pure-Python path in brackets:
  - parse of `SET key value` fed alone (one feed() per request): 1.6 us [3.5 us];
    16 per feed (redis-benchmark -P 16): 0.6 us [2.9 us]; 1000 per feed: 0.26 us [3.0 us];
    a long pipeline in 64 KiB chunks cut mid-request: 0.41 us [3.1 us].
  - encode of a 100-byte bulk string with `bulk()`: 0.13 us; `integer(5)`: 0.07 us.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Any

import hiredis

from ringkv.errors import ConfigError, RingkvError
from ringkv.service.datatypes.base import double_text

__all__ = [
    "EMPTY_ARRAY",
    "OK",
    "PONG",
    "QUEUED",
    "RESP2",
    "RESP3",
    "ErrorReply",
    "ProtocolError",
    "ReplyEncoder",
    "RequestParser",
    "SimpleString",
    "Verbatim",
    "bulk",
    "encoder_for",
    "error",
    "integer",
    "simple",
    "split_inline",
]

# ---------------------------------------------------------------------------------------------
# Limits (docs/formats/resp.md, "Limits").

DEFAULT_MAX_BULK_BYTES = 512 * 1024 * 1024  # Redis's proto-max-bulk-len default
DEFAULT_MAX_ARGS = 1024 * 1024  # Redis 6's cap on a multibulk count
DEFAULT_MAX_INLINE_BYTES = 64 * 1024  # Redis's PROTO_INLINE_MAX_SIZE
DEFAULT_MAX_BUFFER_BYTES = 1024 * 1024 * 1024  # Redis's client-query-buffer-limit default

_INT_MAX = 2**31 - 1  # Redis refuses a multibulk count above INT_MAX whatever the config
_LLONG_MAX = 2**63 - 1
_LLONG_MIN = -(2**63)
_LONG_STR_SIZE = 21  # Redis's string2ll refuses numbers written with 21 or more characters


class ProtocolError(RingkvError, ValueError):
    """The client broke the protocol; the message is what follows `-ERR ` in the reply.

    `commands` holds the commands completed, in order, before the bad bytes in the same feed();
    Redis executes those before it replies with the error and closes the connection.
    """

    def __init__(self, message: str, commands: list[list[bytes]] | None = None):
        super().__init__(message)
        self.commands: list[list[bytes]] = commands if commands is not None else []


def _string_to_ll(text: bytes | bytearray) -> int | None:
    """Redis's string2ll: optional '-', no leading zeros or '+' or spaces, fits in 64 bits."""
    size = len(text)
    if size == 0 or size >= _LONG_STR_SIZE:
        return None
    # bytes.isdigit() is true for ASCII digits only, and int() then never sees '_' or spaces.
    if text.isdigit():
        if text[0] == 48 and size > 1:
            return None
        value = int(text)
        return value if value <= _LLONG_MAX else None
    if text[0] == 45 and size > 1:
        digits = text[1:]
        if digits.isdigit() and digits[0] != 48:
            value = -int(digits)
            return value if value >= _LLONG_MIN else None
    return None


# ---------------------------------------------------------------------------------------------
# Inline commands: Redis's sdssplitargs.

_C_SPACE = frozenset(b" \t\n\v\f\r")  # C isspace() in the "C" locale
_TOKEN_END = frozenset(b" \n\r\t")  # what ends an unquoted token (sdssplitargs' switch)
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
# Without quotes, \v or \f, sdssplitargs splits exactly like bytes.split(), which runs in C.
_NEEDS_FULL_SPLIT = re.compile(rb"[\"'\x0b\x0c]")
_UNBALANCED_QUOTES = "Protocol error: unbalanced quotes in request"


def split_inline(line: bytes) -> list[bytes]:
    """Split one inline request line (without its line ending) the way redis-server does.

    Tokens are separated by spaces and tabs; "double quotes" take the escapes \\n \\r \\t \\b \\a
    \\xHH and \\<any>; 'single quotes' take only \\'. A closing quote must be followed by a space
    or the end of the line. A NUL byte ends the line, as it ends the C string Redis splits.
    Raises ProtocolError("Protocol error: unbalanced quotes in request").
    """
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    if _NEEDS_FULL_SPLIT.search(line) is None:
        return line.split()
    args: list[bytes] = []
    size = len(line)
    i = 0
    while True:
        while i < size and line[i] in _C_SPACE:
            i += 1
        if i >= size:
            return args
        token = bytearray()
        quote = 0  # 0 outside quotes, else the quote byte
        done = False
        while not done:
            # Reading past the end gives 0, as reading the C string's terminator does.
            c = line[i] if i < size else 0
            following = line[i + 1] if i + 1 < size else 0
            if quote == 34:
                if (
                    c == 92
                    and following == 120
                    and i + 3 < size
                    and line[i + 2] in _HEX_DIGITS
                    and line[i + 3] in _HEX_DIGITS
                ):
                    token.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 92 and following:
                    i += 1
                    token.append(_ESCAPES.get(following, following))
                elif c == 34:
                    if following and following not in _C_SPACE:
                        raise ProtocolError(_UNBALANCED_QUOTES)
                    done = True
                elif not c:
                    raise ProtocolError(_UNBALANCED_QUOTES)
                else:
                    token.append(c)
            elif quote == 39:
                if c == 92 and following == 39:
                    i += 1
                    token.append(39)
                elif c == 39:
                    if following and following not in _C_SPACE:
                        raise ProtocolError(_UNBALANCED_QUOTES)
                    done = True
                elif not c:
                    raise ProtocolError(_UNBALANCED_QUOTES)
                else:
                    token.append(c)
            elif not c or c in _TOKEN_END:
                done = True
            elif c == 34 or c == 39:
                quote = c
            else:
                token.append(c)
            if i < size:
                i += 1
        args.append(bytes(token))


# ---------------------------------------------------------------------------------------------
# Requests.

# hiredis's "no complete reply yet" marker; its default, False, is also what RESP3 `#f` parses to.
_INCOMPLETE = object()

# Type bytes that hiredis turns into bytes or list values, like `$` and `*`, but that Redis refuses
# in a request: simple string, verbatim, big number, set, attribute, push, map.
_LOOKALIKE_TYPES = b"+=(~|>%"
_KEEP_LOOKALIKES = bytes(sorted(set(range(256)) - set(_LOOKALIKE_TYPES)))

# Decimal width of 0..65535, and byte values below 10 and 100: to compute the canonical wire size
# of parsed commands in C loops rather than per-argument Python code.
_DIGITS = bytes(len(str(i)) for i in range(65536))
_BELOW_10 = bytes(range(10))
_BELOW_100 = bytes(range(100))


def _total_digits(numbers: Iterable[int]) -> tuple[int, int]:
    """How many non-negative integers there are, and the sum of their decimal widths."""
    numbers = list(numbers)
    try:
        return len(numbers), sum(map(_DIGITS.__getitem__, numbers))
    except IndexError:
        return len(numbers), sum(len(str(n)) for n in numbers)


def _wire_size(commands: list[list[bytes]], payload_bytes: int) -> int:
    """Bytes that `commands` take as canonical RESP arrays of bulk strings."""
    try:
        # With arguments and counts below 256 (short keys and values), count the numbers of two
        # and three digits with C-speed deletes rather than a table lookup per number.
        arg_sizes = bytes(map(len, chain.from_iterable(commands)))
        counts = bytes(map(len, commands))
    except ValueError:
        args, arg_digits = _total_digits(map(len, chain.from_iterable(commands)))
        _, count_digits = _total_digits(map(len, commands))
    else:
        args = len(arg_sizes)
        arg_digits = (
            args
            + len(arg_sizes.translate(None, _BELOW_10))
            + len(arg_sizes.translate(None, _BELOW_100))
        )
        count_digits = (
            len(counts)
            + len(counts.translate(None, _BELOW_10))
            + len(counts.translate(None, _BELOW_100))
        )
    # `$`, CRLF after the length and CRLF after the payload; `*` and CRLF.
    return payload_bytes + 5 * args + arg_digits + 3 * len(commands) + count_digits


def _hiredis_prefix(
    reader: hiredis.Reader, data: bytes, lookalikes: bytes, may_recheck: bool
) -> tuple[list[list[bytes]], int] | None:
    """Feed `data` to an idle `reader`; return the complete requests and the bytes they take.

    None means the Python parser must read `data` from its start. `lookalikes` holds the bytes
    of `data` that are in _LOOKALIKE_TYPES, in any order.

    Why an accepted result is exact: hiredis reads numbers exactly as Redis's string2ll does.
    If every top-level value is a non-empty list of bytes and every header in the consumed bytes
    has type `*` or `$`, those bytes are canonical requests, which the Python parser reads
    identically, and their size follows from the values. A header that hiredis turns into a list
    or bytes but Redis refuses (`+=(~|>%`) shows as an excess of its type byte in `data` over the
    argument bytes, because arguments are copies of bytes of `data` and headers are not; any
    other type fails the non-empty/bytes checks.
    """
    reader.feed(data)
    try:
        commands = list(iter(reader.gets, _INCOMPLETE))
    except Exception:
        # Whatever hiredis refuses (ProtocolError; TypeError when it builds a RESP3 map or set
        # keyed by a list), the reference parser judges.
        return None
    if reader.has_data():
        idle = False
    else:
        # hiredis used every byte but may be inside a reply: in an array waiting for elements, or
        # past the type byte of a header line, which has_data() does not show. An empty simple
        # string reads back as b"" only when no reply is in progress (otherwise it becomes an
        # element or a bad header line, and the caller drops this reader).
        reader.feed(b"+\r\n")
        try:
            idle = reader.gets() == b""
        except Exception:
            idle = False
    if not commands:
        return None if idle else (commands, 0)
    # all(): no empty array (`*0`, which Redis skips), null (`*-1`), `#f` or empty string.
    if not all(commands):
        return None
    try:
        # join() raises TypeError unless every argument is bytes (and every command a list of
        # them, or bytes, whose ints fail too): one C call however many there are.
        if len(commands) == 1:
            payload = b"".join(commands[0])
        else:
            payload = b"".join(chain.from_iterable(commands))
    except TypeError:
        return None
    if idle:
        consumed = len(data)
    else:
        consumed = _wire_size(commands, len(payload))
        if consumed >= len(data):
            return None
    for byte in set(lookalikes) if lookalikes else ():
        if lookalikes.count(byte) != payload.count(byte):
            if idle or not may_recheck:
                return None
            # The excess may be in the partial request that follows: check the complete part
            # alone, with a new reader.
            prefix = data[:consumed]
            return _hiredis_prefix(
                hiredis.Reader(notEnoughData=_INCOMPLETE),
                prefix,
                prefix.translate(None, _KEEP_LOOKALIKES),
                may_recheck=False,
            )
    return commands, consumed


class RequestParser:
    """Incremental parser of one connection's request stream.

    Not thread-safe; one instance per connection. feed() may be called with chunks split at any
    byte. After it raised ProtocolError, every later feed() raises it again.
    """

    __slots__ = (
        "_args",
        "_buf",
        "_bulk",
        "_failed",
        "_fast_max_bytes",
        "_huge_array_header",
        "_huge_lookalike_header",
        "_left",
        "_max_args",
        "_max_buffer_bytes",
        "_max_bulk_bytes",
        "_max_inline_bytes",
        "_need",
        "_reader",
        "_request_bytes",
        "_scan",
        "_use_hiredis",
    )

    def __init__(
        self,
        max_bulk_bytes: int = DEFAULT_MAX_BULK_BYTES,
        max_args: int = DEFAULT_MAX_ARGS,
        max_inline_bytes: int = DEFAULT_MAX_INLINE_BYTES,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        *,
        use_hiredis: bool = True,
    ):
        """Limits:

        max_bulk_bytes: largest bulk string argument.
        max_args: most arguments in one command (multibulk count or inline words).
        max_inline_bytes: longest inline line, and longest `*`/`$` header line without its CR.
        max_buffer_bytes: largest single request (all its bytes, headers included) the parser
            will hold while it arrives.
        use_hiredis: False keeps to the pure-Python reference path (tests, or hiredis missing).
        """
        for name, value in (
            ("max_bulk_bytes", max_bulk_bytes),
            ("max_args", max_args),
            ("max_inline_bytes", max_inline_bytes),
            ("max_buffer_bytes", max_buffer_bytes),
        ):
            if type(value) is not int or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        if max_args > _INT_MAX:
            raise ConfigError("max_args", f"must be at most {_INT_MAX}, got {max_args}")
        if max_buffer_bytes < max_bulk_bytes:
            raise ConfigError(
                "max_buffer_bytes",
                f"{max_buffer_bytes} is below max_bulk_bytes {max_bulk_bytes}: "
                "a bulk string of the largest allowed size could never be received",
            )
        self._max_bulk_bytes = max_bulk_bytes
        self._max_args = max_args
        self._max_inline_bytes = max_inline_bytes
        self._max_buffer_bytes = max_buffer_bytes
        self._use_hiredis = use_hiredis
        # A chunk no longer than this cannot hold a complete argument or request over the limits,
        # so commands hiredis completes from it need no size checks.
        self._fast_max_bytes = min(max_bulk_bytes, max_buffer_bytes)
        # hiredis preallocates the list an aggregate header announces (`*4294967295` asks for
        # 32 GiB). Headers with as many digits as max_args go to the Python parser, which refuses
        # oversized counts from the header alone. The `*` pattern starts with a literal, which
        # the regex engine finds with a fast search (~0.6 ns/byte); the other runs only when a
        # chunk holds one of those rarer type bytes.
        digits = len(str(max_args))
        self._huge_array_header = re.compile(rb"\*[0-9]{%d}" % digits)
        self._huge_lookalike_header = re.compile(rb"[~>|%%][0-9]{%d}" % digits)
        self._reader = hiredis.Reader(notEnoughData=_INCOMPLETE)
        self._failed: ProtocolError | None = None
        # State of the Python parser. `_buf` holds bytes it owns, starting at a request boundary
        # or inside the request in progress; consumed bytes are trimmed after each call.
        self._buf = bytearray()
        self._args: list[bytes] | None = None  # arguments of the array request in progress
        self._left = 0  # arguments still to read in that request
        self._bulk = -1  # announced length of the bulk being read; -1 until its header is read
        self._request_bytes = 0  # bytes of the request in progress consumed so far
        self._scan = 0  # bytes of the pending header/inline line known to hold no terminator
        self._need = 0  # len(_buf) below which parsing again cannot complete anything

    @property
    def pending_bytes(self) -> int:
        """Bytes held for a request that has not completed yet."""
        return self._request_bytes + len(self._buf) if self._args is not None else len(self._buf)

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Add received bytes; return the commands they complete, in order."""
        if self._failed is not None:
            raise ProtocolError(str(self._failed))
        if not data:
            return []
        if type(data) is not bytes:
            data = bytes(data)
        out: list[list[bytes]] = []
        try:
            if self._buf or self._args is not None:
                # The Python parser owns a request in progress: finish it, then hand what follows
                # back to the fast path.
                buf = self._buf
                buf += data
                if len(buf) < self._need:  # a large bulk still arriving: nothing to parse yet
                    return out
                if not self._parse_python(out, stop_after_one=True):
                    return out
                data = bytes(buf)
                buf.clear()
            while data:
                if self._use_hiredis and data[0] == 42 and len(data) <= self._fast_max_bytes:
                    parsed = self._parse_with_hiredis(data)
                    if parsed is not None:
                        commands, consumed = parsed
                        if out:
                            out += commands
                        else:
                            out = commands
                        if consumed == len(data):
                            break
                        # hiredis stopped inside a request; the Python parser takes it over so
                        # that its limits are checked on the headers already here.
                        self._buf += memoryview(data)[consumed:]
                        if not self._parse_python(out, stop_after_one=True):
                            break
                        data = bytes(self._buf)
                        self._buf.clear()
                        continue
                self._buf += data
                self._parse_python(out, stop_after_one=False)
                break
        except ProtocolError as exc:
            exc.commands = out
            self._failed = exc
            raise
        return out

    # -- fast path ---------------------------------------------------------------------------

    def _parse_with_hiredis(self, data: bytes) -> tuple[list[list[bytes]], int] | None:
        """Parse the complete requests at the start of `data` with hiredis.

        Returns (commands, bytes consumed), or None when the Python parser must handle `data`
        from its start. REQUIRES: data starts a request with `*`, no bytes are pending, and
        len(data) <= _fast_max_bytes.
        """
        if self._huge_array_header.search(data) is not None:
            return None
        # Deleting 7 byte values is cheaper than keeping 249 (translate builds its table per call).
        if len(data.translate(None, _LOOKALIKE_TYPES)) == len(data):
            lookalikes = b""
        else:
            lookalikes = data.translate(None, _KEEP_LOOKALIKES)
            if self._huge_lookalike_header.search(data) is not None:
                return None
        parsed = _hiredis_prefix(self._reader, data, lookalikes, may_recheck=True)
        if parsed is None or parsed[1] != len(data):
            # hiredis may hold a partial request: the Python parser takes it over, so hiredis
            # must forget it.
            self._reader = hiredis.Reader(notEnoughData=_INCOMPLETE)
        return parsed

    # -- reference path ----------------------------------------------------------------------

    def _parse_python(self, out: list[list[bytes]], stop_after_one: bool) -> bool:
        """Parse `_buf` from its start, appending complete commands to `out`.

        With stop_after_one, stop at the first request boundary after something was consumed and
        return True if bytes remain there (the caller takes them); otherwise parse all and return
        False. Follows Redis's networking.c: a header line ends at the first CR and needs one more
        byte after it; the two bytes after a bulk payload are skipped unchecked.
        """
        buf = self._buf
        find = buf.find
        end = len(buf)
        pos = 0
        units = 0
        stopped = False
        scan = self._scan  # where the search for the pending line's end resumes
        max_inline = self._max_inline_bytes
        view = memoryview(buf)
        try:
            while pos < end:
                args = self._args
                if args is None:
                    if stop_after_one and units:
                        stopped = True
                        break
                    if buf[pos] != 42:
                        newline = find(b"\n", pos + scan)
                        if newline < 0:
                            if end - pos > max_inline:
                                raise ProtocolError("Protocol error: too big inline request")
                            scan = end - pos
                            break
                        scan = 0
                        stop = newline - 1 if newline > pos and buf[newline - 1] == 13 else newline
                        if stop - pos > max_inline:
                            raise ProtocolError("Protocol error: too big inline request")
                        words = split_inline(bytes(view[pos:stop]))
                        pos = newline + 1
                        units += 1
                        if words:  # an empty line is skipped, as Redis does
                            if len(words) > self._max_args:
                                raise ProtocolError(
                                    f"Protocol error: inline request of {len(words)} arguments "
                                    f"exceeds max_args {self._max_args}"
                                )
                            out.append(words)
                        continue
                    cr = find(b"\r", pos + scan)
                    if cr < 0 or cr + 1 >= end:
                        if cr >= 0:
                            scan = cr - pos
                        elif end - pos > max_inline:
                            raise ProtocolError("Protocol error: too big mbulk count string")
                        else:
                            scan = end - pos
                        break
                    scan = 0
                    count = _string_to_ll(buf[pos + 1 : cr])
                    if count is None or count > _INT_MAX:
                        raise ProtocolError("Protocol error: invalid multibulk length")
                    if count > self._max_args:
                        raise ProtocolError(
                            f"Protocol error: multibulk length {count} exceeds max_args "
                            f"{self._max_args}"
                        )
                    units += 1
                    self._request_bytes = cr + 2 - pos
                    pos = cr + 2
                    if count <= 0:  # Redis skips empty and negative-count arrays
                        continue
                    args = self._args = []
                    self._left = count
                    self._bulk = -1
                left = self._left
                bulk = self._bulk
                request_bytes = self._request_bytes
                while left:
                    if bulk < 0:
                        if pos >= end:
                            break
                        cr = find(b"\r", pos + scan)
                        if cr < 0 or cr + 1 >= end:
                            if cr >= 0:
                                scan = cr - pos
                            elif end - pos > max_inline:
                                raise ProtocolError("Protocol error: too big bulk count string")
                            else:
                                scan = end - pos
                            if request_bytes + end - pos > self._max_buffer_bytes:
                                raise self._request_too_big(request_bytes + end - pos)
                            break
                        scan = 0
                        if buf[pos] != 36:
                            got = " " if buf[pos] in (10, 13) else chr(buf[pos])
                            raise ProtocolError(f"Protocol error: expected '$', got '{got}'")
                        digits = buf[pos + 1 : cr]
                        # Inline the common case of _string_to_ll: plain digits, no leading zero,
                        # too short to overflow.
                        if (
                            digits.isdigit()
                            and len(digits) < 19
                            and (digits[0] != 48 or cr == pos + 2)
                        ):
                            bulk = int(digits)
                        else:
                            bulk = _string_to_ll(digits)
                            if bulk is None or bulk < 0:
                                raise ProtocolError("Protocol error: invalid bulk length")
                        if bulk > self._max_bulk_bytes:
                            raise ProtocolError(
                                f"Protocol error: bulk length {bulk} exceeds max_bulk_bytes "
                                f"{self._max_bulk_bytes}"
                            )
                        request_bytes += cr + 2 - pos
                        if request_bytes + bulk + 2 > self._max_buffer_bytes:
                            raise self._request_too_big(request_bytes + bulk + 2)
                        pos = cr + 2
                    if end - pos < bulk + 2:
                        break
                    args.append(bytes(view[pos : pos + bulk]))
                    pos += bulk + 2
                    request_bytes += bulk + 2
                    bulk = -1
                    left -= 1
                self._left = left
                self._bulk = bulk
                self._request_bytes = request_bytes
                if left:
                    break
                out.append(args)
                self._args = None
                units += 1
        finally:
            self._scan = scan
            view.release()
            if pos:
                del buf[:pos]
        # A payload in progress now starts at buf[0]: nothing to do until all of it is here.
        self._need = self._bulk + 2 if self._args is not None and self._bulk >= 0 else 0
        return stopped

    def _request_too_big(self, size: int) -> ProtocolError:
        return ProtocolError(
            f"Protocol error: request of at least {size} bytes exceeds max_buffer_bytes "
            f"{self._max_buffer_bytes}"
        )


# ---------------------------------------------------------------------------------------------
# Replies.

CRLF = b"\r\n"
OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
QUEUED = b"+QUEUED\r\n"
EMPTY_ARRAY = b"*0\r\n"

_SANITIZE_CRLF = bytes.maketrans(b"\r\n", b"  ")

# Precomputed replies and headers: building `:5\r\n` or `$100\r\n` costs more than a tuple index.
_INTEGERS = tuple(b":%d\r\n" % i for i in range(-2, 1024))  # TTL and friends answer -2, -1
_BULK_HEADERS = tuple(b"$%d\r\n" % i for i in range(1024))
_ARRAY_HEADERS = tuple(b"*%d\r\n" % i for i in range(256))


def simple(text: str | bytes) -> bytes:
    """A simple string reply, `+text`. CR and LF become spaces: a reply line must stay one line."""
    if isinstance(text, str):
        text = text.encode()
    if b"\r" in text or b"\n" in text:
        text = text.translate(_SANITIZE_CRLF)
    return b"+" + text + CRLF


def error(message: str | bytes) -> bytes:
    """An error reply; `message` starts with its prefix word: "ERR ...", "WRONGTYPE ...".

    CR and LF become spaces, as in Redis's addReplyErrorFormat: messages quote user input.
    """
    if isinstance(message, str):
        message = message.encode()
    if b"\r" in message or b"\n" in message:
        message = message.translate(_SANITIZE_CRLF)
    return b"-" + message + CRLF


def integer(value: int) -> bytes:
    """An integer reply, `:value`. REQUIRES: value fits in a signed 64-bit integer."""
    if -2 <= value < 1024:
        return _INTEGERS[value + 2]
    return b":%d\r\n" % value


def bulk(data: bytes) -> bytes:
    """A bulk string reply, `$len` then the bytes."""
    size = len(data)
    if size < 1024:
        # Two small concatenations beat one join or %-formatting at this size (measured).
        return _BULK_HEADERS[size] + data + CRLF
    # One copy of a large payload.
    return b"".join((b"$%d\r\n" % size, data, CRLF))


class SimpleString(str):
    """A value that `ReplyEncoder.encode` writes as a simple string (`+OK`), not a bulk string."""

    __slots__ = ()


class ErrorReply(str):
    """A value that `ReplyEncoder.encode` writes as an error; it starts with its prefix word."""

    __slots__ = ()


class Verbatim:
    """Text with a 3-letter format ("txt" or "mkd"): RESP3 verbatim string, RESP2 bulk string."""

    __slots__ = ("format", "text")

    def __init__(self, text: str | bytes, format: str = "txt"):
        if len(format.encode()) != 3:
            raise ValueError(f"verbatim format must be 3 bytes, got {format!r}")
        self.text = text.encode() if isinstance(text, str) else bytes(text)
        self.format = format


class ReplyEncoder:
    """Encodes replies for one protocol version (2 or 3); use the RESP2 and RESP3 instances.

    What differs by version: null (`$-1` / `_`), null array (`*-1` / `_`), map (flat array / `%`),
    set (array / `~`), double (bulk string / `,`), boolean (`:1` `:0` / `#t` `#f`), verbatim
    string (bulk / `=`). `encode()` maps Python values: bytes and str -> bulk string, int ->
    integer, float -> double, bool -> boolean, None -> null, list and tuple -> array, dict -> map,
    set and frozenset -> set, SimpleString, ErrorReply, Verbatim.
    """

    __slots__ = ("_map_prefix", "_set_prefix", "false", "null", "null_array", "protocol", "true")

    # Replies written the same way in both versions, reachable from the encoder in hand.
    simple = staticmethod(simple)
    error = staticmethod(error)
    integer = staticmethod(integer)
    bulk = staticmethod(bulk)

    def __init__(self, protocol: int):
        if protocol not in (2, 3):
            raise ConfigError("protocol", f"RESP version must be 2 or 3, got {protocol!r}")
        self.protocol = protocol
        resp3 = protocol == 3
        self.null: bytes = b"_\r\n" if resp3 else b"$-1\r\n"
        self.null_array: bytes = b"_\r\n" if resp3 else b"*-1\r\n"
        self.true: bytes = b"#t\r\n" if resp3 else b":1\r\n"
        self.false: bytes = b"#f\r\n" if resp3 else b":0\r\n"
        self._map_prefix = b"%" if resp3 else b"*"
        self._set_prefix = b"~" if resp3 else b"*"

    def __repr__(self) -> str:
        return f"ReplyEncoder(protocol={self.protocol})"

    def optional_bulk(self, data: bytes | None) -> bytes:
        """A bulk string, or null for None (GET of a missing key)."""
        if data is None:
            return self.null
        size = len(data)
        if size < 1024:
            return _BULK_HEADERS[size] + data + CRLF
        return b"".join((b"$%d\r\n" % size, data, CRLF))

    def boolean(self, value: bool) -> bytes:
        return self.true if value else self.false

    def double(self, value: float) -> bytes:
        text = double_text(value)
        if self.protocol == 3:
            return b"," + text + CRLF
        return _BULK_HEADERS[len(text)] + text + CRLF

    def verbatim(self, text: str | bytes, format: str = "txt") -> bytes:
        """RESP3 `=len\\r\\nfmt:text`; RESP2 a bulk string of the text alone."""
        return self.encode(Verbatim(text, format))

    def array_header(self, count: int) -> bytes:
        """`*count`: the caller writes `count` encoded values after it."""
        return _ARRAY_HEADERS[count] if 0 <= count < 256 else b"*%d\r\n" % count

    def map_header(self, pairs: int) -> bytes:
        """`%pairs` (RESP3) or `*2*pairs` (RESP2): the caller writes 2*pairs values after it."""
        return b"%s%d\r\n" % (self._map_prefix, pairs if self.protocol == 3 else 2 * pairs)

    def set_header(self, count: int) -> bytes:
        return b"%s%d\r\n" % (self._set_prefix, count)

    def bulk_array(self, items: Iterable[bytes | None]) -> bytes:
        """An array of bulk strings or nulls (MGET, LRANGE, KEYS): the fast array case."""
        parts = [b""]
        null = self.null
        count = 0
        for item in items:
            count += 1
            if item is None:
                parts.append(null)
            else:
                size = len(item)
                parts += (
                    _BULK_HEADERS[size] if size < 1024 else b"$%d\r\n" % size,
                    item,
                    CRLF,
                )
        parts[0] = _ARRAY_HEADERS[count] if count < 256 else b"*%d\r\n" % count
        return b"".join(parts)

    def array(self, items: Iterable[Any]) -> bytes:
        """An array of any values `encode()` takes, nested as deep as they go."""
        parts: list[bytes] = []
        self._append(list(items), parts)
        return b"".join(parts)

    def map(self, pairs: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> bytes:
        """A map from a dict or from (key, value) pairs, which keeps duplicate keys."""
        parts: list[bytes] = []
        self._append_map(pairs.items() if isinstance(pairs, Mapping) else pairs, parts)
        return b"".join(parts)

    def set(self, items: Iterable[Any]) -> bytes:
        parts: list[bytes] = []
        self._append_set(list(items), parts)
        return b"".join(parts)

    def encode(self, value: Any) -> bytes:
        """Any reply value (see the class docstring), nested as deep as it goes."""
        parts: list[bytes] = []
        self._append(value, parts)
        return b"".join(parts)

    def _append(self, value: Any, parts: list[bytes]) -> None:
        # Exact type checks first, in order of frequency; the str subclasses and the rarer types
        # after them. Parts are joined once at the top, so a payload is copied once.
        kind = type(value)
        if kind is bytes:
            size = len(value)
            parts += (_BULK_HEADERS[size] if size < 1024 else b"$%d\r\n" % size, value, CRLF)
        elif value is None:
            parts.append(self.null)
        elif kind is int:
            parts.append(integer(value))
        elif kind is list or kind is tuple:
            count = len(value)
            parts.append(_ARRAY_HEADERS[count] if count < 256 else b"*%d\r\n" % count)
            for item in value:
                self._append(item, parts)
        elif kind is str:
            self._append(value.encode(), parts)
        elif kind is bool:
            parts.append(self.true if value else self.false)
        elif kind is float:
            parts.append(self.double(value))
        elif kind is dict:
            self._append_map(value.items(), parts)
        elif kind is set or kind is frozenset:
            self._append_set(value, parts)
        elif isinstance(value, SimpleString):
            parts.append(simple(value))
        elif isinstance(value, ErrorReply):
            parts.append(error(value))
        elif kind is Verbatim:
            if self.protocol == 3:
                body = value.format.encode() + b":" + value.text
                parts += (b"=%d\r\n" % len(body), body, CRLF)
            else:
                self._append(value.text, parts)
        elif isinstance(value, (bytearray, memoryview)):
            self._append(bytes(value), parts)
        elif isinstance(value, Mapping):
            self._append_map(value.items(), parts)
        else:
            raise TypeError(f"cannot encode a {kind.__name__} as a RESP reply")

    def _append_map(self, pairs: Iterable[tuple[Any, Any]], parts: list[bytes]) -> None:
        header = len(parts)
        parts.append(b"")
        count = 0
        for key, value in pairs:
            self._append(key, parts)
            self._append(value, parts)
            count += 1
        parts[header] = self.map_header(count)

    def _append_set(self, items: Iterable[Any], parts: list[bytes]) -> None:
        header = len(parts)
        parts.append(b"")
        count = 0
        for item in items:
            self._append(item, parts)
            count += 1
        parts[header] = self.set_header(count)


RESP2 = ReplyEncoder(2)
RESP3 = ReplyEncoder(3)


def encoder_for(protocol: int) -> ReplyEncoder:
    """The shared encoder for a protocol version (2 until HELLO 3)."""
    if protocol == 2:
        return RESP2
    if protocol == 3:
        return RESP3
    raise ConfigError("protocol", f"RESP version must be 2 or 3, got {protocol!r}")
