"""An HTTP API's refusal of the recipient's address (SendGrid 400 on ``personalizations.0.to``, Mailgun 400
"to parameter is not a valid address", Resend 422 "Invalid `to` field") is a bounce, as SMTP's 5.1.x:
the run's exit status was 1 (the run's own trouble) where an SMTP run's was 3. A refusal of anything
else (the sender) stays 1, and a refused key (401) stops the run, as an SMTP login refused does."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from newsletter.deliver.courier import _failed
from newsletter.errors import SendError
from newsletter.report import DIGESTS_FAILED, RunReport
from newsletter.send.apis import HttpApiTransport, MailgunTransport, ResendTransport, SendGridTransport

from .test_send_api import harness, make_message

BAD_ADDRESS = [
    (
        SendGridTransport,
        400,
        {
            "errors": [
                {"message": "Does not contain a valid address.", "field": "personalizations.0.to.0.email"}
            ]
        },
    ),
    (MailgunTransport, 400, {"message": "to parameter is not a valid address. please check documentation"}),
    (ResendTransport, 422, {"statusCode": 422, "name": "validation_error", "message": "Invalid `to` field."}),
]
BAD_SENDER = [
    (
        SendGridTransport,
        400,
        {"errors": [{"message": "The from email does not contain a valid address.", "field": "from.email"}]},
    ),
    (MailgunTransport, 400, {"message": "from parameter is not a valid address. please check documentation"}),
    (
        ResendTransport,
        422,
        {"statusCode": 422, "name": "validation_error", "message": "Invalid `from` field."},
    ),
]


def _refused(cls: type[HttpApiTransport], status: int, body: dict[str, Any]) -> SendError:
    h = harness(cls, httpx.Response(status, json=body))
    with h.transport as transport, pytest.raises(SendError) as caught:
        transport.send(make_message())
    return caught.value


def _exit_status(error: SendError) -> int:
    """The exit status of a run whose only problem is this refusal of one digest."""
    report = RunReport()
    report.add(_failed(make_message(), error, error.message, error.permanent, ()))
    return report.exit_status()


@pytest.mark.parametrize(("cls", "status", "body"), BAD_ADDRESS)
def test_a_refused_recipient_address_is_a_bounce_as_over_smtp(
    cls: type[HttpApiTransport], status: int, body: dict[str, Any]
) -> None:
    error = _refused(cls, status, body)
    assert error.permanent and error.mailbox and error.gone and not error.transport_down
    assert _exit_status(error) == DIGESTS_FAILED


@pytest.mark.parametrize(("cls", "status", "body"), BAD_SENDER)
def test_a_refusal_that_blames_no_recipient_is_still_the_run_s_trouble(
    cls: type[HttpApiTransport], status: int, body: dict[str, Any]
) -> None:
    error = _refused(cls, status, body)
    assert error.permanent and not error.mailbox and not error.gone
    assert _exit_status(error) == 1


@pytest.mark.parametrize("cls", [SendGridTransport, MailgunTransport, ResendTransport])
def test_a_refused_api_key_stops_the_run_as_a_refused_smtp_login(cls: type[HttpApiTransport]) -> None:
    error = _refused(cls, 401, {"message": "unauthorized"})
    assert error.transport_down and _exit_status(error) == 1


def _batch(*replies: httpx.Response) -> list[object]:
    h = harness(ResendTransport, *replies)
    messages = [make_message("d-ada"), make_message("d-bob", to="bob@example.org", name="Bob")]
    with h.transport as transport:
        return list(transport.send_batch(messages))


def test_a_resend_batch_s_refused_address_is_a_bounce_for_that_subscriber_only() -> None:
    """A batch lists a bad address in ``errors`` by index: it was a plain permanent failure (exit 1, the
    subscriber not held), where the same refusal of one message is a bounce."""
    reply = {"data": [{"id": "id-1"}], "errors": [{"index": 1, "message": "Invalid `to` field."}]}
    sent, refused = _batch(httpx.Response(200, json=reply))
    assert not isinstance(sent, SendError)
    assert isinstance(refused, SendError) and refused.gone and refused.mailbox
    assert _exit_status(refused) == DIGESTS_FAILED


def test_a_whole_resend_batch_refused_for_an_address_holds_no_subscriber() -> None:
    """A 422 for the whole batch names no one: every subscriber in it was held as bounced."""
    body = {"statusCode": 422, "name": "validation_error", "message": "Invalid `to` field."}
    outcomes = _batch(httpx.Response(422, json=body))
    assert all(isinstance(o, SendError) and o.permanent and not o.gone for o in outcomes)
    assert all(isinstance(o, SendError) and _exit_status(o) == 1 for o in outcomes)
