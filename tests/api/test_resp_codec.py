"""The RESP codec (ringkv.api.resp) as clients and the server see it.

Requests: what redis-cli, redis-py and telnet users send must parse as redis-server parses it,
whatever the chunking; bad input and oversized input must be refused with Redis's message before
the announced bytes are buffered. The hiredis fast path must agree with the pure-Python reference
on every input. Replies: what we encode must decode (hiredis for RESP2, a strict decoder below
for RESP3) to the values we meant.
"""

from __future__ import annotations

import math
from itertools import pairwise

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.connection import Connection, Encoder, PythonRespSerializer

from ringkv.api import resp
from ringkv.api.resp import (
    RESP2,
    RESP3,
    ErrorReply,
    ProtocolError,
    ReplyEncoder,
    RequestParser,
    SimpleString,
    Verbatim,
    encoder_for,
    split_inline,
)
from ringkv.errors import ConfigError
from ringkv.service.datatypes.base import double_text

MiB = 1024 * 1024
FAST = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])


# -- helpers ------------------------------------------------------------------------------------


def pack(*args: bytes) -> bytes:
    """A request as every client library writes it: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(c, 0), len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points) if b > a]


def run(parser: RequestParser, chunks: list[bytes]) -> tuple[list[list[bytes]], str | None]:
    """Feed chunks in turn; return every command parsed and the protocol error, if any."""
    commands: list[list[bytes]] = []
    for chunk in chunks:
        try:
            commands += parser.feed(chunk)
        except ProtocolError as exc:
            return commands + exc.commands, str(exc)
    return commands, None


def both_paths(chunks: list[bytes], **limits: int) -> tuple[list[list[bytes]], str | None]:
    """Parse with the hiredis path and the reference path; they must agree exactly."""
    fast = run(RequestParser(**limits), chunks)
    reference = run(RequestParser(**limits, use_hiredis=False), chunks)
    assert fast == reference
    return fast


def refused(data: bytes, **limits: int) -> ProtocolError:
    """The error the parser raises on `data`, on both paths, with no earlier commands."""
    for use_hiredis in (True, False):
        parser = RequestParser(**limits, use_hiredis=use_hiredis)
        with pytest.raises(ProtocolError) as caught:
            parser.feed(data)
        assert caught.value.commands == []
    return caught.value


args_st = st.lists(
    st.one_of(
        st.binary(max_size=24),
        st.sampled_from([b"", b"\r\n", b"*1\r\n", b"$3\r\n", b"+OK", b"=", b"%20", b"a~b|c>d(e"]),
        st.binary(min_size=250, max_size=300),
    ),
    min_size=1,
    max_size=6,
)


# -- requests: what clients send ----------------------------------------------------------------


def test_set_command_parses_to_its_three_arguments():
    parser = RequestParser()
    assert parser.feed(b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n") == [
        [b"SET", b"key", b"value"]
    ]


def test_pipelined_commands_come_back_in_order_across_feeds():
    stream = b"".join(pack(b"INCR", b"k%d" % i) for i in range(500))
    for use_hiredis in (True, False):
        parser = RequestParser(use_hiredis=use_hiredis)
        got: list[list[bytes]] = []
        for chunk in split_at(stream, list(range(0, len(stream), 777))):
            got += parser.feed(chunk)
        assert got == [[b"INCR", b"k%d" % i] for i in range(500)]
        assert parser.pending_bytes == 0


@FAST
@given(commands=st.lists(args_st, min_size=1, max_size=12), cuts=st.lists(st.integers(0, 4000)))
def test_any_commands_split_anywhere_parse_back_identically(commands, cuts):
    stream = b"".join(pack(*c) for c in commands)
    assert both_paths(split_at(stream, cuts)) == (commands, None)


def test_stream_fed_one_byte_at_a_time_parses_identically():
    commands = [
        [b"SET", b"k", b"v" * 300],
        [b"GET", b"k"],
        [b"MSET"] + [b"x%d" % i for i in range(40)],
    ]
    stream = b"".join(pack(*c) for c in commands)
    assert both_paths([stream[i : i + 1] for i in range(len(stream))]) == (commands, None)


def test_large_value_arriving_in_many_chunks_parses_once_complete():
    value = bytes(range(256)) * 20000  # 5 MiB
    stream = pack(b"SET", b"big", value) + pack(b"GET", b"big")
    parser = RequestParser()
    got: list[list[bytes]] = []
    for i in range(0, len(stream), 65536):
        got += parser.feed(stream[i : i + 65536])
        if len(got) == 0:
            assert parser.pending_bytes <= i + 65536
    assert got == [[b"SET", b"big", value], [b"GET", b"big"]]


def test_argument_of_64_kib_or_more_is_sized_correctly_before_a_partial_request():
    commands = [[b"SET", b"k", b"v" * 70000], [b"PING"]]
    stream = b"".join(pack(*c) for c in commands) + pack(b"GET", b"k")[:-3]
    parser = RequestParser()
    assert parser.feed(stream) == commands
    assert parser.feed(b"k\r\n") == [[b"GET", b"k"]]


@pytest.mark.parametrize(
    "pack_command",
    [
        lambda args: b"".join(
            PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode).pack(*args)
        ),
        lambda args: b"".join(Connection().pack_command(*args)),
        lambda args: hiredis.pack_command(tuple(args)),
    ],
    ids=[
        "redis-py PythonRespSerializer",
        "redis-py Connection.pack_command",
        "hiredis.pack_command",
    ],
)
def test_commands_packed_by_redis_py_parse_to_their_arguments(pack_command):
    calls = [
        ("SET", "key", "value"),
        ("SET", b"bin\x00\r\n\xff", 12, 1.5, "ünï"),
        ("MGET", *[f"k{i}" for i in range(100)]),
        ("HELLO", "3"),
    ]
    stream = b"".join(pack_command(call) for call in calls)
    expected = [[Encoder("utf-8", "strict", False).encode(a) for a in call] for call in calls]
    assert both_paths(split_at(stream, [7, 100, 101, 500])) == (expected, None)


def test_empty_and_negative_arrays_are_skipped_as_redis_does():
    assert both_paths([b"*0\r\n*-1\r\n" + pack(b"PING") + b"*0\r\n"]) == ([[b"PING"]], None)


def test_bytes_after_a_bulk_payload_are_skipped_unchecked_as_redis_does():
    assert both_paths([b"*2\r\n$3\r\nGET\r\n$1\r\nkXY*1\r\n$4\r\nPING\r\n"]) == (
        [[b"GET", b"k"], [b"PING"]],
        None,
    )


def test_aligned_pipeline_stays_on_the_hiredis_path(monkeypatch):
    calls = []
    original = RequestParser._parse_python

    def spy(self, out, stop_after_one):
        calls.append(stop_after_one)
        return original(self, out, stop_after_one)

    monkeypatch.setattr(RequestParser, "_parse_python", spy)
    parser = RequestParser()
    for _ in range(10):
        batch = b"".join(pack(b"SET", b"key:%d" % i, b"v%d+==" % i) for i in range(16))
        assert len(parser.feed(batch)) == 16
    assert calls == []


# -- requests: inline commands, as typed in telnet ---------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"PING\r\n", [[b"PING"]]),
        (b"PING\n", [[b"PING"]]),
        (b" PING\t\r\n", [[b"PING"]]),
        (b"set key value\r\n", [[b"set", b"key", b"value"]]),
        (b'set "a key" "with \\"quotes\\""\r\n', [[b"set", b"a key", b'with "quotes"']]),
        (b'set k "\\x41\\x4a\\n\\r\\t\\b\\a\\z"\r\n', [[b"set", b"k", b"AJ\n\r\t\b\az"]]),
        (b'set k "\\x4"\r\n', [[b"set", b"k", b"x4"]]),
        (b"set k 'it\\'s \\n raw'\r\n", [[b"set", b"k", b"it's \\n raw"]]),
        (b'set k ""\r\n', [[b"set", b"k", b""]]),
        (b'set k"ey" v\r\n', [[b"set", b"key", b"v"]]),
        (b"set k\\n v\r\n", [[b"set", b"k\\n", b"v"]]),
        (b"set a\x0bb c\r\n", [[b"set", b"a\x0bb", b"c"]]),
        (b"\x0b\x0cset a\r\n", [[b"set", b"a"]]),
        (b"get a\x00 ignored after NUL\r\n", [[b"get", b"a"]]),
        (b"\r\n\n  \t \r\nPING\r\n\r\n", [[b"PING"]]),
        (
            b"PING\r\n" + pack(b"ECHO", b"x") + b"ECHO y\n",
            [[b"PING"], [b"ECHO", b"x"], [b"ECHO", b"y"]],
        ),
    ],
)
def test_inline_commands_parse_as_redis_does(line, expected):
    assert both_paths([line]) == (expected, None)
    assert both_paths(split_at(line, list(range(len(line))))) == (expected, None)


@pytest.mark.parametrize(
    "line",
    [
        b'ECHO "a',
        b"ECHO 'a",
        b'ECHO "a"x',
        b"ECHO 'a'x",
        b'ECHO "a\\"',
        b"ECHO 'a\\'",
        b'ECHO "a\\',
    ],
)
def test_inline_unbalanced_quotes_are_refused_with_redis_message(line):
    assert str(refused(line + b"\r\n")) == "Protocol error: unbalanced quotes in request"
    with pytest.raises(ProtocolError, match="unbalanced quotes"):
        split_inline(line)


def test_inline_quote_followed_by_vertical_tab_is_accepted_as_c_isspace_does():
    assert split_inline(b'a "b"\x0bc') == [b"a", b"b", b"c"]


# -- requests: refused input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*1\r\n+PING\r\n", "Protocol error: expected '$', got '+'"),
        (b"*1\r\n:1\r\n", "Protocol error: expected '$', got ':'"),
        (b"*1\r\n=8\r\ntxt:PING\r\n", "Protocol error: expected '$', got '='"),
        (b"*1\r\n*1\r\n$4\r\nPING\r\n", "Protocol error: expected '$', got '*'"),
        (b"*1\r\n\r\n", "Protocol error: expected '$', got ' '"),
        (b"*x\r\n", "Protocol error: invalid multibulk length"),
        (b"*01\r\n$4\r\nPING\r\n", "Protocol error: invalid multibulk length"),
        (b"*+1\r\n$4\r\nPING\r\n", "Protocol error: invalid multibulk length"),
        (b"*-0\r\n", "Protocol error: invalid multibulk length"),
        (b"*4294967295\r\n", "Protocol error: invalid multibulk length"),
        (b"*99999999999999999999\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\r\n$x\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$03\r\nabc\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$ 3\r\nabc\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$\r\n\r\n", "Protocol error: invalid bulk length"),
        # hiredis would preallocate a 4-billion-element list for this set header.
        (b"*1\r\n~4294967295\r\n", "Protocol error: expected '$', got '~'"),
    ],
)
def test_malformed_requests_are_refused_with_redis_message(data, message):
    assert str(refused(data)) == message


def test_commands_before_the_bad_bytes_are_returned_with_the_error():
    good = pack(b"SET", b"a", b"1") + b"PING\r\n"
    for use_hiredis in (True, False):
        parser = RequestParser(use_hiredis=use_hiredis)
        with pytest.raises(ProtocolError) as caught:
            parser.feed(good + b"*1\r\n:1\r\n" + pack(b"GET", b"a"))
        assert caught.value.commands == [[b"SET", b"a", b"1"], [b"PING"]]
        # The connection is closing: the parser stays failed and returns nothing more.
        with pytest.raises(ProtocolError, match="expected '\\$', got ':'") as again:
            parser.feed(pack(b"GET", b"a"))
        assert again.value.commands == []


def test_bulk_length_over_the_default_limit_is_refused_from_its_header_alone():
    parser = RequestParser()
    assert parser.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n") == []
    with pytest.raises(ProtocolError) as caught:
        parser.feed(b"$600000000\r\n")  # not one byte of the 600 MB has arrived
    assert str(caught.value) == (
        "Protocol error: bulk length 600000000 exceeds max_bulk_bytes 536870912"
    )


def test_configured_bulk_limit_refuses_one_byte_more():
    assert both_paths([pack(b"SET", b"k", b"x" * 10)], max_bulk_bytes=10) == (
        [[b"SET", b"k", b"x" * 10]],
        None,
    )
    assert str(refused(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$11\r\n", max_bulk_bytes=10)) == (
        "Protocol error: bulk length 11 exceeds max_bulk_bytes 10"
    )


def test_array_count_over_max_args_is_refused_from_its_header_alone():
    # hiredis would preallocate a list this long; the parser must refuse it first.
    assert str(refused(b"*2000000\r\n")) == (
        "Protocol error: multibulk length 2000000 exceeds max_args 1048576"
    )
    assert str(refused(b"*4\r\n", max_args=3)) == (
        "Protocol error: multibulk length 4 exceeds max_args 3"
    )
    assert str(refused(b"a b c d\r\n", max_args=3)) == (
        "Protocol error: inline request of 4 arguments exceeds max_args 3"
    )


def test_request_over_max_buffer_bytes_is_refused_before_its_payload_arrives():
    limits = {"max_bulk_bytes": 100, "max_buffer_bytes": 150}
    head = b"*3\r\n$3\r\nSET\r\n$100\r\n" + b"k" * 100 + b"\r\n"
    assert str(refused(head + b"$100\r\n", **limits)) == (
        "Protocol error: request of at least 229 bytes exceeds max_buffer_bytes 150"
    )
    assert both_paths([pack(b"SET", b"k" * 100)], **limits) == ([[b"SET", b"k" * 100]], None)


def test_request_growing_past_max_buffer_bytes_in_a_header_line_is_refused():
    limits = {"max_bulk_bytes": 100, "max_buffer_bytes": 150}
    head = b"*3\r\n$100\r\n" + b"k" * 100 + b"\r\n"
    assert str(refused(head + b"$" + b"1" * 39, **limits)) == (
        "Protocol error: request of at least 152 bytes exceeds max_buffer_bytes 150"
    )


def test_inline_line_without_newline_is_refused_past_64_kib():
    parser = RequestParser()
    assert parser.feed(b"x" * 65536) == []
    with pytest.raises(ProtocolError, match=r"^Protocol error: too big inline request$"):
        parser.feed(b"x")
    # Unlike Redis (which only checks while no newline has arrived), a long line is refused
    # however it is chunked.
    assert str(refused(b"x" * 65537 + b"\r\n")) == "Protocol error: too big inline request"
    assert both_paths([b"x" * 65536 + b"\r\n"]) == ([[b"x" * 65536]], None)


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (b"*", "Protocol error: too big mbulk count string"),
        (b"*1\r\n$", "Protocol error: too big bulk count string"),
    ],
)
def test_header_line_without_cr_is_refused_past_64_kib(prefix, message):
    large = prefix + b"0" * (65536 - 1)
    parser = RequestParser()
    assert parser.feed(large) == []
    with pytest.raises(ProtocolError) as caught:
        parser.feed(b"0")
    assert str(caught.value) == message


def test_limits_are_validated_with_the_field_named():
    with pytest.raises(ConfigError, match="max_buffer_bytes"):
        RequestParser(max_bulk_bytes=10 * MiB, max_buffer_bytes=MiB)
    with pytest.raises(ConfigError, match="max_args"):
        RequestParser(max_args=0)
    with pytest.raises(ConfigError, match="max_args"):
        RequestParser(max_args=2**31)


# -- requests: anything at all -------------------------------------------------------------------

_resp_tokens = st.sampled_from(
    [
        b"*",
        b"$",
        b"+",
        b":",
        b"=",
        b"~",
        b"%",
        b"|",
        b">",
        b"(",
        b"-",
        b"_",
        b",",
        b"#",
        b"!",
        b"\r\n",
        b"\r",
        b"\n",
        b"0",
        b"1",
        b"2",
        b"3",
        b"4",
        b"9",
        b"-1",
        b"txt:",
        b"a",
        b" ",
        b'"',
        b"'",
        b"\\",
        b"\\x41",
        b"\x00",
        b"\x0b",
        b"PING",
        b"1234567",
    ]
)
_noisy_stream = st.lists(st.one_of(_resp_tokens, args_st.map(lambda a: pack(*a))), max_size=40).map(
    b"".join
)


@FAST
@given(data=st.one_of(st.binary(max_size=300), _noisy_stream), cuts=st.lists(st.integers(0, 400)))
def test_garbage_parses_or_raises_protocol_error_and_both_paths_agree(data, cuts):
    both_paths(split_at(data, cuts))  # any other exception fails the test


@FAST
@given(data=_noisy_stream, cuts=st.lists(st.integers(0, 400), max_size=3))
def test_garbage_under_small_limits_both_paths_agree(data, cuts):
    both_paths(
        split_at(data, cuts),
        max_bulk_bytes=300,
        max_args=50,
        max_inline_bytes=100,
        max_buffer_bytes=2000,
    )


_reply_only_elements = {
    b"+": lambda arg: b"+" + arg.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n",
    b"=": lambda arg: b"=%d\r\ntxt:%s\r\n" % (len(arg) + 4, arg),
    b"(": lambda arg: b"(12345\r\n",
    b":": lambda arg: b":7\r\n",
    b"_": lambda arg: b"_\r\n",
    b"*": lambda arg: pack(arg),
    b"%": lambda arg: b"%%1\r\n$%d\r\n%s\r\n$1\r\nv\r\n" % (len(arg), arg),
    b"$-": lambda arg: b"$-1\r\n",
    b"$++": lambda arg: b"$%d\r\n%s++" % (len(arg), arg),  # Redis skips these two bytes
}


@st.composite
def requests_with_reply_only_types(draw) -> bytes:
    """Arrays where some elements or headers use types hiredis reads but Redis refuses: the hard
    case for the fast path, which must tell them apart from bulk strings."""
    kinds = st.sampled_from([b"$"] * 8 + list(_reply_only_elements))
    arg = st.one_of(
        st.binary(max_size=12), st.sampled_from([b"+", b"=", b"%", b"~", b"txt:", b"(1"])
    )
    out = []
    for _ in range(draw(st.integers(1, 8))):
        elements = draw(st.lists(st.tuples(kinds, arg), min_size=1, max_size=4))
        top = draw(st.sampled_from([b"*"] * 8 + [b"~", b"|", b">", b"%", b"$"]))
        out.append(b"%s%d\r\n" % (top, len(elements)))
        for kind, value in elements:
            encode = _reply_only_elements.get(kind)
            out.append(encode(value) if encode else b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(out)


@FAST
@given(data=requests_with_reply_only_types(), cuts=st.lists(st.integers(0, 600), max_size=3))
def test_requests_with_reply_only_types_are_judged_as_redis_does_on_both_paths(data, cuts):
    both_paths(split_at(data, cuts))


@FAST
@given(
    commands=st.lists(args_st, min_size=1, max_size=8), junk=_noisy_stream, cut=st.integers(0, 3000)
)
def test_valid_pipeline_then_garbage_keeps_every_command_before_the_garbage(commands, junk, cut):
    stream = b"".join(pack(*c) for c in commands)
    parsed, _ = both_paths(split_at(stream + junk, [cut]))
    assert parsed[: len(commands)] == commands


# -- replies ------------------------------------------------------------------------------------


def decode2(data: bytes) -> list:
    """Every reply in `data`, decoded by hiredis as redis-py does."""
    reader = hiredis.Reader(notEnoughData=Ellipsis)
    reader.feed(data)
    replies = []
    while (reply := reader.gets()) is not Ellipsis:
        replies.append(reply)
    assert not reader.has_data()
    return replies


class Strict:
    """A strict RESP3 decoder that keeps the types hiredis folds together (set, verbatim...)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def line(self) -> bytes:
        end = self.data.index(b"\r\n", self.pos)
        text = self.data[self.pos : end]
        self.pos = end + 2
        return text

    def value(self):
        kind = self.data[self.pos : self.pos + 1]
        self.pos += 1
        text = self.line()
        assert b"\r" not in text and b"\n" not in text
        if kind == b"+":
            return ("simple", text)
        if kind == b"-":
            return ("error", text)
        if kind == b":":
            return int(text)
        if kind == b"_":
            assert text == b""
            return None
        if kind == b"#":
            assert text in (b"t", b"f")
            return text == b"t"
        if kind == b",":
            return ("double", text)
        if kind in (b"$", b"="):
            size = int(text)
            body = self.data[self.pos : self.pos + size]
            assert len(body) == size and self.data[self.pos + size : self.pos + size + 2] == b"\r\n"
            self.pos += size + 2
            if kind == b"=":
                assert body[3:4] == b":"
                return ("verbatim", body[:3], body[4:])
            return body
        count = int(text)
        items = [self.value() for _ in range(count * (2 if kind == b"%" else 1))]
        if kind == b"*":
            return items
        if kind == b"~":
            return ("set", items)
        if kind == b"%":
            return ("map", list(zip(items[::2], items[1::2])))
        raise AssertionError(f"unexpected type {kind!r}")

    def all(self) -> list:
        out = []
        while self.pos < len(self.data):
            out.append(self.value())
        return out


