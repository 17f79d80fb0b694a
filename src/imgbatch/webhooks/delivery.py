"""Delivering one webhook attempt, and deciding when (and whether) the next one happens.

An attempt is a signed POST through the guarded client (the image downloads' SSRF guard), with
no redirects and one deadline for the whole exchange. A 2xx is success; a 410 fails the delivery
and disables its subscriber; anything else is retried on ``webhook_retry_schedule``, later if a
429/503 asks for it with ``Retry-After``. The next attempt is a timestamp on the delivery, picked
up by the beat poller (webhooks.scheduling, fair per owner), never a Celery countdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from imgbatch.core import metrics
from imgbatch.core.logs import bind_context, log_event, redact_url, scrub_message
from imgbatch.domain.audit import record
from imgbatch.domain.services import Services
from imgbatch.domain.webhook_signing import signed_headers
from imgbatch.models.requests import RequestRepository, now
from imgbatch.models.webhooks import (
    AttemptRecord,
    DeliveryRecord,
    DeliveryState,
    EventRecord,
    WebhookDeliveryRepository,
    WebhookEventRepository,
    WebhookSubscriberRepository,
)
from imgbatch.netguard import (
    BlockedAddress,
    InvalidTarget,
    NetworkPolicy,
    check_url,
    guarded_client,
    retry_after_seconds,
)
from imgbatch.webhooks.scheduling import attempt_over

logger = logging.getLogger(__name__)

USER_AGENT = "imgbatch-webhooks/0.1"
# An attempt holds its delivery for the request timeout plus this; a worker that dies mid-attempt
# releases it when the lease runs out and the poller hands it out again.
LEASE_MARGIN = 30.0
# Retry-After is honoured up to a day: past that, the receiver is asking us to give up.
MAX_RETRY_AFTER = 24 * 3600.0
_RETRY_AFTER_STATUSES = frozenset({429, 503})
# The state an attempt leaves its delivery in, as the deliveries metric names it.
_OUTCOMES = {
    DeliveryState.DELIVERED: "delivered",
    DeliveryState.FAILED: "failed",
    DeliveryState.PENDING: "retried",
}


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    retry_after: float | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_delay(schedule: Sequence[float], attempts_made: int, retry_after: float | None) -> float:
    """Seconds until the next attempt after ``attempts_made`` attempts."""
    step = schedule[min(attempts_made, len(schedule) - 1)]
    if retry_after is not None:
        step = max(step, min(retry_after, MAX_RETRY_AFTER))
    return step


async def deliver(rt: Services, delivery_id: str) -> DeliveryRecord | None:
    """Make the next attempt of a due delivery; None if it was not due or someone else has it."""
    deliveries = WebhookDeliveryRepository(rt.db)
    lease = timedelta(seconds=rt.settings.webhook_timeout + LEASE_MARGIN)
    delivery = await deliveries.claim(delivery_id, lease=lease)
    if delivery is None:
        return None  # not due, or another message's attempt holds it (and its owner's slot)
    bind_context(request_id=delivery.request_id)
    try:
        return await _attempt(rt, deliveries, delivery)
    finally:
        await attempt_over(rt, delivery.id)


async def _attempt(
    rt: Services, deliveries: WebhookDeliveryRepository, delivery: DeliveryRecord
) -> DeliveryRecord | None:
    event = await WebhookEventRepository(rt.db).get(delivery.event_id)
    keys, missing = await _signing_keys(rt, delivery)
    if event is None or missing is not None:
        reason = missing or "the event no longer exists"
        await deliveries.give_up(delivery.id, reason)
        log_event(logger, "webhook.delivery_abandoned", delivery_id=delivery.id, reason=reason)
        metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
        await record(rt, delivery.request_id, "webhook.failed", **_audited(delivery), reason=reason)
        return await deliveries.get(delivery.id)

    number = delivery.attempts + 1
    attempted_at = now()
    outcome = await _post(rt, delivery.url, event, keys)
    attempt = AttemptRecord(
        attempt=number,
        at=attempted_at,
        status_code=outcome.status_code,
        error=outcome.error,
        duration_ms=outcome.duration_ms,
    )
    log_event(
        logger,
        "webhook.attempted",
        delivery_id=delivery.id,
        event_id=event.id,
        attempt=number,
        url=redact_url(delivery.url),
        status_code=outcome.status_code,
        error=outcome.error,
        duration_ms=outcome.duration_ms,
    )
    next_attempt_at: datetime | None = None
    if outcome.ok:
        state = DeliveryState.DELIVERED
    elif outcome.status_code == 410 or number >= delivery.max_attempts:
        state = DeliveryState.FAILED
    else:
        state = DeliveryState.PENDING
        delay = retry_delay(rt.settings.webhook_retry_schedule, number, outcome.retry_after)
        next_attempt_at = now() + timedelta(seconds=delay)
    recorded = await deliveries.record_attempt(
        delivery.id, attempt, state=state, next_attempt_at=next_attempt_at
    )
    metrics.WEBHOOK_DELIVERIES.labels(_OUTCOMES[state]).inc()
    if outcome.status_code == 410 and delivery.subscriber_id is not None:
        # 410 Gone is the receiver saying "stop": keep sending and we are a nuisance.
        subscribers = WebhookSubscriberRepository(rt.db)
        if await subscribers.disable(delivery.subscriber_id, "the endpoint answered 410 Gone"):
            log_event(
                logger,
                "webhook.subscriber_disabled",
                logging.WARNING,
                subscriber_id=delivery.subscriber_id,
                delivery_id=delivery.id,
            )
    if state != DeliveryState.PENDING:
        log_event(
            logger,
            f"webhook.{state.value}",
            delivery_id=delivery.id,
            event_id=event.id,
            attempts=number,
        )
        await record(
            rt,
            delivery.request_id,
            f"webhook.{state.value}",
            **_audited(delivery),
            attempts=number,
            status_code=outcome.status_code,
        )
    return recorded


def _audited(delivery: DeliveryRecord) -> dict[str, str]:
    """What the audit trail says about a delivery: which one, to whom (never its secret)."""
    return {
        "delivery_id": delivery.id,
        "target": delivery.target,
        "url": redact_url(delivery.url),
        "event_type": delivery.event_type.value,
    }


async def _signing_keys(rt: Services, delivery: DeliveryRecord) -> tuple[list[str], str | None]:
    """The secrets to sign with at this moment, or why there are none."""
    if delivery.subscriber_id is not None:
        subscriber = await WebhookSubscriberRepository(rt.db).get(delivery.subscriber_id)
        if subscriber is None:
            return [], "the subscriber was deleted"
        if subscriber.disabled_at is not None:
            return [], "the subscriber is disabled"
        # Read per attempt, so a retry after a rotation carries both signatures.
        return subscriber.signing_secrets(now()), None
    if delivery.secret is not None:  # its request was deleted (domain.deletion)
        return [delivery.secret], None
    request = await RequestRepository(rt.db).get(delivery.request_id)
    if request is None:
        return [], "the request no longer exists"
    if not request.webhook_secret:
        return [], "the request has no webhook secret to sign with"
    return [request.webhook_secret], None


async def _post(rt: Services, url: str, event: EventRecord, keys: list[str]) -> Outcome:
    timeout = rt.settings.webhook_timeout
    policy = NetworkPolicy.from_settings(rt.settings)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signed_headers(event.id, event.body, keys),
    }
    started = time.monotonic()

    def done(status: int | None, error: str | None, retry_after: float | None = None) -> Outcome:
        elapsed = int((time.monotonic() - started) * 1000)
        return Outcome(status, error, retry_after, elapsed)

    try:
        target = check_url(url, policy)
        # A client per attempt: webhooks are few, and a pooled connection to a receiver that
        # hung last time is not worth keeping.
        async with (
            guarded_client(policy, timeout=httpx.Timeout(timeout)) as client,
            asyncio.timeout(timeout),
        ):
            request = client.build_request(
                "POST", target, content=event.body.encode(), headers=headers
            )
            response = await client.send(request, stream=True)
            # The body is never read: only the status matters, and a receiver must not be able
            # to make us download anything.
            await response.aclose()
    except BlockedAddress as blocked:
        return done(None, f"blocked_address: {blocked.reason}")
    except InvalidTarget as invalid:
        return done(None, f"invalid_url: {invalid}")
    except (TimeoutError, httpx.TimeoutException):
        return done(None, f"timeout: no response within {timeout:g}s")
    except httpx.HTTPError as failed:
        detail = scrub_message(str(failed)) or type(failed).__name__
        return done(None, f"connection_error: {detail}")
    status = response.status_code
    if 200 <= status < 300:
        return done(status, None)
    retry_after = (
        retry_after_seconds(response.headers.get("retry-after"))
        if status in _RETRY_AFTER_STATUSES
        else None
    )
    if 300 <= status < 400:
        return done(status, f"HTTP {status}: redirects are not followed", retry_after)
    return done(status, f"HTTP {status}", retry_after)
