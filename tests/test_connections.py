"""How many connections a run opens: NEWSLETTER_CONNECTIONS, and what "auto" picks."""

from __future__ import annotations

from typing import Any

import pytest

from newsletter.config import Settings
from newsletter.pipeline import connection_count

REMOTE_SMTP = {"transport": "smtp", "smtp_host": "mail.example.org"}


@pytest.mark.parametrize(
    ("fields", "builder", "expected"),
    [
        (REMOTE_SMTP, True, 2),
        ({"transport": "smtp", "smtp_host": "192.0.2.10"}, True, 2),
        ({"transport": "postmark"}, True, 2),
        ({"transport": "smtp", "smtp_host": "localhost"}, True, 1),  # shares this machine's CPUs
        ({"transport": "smtp", "smtp_host": "127.0.0.1"}, True, 1),
        ({"transport": "smtp", "smtp_host": "::1"}, True, 1),
        ({"transport": "file"}, True, 1),
        (REMOTE_SMTP, False, 1),  # no builder to keep two connections fed
        ({**REMOTE_SMTP, "send_rate": 5.0}, True, 1),  # paced anyway
        ({**REMOTE_SMTP, "connections": 3}, False, 3),  # a number is taken as it is
        ({"transport": "file", "connections": 2}, True, 2),
    ],
)
def test_auto_opens_a_second_connection_only_to_a_remote_server_with_a_builder(
    fields: dict[str, Any], builder: bool, expected: int
) -> None:
    assert connection_count(Settings(**fields), builder) == expected
