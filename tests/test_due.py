import logging
import re
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from newsletter.daemon.cron import fetch_schedule
from newsletter.errors import ConfigError
from newsletter.models import Subscriber
from newsletter.selection.due import is_due, latest_slot, next_due_at, shown_due, slot_served_now
from newsletter.selection.select import _served_empty, _warn_if_ahead
from newsletter.store import SubscriberState

PARIS = ZoneInfo("Europe/Paris")


def sub(**kw: object) -> Subscriber:
    return Subscriber(email="a@example.org", interests=("x",), **kw)  # type: ignore[arg-type]


def test_first_digest_is_always_due() -> None:
    assert is_due(sub(cadence="weekly", weekday="fri"), None, datetime(2026, 1, 5, tzinfo=UTC))


def test_each_dump_is_always_due() -> None:
    now = datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert is_due(sub(cadence="each-dump"), now - timedelta(minutes=1), now)


def test_daily_once_per_calendar_day_in_local_zone() -> None:
    s = sub(cadence="daily", timezone="Europe/Paris")
    last = datetime(2026, 1, 5, 22, 30, tzinfo=UTC)  # 23:30 in Paris, Jan 5
    assert not is_due(s, last, datetime(2026, 1, 5, 22, 50, tzinfo=UTC))  # still Jan 5 in Paris
    assert is_due(s, last, datetime(2026, 1, 5, 23, 5, tzinfo=UTC))  # 00:05 Jan 6 in Paris


def test_daily_send_at_waits_for_the_slot_then_catches_up_once() -> None:
    s = sub(cadence="daily", send_at=time(7, 30), timezone="Europe/Paris")
    last = datetime(2026, 3, 1, 7, 30, tzinfo=PARIS)
    assert not is_due(s, last, datetime(2026, 3, 2, 7, 0, tzinfo=PARIS))
    # Machine down for three days: due at the next tick, once.
    back = datetime(2026, 3, 5, 11, 0, tzinfo=PARIS)
    assert is_due(s, last, back)
    assert not is_due(s, back, back + timedelta(minutes=5))
    assert next_due_at(s, back, back + timedelta(minutes=5)) == datetime(2026, 3, 6, 7, 30, tzinfo=PARIS)


def test_a_digest_made_before_the_days_slot_counts_for_that_day() -> None:
    s = sub(cadence="daily", send_at=time(7, 30), timezone="Europe/Paris")
    first = datetime(2026, 3, 11, 5, 0, tzinfo=PARIS)  # a new subscriber, before the day's slot
    assert is_due(s, None, first)
    assert not is_due(s, first, datetime(2026, 3, 11, 7, 30, tzinfo=PARIS))
    assert not is_due(s, first, datetime(2026, 3, 11, 23, 59, tzinfo=PARIS))
    assert next_due_at(s, first, first) == datetime(2026, 3, 12, 7, 30, tzinfo=PARIS)
    assert is_due(s, first, datetime(2026, 3, 12, 7, 30, tzinfo=PARIS))
    late = datetime(2026, 3, 11, 23, 30, tzinfo=PARIS)  # a late digest does not delay the next day's
    assert is_due(s, late, datetime(2026, 3, 12, 7, 30, tzinfo=PARIS))


def test_a_late_digest_serves_the_slot_it_was_late_for_not_the_next_days() -> None:
    """send_at 23:30 and an hourly cron at :15: the 00:15 run's digest counted for that day's 23:30
    slot too, so a digest went out only every other day."""
    s = sub(cadence="daily", send_at=time(23, 30))
    last = datetime(2026, 3, 11, 0, 15, tzinfo=UTC)  # the run after the 10th's 23:30 slot
    assert not is_due(s, last, datetime(2026, 3, 11, 23, 15, tzinfo=UTC))
    assert is_due(s, last, datetime(2026, 3, 12, 0, 15, tzinfo=UTC))  # for the 11th's 23:30 slot
    assert next_due_at(s, last, last) == datetime(2026, 3, 11, 23, 30, tzinfo=UTC)
    made = [datetime(2026, 3, d, 0, 15, tzinfo=UTC) for d in range(11, 18)]
    assert all(is_due(s, prev, now) for prev, now in pairwise(made))  # every day


