"""The pure parts of users and permissions: ACL SETUSER's rules, key patterns, categories,
password hashes, tokens and the brute-force throttle (security/*.py), without a node.

Key patterns are checked against a real redis-server (KEYS uses the same matcher as Redis's
ACL key patterns), so `~user:*` means in ringkv what it means in Redis, corner cases included.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.api.resp_commands import COMMANDS
from ringkv.security import acl, tokens
from ringkv.security import passwords as pw
from ringkv.security.acl import AclRuleError, Hashing, User, apply_rules, user_from_rules
from ringkv.security.categories import (
    ALL_UNITS,
    CATEGORIES,
    COMMAND_NAMES,
    RW,
    UNIT_CATEGORIES,
    R,
    W,
    key_access,
    unit_of,
    units_in,
)
from ringkv.security.keypatterns import KeyPattern
from ringkv.security.throttle import FailureThrottle
from ringkv.testing.launcher import free_port
from ringkv.testing.wait import wait_until


class CheapHashing(Hashing):
    """scrypt with the smallest cost, so rule tests run fast (the stored form is the same)."""

    def hash(self, password: bytes, salt: bytes | None) -> str:
        salt = salt or b"0123456789abcdef"
        return pw.PasswordHash(1, 1, 1, salt, pw._scrypt(password, 1, 1, 1, salt, 32)).text


CHEAP = CheapHashing()


def rules(*words: str | bytes) -> list[bytes]:
    return [w.encode() if isinstance(w, str) else w for w in words]


def make(*words: str | bytes) -> User:
    return user_from_rules("u", rules(*words), CHEAP)


# ---------------------------------------------------------------------- key patterns vs Redis


@pytest.fixture(scope="module")
def real_redis():
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed: key patterns cannot be compared with Redis")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, protocol=2)
    try:
        wait_until(client.ping, 30, "redis-server to answer PING", ignore=(redis.ConnectionError,))
        yield client
    finally:
        proc.terminate()
        proc.wait(10)


def redis_matches(client: redis.Redis, pattern: bytes, key: bytes) -> bool:
    pipe = client.pipeline(transaction=False)
    pipe.flushall()
    pipe.set(key, b"1")
    pipe.keys(pattern)
    return pipe.execute()[-1] == [key]


# Bytes that make globs interesting: wildcards, class syntax, escapes and a few letters.
GLOB_BYTES = st.sampled_from(list(b"ab-*?[]^\\"))
KEY_BYTES = st.sampled_from(list(b"ab-*?[]^\\c"))


@given(pattern=st.lists(GLOB_BYTES, max_size=8).map(bytes), key=st.lists(KEY_BYTES, min_size=1, max_size=6).map(bytes))
@settings(max_examples=400)
def test_key_patterns_match_what_redis_matches(real_redis, pattern, key):
    assert KeyPattern(pattern).matches(key) == redis_matches(real_redis, pattern, key), (pattern, key)


@pytest.mark.parametrize(("pattern", "key", "expected"), [
    (b"user:*", b"user:1", True),
    (b"user:*", b"user:", True),
    (b"user:*", b"users:1", False),
    (b"user:?", b"user:12", False),
    (b"*", b"", True),
    (b"cache:[0-9]", b"cache:7", True),
    (b"cache:[9-0]", b"cache:7", True),  # reversed bounds are swapped
    (b"cache:[^0-9]", b"cache:7", False),
    (b"a\\*", b"a*", True),
    (b"a\\*", b"ab", False),
    (b"[]", b"]", False),  # an empty class matches nothing
    (b"[^]", b"x", True),
    (b"[ab", b"a", True),  # an open class runs to the end of the pattern, as in Redis
    (b"[", b"[", False),
    (b"[a-]", b"_", True),  # a range a..] as Redis reads it
    (b"*a*b*c*", b"xaxbxcx", True),
])
def test_key_pattern_corner_cases(pattern, key, expected):
    assert KeyPattern(pattern).matches(key) is expected


def test_key_pattern_of_many_stars_stays_fast():
    """A pattern a regex engine would backtrack on exponentially is matched in linear passes."""
    pattern = KeyPattern(b"a*" * 30 + b"b")
    started = time.perf_counter()
    assert not pattern.matches(b"a" * 5000)
    assert time.perf_counter() - started < 2.0


# ---------------------------------------------------------------------- rules


def test_a_new_user_is_off_and_may_do_nothing():
    user = make()
    assert not user.enabled and not user.nopass and not user.passwords
    assert not any(user.can_run(u) for u in ALL_UNITS)
    assert not user.may_access(b"k", R)


def test_categories_allow_their_commands_and_only_those():
    user = make("on", "+@read")
    assert user.can_run("get") and user.can_run("mget") and user.can_run("ringkv.getv")
    assert not user.can_run("set") and not user.can_run("flushall") and not user.can_run("ringkv.admin|remove")


def test_later_rules_override_earlier_ones():
    user = make("+@all", "-@dangerous", "+keys")
    assert user.can_run("get") and user.can_run("set") and user.can_run("keys")
    assert not user.can_run("flushall") and not user.can_run("ringkv.admin") and not user.can_run("info")
    assert not make("+get", "-@read").can_run("get")
    assert make("-@read", "+get").can_run("get")


def test_subcommand_rules_name_one_subcommand():
    user = make("+client", "-client|list")
    assert user.can_run("client|id") and not user.can_run("client|list")
    only = make("+ringkv.admin|status")
    assert only.can_run("ringkv.admin|status") and not only.can_run("ringkv.admin|remove")


def test_flushall_and_admin_need_the_dangerous_or_admin_category():
    """Issue 13: emptying the keyspace and administering the cluster are never granted by
    @read/@write/@keyspace; @dangerous or @admin (or naming the command) grants them."""
    writer = make("+@read", "+@write", "+@keyspace", "+@string", "+@connection")
    for unit in ("flushall", "flushdb", "ringkv.admin", "ringkv.admin|remove", "ringkv.repair", "acl|setuser"):
        assert not writer.can_run(unit), unit
    assert make("+@dangerous").can_run("flushall")
    assert make("+@admin").can_run("ringkv.admin|remove")
    assert make("+flushall").can_run("flushall")


@pytest.mark.parametrize("bad", [b"+nosuchcommand", b"+@nosuchcategory", b"+get|sub", b"+client|nosuch", b"~",
                                 b"%X~k", b"(~k +get)", b"bogus", b"#nothex", b"<notapassword"])
def test_a_bad_rule_is_refused_and_nothing_changes(bad):
    before = make("on", "+get", "~k")
    with pytest.raises(AclRuleError) as info:
        apply_rules(before, [b"+set", bad], CHEAP)
    assert "Error in ACL SETUSER modifier" in str(info.value)
    assert not before.can_run("set")


def test_an_error_never_shows_a_password():
    with pytest.raises(AclRuleError) as info:
        apply_rules(make(), [b"<hunter2"], CHEAP)
    assert "hunter2" not in str(info.value)
    assert acl.redact_rules([b">hunter2", b"on"]) == [">***", "on"]


def test_key_permissions_read_write_and_both():
    user = make("on", "+@all", "%R~ro:*", "%W~wo:*", "~rw:*")
    assert user.may_access(b"ro:1", R) and not user.may_access(b"ro:1", W)
    assert user.may_access(b"wo:1", W) and not user.may_access(b"wo:1", R)
    assert user.may_access(b"rw:1", RW)
    assert not user.may_access(b"ro:1", RW)  # GETSET needs both
    assert user.may_access(b"ro:1", "any") and not user.may_access(b"other", "any")
    assert not user.unrestricted and make("+@all", "allkeys").unrestricted


def test_reset_and_resetkeys():
    user = make("on", ">pw", "+@all", "~*", "reset")
    assert not user.enabled and not user.passwords and not user.can_run("get") and not user.keys
    assert not make("~a", "resetkeys").keys


def test_nopass_resetpass_and_password_removal():
    user = make("on", ">one", ">two")
    assert len(user.passwords) == 2 and not user.nopass
    assert len(apply_rules(user, [b"<one"], CHEAP).passwords) == 1
    assert apply_rules(user, [b"nopass"], CHEAP).nopass
    assert not apply_rules(user, [b"nopass", b"resetpass"], CHEAP).nopass
    # A password given twice is stored once.
    assert len(apply_rules(user, [b">one"], CHEAP).passwords) == 2


# Rules a user may be given, as hypothesis draws them.
RULE = st.one_of(
    st.sampled_from(["on", "off", "nopass", "resetpass", "allkeys", "resetkeys", "allchannels", "resetchannels",
                     "allcommands", "nocommands", "reset"]),
    st.sampled_from(sorted(COMMAND_NAMES)).map(lambda c: st.sampled_from(["+", "-"]).map(lambda s: s + c)).flatmap(
        lambda s: s),
    st.sampled_from([*CATEGORIES, "all"]).flatmap(lambda c: st.sampled_from(["+@" + c, "-@" + c])),
    st.sampled_from(["~", "%R~", "%W~", "%RW~"]).flatmap(
        lambda p: st.text("abc*?:", min_size=1, max_size=5).map(lambda t: p + t)),
    st.sampled_from([">alpha", ">beta"]),
)


@given(st.lists(RULE, max_size=12))
@settings(max_examples=100)
def test_a_user_described_as_rules_is_the_same_user(words):
    """ACL LIST's rules, applied to a new user, give the user again: its stored form too."""
    user = make(*words)
    again = user_from_rules("u", user.describe(), CHEAP)
    assert again.same_rules(user)
    assert User.from_record(user.to_record()).same_rules(user)
    for unit in ALL_UNITS:
        assert again.can_run(unit) == user.can_run(unit)