def decode3(data: bytes) -> list:
    return Strict(data).all()


def test_hot_replies_are_the_bytes_redis_sends():
    assert resp.OK == b"+OK\r\n"
    assert resp.simple("PONG") == resp.PONG == b"+PONG\r\n"
    assert resp.error("ERR unknown command 'x'") == b"-ERR unknown command 'x'\r\n"
    assert (
        resp.error("WRONGTYPE Operation against a key") == b"-WRONGTYPE Operation against a key\r\n"
    )
    assert resp.integer(0) == b":0\r\n"
    assert resp.bulk(b"hello") == b"$5\r\nhello\r\n"
    assert resp.bulk(b"") == b"$0\r\n\r\n"
    assert RESP2.null == b"$-1\r\n" and RESP3.null == b"_\r\n"
    assert RESP2.null_array == b"*-1\r\n" and RESP3.null_array == b"_\r\n"
    assert RESP2.optional_bulk(None) == b"$-1\r\n"
    assert RESP3.optional_bulk(b"v") == b"$1\r\nv\r\n"


def test_error_and_simple_string_stay_on_one_line_whatever_the_user_input():
    reply = resp.error("ERR unknown command 'a\r\nb'")
    assert reply == b"-ERR unknown command 'a  b'\r\n"
    assert resp.simple(b"x\ny") == b"+x y\r\n"
    assert decode2(reply)[0].args == ("ERR unknown command 'a  b'",)


