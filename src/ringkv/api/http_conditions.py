"""Conditional requests on a key (RFC 9110, section 13): `If-Match` and `If-None-Match` on PUT
and DELETE of /api/v1/keys/{key}, with the key's version as its entity tag.

A key's entity tag is its exact version, the causal context GET answers as `context`, in double
quotes: `ETag: "AYHEC24xQDFkMjAwY2Y1AQ=="` (standard base64 is all characters an entity tag
may hold). A key with no live value has no version and matches no tag.

- `If-Match: "v"` (or a list): the key is at one of these versions. Strong comparison: a weak
  tag `W/"v"` never matches. `If-Match: *`: the key has a live value.
- `If-None-Match: "v"` (or a list): the key is at none of these versions (weak comparison).
  `If-None-Match: *`: the key has no live value.
- Both headers: both must hold (RFC 9110 evaluates If-Match first; the outcome is the same).

`Preconditions` is what a request's headers ask, parsed and decided here without IO. The route
(`http_routes.KeyValueApi._write_if`) applies a write through the service's compare-and-set at a
version the preconditions allow, so the check and the write are one atomic step (linearizable
on the consensus path); a refused compare-and-set tells the version the key is at instead, and
the preconditions are asked again about that one. A failed precondition is a 412 carrying the
current version (`precondition_failed`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Header

from ringkv.api.http_codec import b64, decode_context
from ringkv.api.http_problems import ProblemError
from ringkv.service.values import version_number

MAX_ENTITY_TAGS = 64  # tags in one header: a client has no use for more than a handful
# Compare-and-set attempts of one conditional write. Each refused attempt means the key changed
# to another version the preconditions still allow (If-Match: *, a list, If-None-Match with
# tags); one that is never allowed ends at the first refusal.
MAX_CONDITIONAL_ATTEMPTS = 8

ANY: Final = "*"
# One element of an entity-tag list: `*`, or an optionally weak quoted tag (etagc: %x21 /
# %x23-7E), then a comma or the end.
_ELEMENT = re.compile(r'[ \t]*(?:(\*)|(W/)?"([\x21\x23-\x7e]*)")[ \t]*(?:,|\Z)')


# Typed `str`, not `str | None`, so the spec shows a plain string (as http_codec's levels).
IfMatchHeader = Annotated[
    str,
    Header(
        alias="If-Match",
        description='Write only if the key is at this version: `"<version>"` as GET\'s ETag gives it '
        "(a list allowed), or `*` for any live value; else 412 with the current version.",
    ),
]
IfNoneMatchHeader = Annotated[
    str,
    Header(
        alias="If-None-Match",
        description="`*`: write only if the key has no live value; a version (or a list): only if the key "
        "is at none of them. Else 412 with the current version.",
    ),
]


class NotYetRead:
    """The version to try first is not known without reading the key."""


NOT_YET_READ: Final = NotYetRead()


@dataclass(frozen=True, slots=True)
class Preconditions:
    """A request's If-Match and If-None-Match: ANY (`*`), the versions named (decoded), or None
    when the header is absent. Weak tags are already dropped from `match`."""

    match: str | tuple[bytes, ...] | None
    none_match: str | tuple[bytes, ...] | None

    def refusal(self, current: bytes | None) -> str | None:
        """Which header refuses a write at version `current` (None: no live value), or None
        when the write may go."""
        if self.match == ANY and current is None:
            return "If-Match: * needs a live value"
        if isinstance(self.match, tuple) and current not in self.match:
            return "If-Match names another version"
        if self.none_match == ANY and current is not None:
            return "If-None-Match: * needs the key to have no live value"
        if isinstance(self.none_match, tuple) and current is not None and current in self.none_match:
            return "If-None-Match names this version"
        return None

    def first_guess(self) -> bytes | NotYetRead | None:
        """The version to try the write at before anything is read: the first the headers allow
        of those If-Match names, then "no live value". NOT_YET_READ when none is allowed (as
        under `If-Match: *`): only a read can tell."""
        candidates: list[bytes | None] = list(self.match) if isinstance(self.match, tuple) else []
        candidates.append(None)
        return next((c for c in candidates if self.refusal(c) is None), NOT_YET_READ)


def parse_preconditions(if_match: str | None, if_none_match: str | None) -> Preconditions | None:
    """The request's preconditions; None when it has neither header. A malformed header is a
    400 naming it."""
    if if_match is None and if_none_match is None:
        return None
    return Preconditions(
        None if if_match is None else _tags(if_match, "If-Match", weak_matches=False),
        None if if_none_match is None else _tags(if_none_match, "If-None-Match", weak_matches=True),
    )


def _tags(text: str, header: str, *, weak_matches: bool) -> str | tuple[bytes, ...]:
    elements: list[tuple[bool, bool, str]] = []  # (star, weak, opaque tag)
    pos = 0
    while pos < len(text) or not elements:
        m = _ELEMENT.match(text, pos)
        if m is None:
            raise ProblemError(
                400, "bad-request",
                f'{header} is {text[:100]!r}; expected * or quoted versions, "<version>" as GET\'s ETag header '
                'gives it (a comma-separated list allowed)')
        elements.append((m.group(1) is not None, m.group(2) is not None, m.group(3) or ""))
        if len(elements) > MAX_ENTITY_TAGS:
            raise ProblemError(400, "bad-request", f"{header} names more than {MAX_ENTITY_TAGS} versions")
        pos = m.end()
    if any(star for star, _, _ in elements):
        if len(elements) > 1:
            raise ProblemError(400, "bad-request", f"{header}: * stands alone, not in a list of versions")
        return ANY
    # If-Match compares strongly (RFC 9110 13.1.1): a weak tag never matches there.
    versions = [decode_context(tag, header) for _, weak, tag in elements if weak_matches or not weak]
    return tuple(dict.fromkeys(versions))


def etag(version: bytes) -> str:
    """A version as an entity tag (the ETag header's value)."""
    return f'"{b64(version)}"'


def precondition_failed(key: str, why: str, current: bytes | None) -> ProblemError:
    """The 412 answer: the current version in the body (`current_version`, its number, and
    `current_context`; null without a live value) and, when there is one, in an ETag header.
    `why`: `Preconditions.refusal`'s."""
    now = "has no live value" if current is None else f"is at version {version_number(current)} ({b64(current)})"
    return ProblemError(
        412, "precondition-failed", f"{why}: key {key[:200]!r} {now}; nothing was written",
        headers=None if current is None else {"ETag": etag(current)},
        extensions={"current_version": None if current is None else version_number(current),
                    "current_context": None if current is None else b64(current)},
    )