def test_daily_slot_across_spring_dst_change() -> None:
    s = sub(cadence="daily", send_at=time(7, 30), timezone="Europe/Paris")
    # Clocks go forward on 2026-03-29 in Paris: 07:30 local is 05:30 UTC that day, 06:30 UTC the day before.
    last = datetime(2026, 3, 28, 6, 30, tzinfo=UTC)
    assert not is_due(s, last, datetime(2026, 3, 29, 5, 29, tzinfo=UTC))
    assert is_due(s, last, datetime(2026, 3, 29, 5, 30, tzinfo=UTC))
    assert latest_slot(s, datetime(2026, 3, 29, 6, 0, tzinfo=UTC)) == datetime(2026, 3, 29, 5, 30, tzinfo=UTC)


def test_weekly_with_weekday_and_without() -> None:
    monday = sub(cadence="weekly", weekday="mon", send_at=time(8, 0))
    sent = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # a Monday
    assert not is_due(monday, sent, datetime(2026, 1, 11, 23, 0, tzinfo=UTC))
    assert is_due(monday, sent, datetime(2026, 1, 12, 8, 0, tzinfo=UTC))
    every7 = sub(cadence="weekly")  # from send_at (midnight) of the local day a week on
    assert not is_due(every7, sent, datetime(2026, 1, 11, 23, 59, tzinfo=UTC))
    assert is_due(every7, sent, datetime(2026, 1, 12, 0, 0, tzinfo=UTC))
    assert next_due_at(every7, sent, sent) == datetime(2026, 1, 12, 0, 0, tzinfo=UTC)


def test_weekly_without_a_weekday_does_not_drift_with_the_runs_start_time() -> None:
    """Due when 7 days had passed to the millisecond: this week's run, starting 0.3 s earlier than last
    week's, waited a whole cron hour, and the next week's from then on."""
    every7 = sub(cadence="weekly")
    sent = datetime(2026, 3, 2, 8, 15, 1, 500000, tzinfo=UTC)
    assert is_due(every7, sent, datetime(2026, 3, 9, 8, 15, 1, 200000, tzinfo=UTC))


def test_weekly_without_a_weekday_late_past_midnight_keeps_its_day() -> None:
    """A digest 45 minutes late for 23:30 (00:15) moved every later week a day on."""
    every7 = sub(cadence="weekly", timezone="Europe/Paris", send_at=time(23, 30))
    late = datetime(2026, 3, 3, 0, 15, tzinfo=PARIS)  # for Monday 2 March's 23:30
    assert next_due_at(every7, late, late) == datetime(2026, 3, 9, 23, 30, tzinfo=PARIS)


def test_a_weekday_subscribers_first_digest_on_another_day_serves_the_last_weekday() -> None:
    """A Monday subscriber's first digest on a Wednesday before its send_at was taken to serve a
    Wednesday slot, which does not exist: status showed the next digest due a Wednesday."""
    monday = sub(cadence="weekly", weekday="mon", send_at=time(7, 30))
    first = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)  # a Wednesday, 05:00
    assert next_due_at(monday, first, first) == datetime(2026, 3, 16, 7, 30, tzinfo=UTC)  # Monday


@pytest.mark.parametrize("cadence", ["daily", "weekly"])
def test_next_due_is_after_now_when_not_due(cadence: str) -> None:
    s = sub(cadence=cadence, weekday="wed" if cadence == "weekly" else None)
    now = datetime(2026, 6, 3, 12, tzinfo=UTC)
    nxt = next_due_at(s, now, now + timedelta(hours=1))
    assert nxt is not None and nxt > now + timedelta(hours=1)
    assert is_due(s, now, nxt)


