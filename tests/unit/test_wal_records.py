"""The WAL record codec: every record kind survives msgpack, and frames survive the log."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeyd.config import load
from journeyd.engine import Delivery
from journeyd.model import Event, Filter
from journeyd.settings import (
    Audience,
    BrazeDestination,
    CustomerioDestination,
    FileDestination,
    FunctionDestination,
    IterableDestination,
    Settings,
    WebhookDestination,
)
from journeyd.store import (
    ConfigRecord,
    EventRecord,
    IntentRecord,
    OutcomeRecord,
    Record,
    TickRecord,
    WalWriter,
    decode_record,
    encode_record,
    read_wal,
)

ROOT = Path(__file__).resolve().parents[2]


def roundtrip(record: Record) -> Record:
    return decode_record(encode_record(record))


def test_event_record_with_nulls_and_nested_properties_round_trips() -> None:
    """An accepted event comes back equal, nulls and nested structures included."""
    event = Event(
        type="track",
        messageId="m-1",
        userId=None,
        anonymousId="anon-7",
        event="Cart Modified",
        properties={
            "cart": {"items": [{"sku": "a", "qty": 2, "price": 9.99}, None], "note": None},
            "empty": {},
            "flag": False,
            "big": 2**63,
            "neg": -(2**63),
        },
        traits=None,
        context={"library": {"name": "analytics-python", "version": "2.3.0"}},
        timestamp="2026-03-01T09:15:00.000Z",
    )
    record = EventRecord(received=1_772_355_600.125, scope="write-key-1", event=event)
    back = roundtrip(record)
    assert back == record
    assert isinstance(back, EventRecord)
    assert back.event.userId is None
    assert back.event.properties is not None
    assert back.event.properties["cart"]["items"][1] is None


def test_tick_record_round_trips() -> None:
    """A timer tick keeps its exact float `now`."""
    record = TickRecord(now=1_772_355_600.000001)
    assert roundtrip(record) == record


def test_intent_record_nests_the_engine_delivery() -> None:
    """A delivery intent keeps every field of the engine's Delivery, payload included."""
    delivery = Delivery(
        at=1_772_355_601.5,
        user="user-1",
        journey="cart-abandonment",
        instance="inst-9",
        step="remind",
        destination="outbox",
        message_id="jd-abc-1",
        payload={"event": "Cart Reminder", "properties": {"cart": [1, 2], "none": None}},
    )
    record = IntentRecord(delivery=delivery)
    back = roundtrip(record)
    assert back == record
    assert isinstance(back, IntentRecord)
    assert isinstance(back.delivery, Delivery)


@pytest.mark.parametrize("outcome", ["delivered", "dead_lettered"])
def test_outcome_record_round_trips(outcome: Any) -> None:
    """Both delivery outcomes are stored and read back."""
    record = OutcomeRecord(message_id="jd-abc-1", destination="hook", outcome=outcome, attempts=3)
    assert roundtrip(record) == record


def test_outcome_record_rejects_an_unknown_outcome_on_decode() -> None:
    """A record whose outcome is not one of the two known values does not decode."""
    raw = msgspec.msgpack.encode([4, "m", "d", "lost", 1])
    with pytest.raises(msgspec.ValidationError):
        decode_record(raw)


def test_config_record_from_the_example_config_round_trips() -> None:
    """The example config (settings, destinations, audiences, every journey) is stored whole."""
    config = load(ROOT / "journeyd.toml.example")
    assert config.journeys, "the example config should load journeys from journeys/*.toml"
    assert config.settings.destinations and config.settings.audiences
    record = ConfigRecord(settings=config.settings, journeys=list(config.journeys))
    back = roundtrip(record)
    assert back == record
    assert isinstance(back, ConfigRecord)
    assert [j.id for j in back.journeys] == [j.id for j in config.journeys]


