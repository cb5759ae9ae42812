"""The convergence rules of collections stored one record per element
(service/datatypes/convergent.py), proved on a model of three replicas.

Random schedules of SADD, SREM and DEL run on any replica, each reading at R = 2 and writing
at W = 2 (the replica and one other of hypothesis's choosing), an SADD split in two steps
(its elements written, then, later, its meta record) with other replicas' commands and
anti-entropy in between; then every replica syncs with every other. The checks:

- every replica ends with the same records and sees the same members;
- a member is present exactly when some add of it was not removed by a remove that saw it:
  an SREM of it whose replica held that add's element, or a DEL whose replica held the
  add's meta write. Nothing else removes an add: not a concurrent DEL, not a replica
  emptying the set and a new set created after, not a clear marker losing to a concurrent
  add's meta write;
- with plain SETs in the schedule (type conflicts) the replicas still converge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.service.datatypes.base import KIND_SET
from ringkv.service.datatypes.convergent import (
    MetaState,
    clear_meta,
    decode_clock,
    encode_clock,
    encode_element,
    meta_state,
    next_birth,
    remove_element,
    visible,
    write_element,
    write_meta,
)
from ringkv.versioning.dvv import Dot
from ringkv.versioning.record import Record, merge, overwrite

META = b"meta"
MEMBERS = [b"a", b"b", b"c"]
ACTORS = [b"r0", b"r1", b"r2"]
NOW = 0


def _ekey(member: bytes) -> bytes:
    return b"e:" + member


@dataclass
class Add:
    member: bytes
    element_dot: Dot  # the element record's sibling this add wrote
    birth: Dot


@dataclass
class Model:
    replicas: list[dict[bytes, Record]] = field(default_factory=lambda: [{}, {}, {}])
    ts: int = 0
    adds: list[Add] = field(default_factory=list)
    # What each remove saw: (member, element clock) for SREM, the meta clock for DEL.
    srem_views: list[tuple[bytes, dict]] = field(default_factory=list)
    del_views: list[dict] = field(default_factory=list)
    strings: int = 0  # SETs and DELs of a string run
    pending: dict[int, tuple[int, list[Add]]] = field(default_factory=dict)  # replica -> (peer, adds)

    skew: tuple[int, int, int] = (0, 0, 0)  # each replica's clock error, in ticks

    def tick(self, i: int) -> int:
        """Replica i's timestamp for its next write: ordered by real time but for its skew, so
        that a write made later may carry an earlier timestamp (the winner rule's case)."""
        self.ts += 1
        return self.ts + self.skew[i]

    def put(self, i: int, key: bytes, record: Record) -> None:
        old = self.replicas[i].get(key)
        self.replicas[i][key] = record if old is None else merge(old, record)

    def pull(self, i: int, j: int, keys) -> None:
        """Replica i merges replica j's records of `keys` (a read at R = 2 that repairs i)."""
        for key in keys:
            if key in self.replicas[j]:
                self.put(i, key, self.replicas[j][key])

    def state(self, i: int) -> MetaState:
        return meta_state(self.replicas[i].get(META), NOW)

    # ------------------------------------------------------------------ commands

    def sadd_elements(self, i: int, peer: int, members: list[bytes]) -> None:
        self.pull(i, peer, [META, *map(_ekey, members)])
        state = self.state(i)
        if state.kind == -1:
            return  # WRONGTYPE: the key holds a string
        birth = next_birth(self.replicas[i].get(META), ACTORS[i])
        written = []
        for m in members:
            stored = self.replicas[i].get(_ekey(m))
            if visible(stored, state, NOW) is not None:
                continue  # a member already: SADD writes nothing for it
            record = write_element(stored, state, self.replicas[i].get(META), actor=ACTORS[i], timestamp=self.tick(i),
                                   kind=KIND_SET, birth=birth)
            self.put(i, _ekey(m), record)
            self.put(peer, _ekey(m), record)  # at W = 2, before the meta write
            written.append(Add(m, Dot(ACTORS[i], record.clock[ACTORS[i]]), birth))
        self.pending[i] = (peer, written)

    def sadd_meta(self, i: int) -> None:
        peer, written = self.pending.pop(i)
        if not written:
            return  # every member was one already: SADD writes nothing
        stored = self.replicas[i].get(META)
        record = write_meta(stored, self.state(i), actor=ACTORS[i], timestamp=self.tick(i), kind=KIND_SET)
        if written:
            mine = [s.dot for s in record.siblings if s.dot.actor == ACTORS[i]]
            assert mine == [written[0].birth], "the meta write's dot is not the birth its elements carry"
        self.put(i, META, record)
        self.put(peer, META, record)
        self.adds.extend(written)

    def srem(self, i: int, peer: int, member: bytes) -> None:
        self.pull(i, peer, [META, _ekey(member)])
        state = self.state(i)
        stored = self.replicas[i].get(_ekey(member))
        if visible(stored, state, NOW) is None:
            return
        self.srem_views.append((member, dict(stored.clock)))
        record = remove_element(stored, actor=ACTORS[i], timestamp=self.tick(i))
        self.put(i, _ekey(member), record)
        self.put(peer, _ekey(member), record)
        # Emptied? Read every element at R = 2 (R + W > N: every element of an add whose meta
        # write this replica holds is among them), then a clear marker.
        self.pull(i, peer, [META, *map(_ekey, MEMBERS)])
        state = self.state(i)
        if state.exists and all(visible(self.replicas[i].get(_ekey(m)), state, NOW) is None for m in MEMBERS):
            marker = clear_meta(self.replicas[i].get(META), state, actor=ACTORS[i], timestamp=self.tick(i),
                                whole=False)
            self.put(i, META, marker)
            self.put(peer, META, marker)

    def delete(self, i: int, peer: int) -> None:
        self.pull(i, peer, [META])
        stored = self.replicas[i].get(META)
        state = self.state(i)
        if not state.exists:
            return
        self.del_views.append(dict(stored.clock))
        marker = clear_meta(stored, state, actor=ACTORS[i], timestamp=self.tick(i), whole=True)
        self.put(i, META, marker)
        self.put(peer, META, marker)

    def set_string(self, i: int, peer: int) -> None:
        """A plain SET over the key: it replaces whatever it holds (a DEL of the set that saw
        what this replica's meta record holds), or a DEL of a string (a plain tombstone)."""
        self.pull(i, peer, [META])
        stored = self.replicas[i].get(META)
        state = self.state(i)
        value = None if state.kind == -1 else b"string"
        self.strings += 1
        record = overwrite(stored, actor=ACTORS[i], value=value, timestamp=self.tick(i))
        self.put(i, META, record)
        self.put(peer, META, record)

    def members(self, i: int) -> set[bytes]:
        state = self.state(i)
        return {m for m in MEMBERS if visible(self.replicas[i].get(_ekey(m)), state, NOW) is not None}


def _covers(clock: dict, dot: Dot) -> bool:
    return clock.get(dot.actor, 0) >= dot.counter


replica = st.integers(0, 2)
step = st.one_of(
    st.tuples(st.just("sadd"), replica, st.integers(1, 2), st.lists(st.sampled_from(MEMBERS), min_size=1,
                                                                      max_size=3, unique=True)),
    st.tuples(st.just("finish"), replica),
    st.tuples(st.just("srem"), replica, st.integers(1, 2), st.sampled_from(MEMBERS)),
    st.tuples(st.just("del"), replica, st.integers(1, 2)),
    st.tuples(st.just("sync"), replica, replica, st.sampled_from([META, *map(_ekey, MEMBERS)])),
    st.tuples(st.just("string"), replica, st.integers(1, 2)),
)
skews = st.tuples(*[st.integers(-8, 8)] * 3)


@settings(max_examples=int(__import__("os").environ.get("CONVERGENT_EXAMPLES", "600")), deadline=None)
@given(st.lists(step, max_size=40), skews)
def test_replicas_converge_and_keep_every_add_no_remove_saw(steps, skew):
    model = Model(skew=skew)
    for op, i, *rest in steps:
        busy = i in model.pending  # a replica runs one command of a key at a time (its lock)
        if op == "sadd" and not busy:
            model.sadd_elements(i, (i + rest[0]) % 3, rest[1])
        elif op == "finish" and busy:
            model.sadd_meta(i)
        elif op == "srem" and not busy:
            model.srem(i, (i + rest[0]) % 3, rest[1])
        elif op == "del" and not busy:
            model.delete(i, (i + rest[0]) % 3)
        elif op == "string" and not busy:
            model.set_string(i, (i + rest[0]) % 3)
        elif op == "sync":
            model.pull(i, rest[0], [rest[1]])
    for i in list(model.pending):
        model.sadd_meta(i)
    keys = [META, *map(_ekey, MEMBERS)]
    for i in range(3):
        for j in range(3):
            model.pull(i, j, keys)
    for i in range(3):
        model.pull(i, 2, keys)  # replica 2 saw everything last; the others catch up

    assert model.replicas[0] == model.replicas[1] == model.replicas[2]
    kept = set()
    for add in model.adds:
        if any(m == add.member and _covers(view, add.element_dot) for m, view in model.srem_views):
            continue
        if any(_covers(view, add.birth) for view in model.del_views):
            continue
        kept.add(add.member)
    if not model.strings:
        assert model.members(0) == kept, (steps, skew)
    # With SETs in the schedule only convergence is promised (docs/data-types.md, "Type
    # conflicts"): a string replaces a clear marker without keeping what it cleared, so a
    # write of the set concurrent with that SET, when it wins, can bring back members the
    # clear removed.


def test_a_delete_clears_what_it_saw_and_a_new_set_starts_empty():
    model = Model()
    model.sadd_elements(0, 1, [b"a", b"b"])
    model.sadd_meta(0)
    model.delete(1, 0)
    assert model.members(0) == model.members(1) == set()
    assert not model.state(0).exists
    model.sadd_elements(2, 1, [b"c"])
    model.sadd_meta(2)
    assert model.members(1) == model.members(2) == {b"c"}  # a and b stay gone


def test_an_add_concurrent_with_a_delete_keeps_the_set_with_only_that_add():
    # r2's clock runs behind r1's: its add, made after r1's delete, carries an older
    # timestamp than the delete's marker, and still keeps the set (add wins).
    model = Model(skew=(0, 8, -8))
    model.sadd_elements(0, 1, [b"a"])
    model.sadd_meta(0)
    model.pull(2, 0, [META, _ekey(b"a")])
    # r1 deletes (it saw a's add); r2, cut off from r1, adds b meanwhile.
    model.delete(1, 0)
    model.sadd_elements(2, 2, [b"b"])  # peer 2 is itself: written to r2 alone here
    model.sadd_meta(2)
    for i in range(3):
        for j in range(3):
            model.pull(i, j, [META, _ekey(b"a"), _ekey(b"b")])
    assert model.members(0) == model.members(1) == model.members(2) == {b"b"}


def test_codecs_round_trip():
    clock = {b"r0": 3, b"r1": 1}
    assert decode_clock(encode_clock(clock)) == clock
    state = meta_state(None, 0)
    assert state == MetaState(0, {}) and not state.exists
    assert encode_element(KIND_SET, [Dot(b"r0", 1)]) != encode_element(KIND_SET, [Dot(b"r0", 2)])


def test_a_set_replaced_by_a_string_then_deleted_comes_back_empty():
    # Neither the string nor the plain DEL of it is a clear marker: the new set starts from
    # every birth the key's record has seen.
    model = Model()
    model.sadd_elements(0, 1, [b"a"])
    model.sadd_meta(0)
    model.set_string(1, 2)  # SET k "string"
    model.set_string(1, 2)  # DEL k (it holds a string)
    assert not model.state(1).exists and model.state(1).kind == 0
    model.sadd_elements(1, 2, [b"b"])
    model.sadd_meta(1)
    for i in range(3):
        for j in range(3):
            model.pull(i, j, [META, _ekey(b"a"), _ekey(b"b")])
    assert model.members(0) == model.members(1) == {b"b"}