@given(st.lists(RULE, max_size=12), st.sampled_from(sorted(ALL_UNITS)))
@settings(max_examples=200)
def test_the_last_rule_naming_a_command_decides(words, unit):
    """The normal form rules are kept in decides as the rules as given, read left to right."""
    allowed = False
    for word in words:
        if word in ("allcommands", "nocommands", "reset") or word[1:] == "@all":
            allowed = word == "allcommands" or word == "+@all"
        else:
            names_command = word[1:2] != "@" and (unit == word[1:] or unit.startswith(word[1:] + "|"))
            names_category = word[1:2] == "@" and word[2:] in UNIT_CATEGORIES[unit]
            if word[:1] in "+-" and (names_command or names_category):
                allowed = word[0] == "+"
    assert make(*words).can_run(unit) == allowed


# ---------------------------------------------------------------------- categories


def test_every_resp_command_has_categories_and_every_unit_is_a_command():
    names = {spec.name.decode() for spec in COMMANDS.values()}
    assert names <= COMMAND_NAMES, sorted(names - COMMAND_NAMES)
    assert names >= COMMAND_NAMES, sorted(COMMAND_NAMES - names)
    for unit, cats in UNIT_CATEGORIES.items():
        assert cats, unit
        assert cats <= set(CATEGORIES), (unit, cats - set(CATEGORIES))