@pytest.mark.parametrize("value", [-(2**63), -1025, -3, -2, -1, 0, 1, 1023, 1024, 2**63 - 1])
def test_integers_on_both_sides_of_the_cache_decode(value):
    assert decode2(resp.integer(value)) == [value]


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 70000])
def test_bulk_strings_of_any_size_decode(size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert decode2(resp.bulk(data)) == [data]
    assert decode2(RESP3.bulk_array([data, None, b"x"])) == [[data, None, b"x"]]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, b"1"),
        (-3.0, b"-3"),
        (1.5, b"1.5"),
        (0.1, b"0.1"),
        (-0.0, b"-0"),
        (1e100, b"1e+100"),
        (2.0**60, b"1.152921504606847e+18"),
        (math.inf, b"inf"),
        (-math.inf, b"-inf"),
        (math.nan, b"nan"),
    ],
)
def test_doubles_are_written_as_redis_writes_them(value, text):
    assert RESP3.double(value) == b"," + text + b"\r\n"
    assert RESP2.double(value) == resp.bulk(text)
    decoded = decode2(RESP3.double(value))[0]
    assert decoded == value or (math.isnan(value) and math.isnan(decoded))


def test_resp3_types_and_their_resp2_fallbacks():
    assert RESP3.boolean(True) == b"#t\r\n" and RESP3.boolean(False) == b"#f\r\n"
    assert RESP2.boolean(True) == b":1\r\n" and RESP2.boolean(False) == b":0\r\n"
    assert RESP3.map({b"a": 1, b"b": [b"x", None]}) == (
        b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n*2\r\n$1\r\nx\r\n_\r\n"
    )
    assert RESP2.map({b"a": 1}) == b"*2\r\n$1\r\na\r\n:1\r\n"
    assert RESP2.map([(b"k", 1), (b"k", 2)]) == b"*4\r\n$1\r\nk\r\n:1\r\n$1\r\nk\r\n:2\r\n"
    assert RESP3.set([b"m"]) == b"~1\r\n$1\r\nm\r\n"
    assert RESP2.set([b"m"]) == b"*1\r\n$1\r\nm\r\n"
    assert RESP3.verbatim("# Server\r\nv:1\r\n") == b"=19\r\ntxt:# Server\r\nv:1\r\n\r\n"
    assert RESP2.verbatim("# Server") == b"$8\r\n# Server\r\n"
    assert decode3(RESP3.verbatim("hi", "mkd")) == [("verbatim", b"mkd", b"hi")]
    assert (
        RESP3.array_header(3) + RESP3.map_header(2) + RESP3.set_header(1) == b"*3\r\n%2\r\n~1\r\n"
    )
    assert RESP2.map_header(2) == b"*4\r\n" and RESP2.set_header(1) == b"*1\r\n"
    assert decode2(RESP3.map({b"k": [1, None]})) == [{b"k": [1, None]}]


