"""Request and answer bodies of the HTTP API, as pydantic models.

They validate the JSON requests and document the answers in the OpenAPI spec; handlers build
answers directly (`http_codec.json_response`), so each model here must match what its handler
writes (the schemathesis tests check it). The shapes are the specification's (docs/http.md);
fields named "an earlier name" are the ones ringkv answered before, kept for its users.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

MAX_BATCH_ITEMS = 1000
MAX_TTL_S = 100 * 365 * 86400  # 100 years; keeps expire_at_ms far from any overflow


class ConsistencyLevel(StrEnum):
    """The levels a request may name. EVENTUAL and STRONG are the specification's names for ONE
    and ALL. SERIAL is for reads: linearizable, through the key's consensus path; a write at
    SERIAL is a write at QUORUM (service/levels.py). SESSION is ONE in the request's session
    (the Session-Token header: read-your-writes and monotonic reads, api/http_session.py).
    LOCAL_ONE, LOCAL_QUORUM and EACH_QUORUM count replicas per datacenter (docs/multi-dc.md)."""

    ONE = "ONE"
    QUORUM = "QUORUM"
    ALL = "ALL"
    SERIAL = "SERIAL"
    SESSION = "SESSION"
    LOCAL_ONE = "LOCAL_ONE"
    LOCAL_QUORUM = "LOCAL_QUORUM"
    EACH_QUORUM = "EACH_QUORUM"
    EVENTUAL = "EVENTUAL"
    STRONG = "STRONG"

    @property
    def service_level(self) -> str:
        """The service's name for it (service/levels.py)."""
        return {"EVENTUAL": "one", "STRONG": "all"}.get(self.value, self.value.lower())


KeyEncoding = Literal["utf-8", "base64"]
ValueEncoding = Literal["utf-8", "base64"]
_B64_SCHEMA = {"format": "byte", "contentEncoding": "base64"}
_TEXT = "The value as text (UTF-8)"
_VALUE_B64 = "The value, base64 (standard alphabet, padded): for values that are not UTF-8 text."
_CONTEXT = (
    "The key's causal context (opaque, base64): the exact version, for If-Match, the siblings routes and a "
    "compare-and-set that must be exact even under concurrent writes."
)
_VERSION = (
    "The key's version number: how many writes its history holds. Grows with every write; pass it back as "
    "expected_version."
)
_TIMESTAMP = "When the value was written: Unix seconds."
_HLC = "The write's hybrid logical clock timestamp (64-bit; ordering ties between writers)."


class ValueFields(BaseModel):
    """A value in a request: `value` as text, or `value_base64` (exactly one of them)."""

    model_config = ConfigDict(extra="forbid")

    value: str | None = Field(
        None, description=f"{_TEXT}; with ?encoding=base64, base64 of the bytes.")
    value_base64: str | None = Field(None, description=_VALUE_B64, json_schema_extra=_B64_SCHEMA)


class PutKeyRequest(ValueFields):
    ttl: float | None = Field(
        None, gt=0, le=MAX_TTL_S, description="Seconds until the key expires (fractions allowed, ms resolution)."
    )
    if_not_exists: bool = Field(False, description="Write only if the key is missing; 409 otherwise.")


class PutKeyResponse(BaseModel):
    key: str
    version: int = Field(description=_VERSION)
    timestamp: int = Field(description=_TIMESTAMP)
    status: Literal["success"] = Field(description="Always success in a 200 answer (a refused write is an error).")
    context: str = Field(description=_CONTEXT, json_schema_extra=_B64_SCHEMA)
    hlc: int = Field(description=_HLC)
    applied: bool = Field(description="The write was applied (always true in a 200 answer).")
    created: bool = Field(description="The key had no live value before this write.")


