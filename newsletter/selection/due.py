"""When is a subscriber's next digest due? Pure functions of the profile, the last digest and the clock.

A daily or weekly subscriber has *slots*: local moments (``send_at``, on ``weekday`` for weekly) in their
own time zone. Each digest serves one slot, recorded with it: the latest at or before it was made, or
for a first digest the next one when that is nearer (made earlier on a slot's day, it counts for that
slot). A digest is due when the most recent slot has passed and the last digest served an earlier one,
so a run that missed a slot (machine down, holiday) catches up once at the next run, and a late digest
(00:15 for a 23:30 slot) serves the slot it was late for, not the next day's. A weekly subscriber
without a ``weekday`` is due from ``send_at`` a week after the slot the last digest served.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from newsletter.models import Subscriber

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK = timedelta(days=7)
FIRST_AHEAD = timedelta(days=1)  # a first digest serves a coming slot at most this far ahead
CLOCK_SLACK = timedelta(
    days=1
)  # a last digest later than the clock by more: the clock is wrong (see far_ahead)


def is_due(
    subscriber: Subscriber, last_digest_at: datetime | None, now: datetime, served: datetime | None = None
) -> bool:
    """``served``: the slot the last digest served, as recorded (see :func:`slot_served_now`); without
    one (a digest recorded before it was), the slot :func:`served_slot` reads off its time."""
    if subscriber.cadence == "each-dump" or last_digest_at is None or far_ahead(last_digest_at, now):
        return True
    slot = _last_slot(subscriber, last_digest_at, served)
    if subscriber.cadence == "weekly" and subscriber.weekday is None:
        return now >= _a_week_on(subscriber, slot)
    return latest_slot(subscriber, now) > slot


def far_ahead(last_digest_at: datetime, now: datetime) -> bool:
    """Whether the last digest was made more than CLOCK_SLACK after ``now``: the clock went back, or one
    run had a ``--now`` in the future. It is then due at once (its next digest records a sane date),
    not once the clock reaches the recorded one (a year of silence after one mistyped backfill). Less
    than that is hosts' clocks apart, or a clock set back an hour: waiting is right then."""
    return last_digest_at > now + CLOCK_SLACK


def _last_slot(subscriber: Subscriber, last_digest_at: datetime, served: datetime | None) -> datetime:
    """The slot the last digest served: as recorded while it is one of the profile's slots; without a
    record, the slot read off that digest's time (:func:`served_slot`); after a change of ``send_at``,
    zone or weekday, :func:`_counted_slot`."""
    if served is None:
        return served_slot(subscriber, last_digest_at)
    return served if _is_slot(subscriber, served) else _counted_slot(subscriber, last_digest_at)


def _counted_slot(subscriber: Subscriber, made_at: datetime) -> datetime:
    """After a change of ``send_at``, zone or weekday, the new slot the last digest counts for: the first
    one at most three quarters of a period (18 hours; 5.25 days for a weekday) before it was made. So the
    next comes at least a quarter period after it, and no day is skipped: a digest at 23:35 for 00:00
    counts for the next day's 00:30 (the day's own 00:30 made the next due 55 minutes on), and one at
    20:02 for 20:00 counts for that day's 07:00 (the next day's would skip a day)."""
    weekday = subscriber.cadence == "weekly" and subscriber.weekday is not None
    earliest = made_at - (WEEK if weekday else timedelta(days=1)) * 3 / 4
    slot = latest_slot(subscriber, earliest)
    return slot if slot >= earliest else _next_slot(subscriber, slot)


def _nearest_slot(subscriber: Subscriber, moment: datetime) -> datetime:
    """The profile's slot nearest ``moment``, before or after it (the earlier one at equal distance)."""
    before = latest_slot(subscriber, moment)
    after = _next_slot(subscriber, before)
    return after if after - moment < moment - before else before


def _is_slot(subscriber: Subscriber, moment: datetime) -> bool:
    """One of the profile's slots; instants compared (two zones' datetimes differ around a DST change)."""
    slot = _slot_on(subscriber, _local_day(subscriber, moment))
    return slot.timestamp() == moment.timestamp() and _is_slot_day(subscriber, moment)


def slot_served_now(
    subscriber: Subscriber, last_digest_at: datetime | None, now: datetime
) -> datetime | None:
    """The slot a digest made at ``now`` serves, to record with it: the latest one, which it is due for,
    or for a first digest the nearer one (:func:`_first_served`). A digest due for a slot it came late
    to (made at 07:10 for 18:00 the day before) must not take the next: the next day's was skipped.
    After a last digest made far ahead (see :func:`far_ahead`), the one due at once counts like a first:
    made at 07:00 for 08:00, taken for the day before's 08:00, it was followed by a second at 08:00."""
    if subscriber.cadence == "each-dump":
        return None
    if last_digest_at is None or far_ahead(last_digest_at, now):
        return _first_served(subscriber, now)
    return latest_slot(subscriber, now)


