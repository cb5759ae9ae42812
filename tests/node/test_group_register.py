"""A hash tag's group register (node/consensus.py), as someone reviewing MSETNX checks it: the
keys of one tag share one consensus register, so an MSETNX of several of them is one round;
over many random schedules of lost, duplicated and reordered messages between several
proposers and three acceptors, no acceptor's stored data ever holds part of an MSETNX, of two
MSETNXs over overlapping keys at most one is applied, every answer matches the final state,
and INCRs on the tag's keys interleaved with them lose nothing.

The schedules are seeded: a failure names the seed, `RINGKV_SIM_SEED=N pytest
tests/node/test_group_register.py -k schedules` replays it.
"""

from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.cluster.test_paxos import ACCEPTORS, Message, Schedule, schedule_seeds

from ringkv.clock import Clock
from ringkv.cluster.paxos import (
    Promise,
    command_rounds,
    on_commit,
    on_prepare,
    on_propose,
    read_rounds,
)
from ringkv.errors import CommandError, CorruptionError
from ringkv.node import consensus
from ringkv.node.commands import IncrBy, MSetNX
from ringkv.node.consensus import (
    Acceptor,
    AcceptorStore,
    GroupRegister,
    _no_group_command,
    apply_group_command,
    check_register_value,
    decode_group,
    encode_group,
    group_records,
    is_group_register,
    register_key,
)
from ringkv.node.local_store import LocalStore
from ringkv.node.namespaces import Namespaces
from ringkv.node.replica import Replica, storage_key
from ringkv.storage import Engine, Options
from ringkv.versioning import record as rec
from ringkv.versioning.record import ConflictPolicy

NS = b""
POLICY = ConflictPolicy.SIBLINGS
TAGGED = [f"{{user1}}:{k}".encode() for k in "abcde"]
COUNTER = b"{user1}:n"


def skey(key: bytes) -> bytes:
    return storage_key(NS, key)


# --------------------------------------------------------------------------- the register key


def test_keys_of_one_hash_tag_share_the_tags_register_and_its_replicas():
    a, b = skey(b"{user1}:a"), skey(b"x{user1}y")
    assert register_key(a) == register_key(b) == skey(b"{user1}")
    assert a[:8] == b[:8] == register_key(a)[:8]  # one token: one partition, one replica set
    assert is_group_register(register_key(a))


def test_a_key_without_a_hash_tag_is_its_own_register():
    for key in (b"plain", b"{}x", b"{open", b"close}"):
        assert register_key(skey(key)) == skey(key)
        assert not is_group_register(skey(key))


def test_registers_of_other_tags_or_namespaces_differ():
    assert register_key(skey(b"{user1}:a")) != register_key(skey(b"{user2}:a"))
    assert register_key(storage_key(b"ns", b"{user1}:a")) != register_key(skey(b"{user1}:a"))


def test_a_group_value_naming_a_key_of_another_register_is_refused():
    register = register_key(skey(b"{user1}:a"))
    record = rec.encode_record(rec.apply_write(None, actor=b"p", context=None, value=b"v", timestamp=1))
    check_register_value(register, encode_group({skey(b"{user1}:a"): record}))
    with pytest.raises(CorruptionError, match="another register"):
        check_register_value(register, encode_group({skey(b"{user2}:a"): record}))
    with pytest.raises(CorruptionError, match="unreadable"):
        check_register_value(register, b"\xc1garbage")


# --------------------------------------------------------------------------- applying MSETNX


def env(actor: bytes = b"p1", now_ms: int = 1000) -> dict:
    return dict(actor=actor, now_ms=now_ms, timestamp=lambda: now_ms)


def test_msetnx_writes_every_key_in_one_value_or_none_when_one_exists():
    keys = [skey(k) for k in TAGGED[:3]]
    command = MSetNX(tuple((k, b"v" + k[-1:]) for k in TAGGED[:3]))
    new, result, dot = apply_group_command(command, POLICY, keys, {}, (), **env())
    assert result is True and set(new) == set(keys) and dot[0] == keys[0]
    values = {k: rec.decode_record(r).winner(1000).value for k, r in new.items()}
    assert values == {keys[0]: b"va", keys[1]: b"vb", keys[2]: b"vc"}
    # One of the keys exists: nothing is written, not even the missing ones.
    existing = {keys[1]: new[keys[1]]}
    assert apply_group_command(command, POLICY, keys, existing, (), **env()) == (None, False, None)