class GetKeyResponse(BaseModel):
    key: str
    type: Literal["string"] = Field(
        "string", description="The key's type: a string here (a collection answers GetCollectionResponse).")
    value: str | None = Field(
        None, description=f"{_TEXT}; absent when it is not (then value_base64). With ?encoding=base64: base64.")
    value_base64: str | None = Field(
        None, description="The value, base64: present instead of value when the value is not UTF-8 text.",
        json_schema_extra=_B64_SCHEMA)
    version: int = Field(description=_VERSION)
    timestamp: int = Field(description=_TIMESTAMP)
    ttl_remaining: float | None = Field(description="Seconds until expiry; null when the key does not expire.")
    context: str = Field(description=_CONTEXT, json_schema_extra=_B64_SCHEMA)
    hlc: int = Field(description=_HLC)


class CasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expected_version: StrictInt | StrictStr | None = Field(
        ...,
        description="The version the write expects: a version number (GET's `version`), or a causal context "
        "(GET's `context` or `ETag`, base64) for a comparison that stays exact under concurrent writes. "
        "null or 0: the key has no live value.",
    )
    new_value: str | None = Field(
        None,
        description=f"{_TEXT} to write (with ?encoding=base64: base64); null deletes the key. Required unless "
        "new_value_base64 is given.",
    )
    new_value_base64: str | None = Field(None, description=_VALUE_B64, json_schema_extra=_B64_SCHEMA)
    ttl: float | None = Field(
        None, gt=0, le=MAX_TTL_S, description="Seconds until the new value expires (with a new value only)."
    )


class CasResponse(BaseModel):
    success: bool = Field(description="The key was still at expected_version and the write was applied.")
    new_version: int | None = Field(
        description="The key's version number after the write; null when the write was not applied.")
    current_version: int | None = Field(
        description="The key's version number now: new_version after a write, the version that did not match "
        "after a refusal; null when the key has no live value (send expected_version null next).")
    new_context: str | None = Field(
        description="The causal context after the write; null when not applied.", json_schema_extra=_B64_SCHEMA)
    current_context: str | None = Field(
        description="The causal context now; null when the key has no live value.", json_schema_extra=_B64_SCHEMA)


class DeleteKeyResponse(BaseModel):
    key: str
    deleted: bool = Field(description="A live value was deleted (false: there was none).")
    version: int = Field(description="The key's version number after the delete (a delete is a write); 0 when "
                         "the key never existed.")
    context: str | None = Field(description=_CONTEXT + " null when the key has no record.",
                                json_schema_extra=_B64_SCHEMA)


class TtlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl_seconds: float | None = Field(
        None, gt=0, le=MAX_TTL_S, description="Seconds until expiry; null removes the expiry.")
    ttl: float | None = Field(None, gt=0, le=MAX_TTL_S, description="Same as ttl_seconds (an earlier name).")


class TtlResponse(BaseModel):
    key: str
    changed: bool = Field(description="False only when removing the expiry of a key that had none.")
    ttl_seconds: float | None = Field(description="Seconds until expiry now; null when the key does not expire.")


class IncrRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delta: int = Field(1, ge=-(1 << 63), le=(1 << 63) - 1, description="Amount to add (negative subtracts).")


class IncrResponse(BaseModel):
    key: str
    value: int = Field(description="The value after the increment (signed 64-bit).")
    version: int = Field(description=_VERSION)
    context: str = Field(description=_CONTEXT, json_schema_extra=_B64_SCHEMA)


class BatchGetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(max_length=MAX_BATCH_ITEMS, description="Keys to read, in key_encoding.")


class BatchGetResult(BaseModel):
    key: str
    found: bool
    value: str | None = Field(None, description=f"{_TEXT} (absent when not found or not UTF-8).")
    value_base64: str | None = Field(
        None, description="The value, base64, when it is not UTF-8 text.", json_schema_extra=_B64_SCHEMA)


class BatchGetResponse(BaseModel):
    results: list[BatchGetResult] = Field(description="One per key, in the order of the keys.")


class BatchPutItem(ValueFields):
    key: str = Field(description="The key, in key_encoding.")
    ttl: float | None = Field(None, gt=0, le=MAX_TTL_S, description="Seconds until expiry.")


class BatchPutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operations: list[BatchPutItem] | None = Field(
        None, max_length=MAX_BATCH_ITEMS, description="The writes, in order (up to 1000).")
    items: list[BatchPutItem] | None = Field(
        None, max_length=MAX_BATCH_ITEMS, description="Same as operations (an earlier name).")
    atomic: bool = Field(
        False, description="All or nothing (docs/atomic-batches.md). false: each write on its own, reported per key.")


class BatchPutError(BaseModel):
    status: int
    type: str
    detail: str


class BatchPutResult(BaseModel):
    key: str
    success: bool
    version: int | None = Field(None, description="The key's version number after the write (non-atomic writes).")
    pending: bool | None = Field(
        None, description="Atomic batch: logged but not yet written at the level asked; the batch log's replay "
        "writes it.")
    error: BatchPutError | None = Field(None, description="Why this key was not written.")


class BatchPutResponse(BaseModel):
    success_count: int = Field(description="Writes done (an atomic batch's pending keys are not counted).")
    failed_keys: list[str] = Field(description="Keys not written (non-atomic batches only).")
    results: list[BatchPutResult] = Field(description="One per write, in order.")
    atomic: bool
    status: Literal["success", "partial", "failed", "pending"] = Field(
        description="success: every write done; partial / failed: some / all writes failed (non-atomic); "
        "pending: an atomic batch is committed but some keys wait for the batch log's replay.")
    written: int = Field(description="Same as success_count (an earlier name).")


class KeyListResponse(BaseModel):
    keys: list[str] = Field(description="Keys in key_encoding, in ring order (not sorted).")
    cursor: str | None = Field(description="Pass as `cursor` for the next page; null when the listing is done.")
    has_more: bool = Field(description="Another page may hold keys (cursor is not null).")


class ScanResponse(BaseModel):
    keys: list[str]
    next_cursor: str = Field(description="The cursor for the next call (decimal); \"0\" when the scan is done.")
    done: bool = Field(description="The scan is complete.")
    cursor: str = Field(description="Same as next_cursor (an earlier name).")


class StatusResponse(BaseModel):
    status: str


# ---------------------------------------------------------------------- sibling-aware routes


class VersionedSibling(BaseModel):
    value: str | None = Field(None, description=f"{_TEXT}; absent when it is not (then value_base64).")
    value_base64: str | None = Field(None, description="The value, base64, when it is not UTF-8 text.",
                                     json_schema_extra=_B64_SCHEMA)
    timestamp: int = Field(description=_TIMESTAMP)
    hlc: int = Field(description="Hybrid logical clock timestamp of the write that made it.")
    ttl_remaining: float | None = Field(description="Seconds until it expires; null when it does not.")


class VersionsResponse(BaseModel):
    key: str = Field(description="The key, in key_encoding.")
    context: str | None = Field(
        description="Causal context covering every sibling (opaque), base64; null when the key has no record.",
        json_schema_extra=_B64_SCHEMA,
    )
    version: int = Field(description="The version number of that context (0 without a record).")
    siblings: list[VersionedSibling] = Field(
        description="Every live value (concurrent writes), in a stable order; empty when none is live."
    )


class PutVersionRequest(ValueFields):
    context: str | None = Field(
        None,
        description="The context a read returned, base64: the write replaces exactly the siblings that read "
        "saw. Absent or null: a blind write, kept beside whatever is stored.",
        json_schema_extra=_B64_SCHEMA,
    )
    ttl: float | None = Field(
        None, gt=0, le=MAX_TTL_S, description="Seconds until the value expires (fractions allowed, ms resolution)."
    )


class ContextResponse(BaseModel):
    context: str = Field(
        description="Causal context after the write, base64: pass it to replace what this write left.",
        json_schema_extra=_B64_SCHEMA,
    )
    version: int = Field(description="Its version number.")


