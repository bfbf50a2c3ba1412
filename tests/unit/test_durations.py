"""Durations as written in the config: "30s", "5m", "2h", "3d", "1w", "1h30m"."""

from __future__ import annotations

import pytest

from journeyd.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("3d", 259200),
        ("1w", 604800),
        ("1h30m", 5400),
        ("1w2d3h4m5s", 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
        ("0s", 0),
        ("90m", 5400),
        ("365d", 365 * 86400),
        (" 2h ", 7200),
        ("1h 30m", 5400),
        ("007s", 7),
    ],
)
def test_parse(text: str, seconds: int) -> None:
    """Each unit and combinations of units parse to whole seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "30",
        "s",
        "5 minutes",
        "2H",
        "1.5h",
        "-5m",
        "+5m",
        "1y",
        "h1",
        "5m!",
        "1h30",
        "\u0665m",
    ],
)
def test_parse_rejects(text: str) -> None:
    """Anything but number-unit pairs is refused with a message showing the accepted form."""
    with pytest.raises(ValueError, match="invalid duration") as caught:
        parse_duration(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "s, m, h, d or w" in message
    assert '"1h30m"' in message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (30, "30s"),
        (300, "5m"),
        (7200, "2h"),
        (259200, "3d"),
        (604800, "1w"),
        (5400, "1h30m"),
        (365 * 86400, "52w1d"),
        (90061, "1d1h1m1s"),
        (59.9, "59s"),
        (-90, "-1m30s"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    """The shortest exact spelling, largest unit first."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [1, 59, 60, 61, 3599, 3600, 86399, 86400, 604799, 10**8])
def test_round_trip(seconds: int) -> None:
    """Formatting then parsing gives back the same number of seconds."""
    assert parse_duration(format_duration(seconds)) == seconds