def test_a_retried_msetnx_attempt_gets_a_dot_of_its_own_so_the_earlier_one_is_recognised():
    keys = [skey(k) for k in TAGGED[:2]]
    command = MSetNX(tuple((k, b"v") for k in TAGGED[:2]))
    register = GroupRegister(POLICY, functools.partial(apply_group_command, command, POLICY, keys, **env()))
    first, _, dot1 = register.compute(None, ())
    _second, _, dot2 = register.compute(None, (dot1,))
    assert dot1 != dot2
    assert register.covers(first, dot1) and not register.covers(first, dot2)


def test_merging_group_values_merges_each_keys_records():
    keys = [skey(k) for k in TAGGED[:2]]
    one = rec.encode_record(rec.apply_write(None, actor=b"p1", context=None, value=b"1", timestamp=1))
    two = rec.encode_record(rec.apply_write(None, actor=b"p2", context=None, value=b"2", timestamp=2))
    register = GroupRegister(POLICY, _no_group_command)
    merged = decode_group(register.merge(encode_group({keys[0]: one}), encode_group({keys[0]: two, keys[1]: two})))
    assert set(merged) == set(keys)
    assert {s.value for s in rec.decode_record(merged[keys[0]]).siblings} == {b"1", b"2"}


# --------------------------------------------------------------------------- schedules


class GroupSchedule(Schedule):
    """Schedule (tests/cluster/test_paxos.py) over one hash tag's group register: each command
    is an MSETNX of 2-3 of the tag's keys, an INCR of its counter, or a SERIAL read of every
    key; acceptors keep per-key records and apply a commit's records together."""

    def __init__(self, seed: int, register=GroupRegister, **kw):
        super().__init__(seed, **kw)
        self.register = register
        self.stored = {a: {} for a in ACCEPTORS}
        self.commands: dict[str, tuple] = {}
        self.keys_of: dict[str, list[bytes]] = {}
        self.torn: list[str] = []
        n = 0
        for p in self.proposers:
            work = []
            for _ in range(len(p.work)):
                n += 1
                x = self.rng.random()
                if x < 0.55:
                    keys = tuple(self.rng.sample(TAGGED, self.rng.choice((2, 3))))
                    self.commands[f"m{n}"] = ("msetnx", keys)
                elif x < 0.85:
                    self.commands[f"m{n}"] = ("incr", (COUNTER,))
                else:
                    self.commands[f"m{n}"] = ("read", (*TAGGED, COUNTER))
                work.append(f"m{n}")
            p.work = work

    def start(self, p) -> None:
        if not p.work:
            p.rounds = None
            return
        p.current = p.work.pop(0)
        kind, keys = self.commands[p.current]
        skeys = [skey(k) for k in keys]
        self.keys_of[p.pid] = skeys
        fresh = lambda: self.fresh(p)  # noqa: E731
        if kind == "read":
            p.rounds = read_rounds(self.register(POLICY, _no_group_command, skeys), [ACCEPTORS], fresh)
        else:
            command = MSetNX(tuple((k, p.current.encode()) for k in keys)) if kind == "msetnx" else IncrBy(1)
            apply = functools.partial(apply_group_command, command, POLICY, skeys, actor=p.pid.encode(),
                                      now_ms=1000, timestamp=lambda: self.clock)
            lease, p.lease = p.lease, None
            p.rounds = command_rounds(self.register(POLICY, apply, skeys), [ACCEPTORS], fresh, lease=lease)
        self.step(p, None)

    def serve(self, m: Message) -> None:
        acc = self.acceptors[m.dst]
        stored = self.stored[m.dst]
        if m.kind == "prepare":
            new, answer = on_prepare(acc.state, m.ballot)
            found = {k: stored[k] for k in self.keys_of[m.src] if k in stored}
            record = encode_group(found) if found and isinstance(answer, Promise) else None
            reply = Message("promise", m.dst, m.src, m.ballot, record, answer, m.rnd)
        elif m.kind == "propose":
            new, answer = on_propose(acc.state, m.ballot, m.value)
            reply = Message("accepted", m.dst, m.src, m.ballot, None, answer, m.rnd)
        else:
            new, reply = on_commit(acc.state, m.ballot, keep_value=self.register.full_state), None
            for k, r in decode_group(m.value).items():
                stored[k] = r if k not in stored else merge_records(stored[k], r)
            self.torn += [f"{m.dst}: {t}" for t in torn_msetnx(self.commands, stored)]
        if new is not None:
            acc.state = new
        if reply is not None:
            self.send(reply)


def merge_records(a: bytes, b: bytes) -> bytes:
    return rec.encode_record(rec.merge(rec.decode_record(a), rec.decode_record(b), POLICY))


def values_of(stored: dict[bytes, bytes]) -> dict[bytes, set[bytes]]:
    return {k: {s.value for s in rec.decode_record(r).siblings} for k, r in stored.items()}