# ---------------------------------------------------------------------- collections
# The routes of hashes, sets, sorted sets and lists (api/http_datatypes.py). Elements (hash
# fields and their values, members, list items) travel as values do: text, or base64 in the
# `*_base64` twin of a field when any element of the document is not UTF-8 (every element of
# it then is base64), or always base64 with ?encoding=base64.

MAX_ELEMENTS_PER_REQUEST = 1000  # members, fields or items in one request body
_ELEMENTS_B64 = "The same, base64 (standard alphabet, padded): for elements that are not UTF-8 text."
Score = float | Literal["inf", "-inf"]
_SCORE = 'A sorted-set score: a number, or "inf" / "-inf" (JSON has no infinities).'


class ScoredMember(BaseModel):
    member: str = Field(description="The member (text, or base64 in a `*_base64` list).")
    score: Score = Field(description=_SCORE)


class GetCollectionResponse(BaseModel):
    key: str
    type: Literal["hash", "list", "set", "zset"] = Field(description="The key's type.")
    value: dict[str, str] | list[str] | list[ScoredMember] | None = Field(
        None, description="The whole collection: a hash as an object field -> value, a list as an array head "
        "first, a set as an array sorted by bytes, a sorted set as an array of {member, score} in rank order. "
        "Absent when an element is not UTF-8 (then value_base64).")
    value_base64: dict[str, str] | list[str] | list[ScoredMember] | None = Field(
        None, description="The same with every field, value and member base64: when some element is not UTF-8.")
    ttl_remaining: float | None = Field(description="Seconds until expiry; null when the key does not expire.")


class FieldsRequest(BaseModel):
    """Hash fields to set (HSET): `fields` or `fields_base64`, exactly one."""

    model_config = ConfigDict(extra="forbid")

    fields: dict[str, str] | None = Field(
        None, min_length=1, max_length=MAX_ELEMENTS_PER_REQUEST,
        description="field -> value, as text (with ?encoding=base64: both base64).")
    fields_base64: dict[str, str] | None = Field(
        None, min_length=1, max_length=MAX_ELEMENTS_PER_REQUEST, description="field -> value, both base64.")


class FieldsResponse(BaseModel):
    key: str
    fields: dict[str, str] | None = Field(None, description="field -> value (absent when one is not UTF-8).")
    fields_base64: dict[str, str] | None = Field(None, description=_ELEMENTS_B64)


class FieldsWriteResponse(BaseModel):
    key: str
    added: int = Field(description="Fields that were new (HSET's answer); the others were overwritten.")


class FieldResponse(BaseModel):
    key: str
    field: str = Field(description="The field, as the path named it.")
    value: str | None = Field(None, description=f"{_TEXT}; absent when it is not (then value_base64).")
    value_base64: str | None = Field(None, description=_VALUE_B64, json_schema_extra=_B64_SCHEMA)


class FieldVersion(BaseModel):
    value: str | None = Field(None, description=f"{_TEXT}; absent when it is not (then value_base64).")
    value_base64: str | None = Field(None, description=_VALUE_B64, json_schema_extra=_B64_SCHEMA)
    timestamp: int = Field(description=_TIMESTAMP)
    hlc: int = Field(description="Hybrid logical clock timestamp of the HSET (or increment) that wrote it.")


class _ElementVersions(BaseModel):
    """What the versions of one element of a collection (a hash field, a sorted-set member) share."""

    key: str
    context: str | None = Field(
        description="Causal context of the element's record (opaque), base64; null when it has no record.",
        json_schema_extra=_B64_SCHEMA,
    )
    version: int = Field(description="The version number of that context (0 without a record).")


class FieldVersionsResponse(_ElementVersions):
    field: str = Field(description="The field, as the path named it.")
    siblings: list[FieldVersion] = Field(
        description="Every value of the field that concurrent writes left (the plain read answers the newest), "
                    "in a stable order; empty when the hash has no such field."
    )


class FieldWriteResponse(BaseModel):
    key: str
    field: str
    created: bool = Field(description="The field is new (false: its value was overwritten).")


