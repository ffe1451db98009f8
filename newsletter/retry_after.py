"""An HTTP ``Retry-After`` (RFC 9110, 10.2.3) read the same way by the source fetch and the email APIs.

The header holds delta-seconds or an HTTP-date. A decimal ("1.5") is read as the seconds it says, a
negative number or a date already past as no wait; words, "nan", "inf" and a date Python cannot place
are unusable (None), and the caller's own backoff applies. A wait longer than a year is read as a year:
a timedelta of 1e14 s overflows.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

LONGEST_WAIT = 366 * 86400.0


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``, in [0, LONGEST_WAIT]; None if unusable."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())  # "²" is a digit to str.isdigit, and a ValueError here
    except ValueError:
        return _seconds_until(value, now)
    return bounded(seconds) if math.isfinite(seconds) else None


def http_date(value: str) -> datetime | None:
    """An HTTP-date as an aware datetime (naive ones as UTC); None if it is none."""
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):  # Overflow: a zone offset of 20 digits
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def bounded(seconds: float) -> float:
    return min(max(0.0, seconds), LONGEST_WAIT)


def _seconds_until(value: str, now: datetime) -> float | None:
    when = http_date(value)
    return None if when is None else bounded((when - now).total_seconds())