def torn_msetnx(commands: dict[str, tuple], stored: dict[bytes, bytes]) -> list[str]:
    """MSETNXs some but not all of whose keys hold their value in `stored`."""
    values = values_of(stored)
    out = []
    for cid, (kind, keys) in commands.items():
        if kind != "msetnx":
            continue
        have = [cid.encode() in values.get(skey(k), set()) for k in keys]
        if any(have) and not all(have):
            out.append(f"{cid} is on {sum(have)} of its {len(keys)} keys")
    return out


def final_state(s: GroupSchedule) -> dict[bytes, bytes]:
    """The register's state at the end: the value chosen last (a group value is the register's
    whole state; the commits that would have stored it may all be lost here, where no hint
    stands in for them), merged with every acceptor's stored records."""
    merged: dict[bytes, bytes] = decode_group(max(s.chosen)[1]) if s.chosen else {}
    for stored in s.stored.values():
        for k, r in stored.items():
            merged[k] = r if k not in merged else merge_records(merged[k], r)
    return merged


def violations(s: GroupSchedule) -> list[str]:
    out = list(s.torn)
    final = final_state(s)
    values = values_of(final)
    out += [f"merged: {t}" for t in torn_msetnx(s.commands, final)]
    applied = {}
    for cid, (kind, keys) in s.commands.items():
        if kind != "msetnx":
            continue
        outcome = s.outcomes.get(cid)
        there = all(cid.encode() in values.get(skey(k), set()) for k in keys)
        applied[cid] = there
        if outcome.kind == "done" and outcome.result is True and not there:
            out.append(f"{cid} answered 1 but its values are not there")
        if ((outcome.kind == "done" and outcome.result is False) or outcome.kind in ("unavailable", "contended")) \
                and there:
            out.append(f"{cid} answered {outcome.kind} {outcome.result} but its values are there")
    for (c1, (k1, keys1)), (c2, (k2, keys2)) in itertools.combinations(s.commands.items(), 2):
        if k1 == k2 == "msetnx" and set(keys1) & set(keys2) and applied[c1] and applied[c2]:
            out.append(f"{c1} {keys1} and {c2} {keys2} overlap and both were applied")
    for k, vs in values.items():
        if k != skey(COUNTER) and len(vs) > 1:
            out.append(f"key {k!r} holds values of several MSETNXs: {vs}")
    incrs = [s.outcomes[c] for c, (kind, _) in s.commands.items() if kind == "incr"]
    acked = sum(1 for o in incrs if o.kind == "done")
    unknown = sum(1 for o in incrs if o.kind == "unknown")
    counter = final.get(skey(COUNTER))
    total = 0 if counter is None else int(rec.decode_record(counter).winner(1000).value)
    if not acked <= total <= acked + unknown:
        out.append(f"counter {total}, with {acked} INCRs acknowledged and {unknown} unknown")
    for cid, (kind, keys) in s.commands.items():
        outcome = s.outcomes[cid]
        if kind == "read" and outcome.kind == "done" and outcome.result is not None:
            seen = {k: r for k, r in zip(keys, group_records(outcome.result, [skey(k) for k in keys]), strict=True)
                    if r is not None}
            out += [f"{cid} read a torn MSETNX: {t}" for t in torn_msetnx(s.commands, {skey(k): r for k, r in seen.items()})]
    return out


def test_over_many_schedules_msetnx_is_all_or_nothing_and_overlapping_ones_exclude_each_other():
    totals = {"applied": 0, "refused": 0, "unknown": 0, "reads": 0}
    for seed in schedule_seeds(range(400)):
        s = GroupSchedule(seed).run()
        problems = violations(s)
        assert not problems, f"seed={seed}: " + "\n".join(problems)
        for cid, (kind, _) in s.commands.items():
            o = s.outcomes[cid]
            if kind == "msetnx":
                key = {True: "applied", False: "refused"}.get(o.result) if o.kind == "done" else "unknown"
                totals[key or "unknown"] += 1
            elif kind == "read" and o.kind == "done":
                totals["reads"] += 1
    # A run where nothing conflicts or nothing is lost proves little.
    assert totals["applied"] > 0 and totals["refused"] > 0 and totals["unknown"] > 0 and totals["reads"] > 0, totals


@given(st.integers(0, 2**32 - 1), st.integers(2, 4), st.floats(0.0, 0.4), st.floats(0.0, 0.3), st.floats(0.0, 0.2))
def test_any_schedule_keeps_msetnx_whole(seed, proposers, loss, duplication, timeouts):
    s = GroupSchedule(seed, proposers=proposers, loss=loss, duplication=duplication, timeouts=timeouts).run()
    assert violations(s) == []