class RemovedResponse(BaseModel):
    key: str
    removed: bool = Field(description="The element was there and is removed (false: it was not there).")


class MembersRequest(BaseModel):
    """Set members to add (SADD): `members` or `members_base64`, exactly one."""

    model_config = ConfigDict(extra="forbid")

    members: list[str] | None = Field(
        None, min_length=1, max_length=MAX_ELEMENTS_PER_REQUEST,
        description="Members as text (with ?encoding=base64: base64).")
    members_base64: list[str] | None = Field(
        None, min_length=1, max_length=MAX_ELEMENTS_PER_REQUEST, description="Members, base64.")


class MembersResponse(BaseModel):
    key: str
    members: list[str] | None = Field(None, description="Every member, sorted by bytes (absent when one is "
                                                        "not UTF-8).")
    members_base64: list[str] | None = Field(None, description=_ELEMENTS_B64)


class AddedResponse(BaseModel):
    key: str
    added: int = Field(description="Members that were not there before.")


class MembershipResponse(BaseModel):
    key: str
    member: str = Field(description="The member, as the path named it.")
    is_member: bool


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: float | Literal["inf", "+inf", "-inf"] = Field(description=_SCORE)
    condition: Literal["nx", "xx", "gt", "lt"] | None = Field(
        None, description="As ZADD's flags: nx only adds a new member, xx only updates an existing one, gt / lt "
        "only update when the new score is greater / less (a new member is added either way).")


class ScoreResponse(BaseModel):
    key: str
    member: str
    score: Score = Field(description=_SCORE)


class ScoreVersion(BaseModel):
    score: Score = Field(description=_SCORE)
    timestamp: int = Field(description=_TIMESTAMP)
    hlc: int = Field(description="Hybrid logical clock timestamp of the ZADD (or increment) that wrote it.")


class ScoreVersionsResponse(_ElementVersions):
    member: str = Field(description="The member, as the path named it.")
    siblings: list[ScoreVersion] = Field(
        description="Every score of the member that concurrent writes left (the plain read answers the newest), "
                    "in a stable order; empty when the sorted set has no such member."
    )


class ScoreWriteResponse(BaseModel):
    key: str
    member: str
    changed: bool = Field(description="The member was added or its score changed (ZADD CH's count).")


class RangeResponse(BaseModel):
    key: str
    members: list[ScoredMember] | None = Field(
        None, description="Members with their scores, in the order asked (absent when one is not UTF-8).")
    members_base64: list[ScoredMember] | None = Field(None, description="The same, members base64.")


class PushRequest(BaseModel):
    """List items to push (LPUSH / RPUSH): `values` or `values_base64`, exactly one."""

    model_config = ConfigDict(extra="forbid")

    values: list[str] | None = Field(
        None, min_length=1, max_length=MAX_ELEMENTS_PER_REQUEST,
        description="Items as text (with ?encoding=base64: base64), pushed in this order.")
    values_base64: list[str] | None = Field(
        None, min_length=1, max_length=MAX_ELEMENTS_PER_REQUEST, description="Items, base64.")
    side: Literal["left", "right"] = Field(
        "right", description="right: append at the tail (RPUSH); left: each at the head in turn (LPUSH), "
        "so they end up in reverse order.")
    if_exists: bool = Field(False, description="Push only if the list exists (LPUSHX / RPUSHX).")


class PushResponse(BaseModel):
    key: str
    length: int = Field(description="The list's length after the push (0: if_exists and no list).")


class ItemsResponse(BaseModel):
    key: str
    values: list[str] | None = Field(None, description="Items, head first (absent when one is not UTF-8).")
    values_base64: list[str] | None = Field(None, description=_ELEMENTS_B64)


# ---------------------------------------------------------------------- cluster administration
# The answers of /api/v1/admin (api/http_admin.py): the node's AdminService documents, which
# docs/http.md describes field by field. The fields named here are always present (those with
# a default: when the document has them); ringkv may add more (extra="allow").