def test_hello_reply_encodes_in_both_protocols():
    hello = {
        "server": "ringkv",
        "version": "0.1.0",
        "proto": 3,
        "id": 7,
        "mode": "cluster",
        "role": "master",
        "modules": [],
    }
    assert decode2(RESP2.encode(hello)) == [
        [
            b"server",
            b"ringkv",
            b"version",
            b"0.1.0",
            b"proto",
            3,
            b"id",
            7,
            b"mode",
            b"cluster",
            b"role",
            b"master",
            b"modules",
            [],
        ]
    ]
    assert decode3(RESP3.encode(hello))[0] == (
        "map",
        [
            (b"server", b"ringkv"),
            (b"version", b"0.1.0"),
            (b"proto", 3),
            (b"id", 7),
            (b"mode", b"cluster"),
            (b"role", b"master"),
            (b"modules", []),
        ],
    )


def test_marked_strings_encode_as_simple_string_and_error():
    reply = RESP3.encode([SimpleString("OK"), ErrorReply("ERR nope"), "bulk", Verbatim(b"t")])
    assert decode3(reply) == [
        [("simple", b"OK"), ("error", b"ERR nope"), b"bulk", ("verbatim", b"txt", b"t")]
    ]
    assert RESP2.encode(Verbatim("t")) == b"$1\r\nt\r\n"


