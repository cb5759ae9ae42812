"""Request and answer bodies of the HTTP API, as pydantic models.

They validate the JSON requests and document the answers in the OpenAPI spec; handlers build
answers directly (see `http._json`), so each model here must match what its handler writes
(the schemathesis tests check it).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_BATCH_ITEMS = 1000
MAX_TTL_S = 100 * 365 * 86400  # 100 years; keeps expire_at_ms far from any overflow


class ConsistencyLevel(StrEnum):
    """The levels a request may name. SERIAL is for reads: linearizable, through the key's
    consensus path; a write at SERIAL is a write at QUORUM (service/levels.py)."""

    ONE = "ONE"
    QUORUM = "QUORUM"
    ALL = "ALL"
    SERIAL = "SERIAL"


KeyEncoding = Literal["utf-8", "base64"]
_B64_SCHEMA = {"format": "byte", "contentEncoding": "base64"}


class PutKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(description="The value, base64 (standard alphabet, padded).", json_schema_extra=_B64_SCHEMA)
    ttl: float | None = Field(
        None, gt=0, le=MAX_TTL_S, description="Seconds until the key expires (fractions allowed, ms resolution)."
    )
    if_not_exists: bool = Field(False, description="Write only if the key is missing; 409 otherwise.")


class PutKeyResponse(BaseModel):
    key: str
    version: str = Field(description="Causal context after the write, base64.", json_schema_extra=_B64_SCHEMA)
    applied: bool = Field(description="The write was applied (always true in a 200 answer).")
    created: bool = Field(description="The key had no live value before this write.")


class GetKeyResponse(BaseModel):
    key: str
    value: str = Field(description="The value, base64.", json_schema_extra=_B64_SCHEMA)
    version: str = Field(
        description="Causal context of what was read (opaque), base64.", json_schema_extra=_B64_SCHEMA
    )
    timestamp: int = Field(description="Hybrid logical clock timestamp of the write.")
    ttl_remaining: float | None = Field(description="Seconds until expiry; null when the key does not expire.")


class CasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expected_version: str | None = Field(
        ...,
        description="The version a read returned (GET's `version` or `ETag`), base64: the write applies only "
        "if the key is still at it. null: only if the key has no live value.",
        json_schema_extra=_B64_SCHEMA,
    )
    new_value: str | None = Field(
        ...,
        description="The value to write, base64 (standard alphabet, padded); null deletes the key "
        "(with a non-null expected_version).",
        json_schema_extra=_B64_SCHEMA,
    )
    ttl: float | None = Field(
        None, gt=0, le=MAX_TTL_S, description="Seconds until the new value expires (with a new_value only)."
    )


class CasResponse(BaseModel):
    success: bool = Field(description="The key was still at expected_version and the write was applied.")
    new_version: str | None = Field(
        description="The key's version after the write, base64; null when the write was not applied.",
        json_schema_extra=_B64_SCHEMA,
    )
    current_version: str | None = Field(
        description="The key's version now, base64: new_version after a write, the version that did not "
        "match after a refusal. null when the key has no live value (send expected_version null next).",
        json_schema_extra=_B64_SCHEMA,
    )


class DeleteKeyResponse(BaseModel):
    deleted: bool = Field(description="A live value was deleted (false: there was none).")


class TtlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl: float | None = Field(
        ..., gt=0, le=MAX_TTL_S, description="Seconds until expiry; null removes the expiry."
    )


class TtlResponse(BaseModel):
    key: str
    changed: bool = Field(description="False only when removing the expiry of a key that had none.")


class IncrRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delta: int = Field(1, ge=-(1 << 63), le=(1 << 63) - 1, description="Amount to add (negative subtracts).")


class IncrResponse(BaseModel):
    value: int = Field(description="The value after the increment (signed 64-bit).")


class BatchGetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(max_length=MAX_BATCH_ITEMS, description="Keys to read, in key_encoding.")


class BatchGetResponse(BaseModel):
    values: list[str | None] = Field(description="Base64 values in the order of the keys; null for a missing key.")


class BatchPutItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="The key, in key_encoding.")
    value: str = Field(description="The value, base64.", json_schema_extra=_B64_SCHEMA)
    ttl: float | None = Field(None, gt=0, le=MAX_TTL_S, description="Seconds until expiry.")


class BatchPutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[BatchPutItem] = Field(max_length=MAX_BATCH_ITEMS)


class BatchPutResponse(BaseModel):
    written: int


class KeyListResponse(BaseModel):
    keys: list[str] = Field(description="Keys in key_encoding, in ring order (not sorted).")
    cursor: str | None = Field(description="Pass as `cursor` for the next page; null when the listing is done.")


class ScanResponse(BaseModel):
    cursor: str = Field(description="Next cursor (decimal); \"0\" when the scan is done.")
    keys: list[str]


class StatusResponse(BaseModel):
    status: str


# ---------------------------------------------------------------------- sibling-aware routes


class VersionedSibling(BaseModel):
    value: str = Field(description="The value, base64.", json_schema_extra=_B64_SCHEMA)
    timestamp: int = Field(description="Hybrid logical clock timestamp of the write that made it.")
    ttl_remaining: float | None = Field(description="Seconds until it expires; null when it does not.")


class VersionsResponse(BaseModel):
    key: str = Field(description="The key, in key_encoding.")
    context: str | None = Field(
        description="Causal context covering every sibling (opaque), base64; null when the key has no record.",
        json_schema_extra=_B64_SCHEMA,
    )
    siblings: list[VersionedSibling] = Field(
        description="Every live value (concurrent writes), in a stable order; empty when none is live."
    )


class PutVersionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(description="The value, base64 (standard alphabet, padded).", json_schema_extra=_B64_SCHEMA)
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
