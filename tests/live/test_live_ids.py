"""live.runner.ids: the per-symbol id and gap checks, driven directly (no asyncio, no sockets)."""

from __future__ import annotations

import logging

from live.runner.ids import BACKFILL, REPEAT, TAKE, IdTracker, SymbolFeed


def verdicts(tracker: IdTracker, ids, ts=None, from_rest=False) -> list[int]:
    ts = ts or [1000 + i for i in range(len(ids))]
    return [tracker.check(i, t, from_rest) for i, t in zip(ids, ts)]


def test_in_order_ids_are_taken():
    t = IdTracker("BTCUSDT", contiguous=True)
    assert verdicts(t, [5, 6, 7, 8]) == [TAKE] * 4
    assert t.last_id == 8 and (t.n_dups, t.n_gaps, t.n_unfilled) == (0, 0, 0)


def test_repeats_are_dropped_and_counted():
    t = IdTracker("BTCUSDT", contiguous=True)
    assert verdicts(t, [5, 6, 6, 4, 7]) == [TAKE, TAKE, REPEAT, REPEAT, TAKE]
    assert t.last_id == 7 and t.n_dups == 2


def test_a_gap_asks_for_a_backfill_and_changes_nothing():
    t = IdTracker("BTCUSDT", contiguous=True, max_backfill_ids=10)
    assert verdicts(t, [5, 6, 9]) == [TAKE, TAKE, BACKFILL]
    assert t.last_id == 6 and t.n_gaps == 0
    # the backfilled trades come from REST; then the trade that revealed the gap is taken
    assert verdicts(t, [7, 8], from_rest=True) == [TAKE, TAKE]
    assert t.check(9, 2000) == TAKE and t.last_id == 9
    # REST rows are never gaps themselves: a hole inside a REST answer is taken as is
    assert t.check(12, 2001, from_rest=True) == TAKE


def test_a_gap_too_large_to_backfill_is_counted_and_taken(caplog):
    t = IdTracker("BTCUSDT", contiguous=True, max_backfill_ids=10)
    with caplog.at_level(logging.ERROR, "whalebt.live"):
        assert verdicts(t, [5, 17]) == [TAKE, TAKE]
    assert (t.n_gaps, t.n_unfilled, t.last_id) == (1, 11, 17)
    assert "gap of 11 trade ids is more than --max-backfill-ids 10" in caplog.text


def test_a_reset_after_the_warm_up_restarts_the_id_sequence(caplog):
    """The stream numbers trades apart from a warm-up (other id source): carry on from the stream."""
    t = IdTracker("BTCUSDT", contiguous=True, max_backfill_ids=100)
    assert verdicts(t, [900_000, 900_001], ts=[10, 20], from_rest=True) == [TAKE, TAKE]
    t.warmed_up(20)
    with caplog.at_level(logging.WARNING, "whalebt.live"):
        assert t.check(3, 30) == TAKE  # newer, but numbered below: a reset, not a repeat
    assert t.last_id == 3 and t.n_dups == 0 and "continuing from the stream's ids" in caplog.text
    assert verdicts(t, [4, 4, 5], ts=[31, 31, 32]) == [TAKE, REPEAT, TAKE]


def test_the_first_live_trade_continuing_the_warm_up_is_checked_as_usual():
    t = IdTracker("BTCUSDT", contiguous=True, max_backfill_ids=100)
    t.check(50, 10, from_rest=True)
    t.warmed_up(10)
    assert t.check(50, 10) == REPEAT  # already had it from the warm-up
    t.warmed_up(10)
    assert t.check(53, 11) == BACKFILL  # a small gap at the seam is filled over REST


def test_ids_without_order_repeat_only_when_recent_or_older_than_the_warm_up():
    t = IdTracker("UNIUSD", contiguous=False)
    assert verdicts(t, [30, 10, 20, 10, 99], ts=[5, 6, 7, 8, 9]) == [TAKE, TAKE, TAKE, REPEAT, TAKE]
    t.warmed_up(50)
    assert t.min_ts == 50 and t.check(7, 49) == REPEAT and t.check(8, 50) == TAKE
    assert t.n_dups == 2


def test_recent_ids_are_bounded(monkeypatch):
    monkeypatch.setattr(IdTracker, "RECENT_IDS", 3)
    t = IdTracker("UNIUSD", contiguous=False)
    assert verdicts(t, [1, 2, 3, 4]) == [TAKE] * 4
    assert t.check(1, 9999) == TAKE  # forgotten: taken again
    assert t.check(4, 9999) == REPEAT


def test_symbol_feed_is_an_id_tracker_with_a_merger():
    f = SymbolFeed("BTCUSDT", state=None, merge=True, contiguous=True, max_backfill_ids=5)
    assert f.merger is not None and verdicts(f, [1, 3]) == [TAKE, BACKFILL]