class AddNodeRequest(BaseModel):
    """`node_address` (sent to any member): admit the joining node at that address. `seeds`
    (sent to the joining node itself, the earlier form): the members it learns the cluster from."""

    model_config = ConfigDict(extra="forbid")

    node_address: str | None = Field(
        None, max_length=300, examples=["10.0.1.10:6379"],
        description="host:port of the new node's RESP (client) port; the node must be running as a "
        "joining node (`ringkv admin join`) and not yet be a member.")
    seeds: list[str] | None = Field(
        None, min_length=1, max_length=64,
        description="node_id@host:rpc_port entries, for a node started with `ringkv admin join`: sent to that node.")

    @model_validator(mode="after")
    def _one_form(self) -> AddNodeRequest:
        if (self.node_address is None) == (self.seeds is None):
            raise ValueError("give node_address (the new node's host:port, sent to a member) or seeds "
                             "(node_id@host:rpc_port entries, sent to the joining node), exactly one of them")
        return self


class MembershipMove(BaseModel):
    """The partition moves of a node's current or last membership change."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(description='"join", "leave", "rebalance", or "" when none ran.')
    phase: str = Field(description='A join\'s phase: "waiting-for-seeds", "settling", "moving", "done".')
    partitions_total: int
    partitions_done: int
    errors: int | None = None


class ClusterMember(BaseModel):
    model_config = ConfigDict(extra="allow")

    node_id: str
    address: str | None = Field(description="The node's client (RESP) address host:port; null when not known.")
    status: Literal["healthy", "joining", "leaving", "down", "left", "removed"] = Field(
        description="healthy: answered, held up by the failure detector and a normal member; down: did not "
        "answer or held down; else its membership state.")
    role: Literal["member", "joining", "leaving", "left", "removed"] = Field(
        description="Its membership role (every member is equal: there is no leader).")
    keys_count: int | None = Field(description="Live keys it holds as a replica; null when it did not answer.")
    memory_used_mb: float | None = Field(
        description="Resident memory of its process in MiB; null when it did not answer.")
    reachable: bool = Field(description="It answered this status request.")
    in_ring: bool
    datacenter: str = Field("", description="Its datacenter (docs/multi-dc.md); empty when none is named.")
    primary_partitions: int
    replica_partitions: int
    share: float
    move: MembershipMove | None = Field(None, description="Its membership change, while one runs or ran.")
    error: str | None = Field(None, description="Why it did not answer.")


class ClusterFigures(BaseModel):
    model_config = ConfigDict(extra="allow")

    partitions: int
    replicas: int = Field(description="N of the ring (the largest of the namespaces').")
    members: int = Field(description="Nodes in the ring (normal and leaving).")


class MembershipDocument(BaseModel):
    """This node's membership state (RINGKV.ADMIN STATUS, `ringkv admin status`)."""

    model_config = ConfigDict(extra="allow")

    local_status: str
    ring: list[str]
    pending: list[str]
    move: MembershipMove


class ClusterStatusResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    nodes: list[ClusterMember]
    total_keys: int = Field(description="Live keys in the cluster, each counted once (docs/http.md says how).")
    total_keys_unknown_partitions: int = Field(
        description="Partitions no replica answered for: total_keys is then a lower bound.")
    replication_factor: int = Field(description="N of the default namespace; 1 on a node of one.")
    cluster: ClusterFigures
    membership: MembershipDocument | None = Field(None, description="Absent on a node of one.")


class HotKeyEntry(BaseModel):
    namespace: str
    key: str = Field(description="The key as UTF-8 text; bytes that do not decode are escaped (\\xNN).")
    key_base64: str = Field(description="The key's bytes, base64.")
    per_s: float = Field(description="Estimated requests per second for the key at this node (reads and writes).")
    count: int = Field(description="Sampled requests counted for it (decayed): an upper bound.")
    error: int = Field(description="How much of count it may have inherited when it entered the summary.")
    reads: int = Field(description="Sampled reads since it entered the summary (decayed).")
    writes: int = Field(description="Sampled writes since it entered the summary (decayed).")
    hot: bool = Field(description="In the hot set: the key the namespace's hot_reads and hot_cache_ms act on.")