@pytest.mark.parametrize(
    ("days", "weekdays"),
    [
        ("1-5", "Mon Tue Wed Thu Fri"),
        ("0", "Sun"),
        ("7", "Sun"),
        ("*/2", "Tue Thu Sat Sun"),
        ("sat,sun", "Sat Sun"),
        ("mon-fri/2", "Mon Wed Fri"),
        ("sun-thu", "Sun Mon Tue Wed Thu"),
        ("mon-5", "Mon Tue Wed Thu Fri"),
    ],
)
def test_fetch_cron_reads_weekday_numbers_as_crontab_does(days: str, weekdays: str) -> None:
    """APScheduler numbers Monday 0: `0 9 * * 1-5` ran Tuesday to Saturday, `0 9 * * 0` on Mondays."""
    trigger = fetch_schedule(f"0 9 * * {days}")
    moment, seen = datetime(2026, 3, 15, 10, tzinfo=UTC), set()  # a Sunday
    for _ in range(10):
        moment = trigger.get_next_fire_time(None, moment)
        seen.add(moment.strftime("%a"))
        moment += timedelta(minutes=1)
    assert sorted(seen) == sorted(weekdays.split())


def test_a_step_of_zero_in_fetch_cron_is_one_error_line() -> None:
    with pytest.raises(
        ConfigError, match="invalid setting field 'fetch_cron': Increment must be higher than 0"
    ):
        fetch_schedule("0 9 * * */0")


def _daily_runs(s: Subscriber, runs: list[datetime]) -> list[bool]:
    """Whether each run sends, recording each digest's slot as a run does."""
    last: datetime | None = None
    served: datetime | None = None
    sent = []
    for now in runs:
        due = is_due(s, last, now, served)
        if due:
            last, served = now, slot_served_now(s, last, now)
        sent.append(due)
    return sent


@pytest.mark.parametrize("hour", [7, 9, 15, 17])
def test_one_run_a_day_long_before_send_at_sends_every_day(hour: int) -> None:
    """Read off the digest's time, a 07:10 digest late for 18:00 the day before took the coming 18:00
    as nearer: the next day was not due, and digests came every other day. (The first digest counts
    for that day's 18:00, which the next run has served.)"""
    s = sub(cadence="daily", send_at=time(18, 0))
    runs = [datetime(2026, 3, day, hour, 10, tzinfo=UTC) for day in range(1, 9)]
    assert _daily_runs(s, runs) == [True, False] + [True] * 6


def test_a_first_digest_still_counts_for_the_nearer_slot_that_day() -> None:
    s = sub(cadence="daily", send_at=time(7, 30), timezone="Europe/Paris")
    first = datetime(2026, 3, 11, 5, 0, tzinfo=PARIS)
    served = slot_served_now(s, None, first)
    assert served == datetime(2026, 3, 11, 7, 30, tzinfo=PARIS)
    assert not is_due(s, first, datetime(2026, 3, 11, 9, 0, tzinfo=PARIS), served)
    assert is_due(s, first, datetime(2026, 3, 12, 7, 30, tzinfo=PARIS), served)
    assert slot_served_now(sub(cadence="each-dump"), None, first) is None


@pytest.mark.parametrize(
    ("subscriber", "first", "not_yet", "next_one"),
    [  # a weekly Monday 08:00 London reader's first digest on Sunday evening; a daily 00:30 one's at 21:00
        (
            {"cadence": "weekly", "weekday": "mon", "send_at": time(8, 0), "timezone": "Europe/London"},
            datetime(2026, 12, 6, 21, 0, tzinfo=UTC),
            datetime(2026, 12, 7, 8, 30, tzinfo=UTC),
            datetime(2026, 12, 14, 8, 0, tzinfo=UTC),
        ),
        (
            {"cadence": "daily", "send_at": time(0, 30)},
            datetime(2026, 12, 6, 21, 0, tzinfo=UTC),
            datetime(2026, 12, 7, 0, 40, tzinfo=UTC),
            datetime(2026, 12, 8, 0, 30, tzinfo=UTC),
        ),
    ],
)
def test_a_first_digest_counts_for_the_next_slot_on_another_day_when_that_is_nearer(
    subscriber: dict[str, object], first: datetime, not_yet: datetime, next_one: datetime
) -> None:
    """Only a slot later the same day counted: the weekly reader got a second digest 11.5 hours after
    the first, the daily one 3.7 hours after."""
    s = sub(**subscriber)
    served = slot_served_now(s, None, first)
    assert served is not None and first < served < not_yet
    assert not is_due(s, first, not_yet, served)
    assert next_due_at(s, first, not_yet, served) == next_one
    assert is_due(s, first, next_one, served)


