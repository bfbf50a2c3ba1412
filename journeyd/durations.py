"""Human durations ("30s", "5m", "2h", "3d", "1w", "1h30m") as used throughout the config."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"([0-9]+)([smhdw])")
_WHOLE = re.compile(r"(?:[0-9]+[smhdw])+")


def parse_duration(text: str) -> int:
    """Return whole seconds; raise ValueError with a message that shows the accepted form."""
    compact = text.strip().replace(" ", "")
    if not compact or not _WHOLE.fullmatch(compact):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit s, m, h, d or w "
            '(e.g. "30s", "5m", "2h", "3d", "1w", "1h30m")'
        )
    return sum(int(n) * _UNITS[u] for n, u in _PART.findall(compact))


def format_duration(seconds: float) -> str:
    """The shortest exact spelling, so messages echo durations the way users write them."""
    whole = int(seconds)
    if whole == 0:
        return "0s"
    if whole < 0:
        return "-" + format_duration(-whole)
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
