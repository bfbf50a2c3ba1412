"""Deterministic ULIDs for Customer.io event ids (journeyd/delivery/ulid.py)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journeyd.delivery.ulid import ALPHABET, MAX_TIME_MS, encode, timestamp_ms, ulid_for

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def reference_ulid(message_id: str, time_ms: int) -> str:
    """An independent encoder: the 128 bits as a binary string, two zero bits, 5-bit groups."""
    tail = hashlib.blake2b(message_id.encode(), digest_size=10).digest()
    bits = "00" + format(time_ms, "048b") + "".join(format(byte, "08b") for byte in tail)
    return "".join(CROCKFORD[int(bits[i : i + 5], 2)] for i in range(0, 130, 5))


def test_known_vectors() -> None:
    """Fixed inputs give the ids computed once by hand (a change would break de-duplication)."""
    assert ulid_for("m-1", 1772356682000) == "01KJMB1G8GGN1ZQCHKBEY8FWP7"
    assert ulid_for("", 0) == "0000000000DYGXHZ7XE684DNV2"
    # The time part matches the ULID spec's own example (1469918176385 -> 01ARYZ6S41).
    assert ulid_for("jd-7d2f0c1a-0001", 1469918176385) == "01ARYZ6S41JAHJBKH517H4NFNY"


def test_encode_extremes() -> None:
    """0 and 2**128-1 encode to the all-zero and the largest valid ULID; outside is refused."""
    assert encode(0) == "0" * 26
    assert encode((1 << 128) - 1) == "7" + "Z" * 25
    with pytest.raises(ValueError, match="128-bit"):
        encode(1 << 128)


def test_time_bounds() -> None:
    """A time beyond 48 bits or before the epoch is refused, not wrapped around."""
    assert ulid_for("x", MAX_TIME_MS).startswith("7ZZZZZZZZZ")
    with pytest.raises(ValueError, match="ULID time"):
        ulid_for("x", MAX_TIME_MS + 1)
    with pytest.raises(ValueError, match="ULID time"):
        ulid_for("x", -1)


def test_timestamp_ms_exact() -> None:
    """ISO timestamps become exact milliseconds (no float rounding); naive means UTC."""
    assert timestamp_ms("2026-03-01T09:18:02.123Z") == 1772356682123
    assert timestamp_ms("2026-03-01T09:18:02.123") == 1772356682123
    assert timestamp_ms("2026-03-01T10:18:02.001+01:00") == 1772356682001


@given(st.text(max_size=40), st.integers(min_value=0, max_value=MAX_TIME_MS))
def test_deterministic_and_well_formed(message_id: str, time_ms: int) -> None:
    """Same input, same id: 26 Crockford characters, equal to the independent encoder's."""
    first = ulid_for(message_id, time_ms)
    assert first == ulid_for(message_id, time_ms)
    assert len(first) == 26
    assert set(first) <= set(ALPHABET)
    assert first[0] in "01234567"
    assert first == reference_ulid(message_id, time_ms)


@given(
    st.text(max_size=20),
    st.text(max_size=20),
    st.integers(min_value=0, max_value=MAX_TIME_MS - 1),
    st.integers(min_value=1, max_value=10**9),
)
def test_sorted_by_time(first_id: str, second_id: str, time_ms: int, later_by: int) -> None:
    """A later millisecond always sorts after an earlier one, whatever the message ids."""
    later = min(MAX_TIME_MS, time_ms + later_by)
    assert ulid_for(first_id, time_ms) < ulid_for(second_id, later)


@given(st.text(max_size=20), st.text(max_size=20))
def test_different_messages_differ(first: str, second: str) -> None:
    """Two message ids in the same millisecond get different ids (80 hash bits)."""
    if first != second:
        assert ulid_for(first, 1772356682000) != ulid_for(second, 1772356682000)