class HotKeysResponse(BaseModel):
    node_id: str
    sample_every: int = Field(description="About one request in this many is counted.")
    half_life_ms: int = Field(description="Counts are halved this often.")
    sampled: int = Field(description="Sampled requests in the summary (decayed).")
    hot_count: int = Field(description="Keys in the hot set (what hot_reads and hot_cache_ms act on).")
    keys: list[HotKeyEntry] = Field(description="Most requested first.")


class AdmitResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    node_id: str
    address: str
    rpc_address: str | None
    state: str = Field(description='The new node\'s membership state: "joining" until it has its partitions.')
    admitted_by: str
    seeds: list[str]
    partitions: int
    partitions_to_receive: int = Field(description="Partitions it will hold as a replica once normal.")
    move: MembershipMove = Field(description="Its join's progress, as it reported it.")


class SeedsResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    seeds: list[str] = Field(description="Every member the joining node now knows to learn the cluster from.")


class RepairResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    partitions: int
    comparisons: int
    in_sync: int
    keys_pushed: int
    keys_pulled: int
    traffic_bytes: int
    seconds: float
    errors: list[str]
    error_count: int


class CleanupResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    records_removed: int
    partitions: int
    seconds: float


class DecommissionResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["left"]
    partitions_handed_over: int
    keys_moved: int
    errors: int


class RemoveResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    removed: str


class CompactionRequest(BaseModel):
    """A namespace's compaction strategy from now on, on the node asked (docs/compaction.md)."""

    model_config = ConfigDict(extra="forbid")

    compaction: Literal["leveled", "tiered", "time_window"] = Field(
        description="leveled (read-heavy; the default), tiered (write-heavy), time_window (data with a TTL).")
    settings: dict[str, StrictInt | StrictStr] = Field(
        default_factory=dict, max_length=16, examples=[{"compaction_window_s": 600, "compaction_ttl_rule": "safe"}],
        description="That strategy's settings, named as in the configuration (the `compaction_` prefix may be "
        "left out): tiered: compaction_size_ratio_percent, compaction_min_merge_runs, compaction_max_runs; "
        "time_window: compaction_window_s, compaction_ttl_rule (safe | aggressive). Unset ones take their defaults.")


class CompactionResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    namespace: str
    family: str = Field(description='The engine\'s column family holding the namespace\'s keys ("default" when '
                        "it shares the default namespace's).")
    compaction: str = Field(description="The strategy; its settings follow, by the engine's names (window_ms, ...).")


class OperationState(StrEnum):
    """Where a long operation stands (docs/operations.md)."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class OperationResponse(BaseModel):
    """A long operation of a node: join, decommission, remove, repair, cleanup, backup, restore."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="The node's id and a sequence number, e.g. n1.7; follow it on the node that runs it.")
    kind: str
    node_id: str
    params: dict
    state: OperationState
    unit: str = Field(description="What done and total count (partitions, keys, ...).")
    done: int
    total: int
    phase: str
    started_ms: int
    updated_ms: int
    finished_ms: int = Field(description="0 while running.")
    eta_s: float | None = Field(description="Seconds left at the rate of the current run; null when unknown.")
    result: dict | None = Field(description="What it did, once done.")
    error: str = Field(description="Why it failed or was interrupted; empty otherwise.")
    resumed: int = Field(description="How many restarts of the node it was resumed after.")


class OperationsResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    operations: list[OperationResponse]


class StartOperationRequest(BaseModel):
    """Start a long operation on the node asked."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(max_length=64, examples=["repair"],
                      description="repair, cleanup, decommission, remove (args node_id, force), or another kind "
                      "the node offers (backup, restore).")
    args: dict[str, StrictInt | StrictStr | bool] = Field(default_factory=dict, max_length=16,
                                                          examples=[{"node_id": "n3", "force": False}])