def test_a_weekday_subscribers_first_digest_days_before_the_weekday_does_not_skip_it() -> None:
    """A Monday 08:00 reader's first digest on Thursday evening served the coming Monday (3.5 days on,
    nearer than the last): that Monday sent nothing, and the second digest came 11 days after the first."""
    s = sub(cadence="weekly", weekday="mon", send_at=time(8, 0), timezone="America/New_York")
    ny = ZoneInfo("America/New_York")
    first = datetime(2026, 6, 4, 20, 1, tzinfo=ny)  # a Thursday
    served = slot_served_now(s, None, first)
    assert served == datetime(2026, 6, 1, 8, 0, tzinfo=ny)  # the Monday before
    assert next_due_at(s, first, first, served) == datetime(2026, 6, 8, 8, 0, tzinfo=ny)
    assert is_due(s, first, datetime(2026, 6, 8, 8, 0, tzinfo=ny), served)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"send_at": time(18, 0)}, {"send_at": time(6, 0)}),
        ({"cadence": "weekly", "weekday": "fri", "send_at": time(9, 0)}, {"send_at": time(18, 0)}),
        ({"send_at": time(18, 0)}, {"send_at": time(18, 0), "timezone": "America/Los_Angeles"}),
    ],
)
def test_a_recorded_slot_the_profile_no_longer_has_gives_no_second_digest_that_day(
    before: dict[str, object], after: dict[str, object]
) -> None:
    """The recorded 18:00 made the new 06:00 of the same day a second slot: two digests on Mar 6."""
    old = sub(**{"cadence": "daily", **before})
    made = datetime(2026, 3, 6, 7, 10, tzinfo=UTC)
    served = slot_served_now(old, datetime(2026, 3, 5, 7, 10, tzinfo=UTC), made)
    new = sub(**{"cadence": "daily", **after})
    assert not is_due(new, made, datetime(2026, 3, 6, 8, 10, tzinfo=UTC), served)
    assert is_due(new, made, datetime(2026, 3, 8, 8, 10, tzinfo=UTC), served)


@pytest.mark.parametrize(
    ("send_at", "first", "later"),
    [
        (
            time(2, 30),
            datetime(2026, 3, 8, 6, 45, tzinfo=UTC),
            datetime(2026, 3, 8, 7, 35, tzinfo=UTC),
        ),  # 02:30 skipped
        (
            time(1, 30),
            datetime(2026, 11, 1, 4, 45, tzinfo=UTC),
            datetime(2026, 11, 1, 6, 35, tzinfo=UTC),
        ),  # twice
    ],
)
def test_a_recorded_slot_on_a_dst_change_day_is_still_the_profiles(
    send_at: time, first: datetime, later: datetime
) -> None:
    """Compared as datetimes of two zones, the day's slot was 'not one of the profile's': due again."""
    s = sub(cadence="daily", send_at=send_at, timezone="America/New_York")
    recorded = slot_served_now(s, None, first)
    assert recorded is not None
    served = recorded.astimezone(UTC)  # as the store gives it back
    assert not is_due(s, first, later, served)
    assert is_due(s, first, later + timedelta(days=1), served)


def test_a_send_at_moved_later_the_same_day_gives_no_second_digest() -> None:
    old, new = (sub(cadence="daily", send_at=t, timezone="Europe/Paris") for t in (time(18, 0), time(20, 0)))
    made = datetime(2026, 3, 6, 18, 5, tzinfo=PARIS)
    served = slot_served_now(old, made - timedelta(days=1), made)
    assert not is_due(new, made, datetime(2026, 3, 6, 20, 5, tzinfo=PARIS), served)
    assert is_due(new, made, datetime(2026, 3, 7, 20, 5, tzinfo=PARIS), served)


D = "daily"
W = "weekly"


