"""Events (the Segment spec subset journeyd reads) and journey definitions (one TOML file each).

Everything here is plain data: msgspec structs decoded at the boundary, so the engine can
trust the shapes it is handed. Semantic validation lives in `journeyd.validate`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

# --- events --------------------------------------------------------------------------------

EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A Segment-spec message. Optional fields accept JSON null, as real SDKs send it."""

    type: str
    messageId: str | None = None
    userId: str | None = None
    anonymousId: str | None = None
    event: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    timestamp: str | None = None
    originalTimestamp: str | None = None
    sentAt: str | None = None
    receivedAt: str | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    name: str | None = None
    category: str | None = None
    groupId: str | None = None
    previousId: str | None = None

    @property
    def user_key(self) -> str | None:
        """The profile an event belongs to: `userId`, else `anonymousId`."""
        return self.userId or self.anonymousId or None


def parse_timestamp(text: str) -> float:
    """RFC 3339 (any offset, 0-6 fraction digits, `Z`) to epoch seconds.

    A timestamp without an offset is taken as UTC: SDKs that send one mean UTC, and
    guessing the machine's local zone would make replays depend on where they run.
    """
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"invalid timestamp {text!r}: use RFC 3339, e.g. 2026-03-01T09:15:00.000Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_timestamp(epoch_s: float) -> str:
    """Epoch seconds to ISO-8601 UTC with milliseconds and `Z`, the form payloads carry.

    The date-and-time part is cached per second: ingest and timers format many instants
    within the same second, and strftime dominated their profiles.
    """
    micros = round(epoch_s * 1_000_000)
    second, fraction = divmod(micros, 1_000_000)
    if second != _second_cache[0]:
        moment = datetime.fromtimestamp(second, tz=UTC)
        _second_cache[0] = second
        _second_cache[1] = moment.strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{_second_cache[1]}{fraction // 1000:03d}Z"


_second_cache: list[Any] = [None, ""]


# --- journey definitions -------------------------------------------------------------------

Op = Literal[
    "eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "exists", "not_exists"
]
VALUELESS_OPS = frozenset({"exists", "not_exists"})
LIST_OPS = frozenset({"in", "not_in"})

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class _Def(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Base for config structs: immutable, keyword-only, and strict about unknown keys.

    `omit_defaults` keeps a journey's encoding (and so its content version) unchanged
    when a later release adds an optional key the journey does not use."""


class Filter(_Def, kw_only=True, frozen=True):
    """`{ property = PATH, op, value }` on the event at hand (entry, branch, exit filters)."""

    property: NonEmpty
    op: Op
    value: Any = msgspec.UNSET


class Condition(_Def, kw_only=True, frozen=True):
    """One data-split condition: a trait, an audience, or a journey-context property."""

    trait: str | None = None
    audience: str | None = None
    not_audience: str | None = None
    context: str | None = None
    property: str | None = None
    op: Op | None = None
    value: Any = msgspec.UNSET


class Entry(_Def, kw_only=True, frozen=True):
    event: NonEmpty
    rule: Literal["re-enter", "once"] = "re-enter"
    unique_identifier: str | None = None
    filters: list[Filter] = []
    audience: str | None = None


class ExitRule(_Def, kw_only=True, frozen=True):
    event: NonEmpty
    filters: list[Filter] = []
    match_identifier: bool = False
    send: bool = False


class ExitSend(_Def, kw_only=True, frozen=True):
    destination: NonEmpty
    event_name: NonEmpty
    traits: list[str] = []


class HoldBranch(_Def, kw_only=True, frozen=True):
    name: NonEmpty
    event: NonEmpty
    filters: list[Filter] = []
    next: str | None = None
    reset: bool = False


class SplitBranch(_Def, kw_only=True, frozen=True):
    name: NonEmpty
    when: list[Condition]
    next: str | None = None


class RandomBranch(_Def, kw_only=True, frozen=True):
    name: NonEmpty
    percent: int
    next: str | None = None


class _Step(_Def, tag_field="type", kw_only=True, frozen=True):
    id: NonEmpty
    name: str | None = None


class HoldUntil(_Step, tag="hold_until", kw_only=True, frozen=True):
    max_duration: str
    branches: list[HoldBranch]
    on_timeout: str | None = None


class Delay(_Step, tag="delay", kw_only=True, frozen=True):
    duration: str
    next: str | None = None


class DataSplit(_Step, tag="data_split", kw_only=True, frozen=True):
    branches: list[SplitBranch]
    else_: str | None = msgspec.field(default=None, name="else")


class RandomSplit(_Step, tag="random_split", kw_only=True, frozen=True):
    branches: list[RandomBranch]
    same_branch_per_user: bool = False


class Send(_Step, tag="send", kw_only=True, frozen=True):
    destination: NonEmpty
    event_name: NonEmpty
    traits: list[str] = []
    next: str | None = None
    # destination field <- path in the default payload; when given, these are the
    # properties sent (a mapped path that is missing is sent as null)
    mapping: dict[str, str] = {}


Step = HoldUntil | Delay | DataSplit | RandomSplit | Send
STEP_TYPES = ("hold_until", "delay", "data_split", "random_split", "send")


class Journey(_Def, kw_only=True, frozen=True):
    id: NonEmpty
    entry: Entry
    steps: list[Step]
    name: str | None = None
    description: str | None = None
    exit: list[ExitRule] = []
    exit_send: ExitSend | None = None
