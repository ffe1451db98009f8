"""When is a subscriber's next digest due? Pure functions of the profile, the last digest and the clock.

A daily or weekly subscriber has *slots*: local moments (``send_at``, on ``weekday`` for weekly) in their
own time zone. A digest is due when the most recent slot has passed and no digest was made on that
slot's local day or later, so a run that missed a slot (machine down, holiday) catches up once at the
next run, and a digest made earlier on a slot's day (a new subscriber's first, a catch-up) counts for
that slot: a daily subscriber never gets two digests on one local day.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from newsletter.models import Subscriber

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK = timedelta(days=7)


def is_due(subscriber: Subscriber, last_digest_at: datetime | None, now: datetime) -> bool:
    if subscriber.cadence == "each-dump" or last_digest_at is None:
        return True
    if subscriber.cadence == "weekly" and subscriber.weekday is None:
        return now - last_digest_at >= WEEK
    return _local_day(subscriber, last_digest_at) < _local_day(subscriber, latest_slot(subscriber, now))


def next_due_at(subscriber: Subscriber, last_digest_at: datetime | None, now: datetime) -> datetime | None:
    """The earliest moment a digest can go out; ``now`` when it is already due, None for each-dump."""
    if subscriber.cadence == "each-dump":
        return None
    if is_due(subscriber, last_digest_at, now):
        return now
    assert last_digest_at is not None  # is_due is True without one
    if subscriber.cadence == "weekly" and subscriber.weekday is None:
        return last_digest_at + WEEK
    step = WEEK if subscriber.cadence == "weekly" else timedelta(days=1)
    day = _local_day(subscriber, latest_slot(subscriber, now)) + step
    while day <= _local_day(subscriber, last_digest_at):  # that day's slot is already served
        day += step
    return _slot_on(subscriber, day)


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


def _local_day(subscriber: Subscriber, moment: datetime) -> date:
    return moment.astimezone(subscriber.tz).date()


def _slot_on(subscriber: Subscriber, day: date) -> datetime:
    # A send_at that falls in a DST gap resolves to the wall-clock time zoneinfo gives (fold=0).
    return datetime.combine(day, subscriber.send_at or time(0, 0), tzinfo=subscriber.tz)
