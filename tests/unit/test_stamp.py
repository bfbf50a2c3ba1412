"""`stamp`: what journeyd adds to every incoming event (receivedAt, messageId, skew fix)."""

from __future__ import annotations

import uuid

import pytest

from journeyd.ingest.inbound import stamp
from journeyd.model import Event, parse_timestamp

# The worked example of wire-formats.md 1.5.
DEVICE_TIMESTAMP = "2026-03-01T09:15:00.000Z"
DEVICE_SENT_AT = "2026-03-01T09:15:05.000Z"
RECEIVED_AT = "2026-03-01T09:18:07.000Z"
CORRECTED = "2026-03-01T09:18:02.000Z"
RECEIVED = parse_timestamp(RECEIVED_AT)


def track(**fields: object) -> Event:
    return Event(type="track", userId="ana", event="Cart Modified", **fields)  # type: ignore[arg-type]


def test_received_at_is_the_server_clock_in_utc_milliseconds() -> None:
    """receivedAt is the arrival time, formatted like every payload timestamp (ms, Z)."""
    event = stamp(track(), RECEIVED + 0.123456)
    assert event.receivedAt == "2026-03-01T09:18:07.123Z"


def test_received_at_overwrites_a_client_supplied_value() -> None:
    """A client cannot choose its own receivedAt: the server's arrival time wins."""
    event = stamp(track(receivedAt="2020-01-01T00:00:00.000Z"), RECEIVED)
    assert event.receivedAt == RECEIVED_AT


def test_message_id_is_generated_when_missing() -> None:
    """An event without messageId gets a fresh UUID, different for each event."""
    first = stamp(track(), RECEIVED)
    second = stamp(track(), RECEIVED)
    assert first.messageId is not None
    assert second.messageId is not None
    assert str(uuid.UUID(first.messageId)) == first.messageId
    assert first.messageId != second.messageId


def test_empty_message_id_is_replaced() -> None:
    """An empty-string messageId would collide in the dedup window: it is replaced too."""
    event = stamp(track(messageId=""), RECEIVED)
    assert event.messageId
    uuid.UUID(event.messageId)


def test_message_id_is_kept_when_given() -> None:
    """A client messageId is never rewritten: retries must de-duplicate on it."""
    event = stamp(track(messageId="m-123"), RECEIVED)
    assert event.messageId == "m-123"


def test_clock_skew_worked_example_with_batch_sent_at() -> None:
    """timestamp = receivedAt - (sentAt - timestamp); the device time is kept as original."""
    event = stamp(track(timestamp=DEVICE_TIMESTAMP), RECEIVED, DEVICE_SENT_AT)
    assert event.timestamp == CORRECTED
    assert event.originalTimestamp == DEVICE_TIMESTAMP
    assert event.receivedAt == RECEIVED_AT


def test_clock_skew_worked_example_with_the_events_own_sent_at() -> None:
    """A sentAt on the event itself (single-call endpoints) corrects the same way."""
    event = stamp(track(timestamp=DEVICE_TIMESTAMP, sentAt=DEVICE_SENT_AT), RECEIVED)
    assert event.timestamp == CORRECTED
    assert event.originalTimestamp == DEVICE_TIMESTAMP


def test_the_events_own_sent_at_wins_over_the_batch_sent_at() -> None:
    """With both, the event's sentAt is used (it is the more specific clock reading)."""
    event = stamp(
        track(timestamp=DEVICE_TIMESTAMP, sentAt=DEVICE_SENT_AT),
        RECEIVED,
        "2026-03-01T09:16:00.000Z",  # would give 09:17:07 if it were used
    )
    assert event.timestamp == CORRECTED


def test_the_batch_sent_at_applies_when_the_event_has_none() -> None:
    """Real SDKs put sentAt only on the batch envelope; it corrects every item in it."""
    event = stamp(track(timestamp="2026-03-01T09:14:50.000Z"), RECEIVED, DEVICE_SENT_AT)
    assert event.timestamp == "2026-03-01T09:17:52.000Z"
    assert event.originalTimestamp == "2026-03-01T09:14:50.000Z"


def test_python_sdk_offsets_and_microseconds_are_understood() -> None:
    """+00:00 offsets and 6-digit sentAt (what analytics-python sends) give the same result."""
    event = stamp(
        track(timestamp="2026-03-01T10:15:00.000+01:00"),
        RECEIVED,
        "2026-03-01T09:15:05.000000+00:00",
    )
    assert event.timestamp == CORRECTED
    assert event.originalTimestamp == "2026-03-01T10:15:00.000+01:00"


def test_a_client_ahead_of_the_server_is_pulled_back() -> None:
    """Skew works in both directions: a device clock ahead of the server moves earlier."""
    event = stamp(
        track(timestamp="2026-03-01T10:00:00.000Z"),
        RECEIVED,
        "2026-03-01T10:00:01.500Z",
    )
    assert event.timestamp == "2026-03-01T09:18:05.500Z"


def test_without_sent_at_the_timestamp_is_left_alone() -> None:
    """No sentAt means no way to measure skew: timestamp stays, no originalTimestamp."""
    event = stamp(track(timestamp=DEVICE_TIMESTAMP), RECEIVED)
    assert event.timestamp == DEVICE_TIMESTAMP
    assert event.originalTimestamp is None


def test_without_timestamp_the_event_happened_on_arrival() -> None:
    """No timestamp: timestamp = receivedAt, whatever sentAt says, and no original."""
    event = stamp(track(), RECEIVED, DEVICE_SENT_AT)
    assert event.timestamp == RECEIVED_AT
    assert event.originalTimestamp is None


def test_an_existing_original_timestamp_is_not_overwritten() -> None:
    """An event relayed with originalTimestamp keeps the first device time it recorded."""
    event = stamp(
        track(timestamp=DEVICE_TIMESTAMP, originalTimestamp="2026-03-01T09:00:00.000Z"),
        RECEIVED,
        DEVICE_SENT_AT,
    )
    assert event.timestamp == CORRECTED
    assert event.originalTimestamp == "2026-03-01T09:00:00.000Z"


def test_an_unparseable_batch_sent_at_raises_value_error() -> None:
    """The HTTP listener turns this ValueError into a 400; it must not pass silently."""
    with pytest.raises(ValueError, match="invalid timestamp"):
        stamp(track(timestamp=DEVICE_TIMESTAMP), RECEIVED, "yesterday")


def test_stamp_returns_the_same_event_object() -> None:
    """stamp fills the event in place (the listeners rely on that) and returns it."""
    event = track()
    assert stamp(event, RECEIVED) is event


def test_generated_message_ids_are_random_version_4_uuids() -> None:
    """Generated messageIds are RFC 9562 version-4 UUIDs and do not repeat."""
    import uuid

    from journeyd.ingest.inbound import new_message_id

    ids = [new_message_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:500]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