def test_unsupported_values_and_versions_are_refused():
    with pytest.raises(TypeError, match="cannot encode a object"):
        RESP2.encode(object())
    with pytest.raises(ConfigError, match="protocol"):
        ReplyEncoder(4)
    with pytest.raises(ConfigError, match="protocol"):
        encoder_for(1)
    assert encoder_for(2) is RESP2 and encoder_for(3) is RESP3


_leaf = st.one_of(
    st.binary(max_size=40),
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=10),
)
_values = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.binary(max_size=8), inner, max_size=4),
        st.frozensets(st.binary(max_size=8), max_size=4),
    ),
    max_leaves=25,
)


def expected2(value):
    """What hiredis returns for `value` sent in RESP2."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return double_text(value)
    if isinstance(value, list):
        return [expected2(v) for v in value]
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in (expected2(k), expected2(v))]
    if isinstance(value, frozenset):
        return [expected2(v) for v in value]
    return value


def expected3(value):
    """What the strict decoder returns for `value` sent in RESP3."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, float):
        return ("double", double_text(value))
    if isinstance(value, list):
        return [expected3(v) for v in value]
    if isinstance(value, dict):
        return ("map", [(expected3(k), expected3(v)) for k, v in value.items()])
    if isinstance(value, frozenset):
        return ("set", [expected3(v) for v in value])
    return value


@FAST
@given(value=_values)
def test_any_reply_value_decodes_to_itself_in_resp2_and_resp3(value):
    assert decode2(RESP2.encode(value)) == [expected2(value)]
    assert decode3(RESP3.encode(value)) == [expected3(value)]
    if isinstance(value, float):
        assert float(double_text(value)) == value


@FAST
@given(items=st.lists(st.one_of(st.none(), st.binary(max_size=2000)), max_size=300))
def test_bulk_array_matches_the_generic_array(items):
    for encoder in (RESP2, RESP3):
        assert encoder.bulk_array(items) == encoder.array(items) == encoder.encode(items)
    assert decode2(RESP2.bulk_array(items)) == [items]