class CommandKeysOnlyRegister(GroupRegister):
    """The first design, kept to show why it was wrong: a value holds only the records of its
    command's keys (and of an unfinished value it completes), and acceptors drop it on commit,
    as a one-key register's do."""

    __slots__ = ()
    full_state = False


def test_values_holding_only_their_commands_keys_are_caught_applying_overlapping_msetnx_twice():
    for seed in range(400):
        problems = violations(GroupSchedule(seed, register=CommandKeysOnlyRegister).run())
        if any("both were applied" in p or "several MSETNXs" in p for p in problems):
            return
    raise AssertionError("400 schedules did not show the lost MSETNX of the command-keys-only design")


def test_a_commit_that_wrote_keys_one_by_one_would_be_caught():
    command = {"m1": ("msetnx", (TAGGED[0], TAGGED[1]))}
    record = rec.encode_record(rec.apply_write(None, actor=b"p", context=None, value=b"m1", timestamp=1))
    assert torn_msetnx(command, {skey(TAGGED[0]): record}) == ["m1 is on 1 of its 2 keys"]
    assert torn_msetnx(command, {skey(TAGGED[0]): record, skey(TAGGED[1]): record}) == []


# --------------------------------------------------------------------------- a replica's acceptor


@pytest.fixture
def acceptor(tmp_path):
    engine = Engine.open(str(tmp_path / "data"), Options())
    states = AcceptorStore(str(tmp_path))
    store = LocalStore(Replica(engine, b"n1@x"), Clock(), namespaces=Namespaces(3, "siblings"))
    yield Acceptor(states, store)
    states.close()
    engine.close()


def written(value: bytes) -> bytes:
    return rec.encode_record(rec.apply_write(None, actor=b"p1@x", context=None, value=value, timestamp=1))


def test_a_replica_commits_every_record_of_a_group_value_and_keeps_the_value(acceptor):
    register = register_key(skey(b"{user1}:a"))
    a, b = skey(b"{user1}:a"), skey(b"{user1}:b")
    value = encode_group({a: written(b"1"), b: written(b"2")})
    promise, _ = acceptor.prepare(register, (5, "p1"), [a, b])
    assert promise.ok and promise.record is None  # nothing stored yet
    assert acceptor.propose(register, (5, "p1"), value, None)[0].ok
    acceptor.commit(register, (5, "p1"), value)
    assert [rec.decode_record(acceptor.store.engine.get(k)).winner(0).value for k in (a, b)] == [b"1", b"2"]
    # The register's state stays (a group value is its whole state), and the promise carries
    # the stored records of the keys asked for.
    promise, _ = acceptor.prepare(register, (7, "p2"), [b])
    assert promise.value == value and promise.committed == (5, "p1")
    assert set(decode_group(promise.record)) == {b}


def test_a_replica_refuses_keys_of_another_register_and_stores_nothing(acceptor):
    register = register_key(skey(b"{user1}:a"))
    with pytest.raises(Exception, match="not of its group register"):
        acceptor.prepare(register, (5, "p1"), [skey(b"{user2}:a")])
    stranger = encode_group({skey(b"{user1}:a"): written(b"1"), skey(b"{user2}:a"): written(b"2")})
    with pytest.raises(CorruptionError, match="another register"):
        check_register_value(register, stranger)
    with pytest.raises(CorruptionError):
        acceptor.commit(register, (5, "p1"), stranger)
    assert acceptor.store.engine.get(skey(b"{user1}:a")) is None


def test_a_leased_group_proposal_is_refused_when_a_key_holds_a_plain_write_it_has_not_seen(acceptor):
    register = register_key(skey(b"{user1}:a"))
    a, b = skey(b"{user1}:a"), skey(b"{user1}:b")
    value = encode_group({a: written(b"1")})
    group = GroupRegister(POLICY, _no_group_command, [a, b])
    assert acceptor.propose(register, (5, "p1"), value, group.base(value))[0].ok
    acceptor.store.apply_record(b, written(b"plain"))  # a plain SET of b, outside the register
    reply, _ = acceptor.propose(register, (6, "p1"), value, group.base(value))
    assert not reply.ok and reply.stale


def test_a_command_that_would_take_a_tags_register_past_its_bounds_is_refused_naming_the_bound():
    many = {skey(b"{user1}:%d" % i): written(b"v") for i in range(consensus.MAX_GROUP_KEYS + 1)}
    with pytest.raises(CommandError, match="MAX_GROUP_KEYS"):
        encode_group(many)
    big = {skey(b"{user1}:%d" % i): written(b"x" * (1024 * 1024)) for i in range(7)}
    with pytest.raises(CommandError, match="MAX_GROUP_VALUE_BYTES"):
        encode_group(big)
