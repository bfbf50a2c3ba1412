"""The messageId de-duplication window: bounded in time and in memory."""

from __future__ import annotations

from journeyd.dedup import DedupWindow


def test_a_repeat_within_the_window_is_a_duplicate() -> None:
    """The same (scope, messageId) twice inside the window is seen the second time."""
    window = DedupWindow(window_s=60, max_ids=100)
    assert window.seen("k", "m1", now=0) is False
    assert window.seen("k", "m1", now=59) is True


def test_a_repeat_after_the_window_runs_again() -> None:
    """Once the window has passed, the id is new again (an SDK retry days later)."""
    window = DedupWindow(window_s=60, max_ids=100)
    window.seen("k", "m1", now=0)
    assert window.seen("k", "m1", now=61) is False
    assert window.seen("k", "m1", now=62) is True


def test_scopes_are_separate() -> None:
    """One write key cannot suppress another source's messageIds."""
    window = DedupWindow(window_s=60, max_ids=100)
    window.seen("key-a", "m1", now=0)
    assert window.seen("key-b", "m1", now=1) is False


def test_memory_is_bounded_by_max_ids() -> None:
    """Past max_ids the oldest ids are forgotten early, and that is counted."""
    window = DedupWindow(window_s=10_000, max_ids=50)
    for i in range(500):
        window.seen("k", f"m{i}", now=i)
    assert len(window) <= 50
    assert window.evicted_early >= 450
    assert window.seen("k", "m499", now=500) is True  # the newest are kept
    assert window.seen("k", "m0", now=501) is False  # the oldest were forgotten


def test_expired_ids_are_swept() -> None:
    """Expired ids do not pile up: the window holds about what the last window_s saw."""
    window = DedupWindow(window_s=10, max_ids=1_000_000)
    for i in range(5000):
        window.seen("k", f"m{i}", now=i)
    assert len(window) < 10 + 300  # the live window plus at most one sweep interval


def test_forget_lets_a_retry_run() -> None:
    """An event that was logged but not applied is forgotten, so its retry is not skipped."""
    window = DedupWindow(window_s=60, max_ids=100)
    window.seen("k", "m1", now=0)
    window.forget("k", "m1")
    assert window.seen("k", "m1", now=1) is False


def test_export_and_restore_round_trip() -> None:
    """The window survives a snapshot: what was seen before is still a duplicate after."""
    window = DedupWindow(window_s=60, max_ids=100)
    for i in range(10):
        window.seen("k", f"m{i}", now=i)
    again = DedupWindow(window_s=60, max_ids=100)
    again.restore(window.export())
    assert again.export() == window.export()
    assert again.seen("k", "m3", now=20) is True
