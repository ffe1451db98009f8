"""The daemon's fetch schedule: a crontab line, read as crontab reads it, as an APScheduler trigger."""

from __future__ import annotations

import re

from apscheduler.triggers.cron import CronTrigger

from newsletter.config import setting_origin
from newsletter.errors import ConfigError


def fetch_schedule(cron: str) -> CronTrigger:
    """The fetch job's trigger (crontab syntax, UTC); ConfigError names the setting. The day-of-week
    field is read as crontab reads it; with both day fields restricted, both must match (crontab:
    either)."""
    fields = cron.split()
    try:
        if len(fields) == 5:
            fields[4] = crontab_weekdays(fields[4])
        return CronTrigger.from_crontab(" ".join(fields), timezone="UTC")
    except ValueError as exc:
        raise ConfigError(
            f"invalid setting field 'fetch_cron': {exc} ({setting_origin('fetch_cron')})"
        ) from None


_CRONTAB_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")  # crontab: 0 and 7 are Sunday
_DAY = r"(?:\d+|[a-z]{3})"
_DAY_ITEM = re.compile(rf"(\*|{_DAY}(?:-{_DAY})?)(?:/(\d+))?", re.IGNORECASE)


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field as APScheduler reads it the same way: crontab numbers Sunday 0 (or
    7) and counts a week from Sunday, APScheduler from Monday, so `1-5` would run Tuesday to Saturday
    and `sun-thu` would be refused. Each item becomes the list of its days' names; anything else is
    left for APScheduler to read (and say what is wrong with it)."""
    days: list[str] = []
    for item in field.split(","):
        match = _DAY_ITEM.fullmatch(item)
        step = int(match[2] or 1) if match else 0
        if match is None or step == 0 or (match[1] == "*" and match[2] is None):
            days.append(item)
            continue
        low, _, high = match[1].replace("*", "0-6").partition("-")
        first, last = _day_number(low), _day_number(high) if high else (6 if match[2] else _day_number(low))
        past = [day for day in (first, last) if day is not None and day > 7]
        if past:  # APScheduler would say "the maximum value (6)", and 7 works
            raise ValueError(f"day of week {max(past)} in {item!r}: crontab's are 0-7 (0 and 7 are Sunday)")
        if first is None or last is None or first > last:
            days.append(item)
            continue
        days += [_CRONTAB_DAYS[day] for day in range(first, last + 1, step)]
    return ",".join(dict.fromkeys(days))


def _day_number(text: str) -> int | None:
    """A crontab day: a number, or a name (sun = 0)."""
    if text.isdigit():
        return int(text)
    name = text.lower()
    return _CRONTAB_DAYS.index(name) if name in _CRONTAB_DAYS else None