def test_config_record_keeps_every_destination_type_and_defaults() -> None:
    """Tagged destination unions, audiences and defaulted sections survive the codec."""
    settings = Settings(
        destinations={
            "f": FileDestination(path="out.jsonl"),
            "w": WebhookDestination(url="https://x.test/h", headers={"X-A": "1"}),
            "b": BrazeDestination(endpoint="https://b.test", api_key_env="BRAZE"),
            "c": CustomerioDestination(site_id_env="S", api_key_env="K", region="eu"),
            "i": IterableDestination(api_key_env="I", identify_by="email"),
            "fn": FunctionDestination(function="pkg.mod:fn"),
        },
        audiences={"vip": Audience(all=[], any=[])},
    )
    record = ConfigRecord(settings=settings, journeys=[])
    back = roundtrip(record)
    assert back == record
    assert isinstance(back, ConfigRecord)
    assert type(back.settings.destinations["c"]) is CustomerioDestination


def test_filter_without_value_stays_unset() -> None:
    """A valueless filter (`exists`) does not come back with a value it never had."""
    config = load(ROOT / "journeyd.toml.example")
    journey = config.journeys[0]
    extra = msgspec.structs.replace(
        journey.entry, filters=[Filter(property="properties.cart", op="exists")]
    )
    changed = msgspec.structs.replace(journey, entry=extra)
    back = roundtrip(ConfigRecord(settings=config.settings, journeys=[changed]))
    assert isinstance(back, ConfigRecord)
    assert back.journeys[0].entry.filters[0].value is msgspec.UNSET


def test_record_tags_are_pinned() -> None:
    """The on-disk encoding is an array led by a fixed integer tag per kind."""
    assert encode_record(TickRecord(now=1.0)) == b"\x92\x02\xcb" + struct.pack(">d", 1.0)
    tags: list[tuple[Record, int]] = [
        (EventRecord(received=0.0, scope="", event=Event(type="track")), 1),
        (TickRecord(now=0.0), 2),
        (
            IntentRecord(
                delivery=Delivery(
                    at=0.0, user="u", step="s", destination="d", message_id="m", payload={}
                )
            ),
            3,
        ),
        (OutcomeRecord(message_id="m", destination="d", outcome="delivered", attempts=1), 4),
        (ConfigRecord(settings=Settings(), journeys=[]), 5),
    ]
    for record, tag in tags:
        assert msgspec.msgpack.decode(encode_record(record))[0] == tag


def test_unknown_tag_does_not_decode() -> None:
    """A record kind this build does not know is a decode error, not a silent guess."""
    with pytest.raises(msgspec.DecodeError):
        decode_record(msgspec.msgpack.encode([99, 1.0]))


def test_big_integers_beyond_msgpack_range_refuse_to_encode() -> None:
    """Integers msgpack cannot hold raise OverflowError (JSON allows them; the WAL cannot)."""
    record = EventRecord(received=0.0, scope="", event=Event(type="track", properties={"n": 2**64}))
    with pytest.raises(OverflowError):
        encode_record(record)


# --- properties -------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
optional_text = st.none() | st.text()
events = st.builds(
    Event,
    type=st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]),
    messageId=optional_text,
    userId=optional_text,
    anonymousId=optional_text,
    event=optional_text,
    properties=st.none() | st.dictionaries(st.text(), json_values, max_size=5),
    traits=st.none() | st.dictionaries(st.text(), json_values, max_size=3),
    timestamp=optional_text,
    context=st.none() | st.dictionaries(st.text(), json_values, max_size=3),
)
event_records = st.builds(
    EventRecord,
    received=st.floats(allow_nan=False, allow_infinity=False),
    scope=st.text(),
    event=events,
)


@given(event_records)
def test_event_record_codec_is_identity(record: EventRecord) -> None:
    """decode(encode(r)) == r for any JSON-shaped event: unicode, floats, None, nesting."""
    assert decode_record(encode_record(record)) == record


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(st.lists(event_records, min_size=1, max_size=6), min_size=1, max_size=6),
    segment_bytes=st.integers(min_value=1, max_value=4096),
)
def test_frames_round_trip_through_writer_and_reader(
    batches: list[list[EventRecord]], segment_bytes: int
) -> None:
    """Whatever is appended (any batching, any segment size) is read back in order, same seqs."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "wal"
        writer = WalWriter.open(directory, 1, segment_bytes=segment_bytes)
        expected: list[tuple[int, Record]] = []
        for batch in batches:
            first = writer.written_seq + 1
            last = writer.append(batch)
            assert last == first + len(batch) - 1
            expected += list(zip(range(first, last + 1), batch, strict=True))
        writer.close()
        assert list(read_wal(directory)) == expected