def test_redis_categories_of_well_known_commands():
    assert {"read", "string", "fast"} <= UNIT_CATEGORIES["get"]
    assert {"write", "string"} <= UNIT_CATEGORIES["set"]
    assert {"keyspace", "write"} <= UNIT_CATEGORIES["del"]
    assert {"admin", "dangerous"} <= UNIT_CATEGORIES["ringkv.admin"]
    assert "dangerous" in UNIT_CATEGORIES["flushall"] and "keys" in units_in("dangerous")
    assert "get" in units_in("read") and "set" not in units_in("read")


def test_units_and_key_access():
    assert unit_of("client", b"LIST") == "client|list"
    assert unit_of("client", b"nosuch") == "client"
    assert unit_of("get", b"k") == "get"
    assert key_access("get", [b"get", b"k"]) == R
    assert key_access("set", [b"set", b"k", b"v"]) == W
    assert key_access("set", [b"set", b"k", b"v", b"GET"]) == RW
    assert key_access("ping", [b"ping"]) is None


# ---------------------------------------------------------------------- passwords


@given(st.binary(max_size=64), st.binary(max_size=64))
@settings(max_examples=5)  # scrypt at full cost: tens of ms each
def test_a_password_hash_accepts_its_password_and_refuses_others(password, other):
    stored = pw.hash_password(password)
    assert stored.startswith("scrypt$14$8$1$")
    assert pw.matching_hash(password, [stored]) == stored
    if other != password:
        assert pw.matching_hash(other, [stored]) is None


