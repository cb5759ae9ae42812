"""The session token (service/session.py): what it requires, its bounds and eviction rule, and
the refusal of tokens that were altered or come from another cluster."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.service.session import SessionCodec, SessionError, SessionToken, key_digest
from ringkv.versioning import dvv

ACTORS = [b"n1:0001", b"n2:0002", b"n3:0003", b"n4:0004"]
clocks = st.dictionaries(st.sampled_from(ACTORS), st.integers(1, 10**12), min_size=1, max_size=4)
keys = st.binary(min_size=9, max_size=24)
observations = st.lists(st.tuples(keys, clocks, st.booleans()), max_size=60)


def _replay(obs, max_keys=1000, max_bytes=1 << 20) -> SessionToken:
    token = SessionToken(max_keys, max_bytes)
    for key, clock, settled in obs:
        token.observe(key, clock, settled)
    return token


@given(observations)
def test_a_token_requires_the_join_of_everything_observed_of_a_key(obs):
    token = _replay(obs)
    for key in {k for k, _, _ in obs}:
        expected: dict = {}
        for k, clock, _ in obs:
            if k == key:
                expected = dvv.join(expected, clock)
        assert token.required(key) == expected
        assert token.satisfied_by(key, expected)
        assert not token.satisfied_by(key, {})


@given(observations, st.integers(1, 12), st.integers(256, 2048))
def test_a_token_never_passes_its_bounds_and_the_encoding_is_within_the_estimate(obs, max_keys, max_bytes):
    codec = SessionCodec("c", max_keys=max_keys, max_token_bytes=max_bytes)
    token = _replay(obs, max_keys, max_bytes)
    assert len(token) <= max_keys
    encoded = codec.encode(token)
    assert len(encoded) <= token.bound_bytes
    if len(token) > 1:
        assert len(encoded) <= max_bytes


@given(observations, st.integers(1, 8))
def test_eviction_drops_settled_entries_first_and_degrades_only_for_unsettled_ones(obs, max_keys):
    token = SessionToken(max_keys, 1 << 20)
    for key, clock, settled in obs:
        before = {d: e.settled for d, e in token.entries.items()}
        was_degraded = token.degraded
        token.observe(key, clock, settled)
        gone = set(before) - set(token.entries)
        if any(not before[d] for d in gone):
            assert token.degraded
        elif not was_degraded:
            assert not token.degraded
        # An unsettled entry went only when no settled one was left to go.
        if any(not before[d] for d in gone):
            touched = key_digest(key)
            assert not any(before[d] for d in token.entries if d in before and d != touched)


@given(observations)
def test_encode_then_decode_is_the_same_token(obs):
    codec = SessionCodec("cluster-a", b"s" * 32)
    token = _replay(obs, codec.max_keys, codec.max_token_bytes)
    # A codec without a cache: the text itself is decoded, not the copy kept when encoding.
    again = SessionCodec("cluster-a", b"s" * 32, cache_max_bytes=0).decode(codec.encode(token))
    assert dict((d, (e.clock, e.settled)) for d, e in again.entries.items()) == \
        dict((d, (e.clock, e.settled)) for d, e in token.entries.items())
    assert list(again.entries) == list(token.entries)  # oldest first, kept
    assert again.degraded == token.degraded


@given(observations, observations)
def test_merging_two_tokens_requires_what_either_required(a, b):
    ta, tb = _replay(a), _replay(b)
    merged = ta.copy()
    merged.merge(tb)
    for key in {k for k, _, _ in a + b}:
        need = dvv.join(ta.required(key) or {}, tb.required(key) or {})
        assert merged.required(key) == need


@settings(max_examples=200)
@given(observations.filter(bool), st.data())
def test_any_altered_byte_is_refused(obs, data):
    codec = SessionCodec("cluster-a")
    text = codec.encode(_replay(obs))
    raw = bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    altered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(SessionError, match=r"^session: "):
        codec.decode(altered)


def test_a_token_of_another_cluster_or_secret_is_refused_by_name():
    token = SessionToken()
    token.observe(b"k" * 10, {b"n1:1": 3})
    text = SessionCodec("cluster-a").encode(token)
    with pytest.raises(SessionError, match="issued by another cluster"):
        SessionCodec("cluster-b").decode(text)
    with pytest.raises(SessionError, match="issued by another cluster"):
        SessionCodec("cluster-a", b"x" * 32).decode(text)


def test_a_token_over_the_byte_bound_is_refused_before_it_is_parsed():
    codec = SessionCodec("c", max_token_bytes=300)
    with pytest.raises(SessionError, match="over session_max_token_bytes=300"):
        codec.decode("A" * 301)


def test_a_write_known_held_everywhere_settles_and_goes_first():
    token = SessionToken(2, 1 << 20)
    token.observe(b"a" * 9, {b"n1": 1})
    token.observe(b"b" * 9, {b"n1": 2}, settled=True)
    token.observe(b"c" * 9, {b"n1": 3})
    assert token.required(b"b" * 9) is None  # the settled one went, though not the oldest
    assert token.required(b"a" * 9) == {b"n1": 1}
    assert not token.degraded
    token.observe(b"d" * 9, {b"n1": 4})
    assert token.required(b"a" * 9) is None
    assert token.degraded  # an unsettled entry had to go


@given(observations, keys, clocks)
def test_settling_later_marks_only_an_entry_the_clock_covers_and_keeps_its_place(obs, key, clock):
    token = _replay(obs)
    before = _state(token)
    entry = token.entries.get(key_digest(key))
    token.settle(key, clock)
    after = _state(token)
    assert [d for d, _, _ in after[0]] == [d for d, _, _ in before[0]]  # same entries, same order
    assert after[1] == before[1]
    for (d, c, s), (_, c2, s2) in zip(before[0], after[0], strict=True):
        assert c == c2
        if d == key_digest(key):
            assert s2 == (s or dvv.descends(clock, entry.clock))
        else:
            assert s2 == s
    # and it reads back so
    codec = SessionCodec("c")
    assert _state(codec.decode(codec.encode(token))) == after


def test_settling_a_key_the_token_no_longer_holds_adds_nothing():
    token = SessionToken(1, 1 << 20)
    token.observe(b"a" * 9, {b"n1": 1})
    token.observe(b"b" * 9, {b"n1": 2})  # "a" evicted
    token.settle(b"a" * 9, {b"n1": 1})
    assert token.required(b"a" * 9) is None and len(token) == 1


def _state(token: SessionToken) -> tuple:
    return list((d, e.clock, e.settled) for d, e in token.entries.items()), token.degraded


@given(st.lists(observations, min_size=1, max_size=6), st.integers(1, 12), st.integers(256, 2048))
def test_a_token_encoded_step_by_step_reads_back_as_it_was_at_each_step(steps, max_keys, max_bytes):
    # The encoding reuses each entry's packed form and the text of an unchanged token, and
    # the codec answers texts it issued from its cache: each of the texts must still read
    # back, through the cache and without it, as exactly the token it was issued for.
    codec = SessionCodec("c", max_keys=max_keys, max_token_bytes=max_bytes)
    plain = SessionCodec("c", max_keys=max_keys, max_token_bytes=max_bytes, cache_max_bytes=0)
    token = codec.new()
    issued = []
    for obs in steps:
        for key, clock, settled in obs:
            token.observe(key, clock, settled)
        text = codec.encode_bytes(token)
        assert token.unchanged and token.encoded_as(text)
        assert codec.encode_bytes(token) is text  # unchanged: not encoded again
        issued.append((text, _state(token)))
    for text, state in issued:
        assert _state(plain.decode(text)) == state
        cached = codec.decode(text)
        assert _state(cached) == state
        cached.observe(b"another key", {b"n9:0009": 1})  # the caller's copy, not the cache's
        assert _state(codec.decode(text)) == state


def test_only_a_change_to_the_token_drops_its_text():
    codec = SessionCodec("c")
    token = codec.new()
    token.observe(b"a" * 9, {b"n1": 1})
    token.observe(b"b" * 9, {b"n1": 2})
    codec.encode_bytes(token)
    token.observe(b"b" * 9, {b"n1": 2})  # the newest entry, seen again: nothing changes
    token.observe(b"a" * 9, {b"n1": 1}, settled=False)
    assert not token.unchanged  # a's entry became the newest: the order is in the text
    codec.encode_bytes(token)
    token.observe(b"a" * 9, {b"n1": 1}, settled=True)
    assert not token.unchanged  # settled now
    codec.encode_bytes(token)
    token.observe(b"a" * 9, {b"n1": 2})
    assert not token.unchanged  # grown


def test_the_codec_cache_keeps_to_its_byte_bound():
    codec = SessionCodec("c", cache_max_bytes=4096)
    token = codec.new()
    texts = []
    for i in range(200):
        token.observe(b"key %d" % i, {b"n1:0001": i + 1})
        texts.append(codec.encode_bytes(token))
        assert codec._cache_bytes <= 4096
    assert sum(len(t) for t in codec._cache) == codec._cache_bytes
    # A text that left the cache is decoded (and checked) again, and reads back the same.
    assert list(codec.decode(texts[0]).entries) == [key_digest(b"key 0")]
