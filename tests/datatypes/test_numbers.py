"""Redis's number rules (service/numbers.py), which every type's commands share."""

from __future__ import annotations

import math

import pytest

from ringkv.errors import CommandError
from ringkv.service.numbers import parse_float, parse_int


@pytest.mark.parametrize("text", [b"1_0", b" 1", b"1 ", b"1e400", b"-1e400", b"nan", b"", b"0x10"])
def test_floats_redis_refuses_are_refused(text):
    with pytest.raises(CommandError, match=r"^value is not a valid float$"):
        parse_float(text)


@pytest.mark.parametrize(("text", "value"), [(b"inf", math.inf), (b"-inf", -math.inf), (b"+inf", math.inf),
                                             (b"1.5", 1.5), (b"1e3", 1000.0), (b"-0", -0.0)])
def test_floats_redis_takes_are_taken(text, value):
    assert parse_float(text) == value


@pytest.mark.parametrize("text", [b"1_0", b"+1", b"01", b"-0", b" 1", b"9223372036854775808", b"1.0"])
def test_integers_redis_refuses_are_refused(text):
    with pytest.raises(CommandError, match=r"^value is not an integer or out of range$"):
        parse_int(text)