def test_hashes_are_salted_and_a_users_passwords_share_its_salt():
    a, b = pw.hash_password(b"same"), pw.hash_password(b"same")
    assert a != b  # a fresh salt each
    user = user_from_rules("u", [b">one", b">two"])
    salts = {pw.parse_hash(h).salt for h in user.passwords}
    assert len(salts) == 1
    assert pw.matching_hash(b"two", list(user.passwords)) == user.passwords[1]


@pytest.mark.parametrize("text", [
    "a" * 64,  # Redis's unsalted SHA-256: refused
    "scrypt$30$8$1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # too costly to check
    "scrypt$14$8$1$!!$!!",
    "md5$1$2$3$4$5",
])
def test_a_stored_hash_the_node_cannot_or_should_not_check_is_refused(text):
    with pytest.raises(ValueError) as info:
        pw.parse_hash(text)
    assert text not in str(info.value)


def test_a_hash_can_be_copied_between_users_without_the_password():
    source = make("on", ">secret")
    copy = user_from_rules("v", [b"on", b"#" + source.passwords[0].encode()], CHEAP)
    assert pw.matching_hash(b"secret", list(copy.passwords)) is not None
    assert copy.credentials == source.credentials


def test_removing_the_password_a_session_used_revokes_it():
    user = make("on", ">one", ">two")
    one = pw.credential_id(user.passwords[0])
    assert user.accepts(one)
    assert not apply_rules(user, [b"<one"], CHEAP).accepts(one)
    assert apply_rules(user, [b"<two"], CHEAP).accepts(one)


# ---------------------------------------------------------------------- tokens and throttle


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s))
@settings(max_examples=50)
def test_a_token_names_its_user_and_only_its_digest_is_kept(name):
    token, digest = tokens.mint(name)
    assert tokens.parse(token) == (name, digest)
    assert token.split(".")[2] not in digest


@pytest.mark.parametrize("bad", ["", "rkv1", "rkv1..x", "rkv2.YQ.x", "rkv1.!!!.x", "x" * 600])
def test_a_malformed_token_is_refused(bad):
    with pytest.raises(ValueError):
        tokens.parse(bad)


def test_failures_back_off_exponentially_up_to_the_cap_and_are_forgotten():
    throttle = FailureThrottle(free_failures=2, base_ms=100, max_ms=1000, max_keys=3, forget_after_ms=5000)
    delays = [throttle.failed("1.2.3.4", 0) for _ in range(7)]
    assert delays == [0, 0, 100, 200, 400, 800, 1000]
    assert throttle.wait_ms("1.2.3.4", 500) == 500
    assert throttle.wait_ms("1.2.3.4", 6000) == 0 and throttle.failures("1.2.3.4") == 0
    for i in range(10):  # bounded: the least recent failures are dropped
        throttle.failed(f"10.0.0.{i}", 10)
    assert len(throttle) == 3