@pytest.mark.parametrize(
    ("old", "new", "made", "first", "expected"),
    [  # a first digest at 23:35 serves 00:00; with 00:30 the next came 55 minutes on
        ({"cadence": D}, {"cadence": D, "send_at": time(0, 30)}, (12, 6, 23, 35), True, (12, 8, 0, 30)),
        ({"cadence": W}, {"cadence": W, "send_at": time(0, 30)}, (12, 6, 23, 35), True, (12, 14, 0, 30)),
        ({"cadence": D}, {"cadence": D, "send_at": time(23, 30)}, (12, 6, 23, 35), True, (12, 7, 23, 30)),
        # the rule that fixed it first skipped a day (the diff review): each next one as before it
        (
            {"cadence": D, "send_at": time(20)},
            {"cadence": D, "send_at": time(7)},
            (3, 3, 20, 2),
            False,
            (3, 4, 7, 0),
        ),
        (
            {"cadence": D, "send_at": time(8), "timezone": "Europe/Paris"},
            {"cadence": D, "send_at": time(8), "timezone": "America/Los_Angeles"},
            (3, 3, 7, 2),
            False,
            (3, 3, 16, 0),  # 08:00 in Los Angeles that day
        ),
        (
            {"cadence": W, "weekday": "mon", "send_at": time(8)},
            {"cadence": W, "weekday": "thu", "send_at": time(8)},
            (3, 2, 8, 2),
            False,
            (3, 5, 8, 0),
        ),
        (
            {"cadence": W, "send_at": time(8)},
            {"cadence": W, "weekday": "wed", "send_at": time(8)},
            (3, 2, 8, 2),
            False,
            (3, 4, 8, 0),
        ),
    ],
)
def test_a_changed_send_time_brings_the_next_digest_neither_at_once_nor_a_day_late(
    old: dict[str, object],
    new: dict[str, object],
    made: tuple[int, ...],
    first: bool,
    expected: tuple[int, ...],
) -> None:
    made_at = datetime(2026, *made, tzinfo=UTC)
    served = slot_served_now(sub(**old), None if first else made_at - timedelta(days=7), made_at)
    assert served is not None
    served = served.astimezone(UTC)  # as the store gives it back
    then = made_at + timedelta(minutes=15)
    assert next_due_at(sub(**new), made_at, then, served) == datetime(2026, *expected, tzinfo=UTC)


@pytest.mark.parametrize("cadence", ["daily", "weekly"])
def test_a_last_digest_far_ahead_of_the_clock_is_due_now_and_a_little_ahead_waits(cadence: str) -> None:
    """One run with --now a year ahead (a typo in a backfill, a bad real-time clock) silenced the
    subscriber until that date: every run said 'not due', and status showed next year."""
    s = sub(cadence=cadence, send_at=time(7, 30), timezone="Europe/Paris")
    now = datetime(2026, 1, 5, 9, tzinfo=PARIS)
    future = datetime(2027, 1, 2, 9, tzinfo=PARIS)
    assert is_due(s, future, now, slot_served_now(s, None, future))
    assert next_due_at(s, future, now, slot_served_now(s, None, future)) == now
    skewed = now + timedelta(minutes=3)  # another host's clock, a little ahead: not a second digest
    assert not is_due(s, skewed, now, slot_served_now(s, now - timedelta(days=1), skewed))


def _sent_hourly(s: Subscriber, last: datetime, served: datetime | None, start: datetime) -> list[datetime]:
    """The digests hourly runs with papers to send make over three days from ``start``."""
    sent = []
    for now in (start + timedelta(hours=h) for h in range(72)):
        if is_due(s, last, now, served):
            served, last = slot_served_now(s, last, now), now
            sent.append(now)
    return sent


def test_after_a_clock_a_week_ahead_is_set_right_a_daily_subscriber_gets_one_digest_a_day() -> None:
    """The digest due at once after one made a week ahead counted for the day before's 08:00: a second
    came at 08:00 the same day."""
    s = sub(cadence="daily", send_at=time(8))
    start = datetime(2026, 3, 10, 7, tzinfo=UTC)
    ahead = start + timedelta(days=7)
    sent = _sent_hourly(s, ahead, slot_served_now(s, start - timedelta(days=1), ahead), start)
    assert sent == [start, *(datetime(2026, 3, day, 8, tzinfo=UTC) for day in (11, 12))]


