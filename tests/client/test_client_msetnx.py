"""The client's MSETNX, without a server: keys of one hash tag go out as one MSETNX; keys of
several tags are refused before sending, by the same rule the node applies (its hash tag is
cluster/ring.hash_part's, byte for byte)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringkv.client import commands
from ringkv.cluster.ring import hash_part


def test_keys_of_one_hash_tag_go_out_as_one_msetnx_that_is_never_resent():
    request = commands.msetnx({"{user1}:a": "1", "{user1}:b": b"2"})
    assert request.args == (b"MSETNX", b"{user1}:a", b"1", b"{user1}:b", b"2")
    assert request.idempotent is False  # a second copy would find the first one's keys
    assert request.parse(1) is True and request.parse(0) is False


def test_one_key_or_one_key_twice_needs_no_tag():
    assert commands.msetnx([("solo", "1")]).args == (b"MSETNX", b"solo", b"1")
    assert commands.msetnx([("solo", "1"), ("solo", "2")]).args[0] == b"MSETNX"


@pytest.mark.parametrize("pairs", [
    {"{user1}:a": "1", "{user2}:b": "2"},
    {"plain1": "1", "plain2": "2"},
    {"{user1}:a": "1", "plain": "2"},
])
def test_keys_of_several_registers_are_refused_before_sending_naming_the_rule(pairs):
    with pytest.raises(ValueError, match=r"CROSSSLOT .*one hash tag"):
        commands.msetnx(pairs)


@given(st.binary(max_size=12))
def test_the_clients_hash_tag_is_the_nodes(key):
    tag = commands._hash_tag(key)
    assert (tag if tag is not None else key) == hash_part(key)
