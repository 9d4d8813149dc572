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


def _fed(contiguous=True) -> SymbolFeed:
    f = SymbolFeed("BTCUSDT", state=None, merge=False, contiguous=contiguous, max_backfill_ids=100)
    assert f.check(1000, 1_700_000_000_000) == TAKE
    f.last_ts_ms = 1_700_000_000_000  # as the runner sets it when the kernel takes the trade
    import time

    f.last_ts_ns = time.perf_counter_ns()
    return f


WALL = 1_700_000_100_000


def test_vet_refuses_values_no_exchange_sends():
    f = _fed()
    ok = dict(price=60000.0, qty=0.1, from_rest=False, wall_ms=WALL, max_future_ms=600_000)
    assert f.vet(1001, 1_700_000_000_001, **ok) is None
    for tid, ts, px, q in [
        (2**63, WALL, 1.0, 1.0),
        (-1, WALL, 1.0, 1.0),
        (1001, 10**30, 1.0, 1.0),
        (1001, 2**62, 1.0, 1.0),
        (1001, 5, 1.0, 1.0),
        (1001, WALL + 600_001, 1.0, 1.0),
        (1001, WALL, float("nan"), 1.0),
        (1001, WALL, 1.0, -1.0),
        (1001, WALL, 1e300, 1e300),
        (1001, WALL, "1", 1.0),
    ]:
        assert f.vet(tid, ts, px, q, False, WALL, 600_000) is not None, (tid, ts, px, q)
    assert f.vet(1001, WALL + 599_000, 1.0, 1.0, True, WALL, 600_000) is None  # REST rows: ranges only


def test_a_stray_jump_stays_refused_and_a_confirmed_one_is_taken():
    f = _fed()
    args = (1.0, 1.0, False, WALL, 600_000)
    assert "held" in f.vet(2**62, 1_700_000_000_001, *args)  # the stray id
    assert f.vet(1001, 1_700_000_000_002, *args) is None  # the stream goes on: the stray is forgotten
    assert f.check(1001, 1_700_000_000_002) == TAKE
    # a recording with a hole: ids jump 60 M and the next trade continues from there
    assert f.vet(60_001_001, 1_700_000_000_003, *args) is not None
    assert f.vet(60_001_002, 1_700_000_000_004, *args) is None and f.n_unfilled == 1
    # time: a day ahead of the symbol is held; confirmed by the next trade, taken
    g = _fed(contiguous=False)
    day = 86_400_000
    assert "ahead" in g.vet(5, 1_700_000_000_000 + day, 1.0, 1.0, False, WALL + 2 * day, 600_000)
    assert g.vet(6, 1_700_000_000_000 + 10, 1.0, 1.0, False, WALL + 2 * day, 600_000) is None
    assert g.vet(7, 1_700_000_000_000 + day, 1.0, 1.0, False, WALL + 2 * day, 600_000) is not None
    assert g.vet(8, 1_700_000_000_000 + day + 5, 1.0, 1.0, False, WALL + 2 * day, 600_000) is None