def test_what_status_and_serve_show_goes_now_only_when_something_goes_now() -> None:
    """A due subscriber with nothing to weigh and a refused digest waiting out its backoff showed 'now'."""
    s = sub(cadence="daily", send_at=time(7, 30))
    last, now = datetime(2026, 3, 10, 7, 30, tzinfo=UTC), datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
    retry_at = now + timedelta(hours=2)
    assert shown_due(s, last, now, None, queued=retry_at, waiting=False) == retry_at
    assert shown_due(s, last, now, None, queued=retry_at, waiting=True) == now  # a new digest goes now
    assert shown_due(s, last, now, None, queued=None, waiting=False) is None  # when a dump brings papers
    assert shown_due(s, last, now, None, queued=now, waiting=False) == now  # the queued one goes now
    later = datetime(2026, 3, 11, 7, 0, tzinfo=UTC)  # before today's send time
    assert shown_due(s, last, later, None, queued=None, waiting=True) == datetime(
        2026, 3, 11, 7, 30, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("days", "said"),
    [("8", "day of week 8 in '8'"), ("8/2", "day of week 8 in '8/2'"), ("9-3", "day of week 9 in '9-3'")],
)
def test_a_weekday_number_past_7_in_fetch_cron_says_crontab_s_range(days: str, said: str) -> None:
    """It said "higher than the maximum value (6)", though 7 (Sunday) is accepted."""
    with pytest.raises(ConfigError, match=re.escape(f"{said}: crontab's are 0-7 (0 and 7 are Sunday)")):
        fetch_schedule(f"0 9 * * {days}")


def test_status_shows_a_send_time_in_a_dst_gap_as_the_clocks_show_it() -> None:
    """02:30 on New York's spring-forward day does not exist: `status --json` printed it with the winter
    offset (2026-03-08T02:30:00-05:00), a time no clock shows; it is 03:30-04:00."""
    from newsletter.ops.status import _subscriber_row
    from newsletter.store import SubscriberState

    s = sub(send_at=time(2, 30), timezone="America/New_York")
    ny = ZoneInfo("America/New_York")
    last = datetime(2026, 3, 7, 2, 30, tzinfo=ny)
    state = SubscriberState(s.email, 1, last, None, served_slot=last)
    row = _subscriber_row(s, state, datetime(2026, 3, 7, 12, tzinfo=UTC), {}, 2, 0, set())
    assert row["next_due_at"] == "2026-03-08T03:30:00-04:00"


@pytest.mark.parametrize(
    ("count", "said"),
    [
        (1, "1 subscriber's last digest was made after this run's clock"),
        (5, "5 subscribers' last digests were made after this run's clock"),
    ],
)
def test_a_last_digest_ahead_of_the_clock_is_counted_in_good_english(
    count: int, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After a month of runs under a future --now, `serve` logged "1 subscribers' last digest was made
    after this run's clock ... they are due now"."""
    now = datetime(2026, 12, 8, tzinfo=UTC)
    ahead = now + timedelta(days=30)
    states = [SubscriberState(f"s{i}@example.org", 1, ahead, None) for i in range(count)]
    with caplog.at_level(logging.WARNING, logger="newsletter"):
        _warn_if_ahead(states, now)
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(said) and message.endswith(
        "it is due now" if count == 1 else "they are due now"
    )


def test_a_due_time_served_empty_after_a_digest_far_ahead_does_not_take_the_next_days() -> None:
    """A run at 21:00 with nothing to send, after a digest recorded a day and 5 minutes ahead (a run's
    --now mistyped), recorded the next day's 08:00 as served: that morning's papers waited a day."""
    s = sub(cadence="daily", send_at=time(8))
    evening = datetime(2026, 3, 10, 21, tzinfo=UTC)
    ahead = evening + timedelta(days=1, minutes=5)
    served = slot_served_now(s, evening - timedelta(days=1), ahead)
    states = {s.email: SubscriberState(s.email, 1, ahead, None, served_slot=served)}
    served = _served_empty(s, states, evening)
    assert served == datetime(2026, 3, 10, 8, tzinfo=UTC)
    assert is_due(s, ahead, datetime(2026, 3, 11, 8, tzinfo=UTC), served)  # that morning's papers go out