def served_slot(subscriber: Subscriber, made_at: datetime) -> datetime:
    """The slot a digest made at ``made_at`` served: the latest at or before it, or the one later that
    day when that is nearer (a digest made early for it)."""
    before = latest_slot(subscriber, made_at)
    that_day = _slot_on(subscriber, _local_day(subscriber, made_at))
    if not _is_slot_day(subscriber, that_day):  # a weekly subscriber's other days have no slot
        return before
    return that_day if that_day > made_at and that_day - made_at < made_at - before else before


def _first_served(subscriber: Subscriber, made_at: datetime) -> datetime:
    """The slot a first digest serves: the latest, or the next one (any day) when that is nearer and at
    most a day away. A weekly Monday 08:00 reader's first digest on Sunday at 21:00 serves Monday's: a
    second came 11 hours after it. One on Thursday evening serves the Monday before: taking the coming
    Monday's skipped it, and the second digest came 11 days after the first. (Read off a digest's time
    later, only that day's counts: a digest late at 23:30 must not take the next day's 00:00.)"""
    nearest = _nearest_slot(subscriber, made_at)
    if nearest > made_at and nearest - made_at > FIRST_AHEAD:
        return latest_slot(subscriber, made_at)
    return nearest


def _next_slot(subscriber: Subscriber, slot: datetime) -> datetime:
    """The slot after ``slot``: a week on for a weekday subscriber, else the next day's."""
    step = WEEK if subscriber.cadence == "weekly" and subscriber.weekday is not None else timedelta(days=1)
    return _slot_on(subscriber, _local_day(subscriber, slot) + step)


def next_due_at(
    subscriber: Subscriber, last_digest_at: datetime | None, now: datetime, served: datetime | None = None
) -> datetime | None:
    """The earliest moment a digest can go out; ``now`` when it is already due, None for each-dump."""
    if subscriber.cadence == "each-dump":
        return None
    if is_due(subscriber, last_digest_at, now, served):
        return now
    assert last_digest_at is not None  # is_due is True without one
    slot = _last_slot(subscriber, last_digest_at, served)
    if subscriber.cadence == "weekly" and subscriber.weekday is None:
        return _a_week_on(subscriber, slot)
    step = WEEK if subscriber.cadence == "weekly" else timedelta(days=1)
    return _slot_on(subscriber, _local_day(subscriber, slot) + step)


def shown_due(
    subscriber: Subscriber,
    last_digest_at: datetime | None,
    now: datetime,
    served: datetime | None,
    *,
    queued: datetime | None,
    waiting: bool,
) -> datetime | None:
    """When `status` and `serve` say the next digest goes: now when papers wait for a subscriber who is
    due (each-dump: whenever they wait); else the sooner of the next send time and the end of a queued
    digest's backoff; None: when a dump brings new papers. ``queued``: when the first queued digest goes.

    A due subscriber with nothing to weigh was "now" in `status --json` and `serve`, "when a dump brings
    new papers" in `status`; one whose refused digest waited out its backoff was "now", or the next
    send time."""
    due = next_due_at(subscriber, last_digest_at, now, served)
    if due is None or due <= now:
        due = now if waiting else None
    return queued if queued is not None and (due is None or queued < due) else due


def latest_slot(subscriber: Subscriber, now: datetime) -> datetime:
    """The most recent slot at or before ``now`` (aware, in the subscriber's zone)."""
    local_day = now.astimezone(subscriber.tz).date()
    if subscriber.cadence == "weekly" and subscriber.weekday is not None:
        back = (local_day.weekday() - WEEKDAYS.index(subscriber.weekday)) % 7
        candidate, step = _slot_on(subscriber, local_day - timedelta(days=back)), WEEK
    else:
        candidate, step = _slot_on(subscriber, local_day), timedelta(days=1)
    while candidate > now:
        candidate = _slot_on(subscriber, candidate.astimezone(subscriber.tz).date() - step)
    return candidate


def _a_week_on(subscriber: Subscriber, slot: datetime) -> datetime:
    """Weekly without a weekday: the ``send_at`` (midnight by default) a week after the slot the last
    digest served (a digest late past midnight serves the day before's). Not the same instant a week
    on: a run starting a little earlier than last week's would wait a whole cron interval, and the
    digests would drift later week by week."""
    return _slot_on(subscriber, _local_day(subscriber, slot) + WEEK)


def _is_slot_day(subscriber: Subscriber, slot: datetime) -> bool:
    if subscriber.cadence != "weekly" or subscriber.weekday is None:
        return True
    return _local_day(subscriber, slot).weekday() == WEEKDAYS.index(subscriber.weekday)


def _local_day(subscriber: Subscriber, moment: datetime) -> date:
    return moment.astimezone(subscriber.tz).date()


def _slot_on(subscriber: Subscriber, day: date) -> datetime:
    # A send_at that falls in a DST gap resolves to the wall-clock time zoneinfo gives (fold=0).
    return datetime.combine(day, subscriber.send_at or time(0, 0), tzinfo=subscriber.tz)
